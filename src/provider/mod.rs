//! The cloud seam: one trait, one implementation per cloud.

#[cfg(feature = "cloud")]
pub mod aws;
#[cfg(feature = "cloud")]
mod cloud;
#[cfg(feature = "cloud")]
pub mod docker;
pub mod governor;
#[cfg(feature = "cloud")]
pub mod hetzner;
pub mod kubernetes;
pub mod memory;
pub mod profile;

#[cfg(feature = "cloud")]
pub use cloud::Cloud;
pub use profile::{Profile, profile};

use std::future::Future;

use serde::Serialize;

use crate::stack::ProviderKind;

/// Tag / label keys put on everything agent-army creates.
pub mod tags {
    pub const PROJECT: &str = "project";
    pub const STACK: &str = "stack";
    pub const AGENT: &str = "agent";
    pub const FINGERPRINT: &str = "fingerprint";
    /// Public id of the agent's gateway key (`GatewayKey::key_id`): adoption checks it.
    pub const KEY_ID: &str = "key-id";
    pub const ROLE: &str = "role";
    /// Value of the role tag on the stack's firewall / security group.
    pub const ROLE_NETWORK: &str = "firewall";
    pub const ROLE_SERVER: &str = "agent";
    pub const ROLE_SSH_KEY: &str = "break-glass-ssh-key";
}

/// Lifecycle state of a server, normalised across clouds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Pending,
    Running,
    Stopping,
    Stopped,
    Deleting,
    Gone,
    Other(String),
}

impl ServerState {
    /// Terminated or being terminated: no longer counts as the agent's server.
    pub fn is_gone(&self) -> bool {
        matches!(self, ServerState::Deleting | ServerState::Gone)
    }
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerState::Pending => f.write_str("pending"),
            ServerState::Running => f.write_str("running"),
            ServerState::Stopping => f.write_str("stopping"),
            ServerState::Stopped => f.write_str("stopped"),
            ServerState::Deleting => f.write_str("deleting"),
            ServerState::Gone => f.write_str("gone"),
            ServerState::Other(s) => f.write_str(s),
        }
    }
}

/// A server found by the stack's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedServer {
    pub id: String,
    /// Value of the agent tag ("" when missing).
    pub agent: String,
    pub fingerprint: Option<String>,
    /// Id of the gateway key the server was created with (none on servers made before key ids).
    pub key_id: Option<String>,
    pub state: ServerState,
    pub name: String,
    /// Creation time as the provider reports it (sortable).
    pub created: String,
}

/// A firewall / security group found by the stack's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedNetwork {
    pub id: String,
    /// CIDRs allowed to port 22 (empty: no inbound rules at all).
    pub ssh_cidrs: Vec<String>,
    pub ssh_key_id: Option<String>,
}

/// Everything the cloud has for the stack, from one batched listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub servers: Vec<ObservedServer>,
    pub networks: Vec<ObservedNetwork>,
}

/// What a server is created from.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub agent: String,
    pub hostname: String,
    pub instance_type: String,
    pub image: Option<String>,
    pub disk_gb: u32,
    pub user_data: Vec<u8>,
    pub fingerprint: String,
    /// Id of the gateway key in the user data, put on the server as a tag or label.
    pub key_id: String,
    pub client_token: String,
    pub network_id: String,
    pub ssh_key_id: Option<String>,
}

/// What servers are to be created from, for the checks and lookups before the first create.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    pub size: String,
    pub image: Option<String>,
}

/// Stack-wide network request.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub ssh_cidrs: Vec<String>,
    /// OpenSSH public key line of the break-glass key (providers that need one).
    pub ssh_public_key: Option<String>,
}

/// A failed cloud call, with the provider's own code and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    pub code: String,
    pub message: String,
    pub advice: Option<String>,
    /// The call did not reach the cloud or timed out: nothing is known to have changed.
    pub transient: bool,
}

impl ProviderError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError {
            code: code.into(),
            message: message.into(),
            advice: None,
            transient: false,
        }
    }
    pub fn with_advice(mut self, advice: impl Into<String>) -> Self {
        self.advice = Some(advice.into());
        self
    }
}

/// Identity of the stack for tag/label selection.
#[derive(Debug, Clone)]
pub struct StackId {
    pub project: String,
    pub stack: String,
}

/// One cloud. Calls are independent so the engine can run them concurrently.
pub trait Provider: Send + Sync + 'static {
    fn kind(&self) -> ProviderKind;

    /// Everything tagged with the stack, in as few calls as the API allows.
    fn observe(&self) -> impl Future<Output = Result<Observed, ProviderError>> + Send;

    /// Before anything is created: the stack's place exists and each server size exists and
    /// is offered there, so a typo fails before a firewall or key is made. A cloud that
    /// cannot tell cheaply accepts. The stack-level lookups creates need (network, images)
    /// go out in the same round and are kept, so creates start as soon as the network is
    /// there.
    fn preflight(
        &self,
        _shapes: &[Shape],
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        async { Ok(()) }
    }

    /// Create the firewall / security group (and break-glass key where needed).
    fn create_network(
        &self,
        spec: &NetworkSpec,
    ) -> impl Future<Output = Result<ObservedNetwork, ProviderError>> + Send;

    /// Make the network's inbound rules exactly `spec.ssh_cidrs` on port 22.
    fn update_network(
        &self,
        id: &str,
        spec: &NetworkSpec,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Delete the network (and break-glass key). Servers must be gone.
    fn delete_network(
        &self,
        network: &ObservedNetwork,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Start creating a server; returns its id.
    fn create_server(
        &self,
        spec: &ServerSpec,
    ) -> impl Future<Output = Result<String, ProviderError>> + Send;

    /// Wait until the server runs.
    fn wait_running(&self, id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Start deleting a server. Deleting one that is already gone succeeds.
    fn delete_server(&self, id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Wait until the servers are gone.
    fn wait_deleted(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

//! An in-memory cloud: the [`Provider`] contract without a network, for the engine's unit
//! tests and for trying plans. It behaves like the real clouds where the engine relies on it:
//! - a create with a client token already used returns that server (EC2's idempotency);
//! - deleting a server that is gone succeeds;
//! - servers carry the stack's agent and fingerprint, and `observe` lists what is not gone;
//! - `observe` sees only its own stack's servers and networks: [`MemoryCloud::stack`] is the
//!   same cloud as another stack (another `StackId`) sees it. Client tokens are cloud-wide,
//!   as EC2's are per account and region.
//!
//! Faults are injected per agent ([`MemoryCloud::refuse_create`]), and every mutating call
//! is logged in order ([`MemoryCloud::calls`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{
    NetworkSpec, Observed, ObservedNetwork, ObservedServer, Provider, ProviderError, ServerSpec,
    ServerState,
};
use crate::stack::ProviderKind;

type Hook = Arc<dyn Fn(&ServerSpec) + Send + Sync>;

/// A server: the stack it was created for, its spec and state.
struct Server {
    stack: String,
    spec: ServerSpec,
    state: ServerState,
}

/// A network: the stack it was created for, and its inbound SSH CIDRs.
struct Network {
    stack: String,
    cidrs: Vec<String>,
}

#[derive(Default)]
struct Cloud {
    next_id: u64,
    servers: BTreeMap<String, Server>,
    networks: BTreeMap<String, Network>,
    tokens: BTreeMap<String, String>,
    calls: Vec<String>,
    refuse: BTreeMap<String, ProviderError>,
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct MemoryCloud {
    inner: Arc<Mutex<Cloud>>,
    on_create: Option<Hook>,
    /// The stack this handle observes and creates for ("" for [`MemoryCloud::new`]).
    stack: String,
}

impl MemoryCloud {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same cloud, as the stack `name` sees it: it observes only what it created itself,
    /// and this handle does not see what it creates. (Hooks are not carried over.)
    pub fn stack(&self, name: &str) -> Self {
        MemoryCloud {
            inner: self.inner.clone(),
            on_create: None,
            stack: name.to_string(),
        }
    }

    fn cloud(&self) -> std::sync::MutexGuard<'_, Cloud> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse every create for `agent` with `error` (transient or not).
    pub fn refuse_create(&self, agent: &str, error: ProviderError) {
        self.cloud().refuse.insert(agent.to_string(), error);
    }

    /// Call `hook` at the start of every create, before anything exists.
    pub fn on_create(mut self, hook: impl Fn(&ServerSpec) + Send + Sync + 'static) -> Self {
        self.on_create = Some(Arc::new(hook));
        self
    }

    /// Mutating calls so far, in order: `create_server <agent>`, `delete_server <id>`, ...
    pub fn calls(&self) -> Vec<String> {
        self.cloud().calls.clone()
    }

    /// The stack's servers that are not gone: (id, agent).
    pub fn live(&self) -> Vec<(String, String)> {
        self.cloud()
            .servers
            .iter()
            .filter(|(_, s)| s.stack == self.stack && !s.state.is_gone())
            .map(|(id, s)| (id.clone(), s.spec.agent.clone()))
            .collect()
    }

    /// The spec a server was created from (any stack, gone or not).
    pub fn spec(&self, id: &str) -> Option<ServerSpec> {
        self.cloud().servers.get(id).map(|s| s.spec.clone())
    }

    /// A running server for `agent` made outside any run (e.g. by a run that died).
    pub fn add_server(&self, agent: &str, fingerprint: &str) -> String {
        let mut c = self.cloud();
        c.next_id += 1;
        let id = format!("srv-{}", c.next_id);
        let spec = ServerSpec {
            agent: agent.into(),
            hostname: agent.into(),
            instance_type: String::new(),
            image: None,
            disk_gb: 0,
            user_data: Vec::new(),
            fingerprint: fingerprint.into(),
            key_id: String::new(),
            client_token: String::new(),
            network_id: String::new(),
            ssh_key_id: None,
        };
        c.servers.insert(
            id.clone(),
            Server {
                stack: self.stack.clone(),
                spec,
                state: ServerState::Running,
            },
        );
        id
    }

    /// A network with these inbound CIDRs, as if an earlier run made it.
    pub fn add_network(&self, ssh_cidrs: &[&str]) -> String {
        let mut c = self.cloud();
        c.next_id += 1;
        let id = format!("net-{}", c.next_id);
        c.networks.insert(
            id.clone(),
            Network {
                stack: self.stack.clone(),
                cidrs: ssh_cidrs.iter().map(|s| s.to_string()).collect(),
            },
        );
        id
    }
}

impl Provider for MemoryCloud {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }

    async fn observe(&self) -> Result<Observed, ProviderError> {
        let c = self.cloud();
        Ok(Observed {
            servers: c
                .servers
                .iter()
                .filter(|(_, s)| s.stack == self.stack && !s.state.is_gone())
                .map(|(id, s)| ObservedServer {
                    id: id.clone(),
                    agent: s.spec.agent.clone(),
                    fingerprint: Some(s.spec.fingerprint.clone()),
                    key_id: (!s.spec.key_id.is_empty()).then(|| s.spec.key_id.clone()),
                    state: s.state.clone(),
                    name: s.spec.hostname.clone(),
                    created: id.clone(),
                })
                .collect(),
            networks: c
                .networks
                .iter()
                .filter(|(_, n)| n.stack == self.stack)
                .map(|(id, n)| ObservedNetwork {
                    id: id.clone(),
                    ssh_cidrs: n.cidrs.clone(),
                    ssh_key_id: None,
                })
                .collect(),
        })
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<ObservedNetwork, ProviderError> {
        let mut c = self.cloud();
        c.calls.push("create_network".into());
        c.next_id += 1;
        let id = format!("net-{}", c.next_id);
        c.networks.insert(
            id.clone(),
            Network {
                stack: self.stack.clone(),
                cidrs: spec.ssh_cidrs.clone(),
            },
        );
        Ok(ObservedNetwork {
            id,
            ssh_cidrs: spec.ssh_cidrs.clone(),
            ssh_key_id: None,
        })
    }

    async fn update_network(&self, id: &str, spec: &NetworkSpec) -> Result<(), ProviderError> {
        let mut c = self.cloud();
        c.calls.push(format!("update_network {id}"));
        match c.networks.get_mut(id) {
            Some(n) => {
                n.cidrs = spec.ssh_cidrs.clone();
                Ok(())
            }
            None => Err(ProviderError::new("not_found", format!("no network {id}"))),
        }
    }

    async fn delete_network(&self, network: &ObservedNetwork) -> Result<(), ProviderError> {
        let mut c = self.cloud();
        c.calls.push(format!("delete_network {}", network.id));
        let in_use = c
            .servers
            .values()
            .any(|s| s.spec.network_id == network.id && !s.state.is_gone());
        if in_use {
            return Err(ProviderError::new(
                "resource_in_use",
                format!("network {} still has servers", network.id),
            ));
        }
        c.networks.remove(&network.id);
        Ok(())
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<String, ProviderError> {
        if let Some(hook) = &self.on_create {
            hook(spec);
        }
        let mut c = self.cloud();
        c.calls.push(format!("create_server {}", spec.agent));
        if let Some(e) = c.refuse.get(&spec.agent) {
            return Err(e.clone());
        }
        if !c.networks.contains_key(&spec.network_id) {
            return Err(ProviderError::new(
                "invalid_input",
                format!("no network {}", spec.network_id),
            ));
        }
        if let Some(id) = c.tokens.get(&spec.client_token) {
            return Ok(id.clone());
        }
        c.next_id += 1;
        let id = format!("srv-{}", c.next_id);
        c.tokens.insert(spec.client_token.clone(), id.clone());
        c.servers.insert(
            id.clone(),
            Server {
                stack: self.stack.clone(),
                spec: spec.clone(),
                state: ServerState::Running,
            },
        );
        Ok(id)
    }

    async fn wait_running(&self, id: &str) -> Result<(), ProviderError> {
        match self.cloud().servers.get(id).map(|s| &s.state) {
            Some(ServerState::Running) => Ok(()),
            Some(st) => Err(ProviderError::new("not_running", format!("{id} is {st}"))),
            None => Err(ProviderError::new("not_found", format!("no server {id}"))),
        }
    }

    async fn delete_server(&self, id: &str) -> Result<(), ProviderError> {
        let mut c = self.cloud();
        c.calls.push(format!("delete_server {id}"));
        if let Some(s) = c.servers.get_mut(id) {
            s.state = ServerState::Gone;
        }
        Ok(())
    }

    async fn wait_deleted(&self, ids: &[String]) -> Result<(), ProviderError> {
        let mut c = self.cloud();
        c.calls.push(format!("wait_deleted {}", ids.join(",")));
        Ok(())
    }
}

//! Hetzner Cloud API v1.

use std::time::Duration;

use super::{NetworkSpec, Observed, ObservedNetwork, Provider, ProviderError, ServerSpec, StackId};
use crate::secrets::Secret;
use crate::stack::ProviderKind;

pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";

pub struct HetznerProvider {
    #[allow(dead_code)]
    endpoint: String,
    #[allow(dead_code)]
    token: Secret,
    #[allow(dead_code)]
    stack: StackId,
    #[allow(dead_code)]
    location: String,
    #[allow(dead_code)]
    poll: Duration,
}

impl HetznerProvider {
    pub fn new(
        endpoint: &str,
        token: Secret,
        stack: StackId,
        location: String,
        poll: Duration,
    ) -> Result<Self, ProviderError> {
        Ok(HetznerProvider {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            stack,
            location,
            poll,
        })
    }
    fn pending() -> ProviderError {
        ProviderError::new(
            "NotAvailable",
            "the Hetzner provider is being built in this release",
        )
    }
}

impl Provider for HetznerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }
    async fn observe(&self) -> Result<Observed, ProviderError> {
        Err(Self::pending())
    }
    async fn create_network(&self, _: &NetworkSpec) -> Result<ObservedNetwork, ProviderError> {
        Err(Self::pending())
    }
    async fn update_network(&self, _: &str, _: &NetworkSpec) -> Result<(), ProviderError> {
        Err(Self::pending())
    }
    async fn delete_network(&self, _: &ObservedNetwork) -> Result<(), ProviderError> {
        Err(Self::pending())
    }
    async fn create_server(&self, _: &ServerSpec) -> Result<String, ProviderError> {
        Err(Self::pending())
    }
    async fn wait_running(&self, _: &str) -> Result<(), ProviderError> {
        Err(Self::pending())
    }
    async fn delete_server(&self, _: &str) -> Result<(), ProviderError> {
        Err(Self::pending())
    }
    async fn wait_deleted(&self, _: &[String]) -> Result<(), ProviderError> {
        Err(Self::pending())
    }
}

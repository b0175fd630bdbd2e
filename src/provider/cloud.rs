//! The cloud of a stack, chosen at run time: the real clients behind one [`Provider`].

use super::{
    NetworkSpec, Observed, ObservedNetwork, Provider, ProviderError, ServerSpec, Shape, aws,
    hetzner,
};
use crate::stack::ProviderKind;

/// The cloud of a stack, chosen at run time.
pub enum Cloud {
    /// Boxed: the SDK client is large, and a `Cloud` is moved around by value.
    Aws(Box<aws::AwsProvider>),
    Hetzner(hetzner::HetznerProvider),
}

macro_rules! delegate {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Cloud::Aws($p) => $e,
            Cloud::Hetzner($p) => $e,
        }
    };
}

impl Provider for Cloud {
    fn kind(&self) -> ProviderKind {
        delegate!(self, p => p.kind())
    }
    async fn observe(&self) -> Result<Observed, ProviderError> {
        delegate!(self, p => p.observe().await)
    }
    async fn preflight(&self, shapes: &[Shape]) -> Result<(), ProviderError> {
        delegate!(self, p => p.preflight(shapes).await)
    }
    async fn create_network(&self, spec: &NetworkSpec) -> Result<ObservedNetwork, ProviderError> {
        delegate!(self, p => p.create_network(spec).await)
    }
    async fn update_network(&self, id: &str, spec: &NetworkSpec) -> Result<(), ProviderError> {
        delegate!(self, p => p.update_network(id, spec).await)
    }
    async fn delete_network(&self, network: &ObservedNetwork) -> Result<(), ProviderError> {
        delegate!(self, p => p.delete_network(network).await)
    }
    async fn create_server(&self, spec: &ServerSpec) -> Result<String, ProviderError> {
        delegate!(self, p => p.create_server(spec).await)
    }
    async fn wait_running(&self, id: &str) -> Result<(), ProviderError> {
        delegate!(self, p => p.wait_running(id).await)
    }
    async fn delete_server(&self, id: &str) -> Result<(), ProviderError> {
        delegate!(self, p => p.delete_server(id).await)
    }
    async fn wait_deleted(&self, ids: &[String]) -> Result<(), ProviderError> {
        delegate!(self, p => p.wait_deleted(ids).await)
    }
}

impl Cloud {
    /// The monthly list price of a server size here, when the cloud publishes one
    /// (`Ok(None)`: no price for this size and place, or no price source; see
    /// [`Profile::no_prices`]).
    pub async fn monthly_price(
        &self,
        size: &str,
    ) -> Result<Option<hetzner::MonthlyPrice>, ProviderError> {
        match self {
            Cloud::Hetzner(h) => h.monthly_price(size).await,
            Cloud::Aws(_) => Ok(None),
        }
    }
}

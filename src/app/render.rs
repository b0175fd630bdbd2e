//! `render`: each agent's cloud-init document (a Kubernetes stack: its manifests; a Docker
//! stack: its volumes and containers' create bodies), masked or with real values.

use std::time::Duration;

use super::{Session, fleet};
use crate::error::Result;
use crate::render::{self, Values};
use crate::stack::{Agent, Config};

/// The name of a Kubernetes stack's own document (namespace, NetworkPolicies; Docker: the
/// network and images). An agent name is a DNS label, so it cannot be this.
pub const STACK_DOCUMENT: &str = "_stack";

/// One agent's document: cloud-init on a cloud, manifests on Kubernetes, the containers'
/// create bodies on Docker. `key_id`: the public id of the agent's gateway key (Docker
/// labels carry it).
fn document(config: &Config, agent: &Agent, values: &Values, key_id: &str) -> Result<String> {
    if let Some(d) = super::docker::settings(config) {
        return Ok(render::docker::agent_document(
            config, d, agent, values, key_id,
        ));
    }
    Ok(match render::kubernetes::settings(config) {
        Some(k) => render::kubernetes::agent_document(config, k, agent, values),
        None => render::render(config, agent, values)?,
    })
}

/// The stack's own document, first, when it has one (Kubernetes, Docker).
fn with_stack_document(config: &Config, docs: Vec<(String, String)>) -> Vec<(String, String)> {
    let stack = if let Some(d) = super::docker::settings(config) {
        render::docker::stack_document(config, d)
    } else if let Some(k) = render::kubernetes::settings(config) {
        render::kubernetes::stack_document(config, k)
    } else {
        return docs;
    };
    std::iter::once((STACK_DOCUMENT.to_string(), stack))
        .chain(docs)
        .collect()
}

/// Render `agents` in memory (a failure leaves nothing half written). With real values, the
/// gateway keys come from state; missing ones are created under the stack's lock (waiting up
/// to `lock_wait`).
pub fn documents(
    session: &Session,
    agents: &[&Agent],
    show_secrets: bool,
    lock_wait: Duration,
) -> Result<Vec<(String, String)>> {
    let config = &session.config;
    if !show_secrets {
        let docs = agents
            .iter()
            .map(|a| Ok((a.name.clone(), document(config, a, &Values::Masked, "")?)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(with_stack_document(config, docs));
    }
    // Every secret resolves before any state is touched.
    let secrets = agents
        .iter()
        .map(|a| fleet::resolve_secrets(config, a, &session.keyring, &session.env))
        .collect::<Result<Vec<_>>>()?;
    let keys = session.gateway_keys("render", lock_wait)?;
    // A VM or pod without a key gets one minted at deploy; a Docker agent without one has no
    // sidecar: render what deploy makes.
    let placeholder = if config.provider.kind() == crate::stack::ProviderKind::Docker {
        crate::secrets::Secret::new(String::new())
    } else {
        fleet::minted_placeholder()
    };
    let docs = agents
        .iter()
        .zip(&secrets)
        .map(|(a, s)| {
            let key = keys.get(&a.name);
            let token = key.map(|k| k.token()).unwrap_or_default();
            let key_id = key.map(|k| k.key_id()).unwrap_or_default();
            let values = Values::Real {
                tailscale_auth_key: s.auth_key.as_ref().unwrap_or(&placeholder),
                env: s.env.clone(),
                gateway_token: &token,
            };
            Ok((a.name.clone(), document(config, a, &values, &key_id)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(with_stack_document(config, docs))
}

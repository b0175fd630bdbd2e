//! `render`: each agent's cloud-init document (a Kubernetes stack: its manifests), masked or
//! with real values.

use std::time::Duration;

use super::{Session, fleet};
use crate::error::Result;
use crate::render::{self, Values};
use crate::stack::{Agent, Config};

/// The name of a Kubernetes stack's own document (namespace, NetworkPolicies). An agent name
/// is a DNS label, so it cannot be this.
pub const STACK_DOCUMENT: &str = "_stack";

/// One agent's document: cloud-init on a cloud, manifests on Kubernetes.
fn document(config: &Config, agent: &Agent, values: &Values) -> Result<String> {
    Ok(match render::kubernetes::settings(config) {
        Some(k) => render::kubernetes::agent_document(config, k, agent, values),
        None => render::render(config, agent, values)?,
    })
}

/// The stack's own document, first, when it has one (Kubernetes).
fn with_stack_document(config: &Config, docs: Vec<(String, String)>) -> Vec<(String, String)> {
    match render::kubernetes::settings(config) {
        Some(k) => std::iter::once((
            STACK_DOCUMENT.to_string(),
            render::kubernetes::stack_document(config, k),
        ))
        .chain(docs)
        .collect(),
        None => docs,
    }
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
            .map(|a| Ok((a.name.clone(), document(config, a, &Values::Masked)?)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(with_stack_document(config, docs));
    }
    // Every secret resolves before any state is touched.
    let secrets = agents
        .iter()
        .map(|a| fleet::resolve_secrets(config, a, &session.keyring, &session.env))
        .collect::<Result<Vec<_>>>()?;
    let keys = session.gateway_keys("render", lock_wait)?;
    let placeholder = fleet::minted_placeholder();
    let docs = agents
        .iter()
        .zip(&secrets)
        .map(|(a, s)| {
            let token = keys.get(&a.name).map(|k| k.token()).unwrap_or_default();
            let values = Values::Real {
                tailscale_auth_key: s.auth_key.as_ref().unwrap_or(&placeholder),
                env: s.env.clone(),
                gateway_token: &token,
            };
            Ok((a.name.clone(), document(config, a, &values)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(with_stack_document(config, docs))
}

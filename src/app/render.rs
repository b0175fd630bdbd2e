//! `render`: each agent's cloud-init document, masked or with real values.

use std::time::Duration;

use super::{Session, fleet};
use crate::error::Result;
use crate::render::{self, Values};
use crate::stack::Agent;

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
        return agents
            .iter()
            .map(|a| Ok((a.name.clone(), render::render(config, a, &Values::Masked)?)))
            .collect();
    }
    // Every secret resolves before any state is touched.
    let secrets = agents
        .iter()
        .map(|a| fleet::resolve_secrets(config, a, &session.keyring, &session.env))
        .collect::<Result<Vec<_>>>()?;
    let keys = session.gateway_keys("render", lock_wait)?;
    let placeholder = fleet::minted_placeholder();
    agents
        .iter()
        .zip(&secrets)
        .map(|(a, s)| {
            let token = keys.get(&a.name).map(|k| k.token()).unwrap_or_default();
            let values = Values::Real {
                tailscale_auth_key: s.auth_key.as_ref().unwrap_or(&placeholder),
                env: s.env.clone(),
                gateway_token: &token,
            };
            Ok((a.name.clone(), render::render(config, a, &values)?))
        })
        .collect()
}

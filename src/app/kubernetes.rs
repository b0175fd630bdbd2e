//! Kubernetes stacks: `deploy` as server-side applies of the rendered objects, `destroy` as
//! deletes by label. No state of servers is kept: the API server holds the objects, their
//! labels find them again.

use std::time::Duration;

use serde_json::Value;

use super::{Session, fleet};
use crate::env::vars;
use crate::error::{Error, Result};
use crate::provider::kubernetes::{self as kube, Request, client::KubeClient, kubeconfig};
use crate::render::{self, Values, kubernetes as manifests};

/// What one request did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    pub method: &'static str,
    pub path: String,
    /// `Kind/name` for an apply; how many objects went for a delete.
    pub what: String,
}

/// The stack's objects with real values: its own first, then each agent's. The gateway keys
/// come from state (missing ones are created under the stack's lock), as `render
/// --show-secrets` does.
pub fn objects(session: &Session, lock_wait: Duration) -> Result<Vec<Value>> {
    let config = &session.config;
    let Some(k) = manifests::settings(config) else {
        return Ok(Vec::new());
    };
    let secrets = config
        .agents
        .iter()
        .map(|a| fleet::resolve_secrets(config, a, &session.keyring, &session.env))
        .collect::<Result<Vec<_>>>()?;
    let keys = session.gateway_keys("deploy", lock_wait)?;
    let placeholder = fleet::minted_placeholder();
    let mut out = manifests::stack_objects(config, k);
    for (a, s) in config.agents.iter().zip(&secrets) {
        let token = keys.get(&a.name).map(|k| k.token()).unwrap_or_default();
        let values = Values::Real {
            tailscale_auth_key: s.auth_key.as_ref().unwrap_or(&placeholder),
            env: s.env.clone(),
            gateway_token: &token,
        };
        out.extend(render::kubernetes::agent_objects(config, k, a, &values));
    }
    Ok(out)
}

/// The API server of the stack's context, from the kubeconfig.
pub fn connect(session: &Session) -> Result<(KubeClient, String)> {
    let k = manifests::settings(&session.config)
        .ok_or_else(|| Error::Input("not a Kubernetes stack".into()))?;
    let target = kubeconfig::resolve(&session.env, k.context.as_deref())?;
    let timeout = session
        .env
        .get(vars::REQUEST_TIMEOUT_MS)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60));
    let client = KubeClient::new(&target, timeout)?;
    Ok((client, target.source))
}

/// The applies of `objects`, in order (namespace first, then what lives in it).
pub fn apply_requests(objects: &[Value]) -> Result<Vec<(String, Request)>> {
    objects
        .iter()
        .map(|o| {
            let what = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            kube::apply(o)
                .map(|r| (what, r))
                .map_err(|e| Error::Input(format!("cannot apply an object: {e}")))
        })
        .collect()
}

/// Send `requests` one after the other; the first failure stops the run (what came before
/// stays applied, and a new `deploy` applies everything again).
pub async fn send(client: &KubeClient, requests: Vec<(String, Request)>) -> Result<Vec<Done>> {
    let mut done = Vec::new();
    for (what, r) in requests {
        let answer = client.send(&r).await?;
        let what = if r.method == "DELETE" {
            let n = answer["items"].as_array().map(|i| i.len()).unwrap_or(0);
            format!("{what} ({n} deleted)")
        } else {
            what
        };
        done.push(Done {
            method: r.method,
            path: r.path,
            what,
        });
    }
    Ok(done)
}

/// The deletes of the stack's objects by label (volumes and namespace only when asked).
pub fn delete_requests(session: &Session, delete_volumes: bool) -> Vec<(String, Request)> {
    let config = &session.config;
    let Some(k) = manifests::settings(config) else {
        return Vec::new();
    };
    kube::delete_by_label(
        &k.namespace,
        &manifests::stack_selector(config),
        delete_volumes,
    )
    .into_iter()
    .map(|r| {
        let kind = r
            .path
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        (kind, r)
    })
    .collect()
}

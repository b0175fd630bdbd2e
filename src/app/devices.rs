//! Tailnet housekeeping around deploy and destroy: removing the devices of agents that are
//! replaced or destroyed (so hostnames stay exact), and minting per-agent auth keys.

use std::collections::BTreeMap;

use crate::env::{Env, vars};
use crate::error::{Error, Result};
use crate::secrets::{Keyring, Secret};
use crate::stack::Config;
use crate::stack::model::{TAILSCALE_API_KEY, TAILSCALE_OAUTH_ID, TAILSCALE_OAUTH_SECRET};
use crate::tailscale_api::{self, Credentials, TailscaleApi};

/// A client when the stack has API credentials.
pub async fn client(env: &Env, config: &Config, keyring: &Keyring) -> Result<Option<TailscaleApi>> {
    let resolve = |name: &str| -> Result<Option<Secret>> {
        match config.secrets.get(name) {
            Some(r) => keyring
                .resolve(r, env)
                .map(Some)
                .map_err(|e| Error::secret(name, e)),
            None => Ok(None),
        }
    };
    let creds = match (
        resolve(TAILSCALE_OAUTH_ID)?,
        resolve(TAILSCALE_OAUTH_SECRET)?,
        resolve(TAILSCALE_API_KEY)?,
    ) {
        (Some(client_id), Some(client_secret), _) => Credentials::OAuth {
            client_id,
            client_secret,
        },
        (_, _, Some(k)) => Credentials::ApiKey(k),
        _ => return Ok(None),
    };
    let base = env
        .get(vars::TAILSCALE_API)
        .unwrap_or(tailscale_api::DEFAULT_BASE);
    TailscaleApi::connect(base, creds)
        .await
        .map(Some)
        .map_err(Error::Tailscale)
}

/// Remove the devices holding `hosts` (exact name or `-N` duplicates). Devices whose name is
/// exactly one of `protect` (live agents that stay) are never touched. Without a client, tell
/// the user what to remove by hand.
pub async fn clean(
    api: Option<&TailscaleApi>,
    hosts: &[String],
    protect: &[String],
    json: bool,
) -> Result<Vec<String>> {
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let Some(api) = api else {
        eprintln!(
            "note: no Tailscale API credentials (`{TAILSCALE_API_KEY}` or an OAuth client) in the stack, so stale tailnet devices are not removed.\n      Remove these by hand at https://login.tailscale.com/admin/machines so new VMs get their exact names: {}",
            hosts
                .iter()
                .map(|h| format!("{h} (and {h}-1, {h}-2, ...)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(Vec::new());
    };
    let devices = api.devices().await.map_err(Error::Tailscale)?;
    let mut removed = Vec::new();
    for d in &devices {
        let label = d.name.split('.').next().unwrap_or_default();
        if protect.iter().any(|p| p == label) {
            continue;
        }
        if hosts.iter().any(|h| tailscale_api::matches_host(d, h)) {
            api.delete_device(&d.id).await.map_err(Error::Tailscale)?;
            if !json {
                eprintln!("removed tailnet device {} ({})", d.name, d.id);
            }
            removed.push(d.name.clone());
        }
    }
    Ok(removed)
}

/// Mint one single-use, pre-authorized key per agent (OAuth clients only).
pub async fn mint(
    api: Option<&TailscaleApi>,
    config: &Config,
    agents: &[String],
) -> Result<BTreeMap<String, Secret>> {
    let mut out = BTreeMap::new();
    let Some(api) = api.filter(|a| a.can_mint()) else {
        return Ok(out);
    };
    for name in agents {
        let host = crate::naming::hostname(&config.stack, name);
        let (_, key) = api
            .mint_key(&config.tailscale_tags, &format!("agent-army {host}"))
            .await
            .map_err(Error::Tailscale)?;
        out.insert(name.clone(), key);
    }
    Ok(out)
}

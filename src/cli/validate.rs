//! `validate`: configuration, secrets, and a full render of every agent.

use super::Ctx;
use crate::app::fleet;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::token::GatewayKey;

pub fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let (config, keyring) = (&session.config, &session.keyring);
    let state = session.read_state()?;
    // Existing gateway keys must decrypt; agents without one yet get a throwaway key, which
    // has the same size, so the size check is exact.
    let keys = fleet::load_keys(
        &state,
        config,
        keyring,
        &ctx.env,
        config.agents.iter().map(|a| a.name.clone()),
    )?;
    let mut sizes = Vec::new();
    for agent in &config.agents {
        let secrets = fleet::resolve_secrets(config, agent, keyring, &ctx.env)?;
        let key = keys
            .get(&agent.name)
            .cloned()
            .unwrap_or_else(GatewayKey::generate);
        let data = match crate::render::kubernetes::settings(config) {
            // A Kubernetes stack's agents are manifests, not user data.
            Some(k) => {
                let token = key.token();
                let placeholder = fleet::minted_placeholder();
                let values = crate::render::Values::Real {
                    tailscale_auth_key: secrets.auth_key.as_ref().unwrap_or(&placeholder),
                    env: secrets.env.clone(),
                    gateway_token: &token,
                };
                let objects = crate::render::kubernetes::agent_objects(config, k, agent, &values);
                crate::render::kubernetes::check_limits(agent, &objects).map_err(Error::Input)?;
                crate::render::yaml::documents(&objects).into_bytes()
            }
            None => fleet::real_user_data(config, agent, &secrets, &key, None)?,
        };
        sizes.push((agent.name.clone(), data.len()));
    }
    let what = if crate::render::kubernetes::settings(config).is_some() {
        "manifests"
    } else {
        "user data"
    };
    if ctx.json() {
        let doc = serde_json::json!({
            "valid": true,
            "project": config.project,
            "stack": config.stack,
            "agents": sizes.iter().map(|(n, s)| serde_json::json!({"agent": n, "user_data_bytes": s})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for (n, s) in &sizes {
            println!("  ✓ {n}: {what} {s} bytes");
        }
        println!(
            "Stack `{}` is valid: {} agents, all secrets resolve.",
            config.stack,
            config.agents.len()
        );
    }
    Ok(ExitStatus::Success)
}

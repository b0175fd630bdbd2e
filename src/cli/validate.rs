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
        let docker = crate::app::docker::settings(config);
        let data = match (docker, crate::render::kubernetes::settings(config)) {
            // A Docker stack's agents are containers: their create bodies and the files
            // copied in (configuration, workspace, environment file, the sidecar's key).
            (Some(d), _) => {
                let token = key.token();
                let none = crate::secrets::Secret::new(String::new());
                let values = crate::render::Values::Real {
                    tailscale_auth_key: secrets.auth_key.as_ref().unwrap_or(&none),
                    env: secrets.env.clone(),
                    gateway_token: &token,
                };
                let a = crate::render::docker::agent_containers(
                    config,
                    d,
                    agent,
                    &values,
                    &key.key_id(),
                    Some(crate::render::docker::RENDER_PORT),
                );
                let mut bytes = Vec::new();
                for c in a.sidecar.iter().chain(std::iter::once(&a.openclaw)) {
                    // What deploy sends: it must read as the Engine API's create body.
                    crate::provider::docker::engine_body(c)
                        .map_err(|e| Error::Input(e.to_string()))?;
                    bytes.extend(
                        crate::render::docker::create_body(c)
                            .to_string()
                            .into_bytes(),
                    );
                    for f in &c.files {
                        bytes.extend_from_slice(&f.content);
                    }
                }
                bytes
            }
            // A Kubernetes stack's agents are manifests, not user data.
            (None, Some(k)) => {
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
            (None, None) => fleet::real_user_data(config, agent, &secrets, &key, None)?,
        };
        sizes.push((agent.name.clone(), data.len()));
    }
    // What was rendered and checked for each agent, as the output names it.
    let (what, checked) = if crate::app::docker::settings(config).is_some() {
        (
            "containers",
            "every agent's containers build (create bodies and the files copied in)",
        )
    } else if crate::render::kubernetes::settings(config).is_some() {
        (
            "manifests",
            "every agent's manifests render within Kubernetes' limits",
        )
    } else {
        (
            "user data",
            "every agent's user data renders within the cloud's limit",
        )
    };
    if ctx.json() {
        let doc = serde_json::json!({
            "valid": true,
            "project": config.project,
            "stack": config.stack,
            "rendered": what,
            "checked": checked,
            "agents": sizes.iter().map(|(n, s)| serde_json::json!({"agent": n, "user_data_bytes": s, "rendered_bytes": s})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for (n, s) in &sizes {
            println!("  ✓ {n}: {what} {s} bytes");
        }
        println!(
            "Stack `{}` is valid: {} agents, all secrets resolve, {checked}.",
            config.stack,
            config.agents.len()
        );
    }
    Ok(ExitStatus::Success)
}

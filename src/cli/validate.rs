//! `validate`: configuration, secrets, and a full render of every agent.

use super::{Ctx, fleet};
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::secrets::Keyring;
use crate::state::StateStore;
use crate::token::GatewayKey;

pub fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let config = ctx.config()?;
    let keyring = Keyring::load(&ctx.env);
    let store = StateStore::new(&config.root, &config.stack, &ctx.env);
    let state = store.read_or_new(&config.project, &config.stack, config.provider.kind())?;
    // Existing gateway keys must decrypt; agents without one yet get a throwaway key, which
    // has the same size, so the size check is exact.
    let keys = fleet::load_keys(
        &state,
        &keyring,
        config.agents.iter().map(|a| a.name.clone()),
    )?;
    let mut sizes = Vec::new();
    for agent in &config.agents {
        let secrets = fleet::resolve_secrets(&config, agent, &keyring, &ctx.env)?;
        let key = keys
            .get(&agent.name)
            .cloned()
            .unwrap_or_else(GatewayKey::generate);
        let data = fleet::real_user_data(&config, agent, &secrets, &key, None)?;
        sizes.push((agent.name.clone(), data.len()));
    }
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
            println!("  ✓ {n}: user data {s} bytes");
        }
        println!(
            "Stack `{}` is valid: {} agents, all secrets resolve.",
            config.stack,
            config.agents.len()
        );
    }
    Ok(ExitStatus::Success)
}

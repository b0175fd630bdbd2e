//! `render --out DIR`: each agent's cloud-init, masked unless `--show-secrets`.

use std::path::PathBuf;

use clap::Args;

use super::{Ctx, fleet};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::render::{self, Values};
use crate::secrets::Keyring;
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Folder to write `<agent>.yaml` files into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Put real secret values and gateway tokens in the files (mode 0600)
    #[arg(long)]
    pub show_secrets: bool,
    /// Only this agent
    #[arg(long)]
    pub agent: Option<String>,
}

pub fn run(ctx: &Ctx, args: RenderArgs) -> Result<ExitStatus> {
    let config = ctx.config()?;
    let agents: Vec<_> = match &args.agent {
        Some(n) => vec![super::find_agent(&config, n)?],
        None => config.agents.iter().collect(),
    };
    // Render everything in memory first: a failure leaves no partial output.
    let mut docs = Vec::new();
    if args.show_secrets {
        let keyring = Keyring::load(&ctx.env);
        let store = StateStore::new(&config.root, &config.stack, &ctx.env);
        let mut state =
            store.read_or_new(&config.project, &config.stack, config.provider.kind())?;
        let (keys, changed) = fleet::ensure_keys(&mut state, &config, &keyring, &ctx.env)?;
        for a in &agents {
            let secrets = fleet::resolve_secrets(&config, a, &keyring, &ctx.env)?;
            let token = keys.get(&a.name).map(|k| k.token()).unwrap_or_default();
            let placeholder = fleet::minted_placeholder();
            let values = Values::Real {
                tailscale_auth_key: secrets.auth_key.as_ref().unwrap_or(&placeholder),
                env: secrets.env.clone(),
                gateway_token: &token,
            };
            docs.push((a.name.clone(), render::render(&config, a, &values)?));
        }
        if changed {
            store.write(&mut state)?;
        }
    } else {
        for a in &agents {
            docs.push((a.name.clone(), render::render(&config, a, &Values::Masked)?));
        }
    }
    let out = ctx.cwd.join(&args.out);
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    for (name, doc) in &docs {
        let path = out.join(format!("{name}.yaml"));
        let r = if args.show_secrets {
            crate::fsutil::write_private_atomic(&path, doc.as_bytes())
        } else {
            crate::fsutil::write_atomic(&path, doc.as_bytes())
        };
        r.map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if !ctx.json() && !ctx.global.quiet {
            println!("wrote {} ({} bytes)", path.display(), doc.len());
        }
    }
    if ctx.json() {
        let files: Vec<_> = docs
            .iter()
            .map(|(n, d)| serde_json::json!({"agent": n, "path": out.join(format!("{n}.yaml")), "bytes": d.len()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"files": files, "secrets_shown": args.show_secrets})
            )
            .unwrap_or_default()
        );
    }
    Ok(ExitStatus::Success)
}

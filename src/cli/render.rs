//! `render --out DIR`: each agent's cloud-init (Kubernetes: its manifests; Docker: its
//! containers' create bodies and files), masked unless `--show-secrets`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::Ctx;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Folder to write `<agent>.yaml` files into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Put real secret values and gateway tokens in the files (mode 0600); creates missing
    /// gateway keys in state, under the stack's lock
    #[arg(long)]
    pub show_secrets: bool,
    /// Only this agent
    #[arg(long)]
    pub agent: Option<String>,
    /// With --show-secrets: wait this long for another run's lock (e.g. 30s, 5m)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
}

pub fn run(ctx: &Ctx, args: RenderArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let agents: Vec<_> = match &args.agent {
        Some(n) => vec![super::find_agent(&session.config, n)?],
        None => session.config.agents.iter().collect(),
    };
    // Everything is rendered in memory first: a failure leaves no partial output.
    let docs =
        crate::app::render::documents(&session, &agents, args.show_secrets, args.lock_timeout)?;
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

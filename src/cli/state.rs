//! `state migrate`: move a stack's state between backends.

use std::time::Duration;

use clap::Subcommand;

use super::Ctx;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;

#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Copy the stack's state from another backend into the configured one; the source is
    /// left as it was
    #[command(
        after_help = "Examples:\n  # to S3: configure [state] (or AGENT_ARMY_STATE), then\n  agent-army -s prod state migrate --from local\n  # back: remove [state], then\n  agent-army -s prod state migrate --from s3://acme-state/agent-army?region=eu-central-1"
    )]
    Migrate {
        /// Where the state is now: `local`, or `s3://BUCKET[/PREFIX][?region=R&path_style=true]`
        #[arg(long, value_name = "BACKEND")]
        from: String,
        /// Replace state the target already holds
        #[arg(long)]
        force: bool,
        /// Wait this long for either backend's lock (e.g. 30s, 5m)
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        lock_timeout: Duration,
    },
}

pub fn run(ctx: &Ctx, cmd: StateCmd) -> Result<ExitStatus> {
    match cmd {
        StateCmd::Migrate {
            from,
            force,
            lock_timeout,
        } => {
            let session = ctx.session()?;
            let source = crate::app::session::parse_backend(&from, &session.config, &ctx.env)
                .map_err(|e| Error::Usage(format!("--from: {e}")))?;
            let done = crate::app::migrate::migrate(&session, source, force, lock_timeout)?;
            if ctx.json() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&done).unwrap_or_default()
                );
            } else {
                println!(
                    "copied the state of stack `{}` (serial {}, {} agents) from {} to {}; the source is unchanged: remove it once you trust the copy",
                    session.config.stack, done.serial, done.agents, done.from, done.to
                );
            }
            Ok(ExitStatus::Success)
        }
    }
}

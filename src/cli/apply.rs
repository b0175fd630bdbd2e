//! `plan`, `deploy`, `destroy` and `outputs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::Ctx;
use crate::app::apply::{self as usecase, Deploy, DeployOptions, Destroy, RunOptions};
use crate::app::fleet;
use crate::engine::Report;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::output::{self, Row};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::provider::Observed;
use crate::stack::Config;
use crate::state::State;

/// How agents that keep their VM are changed in place (`plan` shows it, `deploy` does it).
#[derive(Debug, Args, Clone, Default)]
pub struct InPlaceArgs {
    /// Also delete workspace files the agents made that are not in the project (their memory
    /// stays)
    #[arg(long)]
    pub prune: bool,
    /// Clear the agents' memory (MEMORY.md, memory/ and the memory index) in place
    #[arg(long)]
    pub reset_memory: bool,
    /// Remote user for in-place updates [default: the image's, ubuntu on AWS (through sudo)
    /// and root on Hetzner]
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
}

impl InPlaceArgs {
    fn options(&self) -> usecase::InPlace {
        usecase::InPlace {
            prune: self.prune,
            reset_memory: self.reset_memory,
            ssh_user: self.ssh_user.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 0 when there are no changes, 2 when there are, 1 on error (as Terraform)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Query the cloud (default: only when state records something)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub refresh: Option<bool>,
    /// Plan to replace this agent even if unchanged (repeatable)
    #[arg(long, value_name = "AGENT")]
    pub replace: Vec<String>,
    #[command(flatten)]
    pub in_place: InPlaceArgs,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Most agents to change at once (default: as many as the cloud's API allows; calls are
    /// paced by its rate limits either way)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: Option<u16>,
    /// Replace this agent even if unchanged (repeatable)
    #[arg(long, value_name = "AGENT")]
    pub replace: Vec<String>,
    /// Show gateway tokens in the output
    #[arg(long)]
    pub show_secrets: bool,
    /// Wait this long for another run's lock (e.g. 30s, 5m)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// Encrypt new keys for the stack's recipients even if no identity here can read them
    #[arg(long)]
    pub allow_foreign_recipients: bool,
    #[command(flatten)]
    pub in_place: InPlaceArgs,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Most servers to destroy at once (default: as many as the cloud's API allows)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: Option<u16>,
    /// Wait this long for another run's lock (e.g. 30s, 5m)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// Kubernetes and Docker stacks: also delete the agents' volumes (their data; on
    /// Kubernetes, the namespace too)
    #[arg(long, visible_alias = "purge")]
    pub delete_volumes: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  agent-army -s dev force-unlock 1a2b3c4d   # the id is in the `locked by` message"
)]
pub struct ForceUnlockArgs {
    /// Lock id, as shown in the "locked by" error
    pub id: String,
}

#[derive(Debug, Args)]
pub struct OutputsArgs {
    /// Show gateway tokens
    #[arg(long)]
    pub show_secrets: bool,
}

pub(super) fn check_replace(config: &Config, names: &[String]) -> Result<BTreeSet<String>> {
    names
        .iter()
        .map(|n| super::find_agent(config, n).map(|a| a.name.clone()))
        .collect()
}

fn print_plan(ctx: &Ctx, config: &Config, plan: &Plan) {
    if ctx.json() {
        return;
    }
    anstream::println!(
        "{}",
        crate::cli::style::plan(&output::plan_text(config, plan))
    );
}

pub async fn plan(ctx: &Ctx, args: PlanArgs) -> Result<ExitStatus> {
    let detailed = args.detailed_exitcode;
    match plan_inner(ctx, args).await {
        Ok(s) => Ok(s),
        Err(e) if detailed => {
            eprintln!("{}", e.render());
            Ok(ExitStatus::Failure)
        }
        Err(e) => Err(e),
    }
}

async fn plan_inner(ctx: &Ctx, args: PlanArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let force = check_replace(config, &args.replace)?;
    let planned = usecase::plan(&session, &force, args.refresh, &args.in_place.options()).await?;
    if let Some(why) = &planned.not_queried
        && !ctx.global.quiet
    {
        eprintln!(
            "note: the cloud was not queried ({why}); servers this stack may already have are not shown"
        );
    }
    let plan = &planned.plan;
    if ctx.json() {
        let doc = serde_json::json!({
            "project": config.project,
            "stack": config.stack,
            "provider": config.provider.kind(),
            "plan": plan,
            "changes": plan.has_changes(),
            "cost": planned.cost,
            "agents": config.agents.iter().map(|a| serde_json::json!({
                "agent": a.name,
                "hostname": a.fqdn,
                "gateway_url": fleet::gateway_url(&a.fqdn, None),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_plan(ctx, config, plan);
        println!("{}", output::cost_text(&planned.cost));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

/// Ask for confirmation, or require `--yes` when nobody can answer.
pub(super) fn approve(ctx: &Ctx, yes: bool, prompt: &str, expected: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if ctx.env.is_ci() || !std::io::stdin().is_terminal() {
        return Err(Error::Unconfirmed);
    }
    use std::io::Write;
    eprint!("{prompt} ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::Input(format!("cannot read the answer: {e}")))?;
    if line.trim() == expected {
        Ok(())
    } else {
        Err(Error::Declined)
    }
}

/// `destroy`'s confirmation: the stack's name, typed (unless `--yes`).
pub(super) fn approve_destroy(ctx: &Ctx, yes: bool, stack: &str) -> Result<()> {
    approve(
        ctx,
        yes,
        &format!("Type the stack name (`{stack}`) to confirm:"),
        stack,
    )
}

pub fn force_unlock(ctx: &Ctx, args: ForceUnlockArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let project = &session.config;
    match session.store.force_unlock(&args.id) {
        Ok(crate::lock::Unlocked::Removed(h)) => {
            eprintln!(
                "removed the lock of stack `{}` held by {h}; if that process is still running, stop it: two runs on one stack can duplicate resources",
                project.stack
            );
            Ok(ExitStatus::Success)
        }
        Ok(crate::lock::Unlocked::NotHeld) => {
            eprintln!("stack `{}` was not locked; nothing to do", project.stack);
            Ok(ExitStatus::Success)
        }
        Err(e) => Err(Error::Usage(e.to_string())),
    }
}

/// How an apply runs from the command line; interrupts are watched from here on.
fn run_options(ctx: &Ctx, parallelism: Option<u16>) -> RunOptions {
    let stop = Arc::new(AtomicBool::new(false));
    watch_interrupts(stop.clone());
    RunOptions {
        progress: Progress::new(ctx.env.is_ci(), ctx.global.quiet),
        parallelism: parallelism.map(usize::from),
        stop,
        quiet_devices: ctx.json(),
    }
}

/// First Ctrl-C / SIGTERM: stop starting new work. Second: exit at once.
fn watch_interrupts(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            {
                let term_fut = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term_fut => {},
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting now; the next run will converge");
                std::process::exit(ExitStatus::Interrupted.code());
            }
            eprintln!(
                "\ninterrupt: finishing calls in flight and saving state (interrupt again to exit now)"
            );
        }
    });
}

fn rows_from(
    config: &Config,
    state: &State,
    observed: Option<&Observed>,
    report: Option<&Report>,
    tokens: &BTreeMap<String, String>,
) -> Vec<Row> {
    config
        .agents
        .iter()
        .map(|a| {
            let (server_id, word) = fleet::server_word(state, observed, &a.name);
            let outcome = report.and_then(|r| r.outcomes.iter().find(|o| o.agent == a.name));
            let state_word = match (outcome, &server_id) {
                (Some(o), _) if o.error.is_some() => format!(
                    "failed ({})",
                    o.error.as_ref().map(|e| e.code.as_str()).unwrap_or("")
                ),
                (Some(_), Some(_)) => "running".into(),
                _ => word,
            };
            Row {
                agent: a.name.clone(),
                hostname: a.fqdn.clone(),
                server_id,
                state: state_word,
                gateway_url: fleet::gateway_url(&a.fqdn, tokens.get(&a.name).map(String::as_str)),
            }
        })
        .collect()
}

pub(super) fn print_rows(ctx: &Ctx, config: &Config, rows: &[Row], extra: serde_json::Value) {
    if ctx.json() {
        let mut doc = serde_json::to_value(output::Outputs {
            project: &config.project,
            stack: &config.stack,
            provider: config.provider.kind(),
            agents: rows,
        })
        .unwrap_or_default();
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", output::table(rows));
    }
}

pub async fn deploy(ctx: &Ctx, args: DeployArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let replace = check_replace(config, &args.replace)?;
    let deploy = Deploy::prepare(
        &session,
        DeployOptions {
            replace,
            lock_timeout: args.lock_timeout,
            allow_foreign_recipients: args.allow_foreign_recipients,
            in_place: args.in_place.options(),
        },
    )
    .await?;
    print_plan(ctx, config, &deploy.plan);
    let tokens = if args.show_secrets {
        deploy.tokens()
    } else {
        BTreeMap::new()
    };
    if deploy.is_noop() {
        let (state, observed) = deploy.finish_noop()?;
        let rows = rows_from(config, &state, Some(&observed), None, &tokens);
        print_rows(ctx, config, &rows, serde_json::json!({"changed": false}));
        return Ok(ExitStatus::Success);
    }
    if deploy.plan.has_changes() {
        approve(
            ctx,
            args.yes,
            "Do you want to perform these actions? Only 'yes' will be accepted:",
            "yes",
        )?;
    }
    let (state, report) = deploy.apply(run_options(ctx, args.parallelism)).await?;
    let rows = rows_from(config, &state, None, Some(&report), &tokens);
    print_rows(
        ctx,
        config,
        &rows,
        serde_json::json!({"changed": true, "failed": report.failed()}),
    );
    for o in report.outcomes.iter().filter(|o| o.error.is_some()) {
        if let Some(e) = &o.error {
            eprintln!("error: {}: {e}", o.agent);
            if let Some(a) = &e.advice {
                eprintln!("  help: {a}");
            }
        }
    }
    if let Some(e) = &report.network_error {
        eprintln!("error: network: {e}");
    }
    if report.interrupted {
        return Err(Error::Interrupted);
    }
    let failed = report.failed();
    if failed > 0 {
        return Err(Error::Apply {
            failed,
            total: report.outcomes.len() + 1,
        });
    }
    Ok(ExitStatus::Success)
}

pub async fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let destroy = Destroy::prepare(&session, args.lock_timeout).await?;
    print_plan(ctx, config, &destroy.plan);
    let servers = destroy.servers();
    let networks = destroy.plan.network.len();
    if servers == 0 && networks == 0 {
        destroy.finish_empty()?;
        if ctx.json() {
            println!(
                "{}",
                serde_json::json!({"stack": config.stack, "destroyed": {"servers": 0, "networks": 0}})
            );
        } else {
            println!("Nothing to destroy for stack `{}`.", config.stack);
        }
        return Ok(ExitStatus::Success);
    }
    approve(
        ctx,
        args.yes,
        &format!(
            "This destroys {servers} server(s) of stack `{}`. Type the stack name to confirm:",
            config.stack
        ),
        &config.stack,
    )?;
    let report = destroy.apply(run_options(ctx, args.parallelism)).await?;
    let failed = report.failed();
    for o in &report.outcomes {
        if let Some(e) = &o.error {
            eprintln!("error: {}: {e}", o.agent);
        }
    }
    if let Some(e) = &report.network_error {
        eprintln!("error: network: {e}");
    }
    if report.interrupted {
        return Err(Error::Interrupted);
    }
    if failed > 0 {
        return Err(Error::Apply {
            failed,
            total: servers + networks,
        });
    }
    if ctx.json() {
        println!(
            "{}",
            serde_json::json!({"stack": config.stack, "destroyed": {"servers": servers, "networks": networks}})
        );
    } else {
        println!(
            "Destroyed {servers} server(s) and {networks} {}(s) of stack `{}`; state cleared.",
            output::network_noun(config.provider.kind()),
            config.stack
        );
    }
    Ok(ExitStatus::Success)
}

pub fn outputs(ctx: &Ctx, args: OutputsArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let out = usecase::outputs(&session, args.show_secrets)?;
    for (agent, have, now) in &out.stale {
        eprintln!(
            "warning: {agent}: its gateway key changed since it was deployed (key id {have} on the server, {now} now); the token is not shown\n  help: run `agent-army deploy` to apply the new key"
        );
    }
    let rows = rows_from(config, &out.state, None, None, &out.tokens);
    let extra = if out.stale.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "stale_tokens": out.stale.iter().map(|s| &s.0).collect::<Vec<_>>() })
    };
    print_rows(ctx, config, &rows, extra);
    Ok(ExitStatus::Success)
}

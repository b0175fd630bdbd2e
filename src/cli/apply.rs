//! `plan`, `deploy`, `destroy` and `outputs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::Ctx;
use crate::app::cloud::{self, provider_error};
use crate::app::{Session, devices, fleet};
use crate::engine::{Engine, Prepared, Report, SharedState};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::lock::LockGuard;
use crate::output::{self, Row};
use crate::plan::{self, AgentAction, Plan, PlanInput};
use crate::progress::Progress;
use crate::provider::{NetworkSpec, Observed, Provider, ServerSpec};
use crate::stack::Config;
use crate::state::State;

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
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How many agents to create or destroy at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
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
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How many servers to destroy at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    /// Wait this long for another run's lock (e.g. 30s, 5m)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
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

fn ssh_cidrs(config: &Config) -> Vec<String> {
    config
        .allowed_ssh_cidrs
        .iter()
        .map(|c| c.to_string())
        .collect()
}

fn check_replace(config: &Config, names: &[String]) -> Result<BTreeSet<String>> {
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
    let state = session.read_state()?;
    let force = check_replace(config, &args.replace)?;
    // Key ids are checked when this machine can know the keys (a plan needs no identity).
    let names = config.agents.iter().map(|a| a.name.clone());
    let keys = fleet::load_keys(&state, config, &session.keyring, &ctx.env, names).ok();
    let desired = fleet::desired(config, keys.as_ref())?;
    // The cloud is asked whenever it can be: with an empty state too (a fresh CI runner must
    // not plan to create a fleet that exists). Offline only without credentials, and said.
    let refresh = match args.refresh {
        Some(r) => r,
        None if !state.is_empty() => true,
        None => match cloud::no_credentials(&session) {
            Some(why) => {
                if !ctx.global.quiet {
                    eprintln!(
                        "note: the cloud was not queried ({why}); servers this stack may already have are not shown"
                    );
                }
                false
            }
            None => true,
        },
    };
    let observed = if refresh {
        let cloud = cloud::connect(&session).await?;
        Some(
            cloud
                .observe()
                .await
                .map_err(|e| provider_error(config, e))?,
        )
    } else {
        None
    };
    let cidrs = ssh_cidrs(config);
    let plan = plan::plan(&PlanInput {
        desired: &desired,
        state: &state,
        observed: observed.as_ref(),
        ssh_cidrs: &cidrs,
        force_replace: &force,
        destroy: false,
    });
    let cost = cloud::cost(&session).await;
    if ctx.json() {
        let doc = serde_json::json!({
            "project": config.project,
            "stack": config.stack,
            "provider": config.provider.kind(),
            "plan": plan,
            "changes": plan.has_changes(),
            "cost": cost,
            "agents": config.agents.iter().map(|a| serde_json::json!({
                "agent": a.name,
                "hostname": a.fqdn,
                "gateway_url": fleet::gateway_url(&a.fqdn, None),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_plan(ctx, config, &plan);
        println!("{}", output::cost_text(&cost));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

/// Ask for confirmation, or require `--yes` when nobody can answer.
fn approve(ctx: &Ctx, yes: bool, prompt: &str, expected: &str) -> Result<()> {
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

fn print_rows(ctx: &Ctx, config: &Config, rows: &[Row], extra: serde_json::Value) {
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
    let keyring = &session.keyring;
    let force = check_replace(config, &args.replace)?;
    // Every secret must resolve before anything is touched.
    let mut secrets = BTreeMap::new();
    for a in &config.agents {
        secrets.insert(
            a.name.clone(),
            fleet::resolve_secrets(config, a, keyring, &ctx.env)?,
        );
    }
    let lock = Arc::new(session.lock("deploy", args.lock_timeout)?);
    let mut state = session.read_state()?;
    // Gateway keys are decrypted (or created) before any cloud call, so a wrong identity
    // stops the run while nothing has changed.
    let (keys, keys_changed) = fleet::ensure_keys(
        &mut state,
        config,
        keyring,
        &ctx.env,
        args.allow_foreign_recipients,
    )?;
    let desired = fleet::desired(config, Some(&keys))?;

    let cloud = cloud::connect(&session).await?;
    let observed = cloud
        .observe()
        .await
        .map_err(|e| provider_error(config, e))?;
    let cidrs = ssh_cidrs(config);
    let plan = plan::plan(&PlanInput {
        desired: &desired,
        state: &state,
        observed: Some(&observed),
        ssh_cidrs: &cidrs,
        force_replace: &force,
        destroy: false,
    });
    print_plan(ctx, config, &plan);
    let tokens: BTreeMap<String, String> = if args.show_secrets {
        keys.iter().map(|(k, v)| (k.clone(), v.token())).collect()
    } else {
        BTreeMap::new()
    };

    if !plan.has_changes() && !plan.has_state_changes() {
        if keys_changed {
            session.write_state(&lock, &mut state)?;
        }
        let rows = rows_from(config, &state, Some(&observed), None, &tokens);
        print_rows(ctx, config, &rows, serde_json::json!({"changed": false}));
        return Ok(ExitStatus::Success);
    }
    if plan.has_changes() {
        approve(
            ctx,
            args.yes,
            "Do you want to perform these actions? Only 'yes' will be accepted:",
            "yes",
        )?;
    }
    session.write_state(&lock, &mut state)?;

    // Tailnet housekeeping before any cloud change: agents that get a new VM (or go away)
    // lose their old device, so the new VM joins under the exact hostname; live agents that
    // stay are never touched. With an OAuth client, each new VM gets its own one-off key.
    let ts = devices::client(&ctx.env, config, keyring).await?;
    let mut renew = Vec::new();
    let mut clean_hosts = Vec::new();
    let mut protect = Vec::new();
    for a in &plan.agents {
        let host = crate::naming::hostname(&config.stack, a.agent());
        match a {
            AgentAction::Create { agent } | AgentAction::Replace { agent, .. } => {
                renew.push(agent.clone());
                clean_hosts.push(host);
            }
            AgentAction::Delete { agent, .. } if !agent.is_empty() => {
                if config.agent(agent).is_none() {
                    clean_hosts.push(host);
                }
            }
            AgentAction::NoChange { .. } | AgentAction::Adopt { .. } => protect.push(host),
            AgentAction::Delete { .. } => {}
        }
    }
    clean_hosts.sort();
    clean_hosts.dedup();
    devices::clean(ts.as_ref(), &clean_hosts, &protect, ctx.json()).await?;
    let minted = devices::mint(ts.as_ref(), config, &renew).await?;

    let mut prepared = BTreeMap::new();
    for (a, d) in config.agents.iter().zip(&desired) {
        let Some(key) = keys.get(&a.name) else {
            continue;
        };
        let Some(s) = secrets.get(&a.name) else {
            continue;
        };
        let user_data = fleet::real_user_data(config, a, s, key, minted.get(&a.name))?;
        prepared.insert(
            a.name.clone(),
            Prepared {
                spec: ServerSpec {
                    agent: a.name.clone(),
                    hostname: a.hostname.clone(),
                    instance_type: a.instance_type.clone(),
                    image: a.image.clone(),
                    disk_gb: a.disk_gb,
                    user_data,
                    fingerprint: d.fingerprint.clone(),
                    key_id: key.key_id(),
                    client_token: String::new(),
                    network_id: String::new(),
                    ssh_key_id: None,
                },
                inputs: d.inputs.clone(),
            },
        );
    }
    drop(minted);

    let stop = Arc::new(AtomicBool::new(false));
    watch_interrupts(stop.clone());
    let break_glass = if crate::provider::profile(config.provider.kind()).break_glass_key {
        Some(ensure_break_glass(
            &session,
            &lock,
            &mut state,
            args.allow_foreign_recipients,
        )?)
    } else {
        None
    };
    let engine = Engine {
        provider: Arc::new(cloud),
        state: SharedState::new(
            state,
            session.store.clone(),
            lock.clone(),
            session.local_dir.clone(),
        ),
        progress: Progress::new(ctx.env.is_ci(), ctx.global.quiet),
        parallelism: args.parallelism as usize,
        stop: stop.clone(),
    };
    let network = NetworkSpec {
        ssh_cidrs: cidrs,
        ssh_public_key: break_glass,
    };
    let report = engine.apply(&plan, &prepared, &network).await;
    let final_state = engine.state.snapshot();
    let rows = rows_from(config, &final_state, None, Some(&report), &tokens);
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

/// The stack's break-glass SSH key (Hetzner): generated once, kept encrypted in state.
/// Returns its public key line.
fn ensure_break_glass(
    session: &Session,
    lock: &LockGuard,
    state: &mut State,
    allow_foreign_recipients: bool,
) -> Result<String> {
    let (config, keyring) = (&session.config, &session.keyring);
    if let Some(armored) = &state.break_glass_key {
        let seed = keyring
            .decrypt(armored)
            .map_err(|e| Error::secret("break-glass ssh key", e))?;
        let key = crate::token::GatewayKey::from_seed_hex(seed.expose()).map_err(|e| {
            Error::secret(
                "break-glass ssh key",
                crate::secrets::SecretError::Corrupt(e.to_string()),
            )
        })?;
        return Ok(key.public_openssh());
    }
    let key = crate::token::GatewayKey::generate();
    let to = crate::secrets::EncryptTo::for_stack(&config.recipients, &session.env)
        .map_err(|e| Error::secret("break-glass ssh key", e))?;
    fleet::require_readable(
        &to,
        keyring,
        "break-glass ssh key",
        allow_foreign_recipients,
    )?;
    state.break_glass_key = Some(
        to.encrypt(key.seed_hex().as_bytes())
            .map_err(|e| Error::secret("break-glass ssh key", e))?,
    );
    session.write_state(lock, state)?;
    Ok(key.public_openssh())
}

pub async fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let lock = Arc::new(session.lock("destroy", args.lock_timeout)?);
    let state = session.read_state()?;
    let cloud = cloud::connect(&session).await?;
    let observed = cloud
        .observe()
        .await
        .map_err(|e| provider_error(config, e))?;
    // Servers recorded in state but not returned by the tag search (tags removed by hand)
    // are destroyed too.
    let mut observed = observed;
    for (agent, a) in &state.agents {
        if let Some(id) = &a.server_id
            && !observed.servers.iter().any(|s| &s.id == id)
        {
            observed.servers.push(crate::provider::ObservedServer {
                id: id.clone(),
                agent: agent.clone(),
                fingerprint: None,
                key_id: None,
                state: crate::provider::ServerState::Other("recorded in state".into()),
                name: String::new(),
                created: String::new(),
            });
        }
    }
    if let Some(n) = &state.network
        && !observed.networks.iter().any(|o| o.id == n.id)
    {
        observed.networks.push(crate::provider::ObservedNetwork {
            id: n.id.clone(),
            ssh_cidrs: vec![],
            ssh_key_id: n.ssh_key_id.clone(),
        });
    }
    let plan = plan::plan(&PlanInput {
        desired: &[],
        state: &state,
        observed: Some(&observed),
        ssh_cidrs: &[],
        force_replace: &BTreeSet::new(),
        destroy: true,
    });
    print_plan(ctx, config, &plan);
    let servers = plan
        .agents
        .iter()
        .filter(|a| matches!(a, AgentAction::Delete { .. }))
        .count();
    if servers == 0 && plan.network.is_empty() {
        session.store.remove(&lock)?;
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
    let ts = devices::client(&ctx.env, config, &session.keyring).await?;
    let mut hosts: Vec<String> = plan
        .agents
        .iter()
        .filter(|a| !a.agent().is_empty())
        .map(|a| crate::naming::hostname(&config.stack, a.agent()))
        .collect();
    hosts.sort();
    hosts.dedup();
    devices::clean(ts.as_ref(), &hosts, &[], ctx.json()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_interrupts(stop.clone());
    let networks = plan.network.len();
    let engine = Engine {
        provider: Arc::new(cloud),
        state: SharedState::new(
            state,
            session.store.clone(),
            lock.clone(),
            session.local_dir.clone(),
        ),
        progress: Progress::new(ctx.env.is_ci(), ctx.global.quiet),
        parallelism: args.parallelism as usize,
        stop,
    };
    let report = engine
        .apply(
            &plan,
            &BTreeMap::new(),
            &NetworkSpec {
                ssh_cidrs: vec![],
                ssh_public_key: None,
            },
        )
        .await;
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
    session.store.remove(&lock)?;
    // Every host key of the stack is gone with its servers.
    let _ = std::fs::remove_file(crate::tailnet::known_hosts_path(
        &session.local_dir,
        &config.stack,
    ));
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
    let state = session.read_state()?;
    let mut tokens = BTreeMap::new();
    let mut stale = Vec::new();
    if args.show_secrets {
        let keys = fleet::load_keys(
            &state,
            config,
            &session.keyring,
            &ctx.env,
            config.agents.iter().map(|a| a.name.clone()),
        )?;
        for (agent, key) in keys {
            // A server knows the token of the key it was deployed with. When the key changed
            // since (a new gateway seed, a rotated generation), this token would not open it.
            let deployed = state.agents.get(&agent).and_then(|a| a.key_id.clone());
            match deployed {
                Some(have) if have != key.key_id() => {
                    eprintln!(
                        "warning: {agent}: its gateway key changed since it was deployed (key id {have} on the server, {} now); the token is not shown\n  help: run `agent-army deploy` to apply the new key",
                        key.key_id()
                    );
                    stale.push(agent);
                }
                _ => {
                    tokens.insert(agent, key.token());
                }
            }
        }
    }
    let rows = rows_from(config, &state, None, None, &tokens);
    let extra = if stale.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "stale_tokens": stale })
    };
    print_rows(ctx, config, &rows, extra);
    Ok(ExitStatus::Success)
}

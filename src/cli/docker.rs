//! The commands of a Docker stack: `plan`, `deploy`, `destroy`, `outputs`, `status`, `logs`
//! and `ssh`, on the local engine.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::Ctx;
use super::agent_access::{LogsArgs, OpenArgs};
use super::apply::{DeployArgs, DestroyArgs, OutputsArgs, PlanArgs, approve};
use super::ssh::SshArgs;
use crate::app::docker::{self as local, Change, Plan};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::render::docker as spec;

/// How long a gateway may take to answer after its container starts (as on a VM's step 6).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(450);

fn print_plan(ctx: &Ctx, socket: &str, plan: &Plan) {
    if ctx.json() {
        return;
    }
    eprintln!("Docker engine at {socket}:");
    if plan.create_network {
        eprintln!("  + network");
    }
    for name in &plan.remove {
        eprintln!("  - {name} (not in the stack any more; its volumes stay)");
    }
    for a in &plan.agents {
        let mut parts = vec![format!("openclaw: {}", local::describe(&a.openclaw))];
        if let Some(s) = &a.sidecar {
            parts.push(format!("tailscale: {}", local::describe(s)));
        }
        let sign = match (&a.openclaw, &a.sidecar) {
            (Change::Create, _) => "+",
            (Change::Keep, None | Some(Change::Keep)) => " ",
            _ => "~",
        };
        eprintln!("  {sign} {} ({})", a.agent, parts.join("; "));
    }
}

/// The plan, with the engine's objects it was made from. `lock`: deploy's hold on the
/// stack (missing gateway keys are made under it); plan takes the lock only when keys are
/// missing.
async fn planned(
    session: &crate::app::Session,
    lock: Option<&crate::lock::LockGuard>,
    replace: &[String],
) -> Result<(
    crate::provider::docker::Engine,
    Vec<spec::AgentContainers>,
    local::Plan,
    crate::provider::docker::Observed,
)> {
    let replace = replace
        .iter()
        .map(|r| super::find_agent(&session.config, r).map(|a| a.name.clone()))
        .collect::<Result<Vec<_>>>()?;
    let keys = match lock {
        Some(lock) => session.gateway_keys_locked(lock)?,
        None => session.gateway_keys("plan", Duration::ZERO)?,
    };
    let engine = local::connect(session).await?;
    let observed = engine
        .observe(&spec::stack_filters(&session.config))
        .await?;
    let want = local::desired(session, &keys, &observed)?;
    let mut plan = local::diff(&session.config, &want, &observed);
    local::replace(&mut plan, &replace);
    local::refuse_foreign(&engine, &want, &plan, &observed).await?;
    Ok((engine, want, plan, observed))
}

pub async fn plan(ctx: &Ctx, args: PlanArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let (engine, _, plan, _) = planned(&session, None, &args.replace).await?;
    print_plan(ctx, &engine.socket, &plan);
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    } else if plan.is_noop() {
        println!("No changes.");
    }
    Ok(if args.detailed_exitcode && !plan.is_noop() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

pub async fn deploy(ctx: &Ctx, args: DeployArgs) -> Result<ExitStatus> {
    let started = Instant::now();
    let session = ctx.session()?;
    // Held until the end: two runs never remove and create the same containers at once.
    let lock = session.lock("deploy", args.lock_timeout)?;
    let (engine, want, plan, observed) = planned(&session, Some(&lock), &args.replace).await?;
    print_plan(ctx, &engine.socket, &plan);
    if plan.is_noop() {
        if ctx.json() {
            println!("{}", serde_json::json!({ "changed": [] }));
        } else {
            println!("No changes.");
        }
        return Ok(ExitStatus::Success);
    }
    approve(ctx, args.yes, "Apply these changes? Type `yes`:", "yes")?;
    let done = local::apply(
        &engine,
        &session.config,
        &want,
        &plan,
        &observed,
        HEALTH_TIMEOUT,
    )
    .await?;
    let failed = done.iter().filter(|d| d.error.is_some()).count();
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "agents": done, "seconds": started.elapsed().as_secs_f64(),
            }))
            .unwrap_or_default()
        );
    } else {
        for d in &done {
            match (&d.error, d.healthy_after_s) {
                (Some(e), _) => eprintln!("  {}: FAILED: {e}", d.agent),
                (None, Some(s)) => {
                    println!("  {}: gateway healthy {s:.1} s after its start", d.agent)
                }
                (None, None) => println!("  {}: no change", d.agent),
            }
        }
        println!(
            "Deployed in {:.1} s. `agent-army -s {} outputs --show-secrets` prints the URLs with tokens.",
            started.elapsed().as_secs_f64(),
            session.config.stack
        );
    }
    if failed > 0 {
        return Err(Error::Apply {
            failed,
            total: done.len(),
        });
    }
    Ok(ExitStatus::Success)
}

pub async fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let _lock = session.lock("destroy", args.lock_timeout)?;
    let engine = local::connect(&session).await?;
    let stack = session.config.stack.clone();
    let observed = engine
        .observe(&spec::stack_filters(&session.config))
        .await?;
    eprintln!(
        "Remove the containers and network of stack `{stack}` from {}:",
        engine.socket
    );
    for c in &observed.containers {
        eprintln!("  - {}", c.name);
    }
    if args.delete_volumes {
        for (v, _) in &observed.volumes {
            eprintln!("  - volume {v}");
        }
    } else if !observed.volumes.is_empty() {
        eprintln!(
            "The {} volumes stay (the agents' data, Tailscale's state); `--purge` removes them too.",
            observed.volumes.len()
        );
    }
    super::apply::approve_destroy(ctx, args.yes, &stack)?;
    let done = local::destroy(&engine, &observed, args.delete_volumes).await?;
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&done).unwrap_or_default()
        );
    } else {
        println!(
            "Removed {} containers and {} network(s); {} volumes removed, {} kept.",
            done.containers.len(),
            done.networks.len(),
            done.volumes_removed.len(),
            done.volumes_kept.len()
        );
    }
    Ok(ExitStatus::Success)
}

pub async fn outputs(ctx: &Ctx, args: OutputsArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let engine = local::connect(&session).await?;
    let views = local::views(&session, &engine, args.show_secrets).await?;
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "agents": views }))
                .unwrap_or_default()
        );
        return Ok(ExitStatus::Success);
    }
    for v in &views {
        println!(
            "{:<16} {:<28} {}",
            v.agent,
            v.openclaw,
            v.url.as_deref().unwrap_or("(not deployed)")
        );
    }
    Ok(ExitStatus::Success)
}

/// The `docker` client's host argument for this stack's engine: `[docker] host`, else
/// `DOCKER_HOST`, else the default socket.
fn docker_host(ctx: &Ctx, config: &crate::stack::Config) -> String {
    local::settings(config)
        .and_then(|d| d.host.clone())
        .or_else(|| {
            ctx.env
                .get(crate::env::vars::DOCKER_HOST)
                .map(str::to_string)
        })
        .unwrap_or_else(|| crate::provider::docker::DEFAULT_SOCKET.to_string())
}

fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| crate::render::escape::sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `logs`: the OpenClaw container's output (the gateway's log), or with `--tailscale` the
/// sidecar's; `--output json` gives one `{"time", "message"}` object a line; `--print`
/// prints the `docker logs` command instead.
pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let agent = super::find_agent(config, &args.agent)?;
    let name = if args.tailscale {
        spec::sidecar_name(config, agent)
    } else {
        spec::container_name(config, agent)
    };
    let since = super::agent_access::since_seconds(args.since.as_deref())?;
    if args.print {
        let mut argv: Vec<String> = vec![
            "docker".into(),
            "-H".into(),
            docker_host(ctx, config),
            "logs".into(),
            format!("--tail={}", args.lines),
        ];
        if args.follow {
            argv.push("--follow".into());
        }
        if let Some(s) = since {
            argv.push(format!("--since={s}s"));
        }
        argv.push(name);
        println!("{}", shell_line(&argv));
        return Ok(ExitStatus::Success);
    }
    let engine = local::connect(&session).await?;
    let since_unix = since.map(|s| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        i64::try_from(now.saturating_sub(s)).unwrap_or_default()
    });
    let mut s = engine.logs(&name, args.lines, args.follow, since_unix, ctx.json());
    let mut lines = super::agent_access::TimedLines::new(std::io::stdout().lock(), ctx.json());
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(Error::from)?;
        lines.push(&chunk);
    }
    lines.finish();
    Ok(ExitStatus::Success)
}

/// `ssh` on a local container is `docker exec` as the agent's user: the `docker` client
/// handles the terminal (raw mode, resizes) as no API call does.
pub async fn ssh(ctx: &Ctx, args: SshArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let agent = super::find_agent(&session.config, &args.agent)?;
    let name = spec::container_name(&session.config, agent);
    let host = docker_host(ctx, &session.config);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut argv: Vec<String> = vec![
        "docker".into(),
        "-H".into(),
        host,
        "exec".into(),
        "-i".into(),
    ];
    if tty {
        argv.push("-t".into());
    }
    argv.push(name);
    match args.command.len() {
        0 => argv.extend(["/bin/bash".into(), "-l".into()]),
        1 => argv.extend(["/bin/sh".into(), "-c".into(), args.command[0].clone()]),
        _ => argv.extend(args.command.iter().cloned()),
    }
    if args.print {
        println!("{}", shell_line(&argv));
        return Ok(ExitStatus::Success);
    }
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .await
        .map_err(|e| Error::Io {
            path: "docker".into(),
            source: e,
        })?;
    Ok(if status.success() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// `open` on a Docker stack: the gateway's URL as the engine publishes it
/// (`http://127.0.0.1:<port>/`, or the tailnet name when the agent has a sidecar), the token
/// masked unless `--show-secrets`; `--browser` opens it with the token.
pub async fn open(ctx: &Ctx, args: OpenArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let agent = super::find_agent(&session.config, &args.agent)?
        .name
        .clone();
    let engine = local::connect(&session).await?;
    let with_token = args.show_secrets || args.browser;
    let views = local::views(&session, &engine, with_token).await?;
    let url = views
        .into_iter()
        .find(|v| v.agent == agent)
        .and_then(|v| v.url)
        .ok_or_else(|| {
            Error::Input(format!(
                "agent `{agent}` has no running gateway on this engine; run `agent-army deploy`"
            ))
        })?;
    let shown = if args.show_secrets {
        url.clone()
    } else {
        mask_token(&url)
    };
    super::agent_access::present(
        ctx,
        &args,
        &agent,
        &shown,
        args.browser.then_some(url.as_str()),
    )
}

/// The URL with the token in its fragment masked.
fn mask_token(url: &str) -> String {
    match url.split_once("#token=") {
        Some((base, _)) => format!("{base}#token={}", crate::secrets::MASK),
        None => url.to_string(),
    }
}

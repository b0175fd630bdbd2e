//! `plan`, `deploy`, `destroy`, `status` and `ssh` of a Kubernetes stack: what will change, a
//! confirmation, then the requests, one line each.

use super::Ctx;
use super::apply::{DeployArgs, DestroyArgs, OutputsArgs, PlanArgs, approve, print_rows};
use crate::app::kubernetes as kube;
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::provider::kubernetes::diff::{Action, KubePlan};
use crate::render::kubernetes::{LABEL_AGENT, settings};
use crate::stack::Config;

fn past(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Delete => "deleted",
        Action::Keep | Action::Foreign => "kept",
        Action::Restart => "restarted",
        Action::Recreate => "recreated",
    }
}

fn report(ctx: &Ctx, verb: &str, done: &[kube::Done]) {
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ verb: done })).unwrap_or_default()
        );
    } else if !ctx.global.quiet {
        for d in done {
            println!("  {} {}", past(d.action), d.what);
        }
    }
}

/// The plan as text: one line per change, unchanged objects counted, then the notes a
/// Kubernetes user needs (a foreign namespace, the volumes of removed agents).
fn plan_text(config: &Config, namespace: &str, source: &str, plan: &KubePlan) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "Stack `{}` (Kubernetes): namespace `{namespace}` on {source}\n\n",
        config.stack
    );
    if !plan.has_changes() {
        out.push_str("No changes. The cluster matches the project.\n");
    } else {
        for c in plan
            .changes
            .iter()
            .filter(|c| !matches!(c.action, Action::Keep | Action::Foreign))
        {
            let whose = match (&c.agent, c.action) {
                (Some(a), Action::Delete) => format!("  (agent {a}, no longer in the project)"),
                (Some(a), Action::Restart) => {
                    format!("  (agent {a}, replaced: restarted, its volumes kept)")
                }
                (Some(a), _) => format!("  (agent {a})"),
                (None, _) => String::new(),
            };
            let _ = writeln!(out, "  {} {}/{}{whose}", c.action.symbol(), c.kind, c.name);
        }
        let restarts = match plan.count(Action::Restart) {
            0 => String::new(),
            n => format!(", {n} to restart"),
        };
        let _ = writeln!(
            out,
            "\nPlan: {} to add, {} to change, {} to destroy{restarts}; {} unchanged.",
            plan.count(Action::Create),
            plan.count(Action::Update),
            plan.count(Action::Delete),
            plan.count(Action::Keep)
        );
    }
    if plan.count(Action::Foreign) > 0 {
        let _ = writeln!(
            out,
            "note: namespace `{namespace}` exists without this stack's labels: it is used as it is (its labels and Pod Security level are not changed) and never deleted"
        );
    }
    let removed = plan.removed_agents();
    if !removed.is_empty() {
        let _ = writeln!(
            out,
            "note: the volume claims of {} stay (their data); `kubectl -n {namespace} delete pvc -l {LABEL_AGENT}=<agent>` removes them",
            removed.join(", ")
        );
    }
    out
}

/// The stack's namespace and its plan (`--replace` names checked), refused when it holds a
/// change the API server would refuse.
async fn planned(
    session: &crate::app::Session,
    replace: &[String],
    lock_wait: std::time::Duration,
) -> Result<(String, kube::Planned)> {
    let config = &session.config;
    let namespace = settings(config)
        .map(|k| k.namespace.clone())
        .unwrap_or_default();
    let replace = super::apply::check_replace(config, replace)?;
    let planned = kube::plan(session, lock_wait, &replace).await?;
    refuse_blocked(&planned.plan)?;
    Ok((namespace, planned))
}

/// Changes the API server would refuse stop the plan before anything is sent.
fn refuse_blocked(plan: &KubePlan) -> Result<()> {
    if plan.blocked.is_empty() {
        return Ok(());
    }
    Err(crate::error::Error::Input(format!(
        "the plan has changes Kubernetes refuses:\n  {}",
        plan.blocked.join("\n  ")
    )))
}

fn plan_json(config: &Config, namespace: &str, plan: &KubePlan) -> serde_json::Value {
    serde_json::json!({
        "project": config.project,
        "stack": config.stack,
        "provider": config.provider.kind(),
        "namespace": namespace,
        "plan": plan,
        "changes": plan.has_changes(),
        "agents": config.agents.iter().map(|a| serde_json::json!({
            "agent": a.name,
            "hostname": a.fqdn,
            "gateway_url": crate::app::fleet::gateway_url(&a.fqdn, None),
        })).collect::<Vec<_>>(),
    })
}

pub async fn plan(ctx: &Ctx, args: PlanArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let (namespace, planned) = planned(&session, &args.replace, std::time::Duration::ZERO).await?;
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan_json(config, &namespace, &planned.plan))
                .unwrap_or_default()
        );
    } else {
        print!(
            "{}",
            plan_text(config, &namespace, &planned.source, &planned.plan)
        );
    }
    Ok(if args.detailed_exitcode && planned.plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

pub async fn deploy(ctx: &Ctx, args: DeployArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let (namespace, planned) = planned(&session, &args.replace, args.lock_timeout).await?;
    if !ctx.json() && !ctx.global.quiet {
        eprint!(
            "{}",
            plan_text(config, &namespace, &planned.source, &planned.plan)
        );
    }
    if !planned.plan.has_changes() {
        report(ctx, "applied", &[]);
        return Ok(ExitStatus::Success);
    }
    approve(
        ctx,
        args.yes,
        "Server-side apply these changes (field manager `agent-army`)? Type `yes`:",
        "yes",
    )?;
    let done = kube::apply(&session, &planned, &namespace).await?;
    report(ctx, "applied", &done);
    if !ctx.json() && !ctx.global.quiet {
        println!(
            "\nApplied: {} created, {} updated, {} deleted.\n",
            done.iter().filter(|d| d.action == Action::Create).count(),
            done.iter().filter(|d| d.action == Action::Update).count(),
            done.iter().filter(|d| d.action == Action::Delete).count(),
        );
        let rows = rows(&session, &planned.client, args.show_secrets, true).await?;
        print_rows(ctx, config, &rows, serde_json::json!({}));
    }
    Ok(ExitStatus::Success)
}

/// One row per agent: its MagicDNS name, its pod and the pod's state, the gateway's URL
/// (with the token only when asked).
async fn rows(
    session: &crate::app::Session,
    client: &crate::provider::kubernetes::client::KubeClient,
    show_secrets: bool,
    just_applied: bool,
) -> Result<Vec<crate::output::Row>> {
    let config = &session.config;
    let tokens: std::collections::BTreeMap<String, String> = if show_secrets {
        let state = session.read_state()?;
        crate::app::fleet::load_keys(
            &state,
            config,
            &session.keyring,
            &session.env,
            config.agents.iter().map(|a| a.name.clone()),
        )?
        .into_iter()
        .map(|(k, v)| (k, v.token()))
        .collect()
    } else {
        Default::default()
    };
    let pods = kube::pods(session, client).await?;
    Ok(config
        .agents
        .iter()
        .map(|a| {
            let pod = pods.get(&a.name);
            crate::output::Row {
                agent: a.name.clone(),
                hostname: a.fqdn.clone(),
                server_id: pod.map(|p| p.name.clone()),
                // Right after an apply the StatefulSet controller has not made the pod yet.
                state: pod.map_or_else(
                    || {
                        if just_applied {
                            "starting"
                        } else {
                            "not deployed"
                        }
                        .into()
                    },
                    |p| p.word.clone(),
                ),
                gateway_url: crate::app::fleet::gateway_url(
                    &a.fqdn,
                    tokens.get(&a.name).map(String::as_str),
                ),
            }
        })
        .collect())
}

/// `outputs`: the agents' names, pods and gateway URLs (the pods' states from the cluster).
pub async fn outputs(ctx: &Ctx, args: OutputsArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let (client, _) = kube::connect(&session)?;
    let rows = rows(&session, &client, args.show_secrets, false).await?;
    print_rows(ctx, &session.config, &rows, serde_json::json!({}));
    Ok(ExitStatus::Success)
}

pub async fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let stack = session.config.stack.clone();
    let d = kube::destroy_requests(&session, args.delete_volumes).await?;
    if d.requests.is_empty() {
        eprintln!(
            "Nothing of stack `{stack}` on {}: nothing to delete.",
            d.source
        );
        report(ctx, "deleted", &[]);
        return Ok(ExitStatus::Success);
    }
    eprintln!("Delete the objects of stack `{stack}` from {}:", d.source);
    for (what, _) in &d.requests {
        eprintln!("  - {what}");
    }
    if !args.delete_volumes {
        eprintln!(
            "The agents' volume claims and the namespace stay (their data); `--delete-volumes` removes them too."
        );
    } else if d.foreign_namespace {
        eprintln!(
            "The namespace stays: it exists without this stack's labels, so agent-army did not make it."
        );
    } else if !d.shared_namespace.is_empty() {
        eprintln!(
            "The namespace stays: others keep objects in it ({}).",
            d.shared_namespace.join(", ")
        );
    }
    super::apply::approve_destroy(ctx, args.yes, &stack)?;
    let done = kube::send(&session, &d.client, d.requests).await?;
    report(ctx, "deleted", &done);
    Ok(ExitStatus::Success)
}

/// `logs`: the gateway's log, the OpenClaw container's output, from the API server (`kubectl
/// logs`); `--output json` gives one object a line with its time.
pub async fn logs(ctx: &Ctx, args: super::agent_access::LogsArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let agent = super::find_agent(config, &args.agent)?;
    let namespace = config.provider.place().to_string();
    let pod = format!("{}-0", agent.hostname);
    let since = super::agent_access::since_seconds(args.since.as_deref())?;
    let container = if args.tailscale {
        crate::render::kubernetes::SIDECAR
    } else {
        "openclaw"
    };
    if args.print {
        let mut words = vec![
            "kubectl".to_string(),
            "-n".into(),
            namespace,
            "logs".into(),
            pod,
            "-c".into(),
            container.into(),
            format!("--tail={}", args.lines),
        ];
        if args.follow {
            words.push("--follow".into());
        }
        if let Some(s) = since {
            words.push(format!("--since={s}s"));
        }
        println!("{}", super::ssh::remote_command(&words).unwrap_or_default());
        return Ok(ExitStatus::Success);
    }
    let (client, _) = kube::connect(&session)?;
    let path = crate::provider::kubernetes::log_path(
        &namespace,
        &pod,
        container,
        args.lines,
        args.follow,
        since,
        ctx.json(),
    );
    let mut lines = super::agent_access::TimedLines::new(std::io::stdout().lock(), ctx.json());
    client.stream(&path, |chunk| lines.push(chunk)).await?;
    lines.finish();
    Ok(ExitStatus::Success)
}

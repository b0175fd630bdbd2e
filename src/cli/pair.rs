//! `pair <agent> [REQUEST_ID]`: approve a browser or device that asks to use an agent's gateway.
//!
//! OpenClaw asks every new browser (even one with the right token) for a one-time device
//! approval. This lists the agent's pending requests and approves one, by running the VM's
//! `openclaw-agent devices ...` (the openclaw CLI as the agent's user) over the same ssh path
//! as `agent-army ssh`.

use clap::Args;
use serde_json::Value;

use super::Ctx;
use super::ssh::{Reach, quote};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;

const EXAMPLES: &str = "Examples:
  agent-army pair pm                 list the browsers waiting for approval on agent-pm
  agent-army pair pm --yes           approve the only pending request
  agent-army pair pm 5f0c…           approve this request

A browser shows `pairing required` until its request is approved; keep its page open, it
connects by itself once approved.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PairArgs {
    /// Agent (`agent-pm`, or `pm` without the `agent-` prefix)
    pub agent: String,
    /// Request to approve (from the list); without it, the pending requests are listed
    pub request_id: Option<String>,
    /// Approve the only pending request (refused when there are several)
    #[arg(long, short = 'y', conflicts_with = "request_id")]
    pub yes: bool,
    /// Remote user for ssh (VM stacks; on Kubernetes and Docker the CLI runs by exec as the
    /// OpenClaw container's own user)
    #[arg(long, short = 'u', default_value = "ubuntu")]
    pub user: String,
}

/// A pending pairing request, as `openclaw devices list --json` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pending {
    pub request_id: String,
    pub device_id: String,
    pub client: String,
    pub platform: String,
    pub remote_ip: String,
    pub role: String,
    pub scopes: Vec<String>,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The pending requests in `openclaw devices list --json` output.
pub fn parse_pending(stdout: &str) -> std::result::Result<Vec<Pending>, String> {
    let start = stdout
        .find('{')
        .ok_or_else(|| "no JSON in the answer of `openclaw devices list`".to_string())?;
    let doc: Value = serde_json::from_str(&stdout[start..])
        .map_err(|e| format!("unreadable answer of `openclaw devices list`: {e}"))?;
    let list = doc
        .get("pending")
        .and_then(Value::as_array)
        .ok_or_else(|| "`openclaw devices list` gave no `pending` list".to_string())?;
    Ok(list
        .iter()
        .map(|p| Pending {
            request_id: text(p, "requestId"),
            device_id: text(p, "deviceId"),
            client: text(p, "clientId"),
            platform: text(p, "platform"),
            remote_ip: text(p, "remoteIp"),
            role: text(p, "role"),
            scopes: p
                .get("scopes")
                .and_then(Value::as_array)
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .filter(|p| !p.request_id.is_empty())
        .collect())
}

/// Which request to approve, if any: the one named, or with `--yes` the only one.
pub fn choose(pending: &[Pending], request_id: Option<&str>, yes: bool) -> Result<Option<String>> {
    if let Some(id) = request_id {
        return match pending.iter().find(|p| p.request_id == id) {
            Some(p) => Ok(Some(p.request_id.clone())),
            None => Err(Error::Input(format!(
                "no pending request `{id}`{}",
                if pending.is_empty() {
                    " (none is pending: open the agent's URL in the browser first)".to_string()
                } else {
                    format!(
                        "; pending: {}",
                        pending
                            .iter()
                            .map(|p| p.request_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ))),
        };
    }
    if !yes {
        return Ok(None);
    }
    match pending {
        [] => Err(Error::Input(
            "no pending request: open the agent's URL in the browser first, then run this again"
                .into(),
        )),
        [one] => Ok(Some(one.request_id.clone())),
        many => Err(Error::Input(format!(
            "{} requests are pending; name the one to approve: {}",
            many.len(),
            many.iter()
                .map(|p| p.request_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Where the openclaw CLI runs: on the VM over ssh (`openclaw-agent`), in the pod's
/// OpenClaw container by exec through the API server, or in a Docker stack's OpenClaw
/// container by exec through the engine.
enum Runner {
    Ssh {
        reach: Box<Reach>,
        user: String,
    },
    Kube {
        session: Box<crate::app::Session>,
        client: crate::provider::kubernetes::client::KubeClient,
        pod: String,
    },
    Docker {
        engine: crate::provider::docker::Engine,
        container: String,
    },
}

impl Runner {
    /// Run `openclaw <words>` and return what it printed.
    async fn openclaw(&self, agent: &str, words: &[&str]) -> Result<String> {
        let failed = |code: Option<i32>, stderr: &[u8], look: String| {
            let err = String::from_utf8_lossy(stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            Error::Unreachable {
                agent: agent.to_string(),
                problem: format!(
                    "`openclaw {}` exited with {}: {last}",
                    words.join(" "),
                    code.map_or("a signal".into(), |c| c.to_string())
                ),
                help: look,
            }
        };
        match self {
            Runner::Ssh { reach, user } => {
                let line = std::iter::once("openclaw-agent")
                    .chain(words.iter().copied())
                    .map(quote)
                    .collect::<Vec<_>>()
                    .join(" ");
                let cmd = reach.command(user, Some(line), true);
                tracing::info!(command = %cmd.display(), "pair");
                let out = cmd.std_command().output().map_err(|source| Error::Io {
                    path: cmd.program.clone(),
                    source,
                })?;
                if !out.status.success() {
                    return Err(failed(
                        out.status.code(),
                        &out.stderr,
                        format!(
                            "look with `agent-army ssh {agent} -- openclaw-agent devices list`; the agent may still be installing after first boot"
                        ),
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Runner::Kube {
                session,
                client,
                pod,
            } => {
                use crate::render::kubernetes as k8s;
                let command = k8s::openclaw_cli(words);
                let command: Vec<&str> = command.iter().map(String::as_str).collect();
                let namespace = session.config.provider.place();
                let path =
                    crate::provider::kubernetes::exec_path(namespace, pod, k8s::MAIN, &command);
                tracing::info!(%path, "pair");
                let out = client.exec(&path).await?;
                if out.exit_code != Some(0) {
                    // The API server's own word when the command never ran (no container, …).
                    let mut stderr = out.stderr.clone();
                    if let Some(m) = out.message.as_ref().filter(|_| out.exit_code.is_none()) {
                        stderr.extend_from_slice(format!("\n{m}").as_bytes());
                    }
                    return Err(failed(
                        out.exit_code,
                        &stderr,
                        format!(
                            "look with `kubectl -n {namespace} exec {pod} -c openclaw -- openclaw devices list` and `agent-army logs {agent}`; the pod may still be starting"
                        ),
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Runner::Docker { engine, container } => {
                // The same command line as on Kubernetes: the gateway's environment file
                // sourced, as the container's own user (the exec's default).
                let command = crate::render::kubernetes::openclaw_cli(words);
                let command: Vec<&str> = command.iter().map(String::as_str).collect();
                tracing::info!(%container, ?command, "pair");
                let out = engine.exec(container, None, &command).await?;
                if out.code != 0 {
                    return Err(failed(
                        Some(i32::try_from(out.code).unwrap_or(-1)),
                        out.stderr.as_bytes(),
                        format!(
                            "look with `agent-army ssh {agent} -- openclaw devices list` and `agent-army logs {agent}`; the container may still be starting (`agent-army status`)"
                        ),
                    ));
                }
                Ok(out.stdout)
            }
        }
    }
}

pub async fn run(ctx: &Ctx, args: PairArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let (runner, agent) = if crate::app::docker::settings(&session.config).is_some() {
        let agent = super::find_agent(&session.config, &args.agent)?.clone();
        let engine = crate::app::docker::connect(&session).await?;
        let container = crate::render::docker::container_name(&session.config, &agent);
        (Runner::Docker { engine, container }, agent)
    } else if crate::render::kubernetes::settings(&session.config).is_some() {
        let agent = super::find_agent(&session.config, &args.agent)?.clone();
        let (client, _) = crate::app::kubernetes::connect(&session)?;
        let pod = format!("{}-0", agent.hostname);
        (
            Runner::Kube {
                session: Box::new(session),
                client,
                pod,
            },
            agent,
        )
    } else {
        let reach = Reach::open(ctx, &args.agent)?;
        reach.prepare(ctx).await?;
        let agent = reach.agent.clone();
        (
            Runner::Ssh {
                reach: Box::new(reach),
                user: args.user.clone(),
            },
            agent,
        )
    };
    let agent = &agent;
    let remote = async |words: &[&str]| runner.openclaw(&agent.name, words).await;

    let listed = remote(&["devices", "list", "--json"]).await?;
    let pending = parse_pending(&listed).map_err(Error::Input)?;
    let Some(id) = choose(&pending, args.request_id.as_deref(), args.yes)? else {
        if ctx.json() {
            println!(
                "{}",
                serde_json::json!({"agent": agent.name, "pending": pending})
            );
        } else if pending.is_empty() && matches!(runner, Runner::Docker { .. }) {
            println!(
                "No pairing request is pending on {}. Open its URL in the browser (`agent-army open {} --browser`), then run this again.",
                agent.name, args.agent
            );
        } else if pending.is_empty() {
            println!(
                "No pairing request is pending on {}. Open https://{}/ in the browser, enter the token (`agent-army outputs --show-secrets`), then run this again.",
                agent.name, agent.fqdn
            );
        } else {
            println!("Pending pairing requests on {}:", agent.name);
            for p in &pending {
                println!(
                    "  {}  {} on {} from {}  role {}  scopes {}",
                    p.request_id,
                    p.client,
                    p.platform,
                    p.remote_ip,
                    p.role,
                    p.scopes.join(",")
                );
            }
            println!(
                "Approve one with `agent-army pair {} <REQUEST_ID>`{}.",
                args.agent,
                if pending.len() == 1 {
                    format!(" or `agent-army pair {} --yes`", args.agent)
                } else {
                    String::new()
                }
            );
        }
        return Ok(ExitStatus::Success);
    };
    let approved = remote(&["devices", "approve", &id, "--json"]).await?;
    let device = approved
        .find('{')
        .and_then(|i| serde_json::from_str::<Value>(&approved[i..]).ok())
        .and_then(|v| v.get("device").map(|d| text(d, "deviceId")))
        .unwrap_or_default();
    if ctx.json() {
        println!(
            "{}",
            serde_json::json!({"agent": agent.name, "approved": id, "device_id": device})
        );
    } else {
        println!(
            "Approved request {id} on {} (device {device}); the browser connects by itself.",
            agent.name
        );
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"pending":[{"requestId":"r1","deviceId":"d1","clientId":"openclaw-control-ui","platform":"Linux x86_64","remoteIp":"100.101.102.103","role":"operator","scopes":["operator.read"]}],"paired":[]}"#;

    #[test]
    fn parses_and_chooses() {
        let p = parse_pending(LIST).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].request_id, "r1");
        assert_eq!(p[0].scopes, ["operator.read"]);
        assert_eq!(choose(&p, None, false).unwrap(), None);
        assert_eq!(choose(&p, None, true).unwrap(), Some("r1".into()));
        assert_eq!(choose(&p, Some("r1"), false).unwrap(), Some("r1".into()));
        assert!(choose(&p, Some("r9"), false).is_err());
        let two = [
            p[0].clone(),
            Pending {
                request_id: "r2".into(),
                ..p[0].clone()
            },
        ];
        let e = choose(&two, None, true).unwrap_err().to_string();
        assert!(
            e.contains("2 requests are pending") && e.contains("r1, r2"),
            "{e}"
        );
        assert!(choose(&[], None, true).is_err());
        assert!(parse_pending("not json").is_err());
    }
}

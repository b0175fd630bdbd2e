//! Health judgement: what the cloud, tailnet, gateway and first-boot readings of one agent
//! say about it, with the root cause first. Pure: `cli/status.rs` gathers the readings (cloud
//! API, local Tailscale, HTTPS probe, ssh) and presents the verdicts.

use serde::Serialize;

use crate::boot::Boot;
use crate::stack::Agent;
use crate::tailnet::{AgentTailnet, Finding, Link, NetcheckSummary, Presence, Status};

#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    pub url: String,
    pub answers: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Whether the request carried the agent's gateway token.
    pub authenticated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Netcheck {
    #[serde(flatten)]
    pub summary: Option<NetcheckSummary>,
    pub error: Option<String>,
}

impl Netcheck {
    /// Why there is no report.
    pub fn unread(e: impl Into<String>) -> Self {
        Netcheck {
            summary: None,
            error: Some(e.into()),
        }
    }
}

/// The agent's first boot, as its VM recorded it (read over ssh).
#[derive(Debug, Clone, Serialize)]
pub struct BootView {
    #[serde(flatten)]
    pub boot: Option<Boot>,
    pub summary: Option<String>,
    /// Why the results could not be read (or were not: not reachable, `--no-boot`).
    pub error: Option<String>,
}

impl BootView {
    pub fn unread(e: impl Into<String>) -> Self {
        BootView {
            boot: None,
            summary: None,
            error: Some(e.into()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentReport {
    pub agent: String,
    pub hostname: String,
    pub server_id: Option<String>,
    /// `running`, `stopped`, …, `missing` (recorded but gone), `not deployed`.
    pub cloud: String,
    /// `None` when the local Tailscale cannot tell.
    pub tailnet: Option<AgentTailnet>,
    pub gateway: Option<Gateway>,
    pub boot: Option<BootView>,
    pub netcheck: Option<Netcheck>,
    /// Kubernetes: the agent's Tailscale sidecar, from its own `tailscale status --json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarView>,
    pub healthy: bool,
    pub problems: Vec<Finding>,
}

/// A Tailscale sidecar as its own `tailscale status --json` shows it (read by exec).
#[derive(Debug, Clone, Serialize)]
pub struct SidecarView {
    /// tailscaled's `BackendState`: `Running` when logged in and connected.
    pub backend_state: Option<String>,
    pub ips: Vec<String>,
    /// The peers the agent talks to right now, directly and through a relay.
    pub direct_peers: usize,
    pub relayed_peers: usize,
    /// tailscaled's own health warnings.
    pub health: Vec<String>,
    /// Why the status could not be read.
    pub error: Option<String>,
}

impl SidecarView {
    pub fn unread(e: impl Into<String>) -> Self {
        SidecarView {
            backend_state: None,
            ips: Vec::new(),
            direct_peers: 0,
            relayed_peers: 0,
            health: Vec::new(),
            error: Some(e.into()),
        }
    }

    /// The sidecar's own view of its node (pure).
    pub fn from_status(s: &Status) -> Self {
        let active: Vec<Link> = s
            .peer
            .values()
            .filter(|p| p.active)
            .map(|p| p.link())
            .collect();
        SidecarView {
            backend_state: Some(s.backend_state.clone()),
            ips: s.tailscale_ips.clone(),
            direct_peers: active
                .iter()
                .filter(|l| matches!(l, Link::Direct { .. }))
                .count(),
            relayed_peers: active
                .iter()
                .filter(|l| matches!(l, Link::Relay { .. } | Link::PeerRelay { .. }))
                .count(),
            health: s.health.clone(),
            error: None,
        }
    }
}

/// The agent on the tailnet as its sidecar sees it, for when this machine is not on the
/// tailnet: its own device (found as on the VMs: by MagicDNS name, stale `<host>-N` devices
/// included), with the path its active connections take: direct when any is direct.
pub fn sidecar_tailnet(s: &Status, hostname: &str, fqdn: &str) -> AgentTailnet {
    let mut view = crate::tailnet::classify(s, hostname, fqdn);
    let active: Vec<Link> = s
        .peer
        .values()
        .filter(|p| p.active)
        .map(|p| p.link())
        .collect();
    let path = active
        .iter()
        .find(|l| matches!(l, Link::Direct { .. }))
        .or_else(|| {
            active
                .iter()
                .find(|l| !matches!(l, Link::Offline | Link::Idle))
        })
        .cloned()
        .unwrap_or(Link::Idle);
    if let Some(d) = view.device.as_mut()
        && d.online
    {
        d.link = path;
    }
    if !s.is_running() && view.presence == Presence::Online {
        view.presence = Presence::Offline;
    }
    view
}

/// Where a sidecar's user looks next: its log, and how its Tailscale state is reset so that
/// it logs in again with a new auth key.
pub struct SidecarHints {
    /// `kubectl -n NS logs POD -c tailscale`, `agent-army logs AGENT --tailscale`.
    pub logs: String,
    /// What removes the sidecar's node state (a volume claim, a volume).
    pub state: String,
}

/// What a sidecar that is not connected says about the agent.
pub fn sidecar_finding(v: &SidecarView, hints: &SidecarHints) -> Option<Finding> {
    let logs = &hints.logs;
    if let Some(e) = &v.error {
        return Some(Finding {
            unhealthy: true,
            message: format!("cannot read the Tailscale sidecar's status: {e}"),
            help: format!("see `{logs}`"),
        });
    }
    let state = v.backend_state.as_deref()?;
    if state == "Running" {
        return None;
    }
    Some(Finding {
        unhealthy: true,
        message: format!("the Tailscale sidecar is `{state}`, not connected to the tailnet"),
        help: match state {
            "NeedsLogin" => format!(
                "the auth key was refused or has expired: set a new `tailscale_auth_key`, run `agent-army deploy`, then {} so it logs in again; see `{logs}`",
                hints.state
            ),
            "NeedsMachineAuth" => format!(
                "approve the device in the admin console ({})",
                crate::tailnet::ADMIN_CONSOLE
            ),
            _ => format!("see `{logs}`"),
        },
    })
}

/// The last line a command wrote that says something.
fn last_said(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
}

/// A sidecar's `tailscale status --json`, run by exec: the status, or why there is none
/// (what the command said last, then how it ended). Pure.
pub fn sidecar_status(
    exit_code: Option<i64>,
    stdout: &str,
    stderr: &str,
    message: Option<&str>,
) -> Result<Status, String> {
    if exit_code == Some(0) {
        return crate::tailnet::parse_status(stdout);
    }
    let ended = match (message, exit_code) {
        (Some(m), _) => m.to_string(),
        (None, Some(c)) => format!("exit code {c}"),
        (None, None) => String::new(),
    };
    Err([last_said(stderr), ended.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": "))
}

/// A sidecar's `tailscale netcheck --format=json`, run by exec: its summary, or what the
/// command said when it printed no report (pure).
pub fn netcheck_reading(stdout: &str, stderr: &str, message: Option<&str>) -> Netcheck {
    match crate::tailnet::parse_netcheck(stdout) {
        Ok(r) => Netcheck {
            summary: Some(crate::tailnet::summarize(&r)),
            error: None,
        },
        Err(e) => Netcheck::unread(
            [last_said(stderr), message.unwrap_or_default()]
                .into_iter()
                .find(|s| !s.is_empty())
                .map_or(e, str::to_string),
        ),
    }
}

/// Where a finding's help sends the user to look at a gateway: its log, and its process.
pub struct Look {
    pub logs: String,
    pub process: String,
    /// Why a gateway may be silent for now.
    pub starting: &'static str,
}

impl Look {
    /// A VM: the gateway's systemd unit, over ssh.
    pub fn vm(agent: &str) -> Look {
        Look {
            logs: format!("agent-army ssh {agent} -- journalctl -u openclaw-gateway -n 50"),
            process: format!("agent-army ssh {agent} -- systemctl status openclaw-gateway"),
            starting: "it may still be installing after first boot",
        }
    }

    /// A pod or a container: its output is the gateway's log.
    pub fn container(agent: &str) -> Look {
        Look {
            logs: format!("agent-army logs {agent}"),
            process: format!("agent-army logs {agent}"),
            starting: "it may still be starting (a gateway takes a minute or two)",
        }
    }
}

/// What an answering gateway's status code says about it.
pub fn gateway_finding(agent: &Agent, g: &Gateway, look: &Look) -> Option<Finding> {
    let status = g.status?;
    let redeploy = format!(
        "redeploy the agent: `agent-army deploy --replace {}`",
        agent.name
    );
    let f = |unhealthy, message: String, help: String| {
        Some(Finding {
            unhealthy,
            message,
            help,
        })
    };
    match (status, g.authenticated) {
        (200..=299, _) => None,
        (401, false) => f(
            false,
            "the gateway answers, but its token was not checked: no gateway key could be decrypted here".into(),
            "give agent-army your age identity (AGENT_ARMY_IDENTITY, or ~/.config/agent-army/identity.txt) so `status` can use the agent's token".into(),
        ),
        (401, true) => f(
            true,
            format!("the gateway refuses the agent's token (401) on {}", g.url),
            format!("the VM holds another token than the key in state; {redeploy}"),
        ),
        (403, _) => f(
            true,
            format!("the gateway refuses requests through `tailscale serve` (403) on {}", g.url),
            format!("its openclaw.json lacks `gateway.trustedProxies` (agents rendered by an older agent-army) or has been edited; {redeploy}"),
        ),
        (429, _) => f(
            true,
            format!("the gateway is rate-limiting this client after failed logins (429) on {}", g.url),
            "wait five minutes; if it recurs, something on your tailnet is trying wrong tokens".into(),
        ),
        (other, _) => f(
            true,
            format!("the gateway answers {other} on {}", g.url),
            format!("look with `{}`", look.logs),
        ),
    }
}

/// Cloud, tailnet and gateway findings of one agent; the first root cause wins, so a stopped
/// server is not also reported as an offline device and a silent gateway.
pub fn judge(
    agent: &Agent,
    cloud: &str,
    view: Option<&AgentTailnet>,
    finding: Option<Finding>,
    gateway: Option<&Gateway>,
    look: &Look,
) -> (bool, Vec<Finding>) {
    let mut problems: Vec<Finding> = finding.into_iter().collect();
    let explained = |p: &[Finding]| p.iter().any(|f| f.unhealthy);
    if cloud != "running" && !explained(&problems) {
        problems.push(match cloud {
            "not deployed" => Finding {
                unhealthy: true,
                message: "not deployed".into(),
                help: "run `agent-army deploy`".into(),
            },
            "missing" => Finding {
                unhealthy: true,
                message: "the server recorded in state is gone from the cloud".into(),
                help: "run `agent-army deploy` to recreate it".into(),
            },
            other => Finding {
                unhealthy: true,
                message: format!("the server is {other}"),
                help: "start it from the provider's console, or run `agent-army deploy`".into(),
            },
        });
    }
    let online = view.is_some_and(|v| v.presence == Presence::Online);
    if let Some(g) = gateway
        && g.answers
        && !explained(&problems)
        && let Some(f) = gateway_finding(agent, g, look)
    {
        problems.push(f);
    }
    if let Some(g) = gateway
        && !g.answers
        && view.is_some()
        && !explained(&problems)
    {
        problems.push(silent_gateway(g, look));
    }
    let healthy =
        cloud == "running" && online && gateway.is_some_and(|g| g.answers) && !explained(&problems);
    (healthy, problems)
}

/// A gateway that does not answer.
fn silent_gateway(g: &Gateway, look: &Look) -> Finding {
    Finding {
        unhealthy: true,
        message: format!(
            "the gateway does not answer on {}: {}",
            g.url,
            g.error.as_deref().unwrap_or("no answer")
        ),
        help: format!("{}; otherwise look with `{}`", look.starting, look.process),
    }
}

/// An agent reached without a tailnet (a local container, its gateway published on
/// 127.0.0.1): healthy when its container runs and its gateway answers; the container's own
/// problem (`lead`), when there is one, explains the rest.
pub fn judge_local(
    agent: &Agent,
    running: bool,
    lead: Option<Finding>,
    gateway: Option<&Gateway>,
    look: &Look,
) -> (bool, Vec<Finding>) {
    let mut problems: Vec<Finding> = lead.into_iter().collect();
    if !problems.iter().any(|f| f.unhealthy)
        && let Some(g) = gateway
    {
        if g.answers {
            problems.extend(gateway_finding(agent, g, look));
        } else {
            problems.push(silent_gateway(g, look));
        }
    }
    let healthy =
        running && gateway.is_some_and(|g| g.answers) && !problems.iter().any(|f| f.unhealthy);
    (healthy, problems)
}

/// Why an agent is not asked anything over ssh, if it is not.
pub fn unreachable(r: &AgentReport) -> Option<String> {
    if r.server_id.is_none() {
        return Some("not deployed".to_string());
    }
    match &r.tailnet {
        Some(v) if v.device.as_ref().is_none_or(|d| !d.online) => Some(format!(
            "skipped: the agent is {} on the tailnet",
            v.presence
        )),
        _ => None,
    }
}

/// A failed first boot is the root cause of a silent gateway: it replaces the gateway's
/// finding; a boot still running explains it in a note.
pub fn judge_boot(name: &str, r: &mut AgentReport) {
    let Some(boot) = r.boot.as_ref().and_then(|b| b.boot.as_ref()) else {
        return;
    };
    match boot.state.as_str() {
        "failed" => {
            let step = boot
                .steps
                .iter()
                .find(|s| s.state == "failed")
                .or_else(|| boot.steps.iter().find(|s| s.state != "ok"));
            let help = match step {
                Some(s) => format!(
                    "its log: `agent-army ssh {name} -- sudo cat /var/log/agent-army/boot-{}-{}.log`; fix the cause, then `agent-army deploy --replace {name}`",
                    s.step, s.name
                ),
                None => format!("look with `agent-army ssh {name} -- agent-army-boot`"),
            };
            r.problems.retain(|p| !p.message.starts_with("the gateway"));
            r.problems.push(Finding {
                unhealthy: true,
                message: format!("first boot {}", boot.summary()),
                help,
            });
            r.healthy = false;
        }
        "running" | "pending" => r.problems.push(Finding {
            unhealthy: false,
            message: format!("first boot still {}", boot.summary()),
            help: "wait, then run `agent-army status` again".into(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            token_generation: 0,
            name: "agent-pm".into(),
            role: String::new(),
            hostname: "prod-agent-pm".into(),
            fqdn: "prod-agent-pm.t.ts.net".into(),
            instance_type: String::new(),
            image: None,
            disk_gb: 30,
            env: Default::default(),
            workspace_files: Default::default(),
            secrets: Default::default(),
            model: None,
            coding_agents: Vec::new(),
            openclaw: Default::default(),
        }
    }

    fn online() -> AgentTailnet {
        AgentTailnet {
            presence: Presence::Online,
            device: None,
            others: vec![],
        }
    }

    fn gw(answers: bool) -> Gateway {
        answered(answers.then_some(200), true)
    }

    fn answered(status: Option<u16>, authenticated: bool) -> Gateway {
        Gateway {
            url: "https://prod-agent-pm.t.ts.net/control-ui-config.json".into(),
            answers: status.is_some(),
            status,
            error: status.is_none().then(|| "no answer within 5s".into()),
            authenticated,
        }
    }

    #[test]
    fn gateway_is_judged_by_an_authenticated_request() {
        let a = agent();
        let judged = |status, auth| {
            judge(
                &a,
                "running",
                Some(&online()),
                None,
                Some(&answered(Some(status), auth)),
                &Look::vm(&a.name),
            )
        };
        assert!(judged(200, true).0);
        let (ok, p) = judged(401, true);
        assert!(
            !ok && p[0].message.contains("refuses the agent's token (401)"),
            "{p:?}"
        );
        assert!(p[0].help.contains("deploy --replace agent-pm"));
        let (ok, p) = judged(403, true);
        assert!(!ok && p[0].help.contains("trustedProxies"), "{p:?}");
        let (ok, p) = judged(429, true);
        assert!(!ok && p[0].message.contains("429"), "{p:?}");
        let (ok, p) = judged(500, true);
        assert!(!ok && p[0].message.contains("answers 500"), "{p:?}");
        // Without a token to send, a 401 only proves something answers: a note, not a failure.
        let (ok, p) = judged(401, false);
        assert!(
            ok && !p[0].unhealthy && p[0].message.contains("not checked"),
            "{p:?}"
        );
    }

    #[test]
    fn healthy_needs_cloud_tailnet_and_gateway() {
        let a = agent();
        let (ok, p) = judge(
            &a,
            "running",
            Some(&online()),
            None,
            Some(&gw(true)),
            &Look::vm("agent-pm"),
        );
        assert!(ok && p.is_empty());
        let (ok, p) = judge(
            &a,
            "running",
            Some(&online()),
            None,
            Some(&gw(false)),
            &Look::vm("agent-pm"),
        );
        assert!(!ok);
        assert!(p[0].message.contains("gateway does not answer"));
        let (ok, p) = judge(
            &a,
            "stopped",
            Some(&online()),
            None,
            Some(&gw(false)),
            &Look::vm("agent-pm"),
        );
        assert!(!ok);
        assert_eq!(p.len(), 1, "the stopped server explains the rest: {p:?}");
        let (ok, p) = judge(&a, "not deployed", None, None, None, &Look::vm("agent-pm"));
        assert!(!ok && p[0].help.contains("deploy"));
        // Unknown tailnet: unhealthy, explained once at the top.
        let (ok, p) = judge(
            &a,
            "running",
            None,
            None,
            Some(&gw(false)),
            &Look::vm("agent-pm"),
        );
        assert!(!ok && p.is_empty());
    }

    #[test]
    fn notes_do_not_make_unhealthy() {
        let note = Finding {
            unhealthy: false,
            message: "stale".into(),
            help: "remove".into(),
        };
        let (ok, p) = judge(
            &agent(),
            "running",
            Some(&online()),
            Some(note),
            Some(&gw(true)),
            &Look::vm("agent-pm"),
        );
        assert!(ok);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn local_agents_need_no_tailnet() {
        let a = agent();
        let look = Look::container("agent-pm");
        let (ok, p) = judge_local(&a, true, None, Some(&gw(true)), &look);
        assert!(ok && p.is_empty(), "{p:?}");
        let (ok, p) = judge_local(&a, true, None, Some(&gw(false)), &look);
        assert!(!ok && p[0].message.contains("does not answer"), "{p:?}");
        assert!(p[0].help.contains("`agent-army logs agent-pm`"), "{p:?}");
        let (ok, p) = judge_local(&a, true, None, Some(&answered(Some(500), true)), &look);
        assert!(
            !ok && p[0].help.contains("`agent-army logs agent-pm`"),
            "{p:?}"
        );
        // The container's own problem explains a silent gateway: it is the only finding.
        let stopped = Finding {
            unhealthy: true,
            message: "its OpenClaw container is exited".into(),
            help: "see logs".into(),
        };
        let (ok, p) = judge_local(&a, false, Some(stopped), None, &look);
        assert!(!ok && p.len() == 1, "{p:?}");
    }

    #[test]
    fn sidecar_readings() {
        let status = sidecar_status(
            Some(1),
            "",
            "\nfailed to connect to local tailscaled\n",
            None,
        );
        assert_eq!(
            status.unwrap_err(),
            "failed to connect to local tailscaled: exit code 1"
        );
        let status = sidecar_status(None, "", "", Some("container not running"));
        assert_eq!(status.unwrap_err(), "container not running");
        let n = netcheck_reading(
            "",
            "tailscale-standin: `netcheck` is not implemented\n",
            None,
        );
        assert_eq!(
            n.error.as_deref(),
            Some("tailscale-standin: `netcheck` is not implemented")
        );
        let n = netcheck_reading("", "", Some("exec refused"));
        assert_eq!(n.error.as_deref(), Some("exec refused"));
        let n = netcheck_reading("not json", "", None);
        assert!(n.summary.is_none() && !n.error.unwrap_or_default().is_empty());
        let v = SidecarView {
            backend_state: Some("NeedsLogin".into()),
            ips: vec![],
            direct_peers: 0,
            relayed_peers: 0,
            health: vec![],
            error: None,
        };
        let hints = SidecarHints {
            logs: "agent-army logs agent-pm --tailscale".into(),
            state: "remove its state volume".into(),
        };
        let f = sidecar_finding(&v, &hints).unwrap();
        assert!(f.unhealthy && f.message.contains("NeedsLogin"), "{f:?}");
        assert!(
            f.help
                .contains("remove its state volume so it logs in again")
                && f.help.contains("`agent-army logs agent-pm --tailscale`"),
            "{f:?}"
        );
    }
}

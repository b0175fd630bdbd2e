//! Health judgement: what the cloud, tailnet, gateway and first-boot readings of one agent
//! say about it, with the root cause first. Pure: `cli/status.rs` gathers the readings (cloud
//! API, local Tailscale, HTTPS probe, ssh) and presents the verdicts.

use serde::Serialize;

use crate::boot::Boot;
use crate::stack::Agent;
use crate::tailnet::{AgentTailnet, Finding, NetcheckSummary, Presence};

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
    pub healthy: bool,
    pub problems: Vec<Finding>,
}

/// What an answering gateway's status code says about it.
pub fn gateway_finding(agent: &Agent, g: &Gateway) -> Option<Finding> {
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
            format!("look with `agent-army ssh {} -- journalctl -u openclaw-gateway -n 50`", agent.name),
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
        && let Some(f) = gateway_finding(agent, g)
    {
        problems.push(f);
    }
    if let Some(g) = gateway
        && !g.answers
        && view.is_some()
        && !explained(&problems)
    {
        problems.push(Finding {
            unhealthy: true,
            message: format!(
                "the gateway does not answer on {}: {}",
                g.url,
                g.error.as_deref().unwrap_or("no answer")
            ),
            help: format!(
                "it may still be installing after first boot; otherwise look with `agent-army ssh {} -- systemctl status openclaw-gateway`",
                agent.name
            ),
        });
    }
    let healthy =
        cloud == "running" && online && gateway.is_some_and(|g| g.answers) && !explained(&problems);
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
        let (ok, p) = judge(&a, "running", Some(&online()), None, Some(&gw(true)));
        assert!(ok && p.is_empty());
        let (ok, p) = judge(&a, "running", Some(&online()), None, Some(&gw(false)));
        assert!(!ok);
        assert!(p[0].message.contains("gateway does not answer"));
        let (ok, p) = judge(&a, "stopped", Some(&online()), None, Some(&gw(false)));
        assert!(!ok);
        assert_eq!(p.len(), 1, "the stopped server explains the rest: {p:?}");
        let (ok, p) = judge(&a, "not deployed", None, None, None);
        assert!(!ok && p[0].help.contains("deploy"));
        // Unknown tailnet: unhealthy, explained once at the top.
        let (ok, p) = judge(&a, "running", None, None, Some(&gw(false)));
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
        );
        assert!(ok);
        assert_eq!(p.len(), 1);
    }
}

//! Each agent's device classified (online direct or relayed, offline, missing, or its name
//! taken by a stale device) and diagnosed with a fix: pure functions over a parsed [`Status`].

use serde::Serialize;

use super::status::{Device, Status};

/// Where devices are managed.
pub const ADMIN_CONSOLE: &str = "https://login.tailscale.com/admin/machines";

/// Where an agent stands on the tailnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Offline,
    /// No device answers to the agent's name.
    Missing,
    /// Another device claims the agent (`<host>-N`), and the name does not reach a single
    /// live device.
    Duplicate,
}

impl std::fmt::Display for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
            Presence::Missing => "missing",
            Presence::Duplicate => "duplicate",
        })
    }
}

/// One agent on the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentTailnet {
    pub presence: Presence,
    /// The device holding the agent's MagicDNS name.
    pub device: Option<Device>,
    /// Other devices claiming the agent: named `<host>-N`, or with its OS hostname.
    pub others: Vec<Device>,
}

/// `label` is `host-N` for some number N.
fn is_numbered(label: &str, host: &str) -> bool {
    label.len() > host.len()
        && label[..host.len()].eq_ignore_ascii_case(host)
        && label[host.len()..]
            .strip_prefix('-')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Find the agent `hostname` (`<stack>-<agent>`, MagicDNS name `fqdn`) in `status`.
///
/// The agent's device is the one whose `DNSName` is `fqdn.`. Devices named `<hostname>-N`
/// in the same tailnet, or whose OS hostname is `hostname`, are other claims on the agent:
/// Tailscale gives a new device `<host>-1` when `<host>` is still held by another one.
pub fn classify(status: &Status, hostname: &str, fqdn: &str) -> AgentTailnet {
    let fqdn = fqdn.trim_end_matches('.');
    let suffix = fqdn.split_once('.').map(|(_, s)| s).unwrap_or("");
    let mut device = None;
    let mut others = Vec::new();
    for p in status.devices() {
        let name = p.name();
        if name.eq_ignore_ascii_case(fqdn) {
            if device.is_none() {
                device = Some(p.device());
            } else {
                others.push(p.device());
            }
            continue;
        }
        let (label, rest) = name.split_once('.').unwrap_or((name, ""));
        let numbered = is_numbered(label, hostname) && (rest.is_empty() || rest == suffix);
        let same_os_name = p.host_name.eq_ignore_ascii_case(hostname);
        if numbered || same_os_name {
            others.push(p.device());
        }
    }
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let presence = match (&device, others.is_empty()) {
        (Some(d), true) if d.online => Presence::Online,
        (Some(_), true) => Presence::Offline,
        // Leftovers that are offline do not stand in the way of a live device.
        (Some(d), false) if d.online && others.iter().all(|o| !o.online) => Presence::Online,
        (None, true) => Presence::Missing,
        _ => Presence::Duplicate,
    };
    AgentTailnet {
        presence,
        device,
        others,
    }
}

/// What is known about the agent outside the tailnet, to explain what the tailnet shows.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The agent's server state in the cloud (`running`, `stopped`, `not deployed`, …), or
    /// `None` when the cloud was not asked.
    pub cloud: Option<&'a str>,
    /// The stack's tailnet (`tailnet = …` in the stack file).
    pub stack_tailnet: &'a str,
    /// MagicDNS suffix of the tailnet this machine is on ("" when unknown).
    pub local_tailnet: &'a str,
    /// The agent's name, for commands in advice.
    pub agent: &'a str,
}

/// A finding about one agent, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Whether it makes the agent unhealthy (otherwise it is a note).
    pub unhealthy: bool,
    pub message: String,
    pub help: String,
}

fn names(ds: &[Device]) -> String {
    ds.iter()
        .map(|d| {
            format!(
                "`{}` ({})",
                d.short(),
                if d.online { "online" } else { "offline" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Explain what [`classify`] found, when it is anything but a plain live device.
pub fn diagnose(view: &AgentTailnet, hostname: &str, cx: &Context) -> Option<Finding> {
    let agent = cx.agent;
    let cloud_down = cx.cloud.filter(|c| *c != "running");
    match view.presence {
        Presence::Online if view.others.is_empty() => None,
        Presence::Online => Some(Finding {
            unhealthy: false,
            message: format!(
                "stale device(s) {} left over from an earlier server",
                names(&view.others)
            ),
            help: format!(
                "remove them in the admin console ({ADMIN_CONSOLE}) so the next replacement gets the name `{hostname}` back"
            ),
        }),
        Presence::Offline => {
            let seen = view
                .device
                .as_ref()
                .and_then(|d| d.last_seen.clone())
                .map(|t| format!(" (last seen {t})"))
                .unwrap_or_default();
            Some(match cloud_down {
                Some("not deployed") => Finding {
                    unhealthy: true,
                    message: format!(
                        "`{hostname}` is offline{seen} and the agent is not deployed: the device is left over"
                    ),
                    help: format!(
                        "run `agent-army deploy`, and remove the old device in the admin console ({ADMIN_CONSOLE})"
                    ),
                },
                Some(state) => Finding {
                    unhealthy: true,
                    message: format!("`{hostname}` is offline{seen}: its server is {state}"),
                    help: "start the server, or run `agent-army deploy` to recreate it".into(),
                },
                None => Finding {
                    unhealthy: true,
                    message: format!(
                        "`{hostname}` is offline{seen}: tailscaled on the VM is down or the VM lost its network"
                    ),
                    help: format!(
                        "reboot the VM from the provider's console, or rebuild it with `agent-army deploy --replace {agent}`"
                    ),
                },
            })
        }
        Presence::Missing => Some(missing(hostname, cx)),
        Presence::Duplicate => Some(match &view.device {
            Some(d) if d.online => Finding {
                unhealthy: true,
                message: format!(
                    "several live devices claim the agent: `{}` and {}; an old server may still be running, or another stack uses the same name",
                    d.short(),
                    names(&view.others)
                ),
                help: format!(
                    "check `agent-army plan`, then remove the device that should not be there in the admin console ({ADMIN_CONSOLE})"
                ),
            },
            Some(d) => Finding {
                unhealthy: true,
                message: format!(
                    "the name `{hostname}` is held by a stale device (offline{}); the agent joined as {} instead, so `{hostname}` does not reach it",
                    d.last_seen
                        .as_ref()
                        .map(|t| format!(" since {t}"))
                        .unwrap_or_default(),
                    names(&view.others)
                ),
                help: format!(
                    "remove the stale device `{hostname}` in the admin console ({ADMIN_CONSOLE}), then rename `{}` to `{hostname}` there (or `agent-army deploy --replace {agent}`)",
                    view.others.first().map(|o| o.short()).unwrap_or(hostname)
                ),
            },
            None => Finding {
                unhealthy: true,
                message: format!(
                    "no device is named `{hostname}`, but {} claims the agent: it joined while a stale device held the name",
                    names(&view.others)
                ),
                help: format!(
                    "rename `{}` to `{hostname}` in the admin console ({ADMIN_CONSOLE})",
                    view.others.first().map(|o| o.short()).unwrap_or(hostname)
                ),
            },
        }),
    }
}

fn missing(hostname: &str, cx: &Context) -> Finding {
    let agent = cx.agent;
    let on_other_tailnet =
        !cx.local_tailnet.is_empty() && !cx.local_tailnet.eq_ignore_ascii_case(cx.stack_tailnet);
    let (message, help) = match cx.cloud {
        Some("not deployed") => (
            format!("`{hostname}` is not on the tailnet: the agent is not deployed"),
            "run `agent-army deploy`".to_string(),
        ),
        _ if on_other_tailnet => (
            format!(
                "`{hostname}` is not on the tailnet: this machine is on `{}`, but the stack's agents join `{}`",
                cx.local_tailnet, cx.stack_tailnet
            ),
            format!(
                "switch this machine to that tailnet (`tailscale switch`), or fix `tailnet` in the stack file to `{}`",
                cx.local_tailnet
            ),
        ),
        Some("running") => (
            format!(
                "`{hostname}` is not on the tailnet although its server runs: it is still booting, or tailscaled could not log in (auth key expired, single-use and already used, or not allowed its tags); an ephemeral device also disappears while offline"
            ),
            format!(
                "wait a few minutes after a deploy; otherwise read the VM's boot log in the provider's console, fix `tailscale_auth_key`, and run `agent-army deploy --replace {agent}`"
            ),
        ),
        Some(state) => (
            format!("`{hostname}` is not on the tailnet: its server is {state}"),
            "run `agent-army deploy` to recreate it".to_string(),
        ),
        None => (
            format!(
                "`{hostname}` is not on the tailnet: it is still booting, or tailscaled on the VM could not log in"
            ),
            "run `agent-army status` for the cloud's view and likely causes".to_string(),
        ),
    };
    Finding {
        unhealthy: true,
        message,
        help,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailnet::{Link, parse_status};

    const HEALTHY: &str = include_str!("../../tests/fixtures/tailscale/status-healthy.json");
    const DEGRADED: &str = include_str!("../../tests/fixtures/tailscale/status-degraded.json");
    const MISSING: &str = include_str!("../../tests/fixtures/tailscale/status-missing.json");
    const TN: &str = "tail12345.ts.net";

    fn view(fixture: &str, agent: &str) -> AgentTailnet {
        let st = parse_status(fixture).unwrap();
        let host = format!("prod-{agent}");
        classify(&st, &host, &format!("{host}.{TN}"))
    }

    fn cx<'a>(cloud: Option<&'a str>, agent: &'a str) -> Context<'a> {
        Context {
            cloud,
            stack_tailnet: TN,
            local_tailnet: TN,
            agent,
        }
    }

    #[test]
    fn direct_and_relay_links() {
        let pm = view(HEALTHY, "agent-pm");
        assert_eq!(pm.presence, Presence::Online);
        let d = pm.device.as_ref().unwrap();
        assert_eq!(
            d.link,
            Link::Direct {
                addr: "198.51.100.21:41641".into()
            }
        );
        assert_eq!(d.link.to_string(), "direct 198.51.100.21:41641");
        assert_eq!(d.ips[0], "100.101.1.21");
        assert_eq!(d.last_seen, None, "zero time means never");
        assert!(diagnose(&pm, "prod-agent-pm", &cx(Some("running"), "agent-pm")).is_none());

        let eng = view(HEALTHY, "agent-eng");
        assert_eq!(eng.presence, Presence::Online);
        assert_eq!(eng.device.unwrap().link.to_string(), "relay fra");
    }

    #[test]
    fn offline_device() {
        let eng = view(DEGRADED, "agent-eng");
        assert_eq!(eng.presence, Presence::Offline);
        let d = eng.device.as_ref().unwrap();
        assert_eq!(d.link, Link::Offline);
        assert_eq!(d.last_seen.as_deref(), Some("2026-04-30T08:12:45Z"));
        let f = diagnose(&eng, "prod-agent-eng", &cx(Some("running"), "agent-eng")).unwrap();
        assert!(f.unhealthy);
        assert!(
            f.message.contains("last seen 2026-04-30T08:12:45Z"),
            "{f:?}"
        );
        let f = diagnose(&eng, "prod-agent-eng", &cx(Some("stopped"), "agent-eng")).unwrap();
        assert!(f.message.contains("its server is stopped"), "{f:?}");
    }

    #[test]
    fn stale_device_holding_the_name() {
        let t = view(DEGRADED, "agent-tester");
        assert_eq!(t.presence, Presence::Duplicate);
        assert!(!t.device.as_ref().unwrap().online);
        assert_eq!(t.others.len(), 1);
        assert_eq!(t.others[0].short(), "prod-agent-tester-1");
        let f = diagnose(
            &t,
            "prod-agent-tester",
            &cx(Some("running"), "agent-tester"),
        )
        .unwrap();
        assert!(f.unhealthy);
        assert!(f.message.contains("held by a stale device"), "{f:?}");
        assert!(
            f.help
                .contains("remove the stale device `prod-agent-tester`")
        );
        assert!(f.help.contains("rename `prod-agent-tester-1`"));
        assert!(f.help.contains(ADMIN_CONSOLE));
    }

    #[test]
    fn missing_and_renamed() {
        let pm = view(MISSING, "agent-pm");
        assert_eq!(pm.presence, Presence::Missing);
        assert!(pm.device.is_none() && pm.others.is_empty());
        let f = diagnose(&pm, "prod-agent-pm", &cx(Some("running"), "agent-pm")).unwrap();
        assert!(
            f.message
                .contains("not on the tailnet although its server runs")
        );
        assert!(f.help.contains("--replace agent-pm"));
        let f = diagnose(&pm, "prod-agent-pm", &cx(Some("not deployed"), "agent-pm")).unwrap();
        assert!(f.help.contains("agent-army deploy"));
        let other = Context {
            local_tailnet: "tail99999.ts.net",
            ..cx(Some("running"), "agent-pm")
        };
        let f = diagnose(&pm, "prod-agent-pm", &other).unwrap();
        assert!(f.message.contains("this machine is on `tail99999.ts.net`"));

        // Only `<host>-1` exists: the stale holder is gone but the rename stuck.
        let eng = view(MISSING, "agent-eng");
        assert_eq!(eng.presence, Presence::Duplicate);
        assert!(eng.device.is_none());
        assert_eq!(eng.others[0].short(), "prod-agent-eng-1");
        let f = diagnose(&eng, "prod-agent-eng", &cx(Some("running"), "agent-eng")).unwrap();
        assert!(
            f.help
                .contains("rename `prod-agent-eng-1` to `prod-agent-eng`")
        );
    }

    #[test]
    fn offline_leftover_next_to_live_device_is_a_note() {
        let mut st = parse_status(HEALTHY).unwrap();
        let mut old = st
            .peer
            .values()
            .find(|p| p.host_name == "prod-agent-pm")
            .unwrap()
            .clone();
        old.dns_name = "prod-agent-pm-1.tail12345.ts.net.".into();
        old.online = false;
        st.peer.insert("nodekey:old".into(), old.clone());
        let v = classify(&st, "prod-agent-pm", "prod-agent-pm.tail12345.ts.net");
        assert_eq!(v.presence, Presence::Online);
        let f = diagnose(&v, "prod-agent-pm", &cx(Some("running"), "agent-pm")).unwrap();
        assert!(!f.unhealthy);
        // Both live: a second server claims the agent.
        old.online = true;
        st.peer.insert("nodekey:old".into(), old);
        let v = classify(&st, "prod-agent-pm", "prod-agent-pm.tail12345.ts.net");
        assert_eq!(v.presence, Presence::Duplicate);
    }

    #[test]
    fn numbered_names() {
        assert!(is_numbered("prod-agent-pm-1", "prod-agent-pm"));
        assert!(is_numbered("Prod-Agent-PM-12", "prod-agent-pm"));
        assert!(!is_numbered("prod-agent-pm-", "prod-agent-pm"));
        assert!(!is_numbered("prod-agent-pm-x", "prod-agent-pm"));
        assert!(!is_numbered("prod-agent-pm", "prod-agent-pm"));
        assert!(!is_numbered("prod-agent-pmx-1", "prod-agent-pm"));
    }
}

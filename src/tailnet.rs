//! The tailnet as this machine sees it.
//!
//! - `tailscale status --json` and `tailscale netcheck --format=json`, parsed into types shaped
//!   like Tailscale's own (`ipnstate.Status`, `netcheck.Report`);
//! - each agent's device classified: online (direct or relayed), offline, missing, or its name
//!   taken by a stale device (the agent then joins as `<host>-1`);
//! - the per-stack known_hosts file agent-army uses when it connects with OpenSSH, and
//!   [`forget_host`], which drops an agent's entry when its server is replaced.
//!
//! Parsing and classification are pure functions; only [`local`], [`find_program`] and
//! [`forget_host`] touch the system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::env::{Env, vars};

/// Where devices are managed.
pub const ADMIN_CONSOLE: &str = "https://login.tailscale.com/admin/machines";

/// Go encodes nil slices and maps as `null`; treat that as empty.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `tailscale status --json` (`ipnstate.Status`): the fields agent-army reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Status {
    /// The daemon's long version.
    #[serde(rename = "Version", default, deserialize_with = "nullable")]
    pub version: String,
    /// `NoState`, `NeedsLogin`, `NeedsMachineAuth`, `Stopped`, `Starting` or `Running`.
    #[serde(rename = "BackendState", default, deserialize_with = "nullable")]
    pub backend_state: String,
    #[serde(rename = "TailscaleIPs", default, deserialize_with = "nullable")]
    pub tailscale_ips: Vec<String>,
    /// This machine.
    #[serde(rename = "Self", default)]
    pub self_status: Option<PeerStatus>,
    #[serde(rename = "Health", default, deserialize_with = "nullable")]
    pub health: Vec<String>,
    /// Legacy name of `CurrentTailnet.MagicDNSSuffix`.
    #[serde(rename = "MagicDNSSuffix", default, deserialize_with = "nullable")]
    pub magic_dns_suffix: String,
    /// The tailnet this machine is on; absent when not connected.
    #[serde(rename = "CurrentTailnet", default)]
    pub current_tailnet: Option<TailnetStatus>,
    /// Peers, keyed by node public key.
    #[serde(rename = "Peer", default, deserialize_with = "nullable")]
    pub peer: BTreeMap<String, PeerStatus>,
}

/// `ipnstate.TailnetStatus`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TailnetStatus {
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(rename = "MagicDNSSuffix", default, deserialize_with = "nullable")]
    pub magic_dns_suffix: String,
    #[serde(rename = "MagicDNSEnabled", default)]
    pub magic_dns_enabled: bool,
}

/// `ipnstate.PeerStatus`: one device of the tailnet.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeerStatus {
    /// Stable node id.
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(rename = "PublicKey", default, deserialize_with = "nullable")]
    pub public_key: String,
    /// The OS hostname (not unique, not a DNS name).
    #[serde(rename = "HostName", default, deserialize_with = "nullable")]
    pub host_name: String,
    /// MagicDNS name, with a trailing dot: `host.<MagicDNSSuffix>.`
    #[serde(rename = "DNSName", default, deserialize_with = "nullable")]
    pub dns_name: String,
    #[serde(rename = "OS", default, deserialize_with = "nullable")]
    pub os: String,
    #[serde(rename = "TailscaleIPs", default, deserialize_with = "nullable")]
    pub tailscale_ips: Vec<String>,
    #[serde(rename = "Tags", default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    #[serde(rename = "Addrs", default, deserialize_with = "nullable")]
    pub addrs: Vec<String>,
    /// The direct UDP endpoint in use; empty when traffic is relayed (or idle).
    #[serde(rename = "CurAddr", default, deserialize_with = "nullable")]
    pub cur_addr: String,
    /// Home DERP region code of the peer (e.g. `fra`).
    #[serde(rename = "Relay", default, deserialize_with = "nullable")]
    pub relay: String,
    /// Peer relay endpoint in use (newer clients).
    #[serde(rename = "PeerRelay", default, deserialize_with = "nullable")]
    pub peer_relay: String,
    #[serde(rename = "RxBytes", default)]
    pub rx_bytes: i64,
    #[serde(rename = "TxBytes", default)]
    pub tx_bytes: i64,
    #[serde(rename = "Created", default, deserialize_with = "nullable")]
    pub created: String,
    /// Last seen by the control plane; only meaningful when offline.
    #[serde(rename = "LastSeen", default, deserialize_with = "nullable")]
    pub last_seen: String,
    #[serde(rename = "LastHandshake", default, deserialize_with = "nullable")]
    pub last_handshake: String,
    /// Connected to the control plane.
    #[serde(rename = "Online", default)]
    pub online: bool,
    #[serde(rename = "ExitNode", default)]
    pub exit_node: bool,
    /// Traffic in the last couple of minutes.
    #[serde(rename = "Active", default)]
    pub active: bool,
    #[serde(rename = "Expired", default)]
    pub expired: bool,
    #[serde(rename = "KeyExpiry", default)]
    pub key_expiry: Option<String>,
}

/// Go's zero `time.Time` means "never".
fn real_time(t: &str) -> Option<&str> {
    (!t.is_empty() && !t.starts_with("0001-01-01")).then_some(t)
}

impl Status {
    pub fn is_running(&self) -> bool {
        self.backend_state == "Running"
    }

    /// MagicDNS suffix of the tailnet this machine is on ("" when unknown).
    pub fn suffix(&self) -> &str {
        match &self.current_tailnet {
            Some(t) if !t.magic_dns_suffix.is_empty() => &t.magic_dns_suffix,
            _ => &self.magic_dns_suffix,
        }
    }

    /// This machine and every peer.
    pub fn devices(&self) -> impl Iterator<Item = &PeerStatus> {
        self.self_status.iter().chain(self.peer.values())
    }
}

impl PeerStatus {
    /// The MagicDNS name without its trailing dot.
    pub fn name(&self) -> &str {
        self.dns_name.trim_end_matches('.')
    }

    /// How traffic to this device flows right now.
    pub fn link(&self) -> Link {
        if !self.online {
            Link::Offline
        } else if !self.cur_addr.is_empty() {
            Link::Direct {
                addr: self.cur_addr.clone(),
            }
        } else if !self.peer_relay.is_empty() {
            Link::PeerRelay {
                addr: self.peer_relay.clone(),
            }
        } else if !self.relay.is_empty() {
            Link::Relay {
                region: self.relay.clone(),
            }
        } else {
            Link::Idle
        }
    }

    pub fn device(&self) -> Device {
        Device {
            name: self.name().to_string(),
            host_name: self.host_name.clone(),
            id: self.id.clone(),
            online: self.online,
            ips: self.tailscale_ips.clone(),
            link: self.link(),
            last_seen: real_time(&self.last_seen).map(str::to_string),
            key_expired: self.expired,
        }
    }
}

/// How traffic to a device flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Link {
    /// Peer-to-peer over UDP (`CurAddr` set).
    Direct {
        addr: String,
    },
    /// Through the DERP relay of this region (only `Relay` set).
    Relay {
        region: String,
    },
    /// Through a Tailscale peer relay.
    PeerRelay {
        addr: String,
    },
    /// Online, but no path chosen yet (no traffic since it came up).
    Idle,
    Offline,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Direct { addr } => write!(f, "direct {addr}"),
            Link::Relay { region } => write!(f, "relay {region}"),
            Link::PeerRelay { addr } => write!(f, "peer relay {addr}"),
            Link::Idle => f.write_str("idle"),
            Link::Offline => f.write_str("-"),
        }
    }
}

/// A device as agent-army reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// MagicDNS name (no trailing dot).
    pub name: String,
    /// OS hostname.
    pub host_name: String,
    pub id: String,
    pub online: bool,
    pub ips: Vec<String>,
    pub link: Link,
    /// When the control plane last saw it (offline devices).
    pub last_seen: Option<String>,
    pub key_expired: bool,
}

impl Device {
    /// First label of the MagicDNS name (or the OS hostname when there is none).
    pub fn short(&self) -> &str {
        if self.name.is_empty() {
            &self.host_name
        } else {
            self.name.split('.').next().unwrap_or(&self.name)
        }
    }
}

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

/// `tailscale netcheck --format=json` (`netcheck.Report`): the fields agent-army reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetcheckReport {
    /// A UDP STUN round trip completed.
    #[serde(rename = "UDP", default)]
    pub udp: bool,
    #[serde(rename = "IPv4", default)]
    pub ipv4: bool,
    #[serde(rename = "IPv6", default)]
    pub ipv6: bool,
    /// Whether the public mapping depends on the destination (hard NAT); `null` = not known.
    #[serde(rename = "MappingVariesByDestIP", default)]
    pub mapping_varies_by_dest_ip: Option<bool>,
    #[serde(rename = "UPnP", default)]
    pub upnp: Option<bool>,
    #[serde(rename = "PMP", default)]
    pub pmp: Option<bool>,
    #[serde(rename = "PCP", default)]
    pub pcp: Option<bool>,
    /// DERP region id, 0 when unknown.
    #[serde(rename = "PreferredDERP", default)]
    pub preferred_derp: i64,
    /// Region id → latency in nanoseconds.
    #[serde(rename = "RegionLatency", default, deserialize_with = "nullable")]
    pub region_latency: BTreeMap<String, i64>,
    #[serde(rename = "GlobalV4", default, deserialize_with = "nullable")]
    pub global_v4: String,
    #[serde(rename = "GlobalV6", default, deserialize_with = "nullable")]
    pub global_v6: String,
    #[serde(rename = "CaptivePortal", default)]
    pub captive_portal: Option<bool>,
}

/// Parse netcheck output, skipping anything before the JSON object (a login banner, say).
pub fn parse_netcheck(text: &str) -> Result<NetcheckReport, String> {
    let start = text
        .find('{')
        .ok_or_else(|| "no JSON in the output of `tailscale netcheck`".to_string())?;
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<NetcheckReport>()
        .next()
        .unwrap_or_else(|| Err(serde::de::Error::custom("empty output")))
        .map_err(|e| format!("unreadable `tailscale netcheck` output: {e}"))
}

/// Parse `tailscale status --json`.
pub fn parse_status(text: &str) -> Result<Status, String> {
    serde_json::from_str(text).map_err(|e| format!("unreadable `tailscale status --json`: {e}"))
}

/// What netcheck says about an agent's chances of direct connections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetcheckSummary {
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub global_v4: Option<String>,
    /// `MappingVariesByDestIP`: the NAT maps each destination to a different port.
    pub hard_nat: Option<bool>,
    /// Preferred DERP region id.
    pub preferred_derp: Option<i64>,
    pub preferred_derp_latency_ms: Option<f64>,
    /// Connections to this agent are likely to stay on a DERP relay.
    pub relay_risk: bool,
    pub reasons: Vec<String>,
}

pub fn summarize(r: &NetcheckReport) -> NetcheckSummary {
    let mut reasons = Vec::new();
    if !r.udp {
        reasons.push("no UDP: every connection goes through a DERP relay".to_string());
    }
    if r.mapping_varies_by_dest_ip == Some(true) {
        reasons.push(
            "hard NAT (MappingVariesByDestIP): direct connections only work when the other side has an easy NAT or a public address"
                .to_string(),
        );
    }
    if r.region_latency.is_empty() {
        reasons.push("no DERP region answered".to_string());
    }
    if r.captive_portal == Some(true) {
        reasons.push("a captive portal intercepts HTTP".to_string());
    }
    let preferred = (r.preferred_derp != 0).then_some(r.preferred_derp);
    let latency = preferred
        .and_then(|id| r.region_latency.get(&id.to_string()))
        .map(|ns| (*ns as f64 / 100_000.0).round() / 10.0);
    NetcheckSummary {
        udp: r.udp,
        ipv4: r.ipv4,
        ipv6: r.ipv6,
        global_v4: (!r.global_v4.is_empty()).then(|| r.global_v4.clone()),
        hard_nat: r.mapping_varies_by_dest_ip,
        preferred_derp: preferred,
        preferred_derp_latency_ms: latency,
        relay_risk: !r.udp || r.mapping_varies_by_dest_ip == Some(true),
        reasons,
    }
}

/// The first executable called `name` on `PATH`.
pub fn find_program(env: &Env, name: &str) -> Option<PathBuf> {
    let path = env.get(vars::PATH)?;
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The local Tailscale client.
#[derive(Debug, Clone)]
pub enum Local {
    /// `tailscale` is not on PATH.
    NotInstalled,
    /// Installed, but not connected: `detail` says why.
    NotRunning {
        bin: PathBuf,
        detail: String,
    },
    Running {
        bin: PathBuf,
        status: Box<Status>,
    },
}

impl Local {
    pub fn status(&self) -> Option<&Status> {
        match self {
            Local::Running { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// Ask the local `tailscale` for its status.
pub async fn local(env: &Env) -> Local {
    let Some(bin) = find_program(env, "tailscale") else {
        return Local::NotInstalled;
    };
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(&bin)
            .args(["status", "--json"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let detail = match out {
        Err(_) => "`tailscale status --json` did not answer within 15s".to_string(),
        Ok(Err(e)) => format!("cannot run {}: {e}", bin.display()),
        Ok(Ok(o)) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("`tailscale status` failed: {}", first.trim())
        }
        Ok(Ok(o)) => match parse_status(&String::from_utf8_lossy(&o.stdout)) {
            Err(e) => e,
            Ok(s) if s.is_running() => {
                return Local::Running {
                    bin,
                    status: Box::new(s),
                };
            }
            Ok(s) => format!("BackendState is {}", s.backend_state),
        },
    };
    Local::NotRunning { bin, detail }
}

/// The known_hosts file agent-army uses for a stack's agents when it connects with OpenSSH.
pub fn known_hosts_path(base_dir: &Path, stack: &str) -> PathBuf {
    base_dir.join("known_hosts").join(stack)
}

/// Drop the known_hosts entries of `host` from the stack's file, so the next connection
/// accepts the key of a replaced server instead of refusing it as changed.
///
/// `host` is the agent's MagicDNS name, or its hostname `<stack>-<agent>` (which then matches
/// the name in any tailnet). Returns how many entries were removed; a missing file is fine.
pub fn forget_host(base_dir: &Path, stack: &str, host: &str) -> std::io::Result<usize> {
    let path = known_hosts_path(base_dir, stack);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let (kept, removed) = without_host(&text, host);
    if removed > 0 {
        crate::fsutil::write_private_atomic(&path, kept.as_bytes())?;
    }
    Ok(removed)
}

/// Whether one known_hosts host pattern names `host`.
fn pattern_matches(pattern: &str, host: &str) -> bool {
    // `[name]:port` for non-standard ports.
    let name = match pattern.strip_prefix('[').and_then(|p| p.split_once("]:")) {
        Some((n, _)) => n,
        None => pattern,
    };
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    // A bare hostname also matches its MagicDNS names.
    !host.contains('.')
        && name.len() > host.len() + 1
        && name[..host.len()].eq_ignore_ascii_case(host)
        && name.as_bytes()[host.len()] == b'.'
}

/// `text` without the lines whose host patterns name `host`, and how many were dropped.
pub fn without_host(text: &str, host: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for line in text.split_inclusive('\n') {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        let hosts = if first.starts_with('@') {
            fields.next().unwrap_or("")
        } else {
            first
        };
        let hit = !first.starts_with('#')
            && hosts
                .split(',')
                .any(|p| !p.starts_with('!') && pattern_matches(p, host));
        if hit {
            removed += 1;
        } else {
            out.push_str(line);
        }
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &str = include_str!("../tests/fixtures/tailscale/status-healthy.json");
    const DEGRADED: &str = include_str!("../tests/fixtures/tailscale/status-degraded.json");
    const MISSING: &str = include_str!("../tests/fixtures/tailscale/status-missing.json");
    const STOPPED: &str = include_str!("../tests/fixtures/tailscale/status-stopped.json");
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
    fn parses_real_shaped_status() {
        let st = parse_status(HEALTHY).unwrap();
        assert!(st.is_running());
        assert_eq!(st.suffix(), TN);
        assert!(st.version.starts_with("1."));
        let me = st.self_status.as_ref().unwrap();
        assert_eq!(me.name(), "dev-laptop.tail12345.ts.net");
        assert_eq!(st.peer.len(), 3);
        assert!(
            st.devices()
                .all(|d| d.dns_name.ends_with('.') && !d.tailscale_ips.is_empty())
        );
    }

    #[test]
    fn stopped_daemon_has_null_self_and_peers() {
        let st = parse_status(STOPPED).unwrap();
        assert!(!st.is_running());
        assert_eq!(st.backend_state, "Stopped");
        assert!(st.peer.is_empty());
        assert!(st.current_tailnet.is_none());
        assert_eq!(st.suffix(), "tail12345.ts.net");
        let me = st.self_status.as_ref().unwrap();
        assert!(me.tailscale_ips.is_empty() && me.name().is_empty());
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

    #[test]
    fn link_idle_and_peer_relay() {
        let p = PeerStatus {
            online: true,
            ..Default::default()
        };
        assert_eq!(p.link(), Link::Idle);
        let p = PeerStatus {
            online: true,
            relay: "fra".into(),
            peer_relay: "100.64.0.9:7777".into(),
            ..Default::default()
        };
        assert_eq!(p.link().to_string(), "peer relay 100.64.0.9:7777");
    }

    #[test]
    fn netcheck_easy_and_hard() {
        let easy = parse_netcheck(include_str!(
            "../tests/fixtures/tailscale/netcheck-easy.json"
        ))
        .unwrap();
        let s = summarize(&easy);
        assert!(s.udp && !s.relay_risk, "{s:?}");
        assert_eq!(s.hard_nat, Some(false));
        assert_eq!(s.preferred_derp, Some(4));
        assert_eq!(s.preferred_derp_latency_ms, Some(4.2));
        assert_eq!(s.global_v4.as_deref(), Some("198.51.100.21:41641"));

        let hard = summarize(
            &parse_netcheck(include_str!(
                "../tests/fixtures/tailscale/netcheck-hard-nat.json"
            ))
            .unwrap(),
        );
        assert!(hard.relay_risk);
        assert!(hard.reasons[0].contains("hard NAT"));

        let no_udp = summarize(
            &parse_netcheck(include_str!(
                "../tests/fixtures/tailscale/netcheck-no-udp.json"
            ))
            .unwrap(),
        );
        assert!(no_udp.relay_risk && !no_udp.udp);
        assert_eq!(no_udp.hard_nat, None, "null means not known");
        assert!(no_udp.reasons[0].starts_with("no UDP"));
    }

    #[test]
    fn netcheck_output_with_noise() {
        let r =
            parse_netcheck("Welcome!\n{\"UDP\": true, \"PreferredDERP\": 1}\ntrailing\n").unwrap();
        assert!(r.udp);
        assert!(parse_netcheck("command not found").is_err());
    }

    #[test]
    fn known_hosts_lines_are_dropped_by_name() {
        let text = "\
prod-agent-pm.tail12345.ts.net ssh-ed25519 AAAA1
prod-agent-eng.tail12345.ts.net ssh-ed25519 AAAA2
[prod-agent-pm.tail12345.ts.net]:2222 ssh-ed25519 AAAA3
other,prod-agent-pm.tail12345.ts.net ecdsa-sha2-nistp256 AAAA4
@cert-authority prod-agent-pm.tail12345.ts.net ssh-ed25519 AAAA5
prod-agent-pm-1.tail12345.ts.net ssh-ed25519 AAAA6
# prod-agent-pm.tail12345.ts.net comment
";
        let (kept, n) = without_host(text, "prod-agent-pm.tail12345.ts.net");
        assert_eq!(n, 4);
        assert_eq!(
            kept,
            "prod-agent-eng.tail12345.ts.net ssh-ed25519 AAAA2\nprod-agent-pm-1.tail12345.ts.net ssh-ed25519 AAAA6\n# prod-agent-pm.tail12345.ts.net comment\n"
        );
        // The bare hostname matches the agent in any tailnet, not `-1` devices.
        let (_, n) = without_host(text, "prod-agent-pm");
        assert_eq!(n, 4);
        let (_, n) = without_host(text, "prod-agent");
        assert_eq!(n, 0);
    }

    #[test]
    fn forget_host_rewrites_the_stack_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(forget_host(d.path(), "prod", "x").unwrap(), 0);
        let p = known_hosts_path(d.path(), "prod");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "a.ts.net ssh-ed25519 K1\nb.ts.net ssh-ed25519 K2\n").unwrap();
        assert_eq!(forget_host(d.path(), "prod", "a.ts.net").unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "b.ts.net ssh-ed25519 K2\n"
        );
        assert_eq!(forget_host(d.path(), "prod", "a.ts.net").unwrap(), 0);
    }

    #[test]
    fn finds_programs_on_path() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("tailscale");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let env = Env::from_pairs([("PATH", d.path().display().to_string())]);
        assert_eq!(find_program(&env, "tailscale"), None, "not executable");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(find_program(&env, "tailscale"), Some(bin));
        }
        assert_eq!(find_program(&Env::default(), "tailscale"), None);
    }
}

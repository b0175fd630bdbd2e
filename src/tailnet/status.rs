//! `tailscale status --json`, parsed into types shaped like Tailscale's own
//! (`ipnstate.Status`), and each peer as agent-army reports it: a [`Device`] and its [`Link`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Go encodes nil slices and maps as `null`; treat that as empty.
pub(super) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
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

/// Parse `tailscale status --json`.
pub fn parse_status(text: &str) -> Result<Status, String> {
    serde_json::from_str(text).map_err(|e| format!("unreadable `tailscale status --json`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &str = include_str!("../../tests/fixtures/tailscale/status-healthy.json");
    const STOPPED: &str = include_str!("../../tests/fixtures/tailscale/status-stopped.json");
    const TN: &str = "tail12345.ts.net";

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
}

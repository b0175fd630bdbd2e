//! The Hetzner Cloud API's JSON shapes, only the fields agent-army reads: kept apart so the
//! client, the action poller and the resource code share one definition of each answer.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ServerObj {
    pub(super) id: u64,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) status: String,
    #[serde(default)]
    pub(super) created: String,
    #[serde(default)]
    pub(super) labels: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct FirewallObj {
    pub(super) id: u64,
    #[serde(default)]
    pub(super) labels: HashMap<String, String>,
    #[serde(default)]
    pub(super) rules: Vec<RuleObj>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct RuleObj {
    #[serde(default)]
    pub(super) direction: String,
    #[serde(default)]
    pub(super) protocol: String,
    #[serde(default)]
    pub(super) port: Option<String>,
    #[serde(default)]
    pub(super) source_ips: Vec<String>,
    #[serde(default)]
    pub(super) destination_ips: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct SshKeyObj {
    pub(super) id: u64,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) public_key: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ActionObj {
    pub(super) id: u64,
    #[serde(default)]
    pub(super) command: String,
    #[serde(default)]
    pub(super) status: String,
    #[serde(default)]
    pub(super) error: Option<ActionErr>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ActionErr {
    #[serde(default)]
    pub(super) code: String,
    #[serde(default)]
    pub(super) message: String,
}

#[derive(Deserialize)]
pub(super) struct CreateServerResp {
    pub(super) server: ServerObj,
    pub(super) action: Option<ActionObj>,
    #[serde(default)]
    pub(super) next_actions: Vec<ActionObj>,
}

#[derive(Deserialize)]
pub(super) struct ActionResp {
    pub(super) action: ActionObj,
}

#[derive(Deserialize)]
pub(super) struct ActionsResp {
    #[serde(default)]
    pub(super) actions: Vec<ActionObj>,
}

#[derive(Deserialize)]
pub(super) struct FirewallResp {
    pub(super) firewall: FirewallObj,
}

#[derive(Deserialize)]
pub(super) struct SshKeyResp {
    pub(super) ssh_key: SshKeyObj,
}

#[derive(Deserialize)]
pub(super) struct ServerResp {
    pub(super) server: ServerObj,
}

#[derive(Deserialize)]
pub(super) struct ServerTypeObj {
    pub(super) name: String,
    pub(super) prices: Vec<PriceObj>,
}
#[derive(Deserialize)]
pub(super) struct PriceObj {
    pub(super) location: String,
    pub(super) price_monthly: PriceValue,
}
#[derive(Deserialize)]
pub(super) struct PriceValue {
    pub(super) net: String,
    pub(super) gross: String,
}

//! The stack's resources on Hetzner: labels, the firewall and its rules, the break-glass SSH
//! key, and what a server create needs when its name is taken.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use super::Inner;
use super::wire::{
    ActionsResp, FirewallObj, FirewallResp, RuleObj, ServerObj, SshKeyObj, SshKeyResp,
};
use crate::provider::{ProviderError, ServerSpec, ServerState, StackId, tags};

const RULE_DESCRIPTION: &str = "agent-army allowed_ssh_cidrs";

/// Label key with agent-army's prefix.
pub fn label_key(k: &str) -> String {
    format!("agent-army/{k}")
}

/// `agent-army/project=P,agent-army/stack=S[,extra k=v...]`.
pub fn label_selector(stack: &StackId, extra: &[(&str, &str)]) -> String {
    let mut parts = vec![
        format!("{}={}", label_key(tags::PROJECT), stack.project),
        format!("{}={}", label_key(tags::STACK), stack.stack),
    ];
    parts.extend(extra.iter().map(|(k, v)| format!("{}={v}", label_key(k))));
    parts.join(",")
}

/// The labels agent-army puts on a resource.
pub(super) fn labels(
    stack: &StackId,
    role: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(label_key(tags::PROJECT), stack.project.clone());
    m.insert(label_key(tags::STACK), stack.stack.clone());
    m.insert(label_key(tags::ROLE), role.to_string());
    // An empty value (no key id) is no label at all, as on AWS.
    for (k, v) in extra.iter().filter(|(_, v)| !v.is_empty()) {
        m.insert(label_key(k), v.to_string());
    }
    m
}

pub(super) fn is_ours(stack: &StackId, l: &HashMap<String, String>) -> bool {
    l.get(&label_key(tags::PROJECT)) == Some(&stack.project)
        && l.get(&label_key(tags::STACK)) == Some(&stack.stack)
}

/// Firewall rules for `allowed_ssh_cidrs`: none at all, or one inbound tcp/22 rule.
pub fn firewall_rules(cidrs: &[String]) -> Value {
    if cidrs.is_empty() {
        return json!([]);
    }
    json!([{
        "direction": "in",
        "protocol": "tcp",
        "port": "22",
        "source_ips": cidrs,
        "description": RULE_DESCRIPTION,
    }])
}

/// CIDRs allowed to port 22 by `rules`; any other rule shows up as a marker so that the plan
/// sees drift and resets the rules.
pub(super) fn cidrs_from_rules(rules: &[RuleObj]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        let ssh = r.direction == "in" && r.protocol == "tcp" && r.port.as_deref() == Some("22");
        if ssh {
            out.extend(r.source_ips.iter().cloned());
        } else {
            out.push(format!(
                "(rule {} {} {} {})",
                r.direction,
                r.protocol,
                r.port.as_deref().unwrap_or("-"),
                if r.direction == "in" {
                    r.source_ips.join(" ")
                } else {
                    r.destination_ips.join(" ")
                }
            ));
        }
    }
    out
}

pub(super) fn map_status(s: &str) -> ServerState {
    match s {
        "initializing" | "starting" => ServerState::Pending,
        "running" => ServerState::Running,
        "stopping" => ServerState::Stopping,
        "off" => ServerState::Stopped,
        "deleting" => ServerState::Deleting,
        other => ServerState::Other(other.to_string()),
    }
}

/// Whether two OpenSSH public key lines hold the same key (comments ignored).
pub(super) fn same_public_key(a: &str, b: &str) -> bool {
    let k = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    !k(a).is_empty() && k(a) == k(b)
}

impl Inner {
    /// `agent-army-<project>-<stack>`: name of the firewall and the SSH key.
    fn resource_name(&self) -> String {
        format!("agent-army-{}-{}", self.stack.project, self.stack.stack)
    }

    pub(super) fn selector(&self, extra: &[(&str, &str)]) -> String {
        label_selector(&self.stack, extra)
    }

    pub(super) async fn ensure_ssh_key(&self, public_key: &str) -> Result<String, ProviderError> {
        let name = self.resource_name();
        let body = json!({
            "name": name,
            "public_key": public_key.trim(),
            "labels": labels(&self.stack, tags::ROLE_SSH_KEY, &[]),
        });
        let err = match self
            .call::<SshKeyResp>(Method::POST, "/ssh_keys", &[], Some(&body))
            .await
        {
            Ok(r) => return Ok(r.ssh_key.id.to_string()),
            Err(e) if e.code == "uniqueness_error" => e,
            Err(e) => return Err(e),
        };
        // Left by an interrupted run? Reuse it when it is the same key; replace a stale one.
        let ours: Vec<SshKeyObj> = self.stack_ssh_keys().await?;
        if let Some(k) = ours
            .iter()
            .find(|k| same_public_key(&k.public_key, public_key))
        {
            return Ok(k.id.to_string());
        }
        if let Some(k) = ours.iter().find(|k| k.name == name) {
            self.delete_ssh_key(k.id).await?;
            let r: SshKeyResp = self
                .call(Method::POST, "/ssh_keys", &[], Some(&body))
                .await?;
            return Ok(r.ssh_key.id.to_string());
        }
        Err(ProviderError {
            message: format!("SSH key `{name}`: {}", err.message),
            ..err
        })
    }

    pub(super) async fn delete_ssh_key(&self, id: u64) -> Result<(), ProviderError> {
        match self
            .call::<Value>(Method::DELETE, &format!("/ssh_keys/{id}"), &[], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == "not_found" => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn ensure_firewall(
        self: &Arc<Self>,
        cidrs: &[String],
    ) -> Result<u64, ProviderError> {
        let name = self.resource_name();
        let body = json!({
            "name": name,
            "labels": labels(&self.stack, tags::ROLE_NETWORK, &[]),
            "rules": firewall_rules(cidrs),
        });
        let err = match self
            .call::<FirewallResp>(Method::POST, "/firewalls", &[], Some(&body))
            .await
        {
            Ok(r) => return Ok(r.firewall.id),
            Err(e) if e.code == "uniqueness_error" => e,
            Err(e) => return Err(e),
        };
        let same_name: Vec<FirewallObj> = self
            .list_all("/firewalls", "firewalls", &[("name", name.clone())])
            .await?;
        if let Some(f) = same_name.iter().find(|f| is_ours(&self.stack, &f.labels)) {
            let mut have = cidrs_from_rules(&f.rules);
            let mut want = cidrs.to_vec();
            have.sort();
            want.sort();
            if have != want {
                self.set_rules(f.id, cidrs).await?;
            }
            return Ok(f.id);
        }
        Err(ProviderError {
            message: format!("firewall `{name}`: {}", err.message),
            ..err
        })
    }

    pub(super) async fn set_rules(
        self: &Arc<Self>,
        id: u64,
        cidrs: &[String],
    ) -> Result<(), ProviderError> {
        let body = json!({ "rules": firewall_rules(cidrs) });
        let r: ActionsResp = self
            .call(
                Method::POST,
                &format!("/firewalls/{id}/actions/set_rules"),
                &[],
                Some(&body),
            )
            .await?;
        let ids: Vec<u64> = r.actions.iter().map(|a| a.id).collect();
        self.wait_actions(&ids, &format!("firewall {id} rules"))
            .await
    }

    /// The stack's labelled break-glass SSH keys.
    async fn stack_ssh_keys(&self) -> Result<Vec<SshKeyObj>, ProviderError> {
        self.list_all(
            "/ssh_keys",
            "ssh_keys",
            &[(
                "label_selector",
                self.selector(&[(tags::ROLE, tags::ROLE_SSH_KEY)]),
            )],
        )
        .await
    }

    /// The stack's break-glass key, for a server spec that comes without one.
    pub(super) async fn break_glass_key(&self) -> Result<Option<String>, ProviderError> {
        self.break_glass
            .get_or_try_init(|| async {
                let keys: Vec<SshKeyObj> = self.stack_ssh_keys().await?;
                Ok(keys.first().map(|k| k.id.to_string()))
            })
            .await
            .cloned()
    }

    /// A failed server create, with advice when the type is not available in the location.
    pub(super) fn create_error(&self, spec: &ServerSpec, mut e: ProviderError) -> ProviderError {
        let unsupported = e.code == "invalid_input"
            && e.message
                .to_ascii_lowercase()
                .contains("unsupported location for server type");
        if unsupported || matches!(e.code.as_str(), "resource_unavailable" | "placement_error") {
            e.advice = Some(format!(
                "server type `{}` is {} in location `{}`: choose another `location` or `server_type` in the stack file (or `instance_type` on the agent){}",
                spec.instance_type,
                if unsupported {
                    "not offered"
                } else {
                    "not available right now"
                },
                self.location,
                if unsupported { "" } else { ", or retry later" }
            ));
        }
        e
    }

    /// After a uniqueness error on create: the server of that name, if it is this agent's
    /// (then either created by a call whose answer was lost, or an old server still being
    /// deleted: a run that died right after deleting it for a replacement).
    pub(super) async fn same_name(
        &self,
        spec: &ServerSpec,
    ) -> Result<Option<ServerObj>, ProviderError> {
        let servers: Vec<ServerObj> = self
            .list_all("/servers", "servers", &[("name", spec.hostname.clone())])
            .await?;
        Ok(servers.into_iter().find(|s| {
            is_ours(&self.stack, &s.labels)
                && s.labels.get(&label_key(tags::AGENT)) == Some(&spec.agent)
        }))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::provider::hetzner::parse_id;

    /// The stack the Hetzner unit tests use.
    pub(in crate::provider::hetzner) fn stack() -> StackId {
        StackId {
            project: "acme-agents".into(),
            stack: "dev".into(),
        }
    }

    #[test]
    fn selector_lists_project_and_stack_then_extras() {
        assert_eq!(
            label_selector(&stack(), &[]),
            "agent-army/project=acme-agents,agent-army/stack=dev"
        );
        assert_eq!(
            label_selector(&stack(), &[("role", "break-glass-ssh-key")]),
            "agent-army/project=acme-agents,agent-army/stack=dev,agent-army/role=break-glass-ssh-key"
        );
    }

    #[test]
    fn labels_carry_role_and_extras() {
        let l = labels(&stack(), tags::ROLE_SERVER, &[(tags::AGENT, "agent-pm")]);
        assert_eq!(l["agent-army/project"], "acme-agents");
        assert_eq!(l["agent-army/stack"], "dev");
        assert_eq!(l["agent-army/role"], "agent");
        assert_eq!(l["agent-army/agent"], "agent-pm");
        let owned: HashMap<String, String> = l.into_iter().collect();
        assert!(is_ours(&stack(), &owned));
        let other = StackId {
            project: "acme-agents".into(),
            stack: "prod".into(),
        };
        assert!(!is_ours(&other, &owned));
    }

    #[test]
    fn firewall_rules_round_trip() {
        assert_eq!(firewall_rules(&[]), json!([]));
        let cidrs = vec!["203.0.113.0/24".to_string(), "2001:db8::/32".to_string()];
        let rules = firewall_rules(&cidrs);
        assert_eq!(rules[0]["port"], "22");
        assert_eq!(rules[0]["direction"], "in");
        assert_eq!(rules[0]["protocol"], "tcp");
        let parsed: Vec<RuleObj> = serde_json::from_value(rules).unwrap();
        assert_eq!(cidrs_from_rules(&parsed), cidrs);
        assert!(cidrs_from_rules(&[]).is_empty());
    }

    #[test]
    fn other_rules_count_as_drift() {
        let rules: Vec<RuleObj> = serde_json::from_value(json!([
            {"direction":"in","protocol":"tcp","port":"80","source_ips":["0.0.0.0/0"]},
            {"direction":"out","protocol":"icmp","port":null,"destination_ips":["0.0.0.0/0"]}
        ]))
        .unwrap();
        let c = cidrs_from_rules(&rules);
        assert_eq!(c.len(), 2);
        assert!(c[0].contains("tcp 80"), "{c:?}");
        assert!(c[1].contains("out icmp"), "{c:?}");
    }

    #[test]
    fn statuses_and_keys() {
        assert_eq!(map_status("initializing"), ServerState::Pending);
        assert_eq!(map_status("running"), ServerState::Running);
        assert_eq!(map_status("off"), ServerState::Stopped);
        assert!(map_status("deleting").is_gone());
        assert_eq!(
            map_status("rebuilding"),
            ServerState::Other("rebuilding".into())
        );
        assert!(same_public_key(
            "ssh-ed25519 AAAAC3Nza comment-a",
            "ssh-ed25519 AAAAC3Nza other\n"
        ));
        assert!(!same_public_key("ssh-ed25519 AAAA", "ssh-ed25519 BBBB"));
        assert!(!same_public_key("", ""));
        assert!(parse_id("server", "42").is_ok());
        assert_eq!(parse_id("server", "i-123").unwrap_err().code, "invalid_id");
    }
}

//! Planning, a pure function: desired agents + state + what the cloud has → actions.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::provider::{Observed, ObservedServer};
use crate::state::{Inputs, State};

/// One agent as the configuration wants it.
#[derive(Debug, Clone)]
pub struct DesiredAgent {
    pub name: String,
    pub inputs: Inputs,
    /// Fingerprint of the machine inputs.
    pub fingerprint: String,
    /// What a new server is labelled with ([`Inputs::label`]).
    pub label: String,
    /// Id of the agent's gateway key, when this run can know it (`None`: not checked).
    pub key_id: Option<String>,
}

/// What happens to the stack-wide network resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum NetworkAction {
    Create,
    /// Exists; ingress rules differ from `allowed_ssh_cidrs`.
    UpdateRules {
        id: String,
    },
    NoChange {
        id: String,
    },
    Delete {
        id: String,
    },
}

/// What happens to one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AgentAction {
    Create {
        agent: String,
    },
    Replace {
        agent: String,
        old_id: String,
        reasons: Vec<String>,
    },
    Delete {
        agent: String,
        id: String,
        reason: String,
    },
    /// The machine stays; the agent's configuration changes in place, over ssh. `changes`
    /// names what differs (`env.TZ`, `workspace/AGENTS.md`, …); `unreachable`, when set, says
    /// why the agent cannot be reached now (the update then fails for this agent alone).
    Update {
        agent: String,
        id: String,
        changes: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unreachable: Option<String>,
    },
    /// A server that exists in the cloud, tagged for this agent, but not (yet) in state: it
    /// is recorded without any cloud call.
    Adopt {
        agent: String,
        id: String,
    },
    NoChange {
        agent: String,
        id: String,
    },
}

impl AgentAction {
    pub fn agent(&self) -> &str {
        match self {
            AgentAction::Create { agent }
            | AgentAction::Replace { agent, .. }
            | AgentAction::Delete { agent, .. }
            | AgentAction::Update { agent, .. }
            | AgentAction::Adopt { agent, .. }
            | AgentAction::NoChange { agent, .. } => agent,
        }
    }
    /// Whether the action changes something: a mutating cloud API, or the agent in place.
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            AgentAction::Create { .. }
                | AgentAction::Replace { .. }
                | AgentAction::Delete { .. }
                | AgentAction::Update { .. }
        )
    }
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub network: Vec<NetworkAction>,
    pub agents: Vec<AgentAction>,
    /// Agents in state that no longer exist anywhere (dropped from state, no cloud call).
    pub forget: Vec<String>,
    /// Whether the cloud was consulted.
    pub refreshed: bool,
}

impl Plan {
    /// Whether applying the plan would call a mutating API.
    pub fn has_changes(&self) -> bool {
        self.agents.iter().any(AgentAction::mutates)
            || self
                .network
                .iter()
                .any(|n| !matches!(n, NetworkAction::NoChange { .. }))
    }

    /// Whether the plan changes state without touching the cloud.
    pub fn has_state_changes(&self) -> bool {
        !self.forget.is_empty()
            || self
                .agents
                .iter()
                .any(|a| matches!(a, AgentAction::Adopt { .. }))
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let (mut c, mut r, mut d, mut n) = (0, 0, 0, 0);
        for a in &self.agents {
            match a {
                AgentAction::Create { .. } => c += 1,
                AgentAction::Replace { .. } => r += 1,
                AgentAction::Delete { .. } => d += 1,
                AgentAction::Update { .. }
                | AgentAction::Adopt { .. }
                | AgentAction::NoChange { .. } => n += 1,
            }
        }
        (c, r, d, n)
    }

    /// Agents changed in place.
    pub fn updates(&self) -> usize {
        self.agents
            .iter()
            .filter(|a| matches!(a, AgentAction::Update { .. }))
            .count()
    }

    /// Mark the updates of agents that cannot be reached now, with the reason.
    pub fn mark_unreachable(&mut self, unreachable: &BTreeMap<String, String>) {
        for a in &mut self.agents {
            if let AgentAction::Update {
                agent,
                unreachable: u,
                ..
            } = a
            {
                *u = unreachable.get(agent.as_str()).cloned();
            }
        }
    }
}

/// Inputs to [`plan`].
pub struct PlanInput<'a> {
    pub desired: &'a [DesiredAgent],
    pub state: &'a State,
    /// `None` when the cloud was not consulted (offline plan): state is trusted as is.
    pub observed: Option<&'a Observed>,
    pub ssh_cidrs: &'a [String],
    /// Agents to replace even when unchanged (`--replace`).
    pub force_replace: &'a BTreeSet<String>,
    /// `destroy`: everything goes.
    pub destroy: bool,
    /// Changes asked for on every agent that stays (`memory reset`, `workspace pruned`): each
    /// gets an update even when its configuration is unchanged.
    pub also: &'a [String],
}

/// The two halves of a server's fingerprint label (`<machine>.<config>`; older servers carry
/// only one).
fn split_label(label: Option<&str>) -> (Option<&str>, Option<&str>) {
    match label {
        None => (None, None),
        Some(l) => match l.split_once('.') {
            Some((m, c)) => (Some(m), Some(c)),
            None => (Some(l), None),
        },
    }
}

fn is_live(s: &ObservedServer) -> bool {
    !s.state.is_gone()
}

/// Compute the plan.
pub fn plan(input: &PlanInput) -> Plan {
    let state = input.state;
    // Servers per agent: from the cloud when observed, else from state.
    let mut by_agent: BTreeMap<String, Vec<ObservedServer>> = BTreeMap::new();
    match input.observed {
        Some(obs) => {
            for s in obs.servers.iter().filter(|s| is_live(s)) {
                by_agent.entry(s.agent.clone()).or_default().push(s.clone());
            }
            // Servers recorded in state that the tag search did not return are gone (or were
            // re-tagged by hand): they are not ours to touch any more.
        }
        None => {
            for (name, a) in &state.agents {
                if let Some(id) = &a.server_id {
                    by_agent
                        .entry(name.clone())
                        .or_default()
                        .push(ObservedServer {
                            id: id.clone(),
                            agent: name.clone(),
                            fingerprint: Some(a.fingerprint.clone()),
                            key_id: None,
                            state: crate::provider::ServerState::Running,
                            name: String::new(),
                            created: String::new(),
                        });
                }
            }
        }
    }

    let desired: BTreeMap<&str, &DesiredAgent> = if input.destroy {
        BTreeMap::new()
    } else {
        input.desired.iter().map(|d| (d.name.as_str(), d)).collect()
    };
    let mut agents = Vec::new();

    for d in desired.values() {
        let st = state.agents.get(&d.name);
        let mut servers = by_agent.remove(&d.name).unwrap_or_default();
        if servers.is_empty() {
            agents.push(AgentAction::Create {
                agent: d.name.clone(),
            });
            continue;
        }
        // Keep the server state knows about; else one whose fingerprint matches; else the
        // newest. Every other server tagged for this agent is a duplicate and goes.
        let state_id = st.and_then(|s| s.server_id.clone());
        servers.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        let keep_idx = servers
            .iter()
            .position(|s| Some(&s.id) == state_id.as_ref())
            .or_else(|| {
                servers
                    .iter()
                    .position(|s| s.fingerprint.as_deref() == Some(d.fingerprint.as_str()))
            })
            .unwrap_or(0);
        let keep = servers.remove(keep_idx);
        for dup in servers {
            agents.push(AgentAction::Delete {
                agent: d.name.clone(),
                id: dup.id,
                reason: "duplicate server for this agent".into(),
            });
        }
        let known = state_id.as_deref() == Some(keep.id.as_str());
        let (label_machine, label_config) = split_label(keep.fingerprint.as_deref());
        let current_fp = if known {
            st.map(|s| s.fingerprint.clone())
        } else {
            label_machine.map(str::to_string)
        };
        let mut reasons = Vec::new();
        // The gateway key: a server whose key id is not this agent's key has another token
        // than the one agent-army would report. A server state does not know and that has no
        // key id cannot be verified at all.
        let key_mismatch = match (d.key_id.as_deref(), keep.key_id.as_deref()) {
            (Some(want), Some(have)) if want != have => Some(format!(
                "its gateway key is not this stack's (key id {have}, expected {want})"
            )),
            (Some(_), None) if !known => Some(
                "its gateway key cannot be verified (the server has no key id label)".to_string(),
            ),
            _ => None,
        };
        if input.force_replace.contains(&d.name) {
            reasons.push("replacement requested with --replace".to_string());
        } else {
            let recorded = st.filter(|_| known).map(|s| &s.inputs);
            if current_fp.as_deref() != Some(d.fingerprint.as_str()) {
                if let Some(old) = recorded {
                    reasons.extend(d.inputs.diff(old))
                }
                if reasons.is_empty() {
                    reasons.push(format!(
                        "inputs changed (fingerprint {} → {})",
                        current_fp.as_deref().unwrap_or("unknown"),
                        d.fingerprint
                    ));
                }
            }
            // A rotated token explains a new key id; anything else is named.
            let rotated =
                recorded.is_some_and(|old| old.token_generation != d.inputs.token_generation);
            if let Some(r) = key_mismatch.filter(|_| !rotated) {
                reasons.push(r);
            }
        }
        if !reasons.is_empty() {
            agents.push(AgentAction::Replace {
                agent: d.name.clone(),
                old_id: keep.id,
                reasons,
            });
            continue;
        }
        // The machine stays: what differs in its configuration is changed in place. A server
        // state does not know tells by its label whether it carries this configuration.
        let mut changes = match st.filter(|_| known) {
            Some(s) => d.inputs.config_diff(&s.inputs).summary(),
            None if label_config == Some(d.inputs.config_fingerprint().as_str()) => vec![],
            None => vec!["configuration (not recorded for this server)".to_string()],
        };
        changes.extend(input.also.iter().cloned());
        if !changes.is_empty() {
            agents.push(AgentAction::Update {
                agent: d.name.clone(),
                id: keep.id,
                changes,
                unreachable: None,
            });
        } else if known {
            agents.push(AgentAction::NoChange {
                agent: d.name.clone(),
                id: keep.id,
            });
        } else {
            agents.push(AgentAction::Adopt {
                agent: d.name.clone(),
                id: keep.id,
            });
        }
    }

    // Everything left belongs to agents that are no longer declared.
    for (agent, servers) in by_agent {
        for s in servers {
            agents.push(AgentAction::Delete {
                agent: agent.clone(),
                id: s.id,
                reason: if input.destroy {
                    "destroy".into()
                } else if agent.is_empty() {
                    "server tagged with this stack but no agent".into()
                } else {
                    "removed from agent-army.toml".into()
                },
            });
        }
    }
    agents.sort_by(|a, b| a.agent().cmp(b.agent()));

    let forget: Vec<String> = state
        .agents
        .keys()
        .filter(|k| !desired.contains_key(k.as_str()))
        .filter(|k| !agents.iter().any(|a| a.agent() == k.as_str()))
        .cloned()
        .collect();

    // Network.
    let mut network = Vec::new();
    let nets: Vec<(String, Vec<String>)> = match input.observed {
        Some(obs) => obs
            .networks
            .iter()
            .map(|n| (n.id.clone(), n.ssh_cidrs.clone()))
            .collect(),
        None => state
            .network
            .iter()
            .map(|n| (n.id.clone(), input.ssh_cidrs.to_vec()))
            .collect(),
    };
    if input.destroy {
        network.extend(nets.into_iter().map(|(id, _)| NetworkAction::Delete { id }));
    } else {
        let state_net = state.network.as_ref().map(|n| n.id.clone());
        let keep = nets
            .iter()
            .position(|(id, _)| Some(id) == state_net.as_ref())
            .unwrap_or(0);
        let mut want: Vec<String> = input.ssh_cidrs.to_vec();
        want.sort();
        for (i, (id, cidrs)) in nets.iter().enumerate() {
            if i != keep {
                network.push(NetworkAction::Delete { id: id.clone() });
                continue;
            }
            let mut have = cidrs.clone();
            have.sort();
            network.push(if have == want {
                NetworkAction::NoChange { id: id.clone() }
            } else {
                NetworkAction::UpdateRules { id: id.clone() }
            });
        }
        // A stack without agents needs no firewall: none is made for nothing (one that
        // exists stays until `destroy`).
        if nets.is_empty() && !input.desired.is_empty() {
            network.push(NetworkAction::Create);
        }
    }

    Plan {
        network,
        agents,
        forget,
        refreshed: input.observed.is_some(),
    }
}

#[cfg(test)]
pub(crate) mod tests;

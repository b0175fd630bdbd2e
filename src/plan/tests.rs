use std::collections::BTreeSet;

use super::*;
use crate::provider::{ObservedNetwork, ServerState};
use crate::stack::ProviderKind;
use crate::state::{AgentState, NetworkState};

pub(crate) fn desired(name: &str, itype: &str) -> DesiredAgent {
    let inputs = Inputs {
        instance_type: itype.into(),
        image: "ubuntu-24.04".into(),
        disk_gb: 30,
        place: "fsn1".into(),
        user_data: format!("ud-{name}"),
        token_generation: 0,
        config: [("env.TZ".to_string(), Inputs::hash(b"UTC"))].into(),
    };
    DesiredAgent {
        name: name.into(),
        fingerprint: inputs.fingerprint(),
        label: inputs.label(),
        inputs,
        key_id: None,
    }
}

fn server(id: &str, agent: &str, fp: &str) -> ObservedServer {
    ObservedServer {
        id: id.into(),
        agent: agent.into(),
        fingerprint: Some(fp.into()),
        key_id: None,
        state: ServerState::Running,
        name: String::new(),
        created: id.into(),
    }
}

fn deployed(d: &[DesiredAgent]) -> (State, Observed) {
    let mut st = State::new("p", "dev", ProviderKind::Hetzner);
    st.network = Some(NetworkState {
        id: "fw".into(),
        ssh_key_id: None,
    });
    let mut obs = Observed {
        servers: vec![],
        networks: vec![ObservedNetwork {
            id: "fw".into(),
            ssh_cidrs: vec![],
            ssh_key_id: None,
        }],
    };
    for (i, a) in d.iter().enumerate() {
        let id = format!("s{i}");
        st.agents.insert(
            a.name.clone(),
            AgentState {
                server_id: Some(id.clone()),
                pending_create: None,
                fingerprint: a.fingerprint.clone(),
                inputs: a.inputs.clone(),
                key_id: None,
            },
        );
        obs.servers.push(server(&id, &a.name, &a.label));
    }
    (st, obs)
}

fn run(d: &[DesiredAgent], st: &State, obs: Option<&Observed>) -> Plan {
    plan(&PlanInput {
        desired: d,
        state: st,
        observed: obs,
        ssh_cidrs: &[],
        force_replace: &BTreeSet::new(),
        destroy: false,
        also: &[],
    })
}

#[test]
fn fresh_stack_creates_everything() {
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    let st = State::new("p", "dev", ProviderKind::Hetzner);
    let p = run(&d, &st, None);
    assert_eq!(p.network, vec![NetworkAction::Create]);
    assert_eq!(p.counts(), (2, 0, 0, 0));
    assert!(!p.refreshed);
}

#[test]
fn a_stack_without_agents_makes_no_firewall_and_keeps_one_it_has() {
    let st = State::new("p", "dev", ProviderKind::Hetzner);
    let p = run(&[], &st, Some(&Observed::default()));
    assert!(p.network.is_empty(), "{:?}", p.network);
    assert!(!p.has_changes());
    // Every agent removed from a deployed stack: servers go, the firewall stays until destroy.
    let d = [desired("a", "cx22")];
    let (st, obs) = deployed(&d);
    let p = run(&[], &st, Some(&obs));
    assert_eq!(p.counts().1 + p.counts().2, 1, "{:?}", p.agents);
    assert!(
        p.network
            .iter()
            .all(|n| matches!(n, NetworkAction::NoChange { .. })),
        "{:?}",
        p.network
    );
}

#[test]
fn unchanged_is_no_op() {
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    let (st, obs) = deployed(&d);
    let p = run(&d, &st, Some(&obs));
    assert!(!p.has_changes());
    assert!(!p.has_state_changes());
    assert_eq!(p.counts(), (0, 0, 0, 2));
}

#[test]
fn changed_type_replaces_only_that_agent_with_reason() {
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    let (st, obs) = deployed(&d);
    let d2 = [desired("a", "cx22"), desired("b", "cx32")];
    let p = run(&d2, &st, Some(&obs));
    assert_eq!(
        p.agents,
        vec![
            AgentAction::NoChange {
                agent: "a".into(),
                id: "s0".into()
            },
            AgentAction::Replace {
                agent: "b".into(),
                old_id: "s1".into(),
                reasons: vec!["instance type cx22 → cx32".into()],
            },
        ]
    );
}

#[test]
fn removed_agent_is_destroyed_and_added_created() {
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    let (st, obs) = deployed(&d);
    let p = run(
        &[desired("a", "cx22"), desired("c", "cx22")],
        &st,
        Some(&obs),
    );
    assert!(p.agents.contains(&AgentAction::Delete {
        agent: "b".into(),
        id: "s1".into(),
        reason: "removed from agent-army.toml".into()
    }));
    assert!(
        p.agents
            .contains(&AgentAction::Create { agent: "c".into() })
    );
}

#[test]
fn orphan_from_crashed_run_is_adopted_not_duplicated() {
    let d = [desired("a", "cx22")];
    let mut st = State::new("p", "dev", ProviderKind::Hetzner);
    st.agents.insert(
        "a".into(),
        AgentState {
            pending_create: Some(crate::state::PendingCreate {
                client_token: "t".into(),
                started: "now".into(),
                fingerprint: d[0].fingerprint.clone(),
            }),
            ..Default::default()
        },
    );
    let obs = Observed {
        servers: vec![server("s9", "a", &d[0].label)],
        networks: vec![ObservedNetwork {
            id: "fw".into(),
            ssh_cidrs: vec![],
            ssh_key_id: None,
        }],
    };
    let p = run(&d, &st, Some(&obs));
    assert_eq!(
        p.agents,
        vec![AgentAction::Adopt {
            agent: "a".into(),
            id: "s9".into()
        }]
    );
    assert!(!p.has_changes());
    assert!(p.has_state_changes());
}

#[test]
fn duplicates_keep_the_one_in_state() {
    let d = [desired("a", "cx22")];
    let (st, mut obs) = deployed(&d);
    obs.servers.push(server("s7", "a", &d[0].fingerprint));
    let p = run(&d, &st, Some(&obs));
    assert_eq!(
        p.agents,
        vec![
            AgentAction::Delete {
                agent: "a".into(),
                id: "s7".into(),
                reason: "duplicate server for this agent".into()
            },
            AgentAction::NoChange {
                agent: "a".into(),
                id: "s0".into()
            },
        ]
    );
}

#[test]
fn server_gone_from_cloud_is_recreated() {
    let d = [desired("a", "cx22")];
    let (st, mut obs) = deployed(&d);
    obs.servers.clear();
    let p = run(&d, &st, Some(&obs));
    assert_eq!(p.agents, vec![AgentAction::Create { agent: "a".into() }]);
}

#[test]
fn firewall_rule_drift_is_updated() {
    let d = [desired("a", "cx22")];
    let (st, mut obs) = deployed(&d);
    obs.networks[0].ssh_cidrs = vec!["0.0.0.0/0".into()];
    let p = run(&d, &st, Some(&obs));
    assert_eq!(
        p.network,
        vec![NetworkAction::UpdateRules { id: "fw".into() }]
    );
}

#[test]
fn destroy_removes_everything_including_untracked() {
    let d = [desired("a", "cx22")];
    let (st, mut obs) = deployed(&d);
    obs.servers.push(server("s8", "ghost", "x"));
    let p = plan(&PlanInput {
        desired: &d,
        state: &st,
        observed: Some(&obs),
        ssh_cidrs: &[],
        force_replace: &BTreeSet::new(),
        destroy: true,
        also: &[],
    });
    assert_eq!(p.counts(), (0, 0, 2, 0));
    assert_eq!(p.network, vec![NetworkAction::Delete { id: "fw".into() }]);
}

#[test]
fn forced_replace() {
    let d = [desired("a", "cx22")];
    let (st, obs) = deployed(&d);
    let p = plan(&PlanInput {
        desired: &d,
        state: &st,
        observed: Some(&obs),
        ssh_cidrs: &[],
        force_replace: &["a".to_string()].into(),
        destroy: false,
        also: &[],
    });
    assert!(
        matches!(&p.agents[0], AgentAction::Replace { reasons, .. } if reasons[0].contains("--replace"))
    );
}

/// State lost (a fresh CI runner): servers found by their labels are adopted only when their
/// gateway key is this agent's; another key, or none to check, means a replacement.
#[test]
fn adoption_checks_the_gateway_key_id() {
    let mut d = vec![
        desired("a", "cx22"),
        desired("b", "cx22"),
        desired("c", "cx22"),
    ];
    for x in &mut d {
        x.key_id = Some(format!("key-{}", x.name));
    }
    let (_, mut obs) = deployed(&d);
    obs.servers[0].key_id = Some("key-a".into());
    obs.servers[1].key_id = Some("key-someone-else".into());
    obs.servers[2].key_id = None;
    let empty = State::new("p", "dev", ProviderKind::Hetzner);
    let p = run(&d, &empty, Some(&obs));
    assert_eq!(
        p.agents[0],
        AgentAction::Adopt {
            agent: "a".into(),
            id: "s0".into()
        }
    );
    assert_eq!(
        p.agents[1],
        AgentAction::Replace {
            agent: "b".into(),
            old_id: "s1".into(),
            reasons: vec![
                "its gateway key is not this stack's (key id key-someone-else, expected key-b)"
                    .into()
            ],
        }
    );
    assert!(
        matches!(&p.agents[2], AgentAction::Replace { reasons, .. } if reasons[0].contains("cannot be verified")),
        "{:?}",
        p.agents[2]
    );

    // Known to state: a server without a key id (made before key ids) keeps its state key;
    // one with another key id is replaced, since its token is not the one reported.
    let (st, mut obs) = deployed(&d);
    obs.servers[1].key_id = Some("key-someone-else".into());
    let p = run(&d, &st, Some(&obs));
    assert!(matches!(&p.agents[0], AgentAction::NoChange { .. }));
    assert!(matches!(&p.agents[1], AgentAction::Replace { .. }));
    assert!(matches!(&p.agents[2], AgentAction::NoChange { .. }));

    // Keys unknown to this run (a plan without an identity): nothing is checked.
    for x in &mut d {
        x.key_id = None;
    }
    let p = run(&d, &empty, Some(&obs));
    assert!(
        p.agents
            .iter()
            .all(|a| matches!(a, AgentAction::Adopt { .. }))
    );
}

/// `desired("a")` with one configuration item set to `value`.
fn with_config(mut d: DesiredAgent, item: &str, value: &[u8]) -> DesiredAgent {
    d.inputs.config.insert(item.into(), Inputs::hash(value));
    d.fingerprint = d.inputs.fingerprint();
    d.label = d.inputs.label();
    d
}

#[test]
fn a_configuration_change_updates_in_place_and_names_the_items() {
    let d = [desired("a", "cx22")];
    let (st, obs) = deployed(&d);
    let changed = [with_config(
        with_config(d[0].clone(), "env.TZ", b"Europe/Berlin"),
        "workspace/NOTES.md",
        b"x",
    )];
    assert_eq!(
        changed[0].fingerprint, d[0].fingerprint,
        "machine unchanged"
    );
    let p = run(&changed, &st, Some(&obs));
    assert_eq!(
        p.agents,
        vec![AgentAction::Update {
            agent: "a".into(),
            id: "s0".into(),
            changes: vec!["env.TZ".into(), "workspace/NOTES.md (new)".into()],
            unreachable: None,
        }]
    );
    assert!(p.has_changes());
    assert_eq!(p.updates(), 1);
    // A machine input and a configuration item at once: the VM is replaced (and boots with
    // the new configuration), not updated.
    let both = [with_config(
        desired("a", "cx32"),
        "env.TZ",
        b"Europe/Berlin",
    )];
    let p = run(&both, &st, Some(&obs));
    assert!(
        matches!(&p.agents[..], [AgentAction::Replace { reasons, .. }] if reasons == &["instance type cx22 → cx32"]),
        "{:?}",
        p.agents
    );
}

#[test]
fn requested_extras_update_unchanged_agents_and_unreachable_ones_are_marked() {
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    let (st, obs) = deployed(&d);
    let also = ["memory reset".to_string()];
    let mut p = plan(&PlanInput {
        desired: &d,
        state: &st,
        observed: Some(&obs),
        ssh_cidrs: &[],
        force_replace: &BTreeSet::new(),
        destroy: false,
        also: &also,
    });
    assert_eq!(p.updates(), 2);
    p.mark_unreachable(&[("b".to_string(), "offline".to_string())].into());
    assert!(
        matches!(&p.agents[0], AgentAction::Update { unreachable: None, changes, .. } if changes == &["memory reset"])
    );
    assert!(
        matches!(&p.agents[1], AgentAction::Update { unreachable: Some(u), .. } if u == "offline")
    );
}

#[test]
fn a_server_found_without_state_is_updated_unless_its_label_has_this_configuration() {
    let d = [desired("a", "cx22")];
    let st = State::new("p", "dev", ProviderKind::Hetzner);
    let obs = |label: &str| Observed {
        servers: vec![server("s9", "a", label)],
        networks: vec![],
    };
    // Same machine, same configuration: adopted.
    let p = run(&d, &st, Some(&obs(&d[0].label)));
    assert!(
        matches!(&p.agents[..], [AgentAction::Adopt { .. }]),
        "{:?}",
        p.agents
    );
    // Same machine, another configuration: adopted by an update that sends all of it.
    let other = format!("{}.0000000000000000", d[0].fingerprint);
    let p = run(&d, &st, Some(&obs(&other)));
    assert!(
        matches!(&p.agents[..], [AgentAction::Update { id, changes, .. }] if id == "s9" && changes[0].starts_with("configuration")),
        "{:?}",
        p.agents
    );
    // Another machine: replaced.
    let p = run(&d, &st, Some(&obs("ffffffffffffffff.0")));
    assert!(
        matches!(&p.agents[..], [AgentAction::Replace { .. }]),
        "{:?}",
        p.agents
    );
}

//! The engine against the in-memory cloud and state store: the order of calls, what state
//! says at each point, interrupts and partial failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::plan::tests::desired;
use crate::plan::{self, DesiredAgent, PlanInput};
use crate::provider::memory::MemoryCloud;
use crate::provider::{NetworkSpec, ServerSpec};
use crate::stack::ProviderKind;
use crate::state::MemoryStore;

fn prepared(desired: &[DesiredAgent]) -> BTreeMap<String, Prepared> {
    desired
        .iter()
        .map(|d| {
            let spec = ServerSpec {
                agent: d.name.clone(),
                hostname: format!("dev-{}", d.name),
                instance_type: d.inputs.instance_type.clone(),
                image: None,
                disk_gb: 0,
                user_data: b"#cloud-config\n".to_vec(),
                fingerprint: d.label.clone(),
                key_id: String::new(),
                client_token: String::new(),
                network_id: String::new(),
                ssh_key_id: None,
            };
            (
                d.name.clone(),
                Prepared {
                    spec,
                    inputs: d.inputs.clone(),
                    update: Some(PreparedUpdate {
                        bundle: Arc::new(format!("files of {}", d.name).into_bytes()),
                        args: vec![],
                    }),
                },
            )
        })
        .collect()
}

struct Run {
    cloud: MemoryCloud,
    store: Arc<MemoryStore>,
    stop: Arc<AtomicBool>,
    parallelism: Option<usize>,
    updater: Option<Arc<dyn Updater>>,
}

/// One update as the updater got it: agent, bundle, helper options.
type Sent = (String, Vec<u8>, Vec<String>);

/// An updater that records what it was sent and fails the agents it is told to.
#[derive(Default)]
struct Recorder {
    sent: std::sync::Mutex<Vec<Sent>>,
    fail: BTreeSet<String>,
}

impl Updater for Recorder {
    fn update<'a>(
        &'a self,
        agent: &'a str,
        bundle: &'a [u8],
        args: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>> {
        Box::pin(async move {
            self.sent
                .lock()
                .unwrap()
                .push((agent.to_string(), bundle.to_vec(), args.to_vec()));
            if self.fail.contains(agent) {
                Err("connection refused".into())
            } else {
                Ok(vec![format!("installed {} bytes", bundle.len())])
            }
        })
    }
}

impl Run {
    fn new(cloud: MemoryCloud) -> Self {
        Run {
            cloud,
            store: Arc::new(MemoryStore::new()),
            stop: Arc::new(AtomicBool::new(false)),
            parallelism: Some(4),
            updater: None,
        }
    }

    fn state(&self) -> State {
        self.store
            .read()
            .unwrap()
            .unwrap_or_else(|| State::new("p", "dev", ProviderKind::Hetzner))
    }

    /// Plan against the cloud and state as they are, then apply.
    async fn apply(&self, desired: &[DesiredAgent], force: &[&str], destroy: bool) -> Report {
        let state = self.state();
        let observed = self.cloud.observe().await.unwrap();
        let force: BTreeSet<String> = force.iter().map(|s| s.to_string()).collect();
        let plan = plan::plan(&PlanInput {
            desired,
            state: &state,
            observed: Some(&observed),
            ssh_cidrs: &[],
            force_replace: &force,
            destroy,
            also: &[],
        });
        let lock = self.store.lock("test", "me", Duration::ZERO).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine {
            provider: Arc::new(self.cloud.clone()),
            state: SharedState::new(
                state,
                self.store.clone(),
                Arc::new(lock),
                dir.path().to_path_buf(),
            ),
            progress: Progress::new(true, true),
            parallelism: self.parallelism,
            stop: self.stop.clone(),
            updater: self.updater.clone(),
        };
        let network = NetworkSpec {
            ssh_cidrs: vec![],
            ssh_public_key: None,
        };
        engine.apply(&plan, &prepared(desired), &network).await
    }
}

use std::time::Duration;

#[tokio::test]
async fn state_writes_are_grouped_not_one_per_change() {
    // 60 agents at once against a store whose writes take 5 ms: each create is still
    // recorded as an intent before its call (the test below checks that order), but one
    // write carries every intent and id that piled up while the previous one was in flight.
    let store = Arc::new(MemoryStore::with_write_delay(Duration::from_millis(5)));
    let mut run = Run::new(MemoryCloud::new());
    run.store = store.clone();
    run.parallelism = None;
    let names: Vec<String> = (0..60).map(|i| format!("a{i:02}")).collect();
    let d: Vec<DesiredAgent> = names.iter().map(|n| desired(n, "cx22")).collect();
    let report = run.apply(&d, &[], false).await;
    assert_eq!(report.failed(), 0, "{report:?}");
    let st = run.state();
    assert_eq!(st.agents.len(), 60);
    assert!(
        st.agents
            .values()
            .all(|a| a.server_id.is_some() && a.pending_create.is_none())
    );
    // One change per intent and one per id: 121 writes with the network, written one by one.
    let writes = store.writes();
    assert!(writes <= 12, "{writes} writes for 121 changes");
}

#[tokio::test]
async fn a_create_is_recorded_as_an_intent_before_the_call_and_as_an_id_after() {
    let store = Arc::new(MemoryStore::new());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s2, seen2) = (store.clone(), seen.clone());
    let cloud = MemoryCloud::new().on_create(move |spec: &ServerSpec| {
        // What state says at the moment the create call goes out.
        let st = s2.read().unwrap().unwrap();
        let pending = st.agents[&spec.agent].pending_create.clone();
        seen2
            .lock()
            .unwrap()
            .push((spec.client_token.clone(), pending));
    });
    let mut run = Run::new(cloud);
    run.store = store;
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    let report = run.apply(&d, &[], false).await;
    assert_eq!(report.failed(), 0, "{report:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (token, pending) in seen.iter() {
        let p = pending.as_ref().expect("intent written before the call");
        assert_eq!(
            &p.client_token, token,
            "the call carries the recorded token"
        );
        assert!(token.starts_with("agent-army-"));
    }
    let st = run.state();
    for name in ["a", "b"] {
        let a = &st.agents[name];
        assert!(a.pending_create.is_none(), "intent cleared");
        assert!(a.server_id.is_some(), "id recorded");
        assert_eq!(
            a.fingerprint,
            d.iter().find(|x| x.name == name).unwrap().fingerprint
        );
    }
    assert!(st.network.is_some());
    assert_eq!(run.cloud.live().len(), 2);
    // Nothing changed since: a second run calls nothing that mutates.
    let before = run.cloud.calls().len();
    let report = run.apply(&d, &[], false).await;
    assert_eq!(report.failed(), 0);
    assert_eq!(run.cloud.calls().len(), before);
}

#[tokio::test]
async fn a_replace_deletes_and_waits_for_the_old_server_before_creating_the_new() {
    let run = Run::new(MemoryCloud::new());
    let d = [desired("a", "cx22")];
    run.apply(&d, &[], false).await;
    let old = run.state().agents["a"].server_id.clone().unwrap();
    let changed = [desired("a", "cx32")];
    let report = run.apply(&changed, &[], false).await;
    assert_eq!(report.failed(), 0, "{report:?}");
    let calls = run.cloud.calls();
    let del = calls
        .iter()
        .position(|c| *c == format!("delete_server {old}"))
        .unwrap();
    let waited = calls
        .iter()
        .position(|c| *c == format!("wait_deleted {old}"))
        .unwrap();
    let created = calls.iter().rposition(|c| c == "create_server a").unwrap();
    assert!(del < waited && waited < created, "{calls:?}");
    let new = run.state().agents["a"].server_id.clone().unwrap();
    assert_ne!(new, old);
    assert_eq!(run.cloud.live(), vec![(new, "a".to_string())]);
    assert_eq!(run.state().agents["a"].inputs.instance_type, "cx32");
}

#[tokio::test]
async fn a_refused_create_fails_alone_and_leaves_no_intent_a_lost_one_keeps_it() {
    let cloud = MemoryCloud::new();
    cloud.refuse_create(
        "b",
        ProviderError::new("resource_limit_exceeded", "server limit reached"),
    );
    let mut lost = ProviderError::new("timeout", "no answer");
    lost.transient = true;
    cloud.refuse_create("c", lost);
    let run = Run::new(cloud);
    let d = [
        desired("a", "cx22"),
        desired("b", "cx22"),
        desired("c", "cx22"),
    ];
    let report = run.apply(&d, &[], false).await;
    assert_eq!(report.failed(), 2);
    let by: BTreeMap<_, _> = report
        .outcomes
        .iter()
        .map(|o| (o.agent.as_str(), o))
        .collect();
    assert!(by["a"].error.is_none() && by["a"].server_id.is_some());
    assert_eq!(
        by["b"].error.as_ref().unwrap().code,
        "resource_limit_exceeded"
    );
    let st = run.state();
    assert!(st.agents["a"].server_id.is_some());
    assert!(
        st.agents["b"].pending_create.is_none(),
        "a definite refusal created nothing"
    );
    assert!(
        st.agents["c"].pending_create.is_some(),
        "a lost call may have created a server: the intent stays for the next run"
    );
}

#[tokio::test]
async fn an_interrupt_starts_no_new_work_and_says_so() {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let cloud = MemoryCloud::new().on_create(move |_| s2.store(true, Ordering::SeqCst));
    let mut run = Run::new(cloud);
    run.stop = stop;
    run.parallelism = Some(1);
    let d = [
        desired("a", "cx22"),
        desired("b", "cx22"),
        desired("c", "cx22"),
    ];
    let report = run.apply(&d, &[], false).await;
    assert!(report.interrupted);
    let creates = run
        .cloud
        .calls()
        .iter()
        .filter(|c| c.starts_with("create_server"))
        .count();
    assert_eq!(
        creates, 1,
        "the create in flight finishes, nothing else starts"
    );
    let skipped: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.error.as_ref().is_some_and(|e| e.code == "Interrupted"))
        .map(|o| o.agent.as_str())
        .collect();
    assert_eq!(skipped.len(), 2, "{report:?}");
    // State records exactly what exists.
    let st = run.state();
    let recorded: Vec<_> = st
        .agents
        .iter()
        .filter_map(|(n, a)| a.server_id.clone().map(|id| (id, n.clone())))
        .collect();
    assert_eq!(recorded, run.cloud.live());
}

#[tokio::test]
async fn destroy_removes_the_servers_then_the_network_and_forgets_them() {
    let run = Run::new(MemoryCloud::new());
    let d = [desired("a", "cx22"), desired("b", "cx22")];
    run.apply(&d, &[], false).await;
    let report = run.apply(&[], &[], true).await;
    assert_eq!(report.failed(), 0, "{report:?}");
    assert!(run.cloud.live().is_empty());
    let calls = run.cloud.calls();
    let net = calls
        .iter()
        .position(|c| c.starts_with("delete_network"))
        .unwrap();
    assert!(
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.starts_with("wait_deleted"))
            .all(|(i, _)| i < net),
        "{calls:?}"
    );
    assert!(run.state().network.is_none());
    assert!(run.state().agents.is_empty());
}

#[tokio::test]
async fn a_server_left_by_a_dead_run_is_adopted_without_a_cloud_call() {
    let cloud = MemoryCloud::new();
    let d = [desired("a", "cx22")];
    cloud.add_network(&[]);
    let id = cloud.add_server("a", &d[0].label);
    let run = Run::new(cloud);
    let report = run.apply(&d, &[], false).await;
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(
        run.state().agents["a"].server_id.as_deref(),
        Some(id.as_str())
    );
    assert!(
        !run.cloud
            .calls()
            .iter()
            .any(|c| c.starts_with("create_server")),
        "{:?}",
        run.cloud.calls()
    );
}

#[tokio::test]
async fn updates_go_through_the_updater_record_on_success_and_fail_alone() {
    let recorder = Arc::new(Recorder {
        fail: ["b".to_string()].into(),
        ..Default::default()
    });
    let mut run = Run::new(MemoryCloud::new());
    run.updater = Some(recorder.clone());
    let d = [
        desired("a", "cx22"),
        desired("b", "cx22"),
        desired("c", "cx22"),
    ];
    assert_eq!(run.apply(&d, &[], false).await.failed(), 0);
    let created = run.cloud.calls().len();
    // The configuration of every agent changes; the machines do not.
    let changed: Vec<DesiredAgent> = d
        .iter()
        .map(|x| {
            let mut x = x.clone();
            x.inputs.config.insert(
                "env.TZ".into(),
                crate::state::Inputs::hash(b"Europe/Berlin"),
            );
            x.label = x.inputs.label();
            x
        })
        .collect();
    let report = run.apply(&changed, &[], false).await;
    assert_eq!(report.failed(), 1, "{report:?}");
    let failed = report.outcomes.iter().find(|o| o.error.is_some()).unwrap();
    assert_eq!(failed.agent, "b");
    assert_eq!(failed.error.as_ref().unwrap().code, "UpdateFailed");
    // No cloud call, one bundle per agent.
    assert_eq!(run.cloud.calls().len(), created, "{:?}", run.cloud.calls());
    let mut sent: Vec<(String, Vec<u8>)> = recorder
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(a, b, _)| (a.clone(), b.clone()))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        vec![
            ("a".to_string(), b"files of a".to_vec()),
            ("b".to_string(), b"files of b".to_vec()),
            ("c".to_string(), b"files of c".to_vec()),
        ]
    );
    // a and c carry the new configuration; b still the old one, so the next run tries again.
    let st = run.state();
    assert_eq!(st.agents["a"].inputs, changed[0].inputs);
    assert_eq!(st.agents["c"].inputs, changed[2].inputs);
    assert_eq!(st.agents["b"].inputs, d[1].inputs);
    let again = run.apply(&changed, &[], false).await;
    assert_eq!(again.failed(), 1);
    assert_eq!(
        again
            .outcomes
            .iter()
            .filter(|o| o.action == "updated")
            .map(|o| o.agent.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
}

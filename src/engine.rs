//! Executes a plan: every agent at once (or `--parallelism` of them; the provider paces its own
//! calls), progress, and every change saved to state, grouped with the changes made meanwhile.
//!
//! Crash safety: a create is recorded in state as an intent (with its idempotency token)
//! *before* the API call, and every server carries the stack's tags from the moment it is
//! created, so a run that dies at any point leaves something the next run finds and adopts
//! or removes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::lock::LockGuard;
use crate::plan::{AgentAction, NetworkAction, Plan};
use crate::progress::Progress;
use crate::provider::{NetworkSpec, ObservedNetwork, Provider, ProviderError, ServerSpec};
use crate::state::{
    AgentState, Inputs, NetworkState, PendingCreate, State, StateBackend, StateError,
};

/// A server ready to be created for an agent (everything but ids and token), and the agent's
/// configuration ready to be sent when it is updated in place.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub spec: ServerSpec,
    pub inputs: Inputs,
    pub update: Option<PreparedUpdate>,
}

/// An in-place update, ready to send.
#[derive(Clone)]
pub struct PreparedUpdate {
    /// The configuration as a tar (the environment file, secrets included): sent on stdin.
    pub bundle: Arc<Vec<u8>>,
    /// Options of the helper on the VM (`--prune`, `--reset-memory`).
    pub args: Vec<String>,
}

impl std::fmt::Debug for PreparedUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedUpdate")
            .field("bundle", &format_args!("<{} bytes>", self.bundle.len()))
            .field("args", &self.args)
            .finish()
    }
}

/// Applies an agent's configuration on its VM (over ssh in the product).
pub trait Updater: Send + Sync {
    /// Send `bundle` to `agent` and install it with the helper's `args`: what the helper did
    /// (one line each), or why it failed, in the remote side's words.
    fn update<'a>(
        &'a self,
        agent: &'a str,
        bundle: &'a [u8],
        args: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>>;
}

/// How one agent's action ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub agent: String,
    pub action: &'static str,
    pub server_id: Option<String>,
    pub error: Option<ProviderError>,
}

/// Result of an apply.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub network_error: Option<ProviderError>,
    pub interrupted: bool,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.error.is_some()).count()
            + usize::from(self.network_error.is_some())
    }
}

/// Shared state under the stack's lock, saved by group commit: every change is applied in
/// memory at once, and a caller that needs it durable waits for a write that includes it.
/// While one write is in flight, the changes of every other agent pile up and go out in the
/// next single write, so a fleet of N agents costs a number of writes that grows with the
/// number of *rounds* of changes, not with N (each write is the whole file either way).
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Mutex<Versioned>>,
    /// The newest change version known to be written; held while a write is in flight, so
    /// callers queue behind it (tokio's mutex is fair: first come, first written).
    durable: Arc<tokio::sync::Mutex<u64>>,
    store: Arc<dyn StateBackend>,
    lock: Arc<LockGuard>,
    /// This machine's folder for the stack, whose known_hosts forgets deleted servers.
    local_dir: PathBuf,
}

struct Versioned {
    state: State,
    /// Bumped by every change.
    version: u64,
}

impl SharedState {
    pub fn new(
        state: State,
        store: Arc<dyn StateBackend>,
        lock: Arc<LockGuard>,
        local_dir: PathBuf,
    ) -> Self {
        SharedState {
            inner: Arc::new(Mutex::new(Versioned { state, version: 0 })),
            durable: Arc::new(tokio::sync::Mutex::new(0)),
            store,
            lock,
            local_dir,
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Versioned> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `f`, and return once a write that includes it is done (crash safety: what
    /// follows may rely on it being on disk or in the bucket).
    pub async fn update(&self, f: impl FnOnce(&mut State)) -> Result<(), StateError> {
        let mine = {
            let mut g = self.guard();
            f(&mut g.state);
            g.version += 1;
            g.version
        };
        self.commit(mine).await
    }

    /// Write everything changed up to `version`, unless a write already covered it.
    async fn commit(&self, version: u64) -> Result<(), StateError> {
        let mut durable = self.durable.lock().await;
        if *durable >= version {
            return Ok(());
        }
        let (mut snapshot, newest) = {
            let g = self.guard();
            (g.state.clone(), g.version)
        };
        let (store, lock) = (self.store.clone(), self.lock.clone());
        // The write blocks (a file with fsync, or a request to the bucket): off the runtime's
        // threads, so other agents' calls and changes go on meanwhile.
        let written = tokio::task::spawn_blocking(move || {
            store.write(&lock, &mut snapshot).map(|()| snapshot.serial)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StateError::Corrupt {
                path: PathBuf::from(self.store.location()),
                message: format!("the state write stopped: {e}"),
            })
        })?;
        self.guard().state.serial = written;
        *durable = newest;
        Ok(())
    }

    /// Read from state without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.guard().state)
    }

    pub fn snapshot(&self) -> State {
        self.guard().state.clone()
    }
}

pub struct Engine<P: Provider> {
    pub provider: Arc<P>,
    pub state: SharedState,
    pub progress: Progress,
    /// Most agents changed at once (`None`: all of them; the provider paces its calls).
    pub parallelism: Option<usize>,
    /// Set on the first interrupt: no new work starts.
    pub stop: Arc<AtomicBool>,
    /// How agents are updated in place (`None`: a plan with updates fails them).
    pub updater: Option<Arc<dyn Updater>>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn new_client_token() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("agent-army-{}", hex::encode(b))
}

fn state_err(e: StateError) -> ProviderError {
    ProviderError::new("StateWriteFailed", e.to_string())
}

impl<P: Provider> Engine<P> {
    /// Apply `plan`. `prepared` holds a server spec for every agent to create or replace.
    pub async fn apply(
        &self,
        plan: &Plan,
        prepared: &BTreeMap<String, Prepared>,
        network: &NetworkSpec,
    ) -> Report {
        let mut report = Report::default();

        // 1. The stack's network comes first: every server is created inside it.
        let mut network_id = self
            .state
            .read(|s| s.network.clone())
            .map(|n| (n.id, n.ssh_key_id));
        let mut extra_networks = Vec::new();
        for action in &plan.network {
            let line = self.progress.line("network");
            let r = match action {
                NetworkAction::Create => {
                    line.set("creating");
                    match self.provider.create_network(network).await {
                        Ok(n) => {
                            network_id = Some((n.id.clone(), n.ssh_key_id.clone()));
                            self.state
                                .update(|s| {
                                    s.network = Some(NetworkState {
                                        id: n.id.clone(),
                                        ssh_key_id: n.ssh_key_id.clone(),
                                    })
                                })
                                .await
                                .map_err(state_err)
                                .map(|_| format!("created {}", n.id))
                        }
                        Err(e) => Err(e),
                    }
                }
                NetworkAction::UpdateRules { id } => {
                    // Found by its tags but not in state (a run died right after creating
                    // it): it is the stack's network from now on, whatever its rules.
                    self.adopt_network(&mut network_id, id).await;
                    line.set("updating inbound rules");
                    self.provider
                        .update_network(id, network)
                        .await
                        .map(|_| format!("updated {id}"))
                }
                NetworkAction::NoChange { id } => {
                    self.adopt_network(&mut network_id, id).await;
                    Ok(format!("{id} unchanged"))
                }
                NetworkAction::Delete { id } => {
                    extra_networks.push(id.clone());
                    Ok(format!("{id} to delete after servers"))
                }
            };
            match r {
                Ok(msg) => line.done(&msg),
                Err(e) => {
                    line.fail(&e.to_string());
                    report.network_error = Some(e);
                }
            }
        }

        // 2. Agents, concurrently.
        let sem = Arc::new(Semaphore::new(
            self.parallelism
                .unwrap_or(Semaphore::MAX_PERMITS)
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for action in plan.agents.iter().cloned() {
            if !action.mutates() && !matches!(action, AgentAction::Adopt { .. }) {
                continue;
            }
            let provider = self.provider.clone();
            let state = self.state.clone();
            let progress = self.progress.clone();
            let sem = sem.clone();
            let stop = self.stop.clone();
            let prep = prepared.get(action.agent()).cloned();
            let net = network_id.clone();
            let net_failed = report.network_error.clone();
            let updater = self.updater.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let agent = action.agent().to_string();
                let line = progress.line(&agent);
                if stop.load(Ordering::SeqCst) {
                    line.fail("skipped: interrupted");
                    return (
                        agent,
                        "skipped",
                        None,
                        Some(ProviderError::new("Interrupted", "not started")),
                    );
                }
                let (label, r) = match action {
                    AgentAction::Update {
                        agent,
                        id,
                        changes,
                        unreachable,
                    } => {
                        let r = update(
                            updater.as_deref(),
                            &state,
                            &line,
                            &agent,
                            &id,
                            &changes,
                            unreachable,
                            prep,
                        )
                        .await;
                        ("updated", r.map(|_| Some(id)))
                    }
                    action => {
                        run_agent(&*provider, &state, &line, action, prep, net, net_failed).await
                    }
                };
                match &r {
                    Ok(id) => line.done(&format!("{label} {}", id.as_deref().unwrap_or(""))),
                    Err(e) => line.fail(&e.to_string()),
                }
                let (id, err) = match r {
                    Ok(id) => (id, None),
                    Err(e) => (None, Some(e)),
                };
                (agent, label, id, err)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((agent, action, server_id, error)) => report.outcomes.push(Outcome {
                    agent,
                    action,
                    server_id,
                    error,
                }),
                Err(e) => report.outcomes.push(Outcome {
                    agent: "?".into(),
                    action: "panic",
                    server_id: None,
                    error: Some(ProviderError::new("Internal", e.to_string())),
                }),
            }
        }
        report.outcomes.sort_by(|a, b| a.agent.cmp(&b.agent));

        // 3. Forget agents that exist nowhere any more.
        if !plan.forget.is_empty() {
            let _ = self
                .state
                .update(|s| {
                    for a in &plan.forget {
                        s.agents.remove(a);
                        s.gateway_keys.remove(a);
                    }
                })
                .await;
        }

        // 4. Extra / destroyed networks, once their servers are gone.
        let servers_failed = report.outcomes.iter().any(|o| o.error.is_some());
        for id in extra_networks {
            let line = self.progress.line("network");
            if servers_failed {
                line.fail(&format!("{id} kept: some servers could not be deleted"));
                continue;
            }
            line.set(&format!("deleting {id}"));
            let ssh_key_id = self.state.read(|s| {
                s.network
                    .as_ref()
                    .filter(|n| n.id == id)
                    .and_then(|n| n.ssh_key_id.clone())
            });
            let net = ObservedNetwork {
                id: id.clone(),
                ssh_cidrs: vec![],
                ssh_key_id,
            };
            match self.provider.delete_network(&net).await {
                Ok(()) => {
                    let _ = self
                        .state
                        .update(|s| {
                            if s.network.as_ref().map(|n| &n.id) == Some(&id) {
                                s.network = None;
                            }
                        })
                        .await;
                    line.done(&format!("deleted {id}"));
                }
                Err(e) => {
                    line.fail(&e.to_string());
                    report.network_error = Some(e);
                }
            }
        }
        report.interrupted = self.stop.load(Ordering::SeqCst);
        report
    }
}

impl<P: Provider> Engine<P> {
    /// Use the existing network `id` (and record it) when state names another one or none.
    async fn adopt_network(&self, network_id: &mut Option<(String, Option<String>)>, id: &str) {
        if network_id.as_ref().map(|n| n.0.as_str()) != Some(id) {
            *network_id = Some((id.to_string(), None));
            let _ = self
                .state
                .update(|s| {
                    s.network = Some(NetworkState {
                        id: id.to_string(),
                        ssh_key_id: None,
                    })
                })
                .await;
        }
    }
}

async fn run_agent<P: Provider>(
    provider: &P,
    state: &SharedState,
    line: &crate::progress::Line,
    action: AgentAction,
    prep: Option<Prepared>,
    network: Option<(String, Option<String>)>,
    network_failed: Option<ProviderError>,
) -> (&'static str, Result<Option<String>, ProviderError>) {
    match action {
        AgentAction::Delete { agent, id, reason } => {
            line.set(&format!("destroying {id} ({reason})"));
            let r = delete(provider, state, &agent, &id, true).await;
            ("destroyed", r.map(|_| Some(id)))
        }
        AgentAction::Adopt { agent, id } => {
            let r = match prep {
                Some(p) => state
                    .update(|s| {
                        let e = s.agents.entry(agent.clone()).or_default();
                        e.server_id = Some(id.clone());
                        e.pending_create = None;
                        e.fingerprint = p.inputs.fingerprint();
                        e.inputs = p.inputs.clone();
                        e.key_id = Some(p.spec.key_id.clone()).filter(|k| !k.is_empty());
                    })
                    .await
                    .map_err(state_err),
                None => Err(ProviderError::new(
                    "Internal",
                    "no inputs prepared for adopted agent",
                )),
            };
            ("adopted", r.map(|_| Some(id)))
        }
        AgentAction::Replace { agent, old_id, .. } => {
            line.set(&format!("destroying old server {old_id}"));
            if let Err(e) = delete(provider, state, &agent, &old_id, false).await {
                return ("replace", Err(e));
            }
            let r = create(provider, state, line, &agent, prep, network, network_failed).await;
            ("replaced", r.map(Some))
        }
        AgentAction::Create { agent } => {
            let r = create(provider, state, line, &agent, prep, network, network_failed).await;
            ("created", r.map(Some))
        }
        AgentAction::NoChange { id, .. } => ("unchanged", Ok(Some(id))),
        AgentAction::Update { .. } => (
            "update",
            Err(ProviderError::new("Internal", "updates run apart")),
        ),
    }
}

/// Update an agent in place, then record what its VM now carries (and the server, when state
/// did not know it yet).
#[allow(clippy::too_many_arguments)]
async fn update(
    updater: Option<&dyn Updater>,
    state: &SharedState,
    line: &crate::progress::Line,
    agent: &str,
    id: &str,
    changes: &[String],
    unreachable: Option<String>,
    prep: Option<Prepared>,
) -> Result<(), ProviderError> {
    let advice = "bring the agent back on the tailnet and deploy again, or rebuild it with \
                  `--replace` (its disk, memory and workspace are lost)";
    if let Some(why) = unreachable {
        return Err(ProviderError::new("Unreachable", why).with_advice(advice));
    }
    let (Some(updater), Some(prep)) = (updater, prep) else {
        return Err(ProviderError::new("Internal", "no update prepared"));
    };
    let Some(upd) = &prep.update else {
        return Err(ProviderError::new("Internal", "no update prepared"));
    };
    line.set(&format!("updating in place ({})", changes.join(", ")));
    let did = updater
        .update(agent, &upd.bundle, &upd.args)
        .await
        .map_err(|why| {
            // The agent was reached: what it reported is the cause (its files may already be
            // the new ones); the tailnet advice above is for agents that cannot be reached.
            ProviderError::new("UpdateFailed", why).with_advice(
                "fix what the agent reported and deploy again (the update is sent again); \
                 `agent-army ssh AGENT` then `journalctl -u openclaw-gateway` shows the gateway's \
                 side; `--replace` rebuilds it (its disk, memory and workspace are lost)",
            )
        })?;
    if !did.is_empty() {
        line.set(&did.join("; "));
    }
    state
        .update(|s| {
            let e = s.agents.entry(agent.to_string()).or_default();
            e.server_id = Some(id.to_string());
            e.pending_create = None;
            e.fingerprint = prep.inputs.fingerprint();
            e.inputs = prep.inputs.clone();
            e.key_id = Some(prep.spec.key_id.clone()).filter(|k| !k.is_empty());
        })
        .await
        .map_err(state_err)
}

async fn delete<P: Provider>(
    provider: &P,
    state: &SharedState,
    agent: &str,
    id: &str,
    forget_key: bool,
) -> Result<(), ProviderError> {
    provider.delete_server(id).await?;
    provider.wait_deleted(&[id.to_string()]).await?;
    // The next server under this name has a new host key: drop the old one from the
    // stack's known_hosts so OpenSSH's accept-new records the new key instead of refusing.
    let stack = state.read(|s| s.stack.clone());
    let host = crate::naming::hostname(&stack, agent);
    if let Err(e) = crate::tailnet::forget_host(&state.local_dir, &stack, &host) {
        tracing::warn!("cannot drop {host} from known_hosts: {e}");
    }
    state
        .update(|s| {
            if let Some(a) = s.agents.get_mut(agent)
                && a.server_id.as_deref() == Some(id)
            {
                a.server_id = None;
                if forget_key {
                    s.agents.remove(agent);
                    s.gateway_keys.remove(agent);
                }
            }
        })
        .await
        .map_err(state_err)
}

async fn create<P: Provider>(
    provider: &P,
    state: &SharedState,
    line: &crate::progress::Line,
    agent: &str,
    prep: Option<Prepared>,
    network: Option<(String, Option<String>)>,
    network_failed: Option<ProviderError>,
) -> Result<String, ProviderError> {
    let Some(prep) = prep else {
        return Err(ProviderError::new("Internal", "no server spec prepared"));
    };
    let Some((network_id, ssh_key_id)) = network else {
        return Err(network_failed.unwrap_or_else(|| {
            ProviderError::new("NoNetwork", "the stack's firewall does not exist")
        }));
    };
    let mut spec = prep.spec.clone();
    spec.network_id = network_id;
    spec.ssh_key_id = ssh_key_id;
    // Reuse the token of an interrupted create with the same inputs: on EC2 the retried
    // call then returns the instance the first one made instead of launching a second.
    let existing = state.read(|s| s.agents.get(agent).and_then(|a| a.pending_create.clone()));
    spec.client_token = match existing {
        Some(p) if p.fingerprint == spec.fingerprint => p.client_token,
        _ => new_client_token(),
    };
    let pending = PendingCreate {
        client_token: spec.client_token.clone(),
        started: now(),
        fingerprint: spec.fingerprint.clone(),
    };
    state
        .update(|s| {
            let e = s
                .agents
                .entry(agent.to_string())
                .or_insert_with(AgentState::default);
            e.pending_create = Some(pending);
        })
        .await
        .map_err(state_err)?;
    line.set("creating server");
    let id = match provider.create_server(&spec).await {
        Ok(id) => id,
        Err(e) => {
            // A definite refusal created nothing; a transport failure may have, so the
            // intent stays until the next run finds the server by its tags.
            if !e.transient {
                let _ = state
                    .update(|s| {
                        if let Some(a) = s.agents.get_mut(agent) {
                            a.pending_create = None;
                        }
                    })
                    .await;
            }
            return Err(e);
        }
    };
    state
        .update(|s| {
            let e = s.agents.entry(agent.to_string()).or_default();
            e.server_id = Some(id.clone());
            e.pending_create = None;
            e.fingerprint = prep.inputs.fingerprint();
            e.inputs = prep.inputs.clone();
            e.key_id = Some(spec.key_id.clone()).filter(|k| !k.is_empty());
        })
        .await
        .map_err(state_err)?;
    line.set(&format!("waiting for {id} to run"));
    provider.wait_running(&id).await?;
    Ok(id)
}

#[cfg(test)]
mod tests;

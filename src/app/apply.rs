//! The use-cases that change or report a fleet: plan, deploy, destroy and outputs.
//!
//! Each is split where the command must talk to the user: a deploy is first *prepared*
//! (lock, state, keys, cloud, plan), then shown and approved by `cli/`, then *applied*. Nothing
//! here prints a table or asks a question; the few notes meant for the user come back as data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::cloud::{self, Cost, provider_error};
use super::{Session, devices, fleet, remote};
use crate::engine::{Engine, Prepared, PreparedUpdate, Report, SharedState};
use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::plan::{self, AgentAction, Plan, PlanInput};
use crate::progress::Progress;
use crate::provider::{
    Cloud, NetworkSpec, Observed, ObservedNetwork, ObservedServer, Provider, ServerSpec,
    ServerState, Shape,
};
use crate::secrets::{EncryptTo, SecretError};
use crate::stack::Config;
use crate::state::State;
use crate::token::GatewayKey;

fn ssh_cidrs(config: &Config) -> Vec<String> {
    config
        .allowed_ssh_cidrs
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// The distinct server shapes of `agents`.
fn shapes<'a>(agents: impl Iterator<Item = &'a crate::stack::Agent>) -> Vec<Shape> {
    let mut v: Vec<Shape> = agents
        .map(|a| Shape {
            size: a.instance_type.clone(),
            image: a.image.clone(),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// How agents that keep their VM are changed in place.
#[derive(Debug, Clone, Default)]
pub struct InPlace {
    /// Delete workspace files the agents made that are not in the project.
    pub prune: bool,
    /// Clear the agents' memory.
    pub reset_memory: bool,
    /// Remote user (`None`: the image's login user).
    pub ssh_user: Option<String>,
}

impl InPlace {
    /// What the plan lists for every agent that stays, beyond its configuration's changes.
    fn also(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.reset_memory {
            v.push("memory reset".to_string());
        }
        if self.prune {
            v.push("workspace pruned".to_string());
        }
        v
    }
    /// The helper's options on the VM.
    fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.prune {
            v.push("--prune".to_string());
        }
        if self.reset_memory {
            v.push("--reset-memory".to_string());
        }
        v
    }
}

/// The agents the plan updates in place.
fn updated(plan: &Plan) -> Vec<String> {
    plan.agents
        .iter()
        .filter(|a| matches!(a, AgentAction::Update { .. }))
        .map(|a| a.agent().to_string())
        .collect()
}

/// Open the ssh path for the plan's updates and mark the agents it cannot reach (all of them,
/// with the reason, when there is no ssh client).
async fn reach_updates(
    session: &Session,
    plan: &mut Plan,
    in_place: &InPlace,
) -> Option<Arc<remote::SshUpdater>> {
    let agents = updated(plan);
    if agents.is_empty() {
        return None;
    }
    match remote::SshUpdater::open(session, in_place.ssh_user.as_deref()) {
        Ok(u) => {
            plan.mark_unreachable(&u.unreachable(&agents).await);
            Some(Arc::new(u))
        }
        Err(e) => {
            let why = e.to_string();
            plan.mark_unreachable(&agents.into_iter().map(|a| (a, why.clone())).collect());
            None
        }
    }
}

/// How an apply runs: progress display, concurrency, the interrupt flag, and whether the
/// device clean-up may print (not under JSON output).
pub struct RunOptions {
    pub progress: Progress,
    /// Most agents changed at once (`None`: no cap beyond the cloud's own pacing).
    pub parallelism: Option<usize>,
    pub stop: Arc<AtomicBool>,
    pub quiet_devices: bool,
}

/// The engine for one apply, writing state through the session's backend under `lock`.
fn engine(
    session: &Session,
    cloud: Cloud,
    state: State,
    lock: &Arc<LockGuard>,
    run: RunOptions,
) -> Engine<Cloud> {
    Engine {
        provider: Arc::new(cloud),
        state: SharedState::new(
            state,
            session.store.clone(),
            lock.clone(),
            session.local_dir.clone(),
        ),
        progress: run.progress,
        parallelism: run.parallelism,
        stop: run.stop,
        updater: None,
    }
}

/// A plan, read-only: nothing is locked or written.
pub struct Planned {
    pub plan: Plan,
    pub cost: Cost,
    /// Why the cloud was not asked, when it was not (no credentials and an empty state).
    pub not_queried: Option<String>,
}

/// `plan`: compare the configuration with state and, whenever it can be asked, the cloud.
/// `refresh` forces the cloud query on or off.
pub async fn plan(
    session: &Session,
    replace: &BTreeSet<String>,
    refresh: Option<bool>,
    in_place: &InPlace,
) -> Result<Planned> {
    let config = &session.config;
    let state = session.read_state()?;
    // Key ids are checked when this machine can know the keys (a plan needs no identity).
    let names = config.agents.iter().map(|a| a.name.clone());
    let keys = fleet::load_keys(&state, config, &session.keyring, &session.env, names).ok();
    let desired = fleet::desired(config, keys.as_ref())?;
    // The cloud is asked whenever it can be: with an empty state too (a fresh CI runner must
    // not plan to create a fleet that exists). Offline only without credentials, and said.
    let mut not_queried = None;
    let refresh = match refresh {
        Some(r) => r,
        None if !state.is_empty() => true,
        None => match cloud::no_credentials(session) {
            Some(why) => {
                not_queried = Some(why);
                false
            }
            None => true,
        },
    };
    let observed = if refresh {
        let cloud = cloud::connect(session).await?;
        Some(
            cloud
                .observe()
                .await
                .map_err(|e| provider_error(config, e))?,
        )
    } else {
        None
    };
    let cidrs = ssh_cidrs(config);
    let also = in_place.also();
    let mut plan = plan::plan(&PlanInput {
        desired: &desired,
        state: &state,
        observed: observed.as_ref(),
        ssh_cidrs: &cidrs,
        force_replace: replace,
        destroy: false,
        also: &also,
    });
    // Whether the agents to update answer (only when the cloud was asked: offline, the plan
    // is state's word alone).
    if refresh {
        reach_updates(session, &mut plan, in_place).await;
    }
    Ok(Planned {
        plan,
        cost: cloud::cost(session).await,
        not_queried,
    })
}

/// How a deploy runs, as the user asked for it.
pub struct DeployOptions {
    pub replace: BTreeSet<String>,
    pub lock_timeout: std::time::Duration,
    pub allow_foreign_recipients: bool,
    pub in_place: InPlace,
}

/// A deploy that holds the lock and knows its plan, before anything in the cloud changed.
pub struct Deploy<'s> {
    session: &'s Session,
    lock: Arc<LockGuard>,
    state: State,
    keys: BTreeMap<String, GatewayKey>,
    keys_changed: bool,
    secrets: BTreeMap<String, fleet::AgentSecrets>,
    desired: Vec<plan::DesiredAgent>,
    cloud: Cloud,
    observed: Observed,
    cidrs: Vec<String>,
    allow_foreign_recipients: bool,
    in_place: InPlace,
    updater: Option<Arc<remote::SshUpdater>>,
    pub plan: Plan,
}

impl<'s> Deploy<'s> {
    /// Resolve every secret, take the lock, read state, decrypt or create the gateway keys
    /// and ask the cloud: all before anything changes, so a wrong identity or a missing secret
    /// stops the run while nothing has changed.
    pub async fn prepare(session: &'s Session, opts: DeployOptions) -> Result<Deploy<'s>> {
        let config = &session.config;
        let mut secrets = BTreeMap::new();
        // Every agent's user data must render and fit the cloud's limit before the lock, the
        // state or the cloud is touched. A throwaway key has the size of the real one.
        let throwaway = GatewayKey::generate();
        for a in &config.agents {
            let s = fleet::resolve_secrets(config, a, &session.keyring, &session.env)?;
            fleet::check_real_user_data(config, a, &s, &throwaway)?;
            secrets.insert(a.name.clone(), s);
        }
        let lock = Arc::new(session.lock("deploy", opts.lock_timeout)?);
        let mut state = session.read_state()?;
        let (keys, keys_changed) = fleet::ensure_keys(
            &mut state,
            config,
            &session.keyring,
            &session.env,
            opts.allow_foreign_recipients,
        )?;
        let desired = fleet::desired(config, Some(&keys))?;
        let cloud = cloud::connect(session).await?;
        // Agents state knows no server for are likely to be created: the checks and lookups
        // their creates need go out with the cloud query instead of after it.
        let likely = shapes(config.agents.iter().filter(|a| {
            state
                .agents
                .get(&a.name)
                .is_none_or(|s| s.server_id.is_none())
        }));
        let early = async {
            if likely.is_empty() {
                None
            } else {
                Some(cloud.preflight(&likely).await)
            }
        };
        let (observed, early) = tokio::join!(cloud.observe(), early);
        let observed = observed.map_err(|e| provider_error(config, e))?;
        let cidrs = ssh_cidrs(config);
        let also = opts.in_place.also();
        let mut plan = plan::plan(&PlanInput {
            desired: &desired,
            state: &state,
            observed: Some(&observed),
            ssh_cidrs: &cidrs,
            force_replace: &opts.replace,
            destroy: false,
            also: &also,
        });
        let updater = reach_updates(session, &mut plan, &opts.in_place).await;
        // Sizes and place are checked with the cloud before anything is created, and before
        // the user is asked.
        let needed = shapes(
            plan.agents
                .iter()
                .filter(|a| matches!(a, AgentAction::Create { .. } | AgentAction::Replace { .. }))
                .filter_map(|a| config.agent(a.agent())),
        );
        let checked = matches!(early, Some(Ok(()))) && needed.iter().all(|s| likely.contains(s));
        if !needed.is_empty() && !checked {
            cloud
                .preflight(&needed)
                .await
                .map_err(|e| provider_error(config, e))?;
        }

        Ok(Deploy {
            session,
            lock,
            state,
            keys,
            keys_changed,
            secrets,
            desired,
            cloud,
            observed,
            cidrs,
            allow_foreign_recipients: opts.allow_foreign_recipients,
            in_place: opts.in_place,
            updater,
            plan,
        })
    }

    /// Every agent's gateway token (for `--show-secrets`).
    pub fn tokens(&self) -> BTreeMap<String, String> {
        self.keys
            .iter()
            .map(|(k, v)| (k.clone(), v.token()))
            .collect()
    }

    /// Nothing to do in the cloud nor in state.
    pub fn is_noop(&self) -> bool {
        !self.plan.has_changes() && !self.plan.has_state_changes()
    }

    /// Finish a deploy with nothing to do: keys made by this run are saved. Returns the
    /// state and what the cloud reported.
    pub fn finish_noop(mut self) -> Result<(State, Observed)> {
        if self.keys_changed {
            self.session.write_state(&self.lock, &mut self.state)?;
        }
        Ok((self.state, self.observed))
    }

    /// Apply the plan: tailnet housekeeping, the user data of every agent to create, the
    /// break-glass key where the cloud needs one, then the engine. `quiet_devices` keeps the
    /// device clean-up from printing (JSON output).
    pub async fn apply(mut self, run: RunOptions) -> Result<(State, Report)> {
        let session = self.session;
        let config = &session.config;
        session.write_state(&self.lock, &mut self.state)?;

        // Tailnet housekeeping before any cloud change: agents that get a new VM (or go away)
        // lose their old device, so the new VM joins under the exact hostname; live agents
        // that stay are never touched. With an OAuth client, each new VM gets its own key.
        let ts = devices::client(&session.env, config, &session.keyring).await?;
        let mut renew = Vec::new();
        let mut clean_hosts = Vec::new();
        let mut protect = Vec::new();
        for a in &self.plan.agents {
            let host = crate::naming::hostname(&config.stack, a.agent());
            match a {
                AgentAction::Create { agent } | AgentAction::Replace { agent, .. } => {
                    renew.push(agent.clone());
                    clean_hosts.push(host);
                }
                AgentAction::Delete { agent, .. } if !agent.is_empty() => {
                    if config.agent(agent).is_none() {
                        clean_hosts.push(host);
                    }
                }
                AgentAction::NoChange { .. }
                | AgentAction::Adopt { .. }
                | AgentAction::Update { .. } => protect.push(host),
                AgentAction::Delete { .. } => {}
            }
        }
        clean_hosts.sort();
        clean_hosts.dedup();
        devices::clean(ts.as_ref(), &clean_hosts, &protect, run.quiet_devices).await?;
        let minted = devices::mint(ts.as_ref(), config, &renew).await?;

        let to_update = updated(&self.plan);
        let mut prepared = BTreeMap::new();
        for (a, d) in config.agents.iter().zip(&self.desired) {
            let (Some(key), Some(s)) = (self.keys.get(&a.name), self.secrets.get(&a.name)) else {
                continue;
            };
            // User data only for the servers this run creates.
            let user_data = if renew.contains(&a.name) {
                fleet::real_user_data(config, a, s, key, minted.get(&a.name))?
            } else {
                Vec::new()
            };
            let update = if to_update.contains(&a.name) {
                let files = fleet::real_agent_files(config, a, s, key)?;
                let bundle = remote::bundle(&files).map_err(|source| Error::Io {
                    path: format!("configuration of {}", a.name).into(),
                    source,
                })?;
                Some(PreparedUpdate {
                    bundle: Arc::new(bundle),
                    args: self.in_place.args(),
                })
            } else {
                None
            };
            prepared.insert(
                a.name.clone(),
                Prepared {
                    spec: ServerSpec {
                        agent: a.name.clone(),
                        hostname: a.hostname.clone(),
                        instance_type: a.instance_type.clone(),
                        image: a.image.clone(),
                        disk_gb: a.disk_gb,
                        user_data,
                        fingerprint: d.label.clone(),
                        key_id: key.key_id(),
                        client_token: String::new(),
                        network_id: String::new(),
                        ssh_key_id: None,
                    },
                    inputs: d.inputs.clone(),
                    update,
                },
            );
        }
        drop(minted);

        let break_glass = if crate::provider::profile(config.provider.kind()).break_glass_key {
            Some(ensure_break_glass(
                session,
                &self.lock,
                &mut self.state,
                self.allow_foreign_recipients,
            )?)
        } else {
            None
        };
        let mut engine = engine(session, self.cloud, self.state, &self.lock, run);
        engine.updater = self.updater.map(|u| u as Arc<dyn crate::engine::Updater>);
        let network = NetworkSpec {
            ssh_cidrs: self.cidrs,
            ssh_public_key: break_glass,
        };
        let report = engine.apply(&self.plan, &prepared, &network).await;
        Ok((engine.state.snapshot(), report))
    }
}

/// The stack's break-glass SSH key (Hetzner): generated once, kept encrypted in state.
/// Returns its public key line.
fn ensure_break_glass(
    session: &Session,
    lock: &LockGuard,
    state: &mut State,
    allow_foreign_recipients: bool,
) -> Result<String> {
    const WHAT: &str = "break-glass ssh key";
    let (config, keyring) = (&session.config, &session.keyring);
    if let Some(armored) = &state.break_glass_key {
        let seed = keyring
            .decrypt(armored)
            .map_err(|e| Error::secret(WHAT, e))?;
        let key = GatewayKey::from_seed_hex(seed.expose())
            .map_err(|e| Error::secret(WHAT, SecretError::Corrupt(e.to_string())))?;
        return Ok(key.public_openssh());
    }
    let key = GatewayKey::generate();
    let to = EncryptTo::for_stack(&config.recipients, &session.env)
        .map_err(|e| Error::secret(WHAT, e))?;
    fleet::require_readable(&to, keyring, WHAT, allow_foreign_recipients)?;
    state.break_glass_key = Some(
        to.encrypt(key.seed_hex().as_bytes())
            .map_err(|e| Error::secret(WHAT, e))?,
    );
    session.write_state(lock, state)?;
    Ok(key.public_openssh())
}

/// A destroy that holds the lock and knows its plan.
pub struct Destroy<'s> {
    session: &'s Session,
    lock: Arc<LockGuard>,
    state: State,
    cloud: Cloud,
    pub plan: Plan,
}

impl<'s> Destroy<'s> {
    /// Take the lock and plan the deletion of everything the stack has: what the cloud finds
    /// by its tags, and what state records that the tag search does not return (tags
    /// removed by hand).
    pub async fn prepare(
        session: &'s Session,
        lock_timeout: std::time::Duration,
    ) -> Result<Destroy<'s>> {
        let config = &session.config;
        let lock = Arc::new(session.lock("destroy", lock_timeout)?);
        let state = session.read_state()?;
        let cloud = cloud::connect(session).await?;
        let mut observed = cloud
            .observe()
            .await
            .map_err(|e| provider_error(config, e))?;
        for (agent, a) in &state.agents {
            if let Some(id) = &a.server_id
                && !observed.servers.iter().any(|s| &s.id == id)
            {
                observed.servers.push(ObservedServer {
                    id: id.clone(),
                    agent: agent.clone(),
                    fingerprint: None,
                    key_id: None,
                    state: ServerState::Other("recorded in state".into()),
                    name: String::new(),
                    created: String::new(),
                });
            }
        }
        if let Some(n) = &state.network
            && !observed.networks.iter().any(|o| o.id == n.id)
        {
            observed.networks.push(ObservedNetwork {
                id: n.id.clone(),
                ssh_cidrs: vec![],
                ssh_key_id: n.ssh_key_id.clone(),
            });
        }
        let plan = plan::plan(&PlanInput {
            desired: &[],
            state: &state,
            observed: Some(&observed),
            ssh_cidrs: &[],
            force_replace: &BTreeSet::new(),
            destroy: true,
            also: &[],
        });
        Ok(Destroy {
            session,
            lock,
            state,
            cloud,
            plan,
        })
    }

    /// Servers the plan deletes.
    pub fn servers(&self) -> usize {
        self.plan
            .agents
            .iter()
            .filter(|a| matches!(a, AgentAction::Delete { .. }))
            .count()
    }

    /// Nothing left in the cloud: forget the stack's state.
    pub fn finish_empty(self) -> Result<()> {
        Ok(self.session.store.remove(&self.lock)?)
    }

    /// Remove the stack's tailnet devices, then its servers and network. State and the
    /// stack's known_hosts are removed only when everything went.
    pub async fn apply(self, run: RunOptions) -> Result<Report> {
        let session = self.session;
        let config = &session.config;
        let ts = devices::client(&session.env, config, &session.keyring).await?;
        let mut hosts: Vec<String> = self
            .plan
            .agents
            .iter()
            .filter(|a| !a.agent().is_empty())
            .map(|a| crate::naming::hostname(&config.stack, a.agent()))
            .collect();
        hosts.sort();
        hosts.dedup();
        devices::clean(ts.as_ref(), &hosts, &[], run.quiet_devices).await?;
        let engine = engine(session, self.cloud, self.state, &self.lock, run);
        let report = engine
            .apply(
                &self.plan,
                &BTreeMap::new(),
                &NetworkSpec {
                    ssh_cidrs: vec![],
                    ssh_public_key: None,
                },
            )
            .await;
        if report.failed() == 0 && !report.interrupted {
            session.store.remove(&self.lock)?;
            // Every host key of the stack is gone with its servers.
            let _ = std::fs::remove_file(crate::tailnet::known_hosts_path(
                &session.local_dir,
                &config.stack,
            ));
        }
        Ok(report)
    }
}

/// What `outputs` may show: state, and the tokens that still open their servers.
pub struct Outputs {
    pub state: State,
    pub tokens: BTreeMap<String, String>,
    /// Agents whose key changed since they were deployed: (agent, key id on the server, key
    /// id now). Their tokens are withheld.
    pub stale: Vec<(String, String, String)>,
}

/// `outputs`: from state only; with `show_secrets`, each agent's token unless its key
/// changed since the server was made (a new seed, a rotated generation, not deployed yet),
/// since that token would open nothing.
pub fn outputs(session: &Session, show_secrets: bool) -> Result<Outputs> {
    let config = &session.config;
    let state = session.read_state()?;
    let mut tokens = BTreeMap::new();
    let mut stale = Vec::new();
    if show_secrets {
        let keys = fleet::load_keys(
            &state,
            config,
            &session.keyring,
            &session.env,
            config.agents.iter().map(|a| a.name.clone()),
        )?;
        for (agent, key) in keys {
            let deployed = state.agents.get(&agent).and_then(|a| a.key_id.clone());
            match deployed {
                Some(have) if have != key.key_id() => stale.push((agent, have, key.key_id())),
                _ => {
                    tokens.insert(agent, key.token());
                }
            }
        }
    }
    Ok(Outputs {
        state,
        tokens,
        stale,
    })
}

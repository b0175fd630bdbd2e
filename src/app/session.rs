//! A session: one stack's loaded configuration, its state backend, the state lock and the
//! age keyring. Every command that reads or writes state opens one; writing state needs a
//! [`LockGuard`], so no command can write without holding the stack's lock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::env::{Env, vars};
use crate::error::{Error, Result};
use crate::lock::{LockError, LockGuard};
use crate::secrets::Keyring;
use crate::stack::model::StateSettings;
use crate::stack::{Config, Project, ProviderSettings};
use crate::state::{LocalStore, S3Store, SharedS3, State, StateBackend};
use crate::token::GatewayKey;

use super::fleet;

pub struct Session {
    pub env: Env,
    pub config: Config,
    /// Where the stack's state lives (and its lock).
    pub store: Arc<dyn StateBackend>,
    pub keyring: Keyring,
    /// This machine's working folder for the stack (`.agent-army/`): known_hosts and other
    /// per-machine files that are not state.
    pub local_dir: PathBuf,
}

impl Session {
    /// Load and validate the stack's configuration. Warnings are returned for the caller to
    /// show; nothing is read from state yet.
    pub fn open(project: &Project, env: &Env) -> Result<(Session, Vec<String>)> {
        let config = crate::stack::load(project)?;
        let warnings = config.warnings.clone();
        let local_dir = LocalStore::base_dir(&config.root, env);
        let store = backend(&config, env)?;
        Ok((
            Session {
                keyring: Keyring::load(env),
                env: env.clone(),
                config,
                store,
                local_dir,
            },
            warnings,
        ))
    }

    /// The stack's state, or an empty one when nothing was ever recorded.
    pub fn read_state(&self) -> Result<State> {
        let c = &self.config;
        Ok(self
            .store
            .read_or_new(&c.project, &c.stack, c.provider.kind())?)
    }

    /// Take the stack's state lock for `operation`, waiting up to `wait`.
    pub fn lock(&self, operation: &str, wait: Duration) -> Result<LockGuard> {
        let user = self
            .env
            .get("USER")
            .or_else(|| self.env.get("LOGNAME"))
            .unwrap_or("unknown");
        let guard = self
            .store
            .lock(operation, user, wait)
            .map_err(|e| lock_error(&self.config.stack, e))?;
        if let Some(h) = &guard.stale {
            eprintln!(
                "note: the previous run ({h}) ended without releasing the state lock; its process is gone, so the lock was free. The next step converges whatever it left half done."
            );
        }
        Ok(guard)
    }

    /// Write state (the lock proves this run may).
    pub fn write_state(&self, lock: &LockGuard, state: &mut State) -> Result<()> {
        Ok(self.store.write(lock, state)?)
    }

    /// Every agent's gateway key. Keys already in state are decrypted without a lock; when
    /// some are missing, the lock is taken (waiting up to `wait`), state is read again, the
    /// missing keys are created and state is written, so a concurrent deploy's write is never
    /// overwritten.
    pub fn gateway_keys(
        &self,
        operation: &str,
        wait: Duration,
    ) -> Result<BTreeMap<String, GatewayKey>> {
        let names = self.config.agents.iter().map(|a| a.name.clone());
        let state = self.read_state()?;
        let keys = fleet::load_keys(&state, &self.config, &self.keyring, &self.env, names)?;
        if keys.len() == self.config.agents.len() {
            return Ok(keys);
        }
        let lock = self.lock(operation, wait)?;
        self.gateway_keys_locked(&lock)
    }

    /// Every agent's gateway key, for a run that already holds the stack's lock: missing
    /// keys are created and state is written.
    pub fn gateway_keys_locked(&self, lock: &LockGuard) -> Result<BTreeMap<String, GatewayKey>> {
        let mut state = self.read_state()?;
        let (keys, changed) =
            fleet::ensure_keys(&mut state, &self.config, &self.keyring, &self.env, false)?;
        if changed {
            self.write_state(lock, &mut state)?;
        }
        Ok(keys)
    }
}

/// The stack's state backend: `AGENT_ARMY_STATE` when set, else the files' `[state]`.
pub fn backend(config: &Config, env: &Env) -> Result<Arc<dyn StateBackend>> {
    match env.get(vars::STATE) {
        Some(v) => {
            parse_backend(v, config, env).map_err(|e| Error::Usage(format!("{}: {e}", vars::STATE)))
        }
        None => Ok(backend_for(config.state.clone(), config, env)),
    }
}

/// A backend named as `AGENT_ARMY_STATE` names one.
pub fn parse_backend(
    s: &str,
    config: &Config,
    env: &Env,
) -> std::result::Result<Arc<dyn StateBackend>, String> {
    let region = match &config.provider {
        ProviderSettings::Aws { region, .. } => region.as_str(),
        _ => "us-east-1",
    };
    Ok(backend_for(StateSettings::parse(s, region)?, config, env))
}

fn backend_for(settings: StateSettings, config: &Config, env: &Env) -> Arc<dyn StateBackend> {
    match settings {
        StateSettings::Local => Arc::new(LocalStore::new(&config.root, &config.stack, env)),
        StateSettings::S3(loc) => Arc::new(SharedS3::new(S3Store::new(
            loc,
            &config.project,
            &config.stack,
            env,
        ))),
    }
}

/// A lock error in the user's terms.
pub fn lock_error(stack: &str, e: LockError) -> Error {
    match e {
        LockError::Held(holder) => Error::Locked {
            stack: stack.to_string(),
            holder,
        },
        LockError::Io { path, source } => Error::Io { path, source },
        other => Error::Input(other.to_string()),
    }
}

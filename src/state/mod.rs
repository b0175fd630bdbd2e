//! Per-stack state: `.agent-army/state/<stack>.json`.
//!
//! Versioned JSON, written atomically with mode 0600 after every change. It records resource
//! ids, a fingerprint of each agent's inputs, create intents (so a crash never loses track of
//! a create in flight), and the agents' gateway keys, encrypted with age.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::env::{Env, vars};
use crate::lock::{LockError, LockGuard, StateLock, Unlocked};

#[cfg(feature = "cloud")]
pub mod s3;
use crate::stack::ProviderKind;
#[cfg(feature = "cloud")]
pub use s3::{S3Store, SharedS3};

/// Version of the state format this build writes.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write state file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is damaged: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "state file {} has version {found}; this agent-army understands version {STATE_VERSION} and older",
        .path.display()
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error(
        "state file {} belongs to {found_project}/{found_stack}, not {project}/{stack}",
        .path.display()
    )]
    Mismatch {
        path: PathBuf,
        project: String,
        stack: String,
        found_project: String,
        found_stack: String,
    },
    #[error("remote state {location}: {message}")]
    Remote { location: String, message: String },
    #[error(
        "remote state {location} changed since this run read it (another writer, or a lock that was forced); nothing was overwritten"
    )]
    Conflict { location: String },
}

impl StateError {
    pub fn help(&self) -> Option<String> {
        match self {
            StateError::TooNew { .. } => Some("upgrade agent-army to the version that wrote it".into()),
            StateError::Corrupt { .. } => Some("restore the file from backup; resources in the cloud are still found by their tags, so `agent-army destroy` or `deploy` can rebuild it after you move the damaged file away".into()),
            StateError::Conflict { .. } => Some("run the command again: it reads the state anew".into()),
            StateError::Remote { .. } => Some("check the bucket, its region and your AWS credentials (the standard AWS_* variables or profile)".into()),
            _ => None,
        }
    }
}

/// What agent-army knows about one agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    /// Cloud id of the server, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Set before a create call and cleared once its id is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_create: Option<PendingCreate>,
    /// Fingerprint of the machine inputs the server was created from.
    #[serde(default)]
    pub fingerprint: String,
    /// The inputs themselves (non-secret; secrets appear as fingerprints).
    #[serde(default)]
    pub inputs: Inputs,
    /// Public id of the gateway key the server was created or adopted with
    /// (`GatewayKey::key_id`): `outputs` shows a token only while it still matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingCreate {
    /// Idempotency token sent with the create call.
    pub client_token: String,
    pub started: String,
    pub fingerprint: String,
}

/// An agent's inputs, in two kinds: the *machine* (server type, image, disk, place, the boot
/// document, the gateway key's generation), whose change replaces the VM, and the agent's
/// *configuration* (`config`: openclaw.json, env values and secrets, the workspace, the
/// OpenClaw version, the coding-agent CLIs, the gateway unit), changed in place over ssh.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inputs {
    pub instance_type: String,
    pub image: String,
    pub disk_gb: u32,
    pub place: String,
    /// SHA-256 (16 hex) of the masked user data without the agent's configuration.
    pub user_data: String,
    /// Generation of the derived gateway key (absent when 0, so fingerprints made before
    /// generations existed stay the same).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_generation: u32,
    /// The configuration, item by item: `openclaw.json`, `env.<NAME>`, `secret.<NAME>` (the
    /// fingerprint of its stored form), `workspace/<path>`, `openclaw version`, `coding
    /// agents`, `gateway unit`; each → SHA-256 (16 hex) of its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

/// What changes between two configurations, item by item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub changed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
    /// `env.TZ, workspace/NOTES.md (new), secret.OLD (removed)`.
    pub fn summary(&self) -> Vec<String> {
        let mut out: Vec<String> = self.changed.clone();
        out.extend(self.added.iter().map(|k| format!("{k} (new)")));
        out.extend(self.removed.iter().map(|k| format!("{k} (removed)")));
        out
    }
}

impl Inputs {
    /// Fingerprint of the machine inputs (16 hex characters): what a server is labelled with
    /// and what replaces it when it changes.
    pub fn fingerprint(&self) -> String {
        let machine = Inputs {
            config: BTreeMap::new(),
            ..self.clone()
        };
        short_hash(&serde_json::to_vec(&machine).unwrap_or_default())
    }

    /// Fingerprint of the configuration (16 hex characters).
    pub fn config_fingerprint(&self) -> String {
        short_hash(&serde_json::to_vec(&self.config).unwrap_or_default())
    }

    /// The label a server is created with: `<machine>.<config>`, so a server found without
    /// state tells both apart.
    pub fn label(&self) -> String {
        format!("{}.{}", self.fingerprint(), self.config_fingerprint())
    }

    /// Hash of one configuration value.
    pub fn hash(bytes: &[u8]) -> String {
        short_hash(bytes)
    }

    /// Human-readable differences in the machine inputs, from `old` to `self`.
    pub fn diff(&self, old: &Inputs) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: &str, b: &str| {
            if a != b {
                out.push(format!("{name} {a} → {b}"));
            }
        };
        cmp("instance type", &old.instance_type, &self.instance_type);
        cmp("image", &old.image, &self.image);
        cmp(
            "disk",
            &format!("{}GB", old.disk_gb),
            &format!("{}GB", self.disk_gb),
        );
        cmp("location", &old.place, &self.place);
        if old.token_generation != self.token_generation {
            out.push(format!(
                "gateway token rotated (generation {} → {})",
                old.token_generation, self.token_generation
            ));
        }
        if old.user_data != self.user_data {
            out.push("boot document changed".into());
        }
        out
    }

    /// The configuration items that differ from `old`.
    pub fn config_diff(&self, old: &Inputs) -> ConfigDiff {
        let mut d = ConfigDiff::default();
        for (k, v) in &self.config {
            match old.config.get(k) {
                None => d.added.push(k.clone()),
                Some(o) if o != v => d.changed.push(k.clone()),
                _ => {}
            }
        }
        d.removed = old
            .config
            .keys()
            .filter(|k| !self.config.contains_key(*k))
            .cloned()
            .collect();
        d
    }
}

/// Stack-wide resources: the firewall / security group, and (Hetzner) the break-glass key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkState {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    pub project: String,
    pub stack: String,
    pub provider: ProviderKind,
    /// Incremented on every write.
    pub serial: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkState>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentState>,
    /// Agent → armored age encryption of its Ed25519 seed.
    #[serde(default)]
    pub gateway_keys: BTreeMap<String, String>,
    /// Armored age encryption of the stack's break-glass SSH private key (Hetzner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_key: Option<String>,
}

impl State {
    pub fn new(project: &str, stack: &str, provider: ProviderKind) -> Self {
        State {
            version: STATE_VERSION,
            project: project.into(),
            stack: stack.into(),
            provider,
            serial: 0,
            network: None,
            agents: BTreeMap::new(),
            gateway_keys: BTreeMap::new(),
            break_glass_key: None,
        }
    }

    /// Whether the state records no resources at all.
    pub fn is_empty(&self) -> bool {
        self.network.is_none()
            && self
                .agents
                .values()
                .all(|a| a.server_id.is_none() && a.pending_create.is_none())
    }
}

/// Where a stack's state lives: reading, locking, writing. One implementation today (a file
/// under `.agent-army/`); a remote one plugs in here without touching the commands.
pub trait StateBackend: Send + Sync {
    /// Where the state is, for messages (a path or a URL).
    fn location(&self) -> String;

    /// Read the state; `None` when nothing was ever recorded.
    fn read(&self) -> Result<Option<State>, StateError>;

    /// Take the stack's lock for `operation`, waiting up to `wait`.
    fn lock(&self, operation: &str, user: &str, wait: Duration) -> Result<LockGuard, LockError>;

    /// Write the state (bumping its serial); the guard proves the lock is held.
    fn write(&self, lock: &LockGuard, state: &mut State) -> Result<(), StateError>;

    /// Remove the state (after a complete destroy).
    fn remove(&self, lock: &LockGuard) -> Result<(), StateError>;

    /// Remove the lock with this id, whoever holds it (`force-unlock`).
    fn force_unlock(&self, id: &str) -> Result<Unlocked, LockError>;

    /// Read the state for this project/stack, or a fresh one.
    fn read_or_new(
        &self,
        project: &str,
        stack: &str,
        provider: ProviderKind,
    ) -> Result<State, StateError> {
        match self.read()? {
            Some(s) if s.project != project || s.stack != stack => Err(StateError::Mismatch {
                path: PathBuf::from(self.location()),
                project: project.into(),
                stack: stack.into(),
                found_project: s.project,
                found_stack: s.stack,
            }),
            Some(s) => Ok(s),
            None => Ok(State::new(project, stack, provider)),
        }
    }
}

/// State in a file on this machine: `.agent-army/state/<stack>.json` (mode 0600, written
/// atomically), locked by `.agent-army/locks/<stack>.lock`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pub stack: String,
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl LocalStore {
    /// `$AGENT_ARMY_STATE_DIR` or `<root>/.agent-army`.
    pub fn base_dir(root: &Path, env: &Env) -> PathBuf {
        env.get(vars::STATE_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".agent-army"))
    }

    pub fn new(root: &Path, stack: &str, env: &Env) -> Self {
        let dir = Self::base_dir(root, env);
        let path = dir.join("state").join(format!("{stack}.json"));
        LocalStore {
            stack: stack.to_string(),
            dir,
            path,
        }
    }

    fn read_file(&self) -> Result<Option<State>, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        decode(&bytes, &self.path).map(Some)
    }

    /// Write atomically, mode 0600, bumping the serial.
    fn write_file(&self, state: &mut State) -> Result<(), StateError> {
        let json = encode(state, &self.path)?;
        crate::fsutil::write_private_atomic(&self.path, &json).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn remove_file(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

impl StateBackend for LocalStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> Result<Option<State>, StateError> {
        self.read_file()
    }

    fn lock(&self, operation: &str, user: &str, wait: Duration) -> Result<LockGuard, LockError> {
        let lock = StateLock::acquire(&self.dir, &self.stack, operation, user, wait)?;
        Ok(LockGuard::new(lock.id.clone(), lock.stale.clone(), lock))
    }

    fn write(&self, _lock: &LockGuard, state: &mut State) -> Result<(), StateError> {
        self.write_file(state)
    }

    fn remove(&self, _lock: &LockGuard) -> Result<(), StateError> {
        self.remove_file()
    }

    fn force_unlock(&self, id: &str) -> Result<Unlocked, LockError> {
        crate::lock::force_unlock(&self.dir, &self.stack, id)
    }
}

/// State kept in memory: for tests, and for trying a plan without touching disk. Its lock
/// excludes other users of the same store, like the file lock does across processes.
#[derive(Default)]
pub struct MemoryStore {
    state: std::sync::Mutex<Option<State>>,
    held: Arc<std::sync::atomic::AtomicBool>,
    writes: std::sync::atomic::AtomicU64,
    /// How long each write takes (a file's fsync or a bucket's round trip, in tests).
    write_delay: Duration,
}

/// Releases a [`MemoryStore`] lock on drop.
struct MemoryLock(Arc<std::sync::atomic::AtomicBool>);

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose writes take `delay` each.
    pub fn with_write_delay(delay: Duration) -> Self {
        MemoryStore {
            write_delay: delay,
            ..Self::default()
        }
    }

    /// How many writes it has taken.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateBackend for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }

    fn read(&self) -> Result<Option<State>, StateError> {
        Ok(self.slot().clone())
    }

    fn lock(&self, operation: &str, _user: &str, wait: Duration) -> Result<LockGuard, LockError> {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + wait;
        while self.held.swap(true, Ordering::SeqCst) {
            if std::time::Instant::now() >= deadline {
                return Err(LockError::Held("another run in this process".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(LockGuard::new(
            format!("memory-{operation}"),
            None,
            MemoryLock(self.held.clone()),
        ))
    }

    fn write(&self, _lock: &LockGuard, state: &mut State) -> Result<(), StateError> {
        if !self.write_delay.is_zero() {
            std::thread::sleep(self.write_delay);
        }
        state.serial += 1;
        state.version = STATE_VERSION;
        *self.slot() = Some(state.clone());
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn remove(&self, _lock: &LockGuard) -> Result<(), StateError> {
        *self.slot() = None;
        Ok(())
    }

    fn force_unlock(&self, _id: &str) -> Result<Unlocked, LockError> {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(Unlocked::NotHeld)
    }
}

/// A state document from its bytes (`path` names it in errors): the version is checked
/// before the full schema, so a newer file gets the right message.
pub fn decode(bytes: &[u8], path: &Path) -> Result<State, StateError> {
    #[derive(Deserialize)]
    struct Head {
        version: u32,
    }
    let corrupt = |e: serde_json::Error| StateError::Corrupt {
        path: path.to_path_buf(),
        message: describe_json_error(bytes, &e),
    };
    let head: Head = serde_json::from_slice(bytes).map_err(corrupt)?;
    if head.version > STATE_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: head.version,
        });
    }
    serde_json::from_slice(bytes).map_err(corrupt)
}

/// The bytes of `state` as written: its serial bumped, this build's version, pretty JSON.
pub fn encode(state: &mut State, path: &Path) -> Result<Vec<u8>, StateError> {
    state.serial += 1;
    state.version = STATE_VERSION;
    let mut json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    json.push(b'\n');
    Ok(json)
}

/// A JSON error, prefixed with the field whose value is wrong when serde_json does not name
/// it ("invalid type: string \"x\", expected u64" says neither which key nor where in terms
/// a user knows).
fn describe_json_error(bytes: &[u8], e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let names_no_field = msg.starts_with("invalid type")
        || msg.starts_with("invalid value")
        || msg.starts_with("invalid length");
    if e.classify() != serde_json::error::Category::Data || !names_no_field {
        return msg;
    }
    // serde_json's line is 1-based and its column counts bytes up to the error (1-based).
    let line_start: usize = bytes
        .split(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    match json_path_at(bytes, line_start + e.column()) {
        Some(path) => format!("`{path}`: {msg}"),
        None => msg,
    }
}

/// The dotted path of the object keys open at byte `end` of a JSON text (best effort; array
/// positions are left out).
fn json_path_at(text: &[u8], end: usize) -> Option<String> {
    let end = end.min(text.len());
    // One entry per open object or array: the key being read in it, if any.
    let mut open: Vec<Option<String>> = Vec::new();
    let mut last_string = None;
    let mut i = 0;
    while i < end {
        match text[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let stop = i.min(text.len());
                last_string = Some(String::from_utf8_lossy(&text[start..stop]).into_owned());
            }
            b':' => {
                if let Some(key) = open.last_mut() {
                    *key = last_string.take();
                }
            }
            b'{' | b'[' => open.push(None),
            b'}' | b']' => {
                open.pop();
            }
            b',' => {
                if let Some(key) = open.last_mut() {
                    *key = None;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let path: Vec<String> = open.into_iter().flatten().collect();
    (!path.is_empty()).then(|| path.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path(), "dev", &Env::default());
        (d, s)
    }

    #[test]
    fn roundtrip_and_serial() {
        let (_d, st) = store();
        assert!(st.read().unwrap().is_none());
        let lock = st.lock("test", "me", Duration::ZERO).unwrap();
        assert!(matches!(
            st.lock("other", "you", Duration::ZERO),
            Err(LockError::Held(_))
        ));
        drop(lock);
        let mut s = State::new("p", "dev", ProviderKind::Aws);
        s.agents.insert(
            "a".into(),
            AgentState {
                server_id: Some("i-1".into()),
                ..Default::default()
            },
        );
        let lock = st.lock("test", "me", Duration::ZERO).unwrap();
        st.write(&lock, &mut s).unwrap();
        st.write(&lock, &mut s).unwrap();
        let back = st.read().unwrap().unwrap();
        assert_eq!(back.serial, 2);
        assert_eq!(back, s);
    }

    #[test]
    fn newer_version_is_refused() {
        let (_d, st) = store();
        std::fs::create_dir_all(st.path.parent().unwrap()).unwrap();
        std::fs::write(&st.path, r#"{"version": 99, "whatever": true}"#).unwrap();
        assert!(matches!(
            st.read(),
            Err(StateError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn truncated_is_corrupt() {
        let (_d, st) = store();
        std::fs::create_dir_all(st.path.parent().unwrap()).unwrap();
        std::fs::write(&st.path, r#"{"version": 1, "proj"#).unwrap();
        assert!(matches!(st.read(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn damaged_field_is_named() {
        let (_d, st) = store();
        std::fs::create_dir_all(st.path.parent().unwrap()).unwrap();
        let mut s = State::new("p", "dev", ProviderKind::Aws);
        s.agents.insert(
            "agent-pm".into(),
            AgentState {
                server_id: Some("i-1".into()),
                ..Default::default()
            },
        );
        let text = serde_json::to_string_pretty(&s)
            .unwrap()
            .replace("\"i-1\"", "7");
        std::fs::write(&st.path, text).unwrap();
        let e = st.read().unwrap_err().to_string();
        assert!(
            e.contains("is damaged: `agents.agent-pm.server_id`: invalid type: integer `7`"),
            "{e}"
        );
        std::fs::write(&st.path, r#"{"version": 1, "project": "p", "stack": "dev", "provider": "aws", "serial": "three"}"#).unwrap();
        let e = st.read().unwrap_err().to_string();
        assert!(e.contains("is damaged: `serial`: invalid type"), "{e}");
        std::fs::write(&st.path, r#"{"version": "one"}"#).unwrap();
        let e = st.read().unwrap_err().to_string();
        assert!(e.contains("is damaged: `version`: invalid type"), "{e}");
    }

    #[test]
    fn diff_names_changes() {
        let a = Inputs {
            instance_type: "t3.small".into(),
            disk_gb: 30,
            ..Default::default()
        };
        let mut b = a.clone();
        b.instance_type = "t3.medium".into();
        b.user_data = "x".into();
        assert_eq!(
            b.diff(&a),
            vec![
                "instance type t3.small → t3.medium",
                "boot document changed"
            ]
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        // The configuration changes neither the machine fingerprint nor the machine diff.
        let mut c = a.clone();
        c.config.insert("env.TZ".into(), Inputs::hash(b"UTC"));
        assert_eq!(c.fingerprint(), a.fingerprint());
        assert!(c.diff(&a).is_empty());
        assert_ne!(c.label(), a.label());
        assert_eq!(c.config_diff(&a).summary(), vec!["env.TZ (new)"]);
        assert_eq!(a.config_diff(&c).summary(), vec!["env.TZ (removed)"]);
    }
}

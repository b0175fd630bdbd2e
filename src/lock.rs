//! The per-stack state lock: an OS advisory lock on `.agent-army/locks/<stack>.lock`, whose
//! content names the holder. The OS releases it when the process dies, so a crashed run
//! never leaves a stuck lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who holds the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub operation: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub created: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` by {}@{} (pid {}) since {} [lock id {}]",
            self.operation, self.user, self.host, self.pid, self.created, self.id
        )
    }
}

/// Proof that this run holds a stack's state lock, whatever backend keeps it; the lock is
/// released when the guard is dropped. Writing state takes one, so nothing writes unlocked.
pub struct LockGuard {
    /// The lock id (`force-unlock` takes it).
    pub id: String,
    /// The holder recorded by a previous run that died without releasing the lock.
    pub stale: Option<Holder>,
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl LockGuard {
    /// A guard that keeps `held` (the backend's handle) until dropped.
    pub fn new(id: String, stale: Option<Holder>, held: impl std::any::Any + Send + Sync) -> Self {
        LockGuard {
            id,
            stale,
            _held: Box::new(held),
        }
    }
}

/// A held lock file; released on drop.
pub struct StateLock {
    file: File,
    pub path: PathBuf,
    pub id: String,
    /// The holder recorded by a previous run that died without releasing the lock (its
    /// process is gone, so the OS released the lock itself).
    pub stale: Option<Holder>,
}

/// Path of a stack's lock file.
pub fn lock_path(base: &Path, stack: &str) -> PathBuf {
    base.join("locks").join(format!("{stack}.lock"))
}

/// Whether a process with this pid exists on this machine.
pub fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// What `force-unlock` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlocked {
    /// The lock file named this holder and is removed; a live holder keeps running but no
    /// longer excludes new runs.
    Removed(Holder),
    /// Nothing held the lock; the leftover record was removed.
    NotHeld,
}

/// Remove the lock with this id (`agent-army force-unlock ID`).
pub fn force_unlock(base: &Path, stack: &str, id: &str) -> Result<Unlocked, LockError> {
    let path = lock_path(base, stack);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Unlocked::NotHeld),
        Err(e) => return Err(io(e)),
    };
    let holder = serde_json::from_str::<Holder>(&text).ok();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let held = matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock));
    match holder {
        Some(h) if h.id == id => {
            std::fs::remove_file(&path).map_err(io)?;
            Ok(if held {
                Unlocked::Removed(h)
            } else {
                Unlocked::NotHeld
            })
        }
        Some(h) => Err(LockError::WrongId {
            given: id.to_string(),
            holder: h.to_string(),
        }),
        None if !held => {
            std::fs::remove_file(&path).map_err(io)?;
            Ok(Unlocked::NotHeld)
        }
        None => Err(LockError::WrongId {
            given: id.to_string(),
            holder: "a holder that recorded no id".into(),
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("held by {0}")]
    Held(String),
    #[error("lock id `{given}` does not match the lock, which is held by {holder}")]
    WrongId { given: String, holder: String },
    #[error("cannot open lock file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("remote lock {location}: {message}")]
    Remote { location: String, message: String },
}

impl Holder {
    /// This process, about to hold a lock for `operation`.
    pub fn this_process(operation: &str, user: &str) -> Holder {
        Holder {
            id: format!("{:x}", std::process::id() as u64 ^ now_nanos()),
            operation: operation.into(),
            user: user.into(),
            host: hostname(),
            pid: std::process::id(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// How the holder is shown in a "locked by" error: a holder on this machine whose
    /// process is gone is named as such.
    pub fn describe(&self) -> String {
        if self.host == hostname() && !process_alive(self.pid) {
            format!(
                "{self}, whose process is gone: the lock is stale; remove it with `agent-army force-unlock {}`",
                self.id
            )
        } else {
            self.to_string()
        }
    }
}

impl StateLock {
    /// Take the lock for `stack`, waiting up to `timeout`.
    pub fn acquire(
        base: &Path,
        stack: &str,
        operation: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<StateLock, LockError> {
        let path = lock_path(base, stack);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().unwrap_or(base)).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        let mut s = String::new();
                        let _ = file.read_to_string(&mut s);
                        let holder = serde_json::from_str::<Holder>(&s)
                            .map(|h| {
                                if h.host == hostname() && !process_alive(h.pid) {
                                    format!("{h}, whose process is gone but whose lock is still held (a child process may have inherited it)")
                                } else {
                                    h.to_string()
                                }
                            })
                            .unwrap_or_else(|_| "another agent-army process".into());
                        return Err(LockError::Held(holder));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        // A record left behind means the previous holder died without releasing the lock.
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let stale = serde_json::from_str::<Holder>(&previous).ok();
        let holder = Holder::this_process(operation, user);
        let json = serde_json::to_string(&holder).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(json.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(StateLock {
            file,
            path,
            id: holder.id,
            stale,
        })
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(d.path(), "dev", "deploy", "alice", Duration::ZERO).unwrap();
        // A second open file description conflicts even within one process.
        let err = StateLock::acquire(
            d.path(),
            "dev",
            "destroy",
            "bob",
            Duration::from_millis(300),
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("`deploy` by alice@"), "{msg}");
        drop(first);
        let again = StateLock::acquire(d.path(), "dev", "destroy", "bob", Duration::ZERO).unwrap();
        assert!(again.stale.is_none(), "a clean release leaves no record");
    }

    #[test]
    fn dead_holder_is_reported_and_force_unlock_needs_the_id() {
        let d = tempfile::tempdir().unwrap();
        let path = lock_path(d.path(), "dev");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let dead = Holder {
            id: "abc".into(),
            operation: "deploy".into(),
            user: "carol".into(),
            host: hostname(),
            pid: 4_000_000,
            created: "2026-01-01T00:00:00Z".into(),
        };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let l = StateLock::acquire(d.path(), "dev", "deploy", "dave", Duration::ZERO).unwrap();
        assert_eq!(l.stale.as_ref(), Some(&dead));
        let held_id = serde_json::from_str::<Holder>(&std::fs::read_to_string(&path).unwrap())
            .unwrap()
            .id;
        assert!(matches!(
            force_unlock(d.path(), "dev", "nope"),
            Err(LockError::WrongId { .. })
        ));
        assert!(matches!(
            force_unlock(d.path(), "dev", &held_id),
            Ok(Unlocked::Removed(_))
        ));
        // A new run is no longer excluded.
        StateLock::acquire(d.path(), "dev", "deploy", "erin", Duration::ZERO).unwrap();
        drop(l);
    }
}

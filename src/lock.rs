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

/// A held lock; released on drop.
pub struct StateLock {
    file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("held by {0}")]
    Held(String),
    #[error("cannot open lock file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
        let path = base.join("locks").join(format!("{stack}.lock"));
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
                            .map(|h| h.to_string())
                            .unwrap_or_else(|_| "another agent-army process".into());
                        return Err(LockError::Held(holder));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let holder = Holder {
            id: format!("{:x}", std::process::id() as u64 ^ now_nanos()),
            operation: operation.into(),
            user: user.into(),
            host: hostname(),
            pid: std::process::id(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let json = serde_json::to_string(&holder).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(json.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(StateLock { file, path })
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
        StateLock::acquire(d.path(), "dev", "destroy", "bob", Duration::ZERO).unwrap();
    }
}

//! The local Tailscale client: finding programs on `PATH` and asking `tailscale status` how
//! this machine is connected. The only part of the tailnet module that runs a program.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::status::{Status, parse_status};
use crate::env::{Env, vars};

/// The first executable called `name` on `PATH`.
pub fn find_program(env: &Env, name: &str) -> Option<PathBuf> {
    let path = env.get(vars::PATH)?;
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The local Tailscale client.
#[derive(Debug, Clone)]
pub enum Local {
    /// `tailscale` is not on PATH.
    NotInstalled,
    /// Installed, but not connected: `detail` says why.
    NotRunning {
        bin: PathBuf,
        detail: String,
    },
    Running {
        bin: PathBuf,
        status: Box<Status>,
    },
}

impl Local {
    pub fn status(&self) -> Option<&Status> {
        match self {
            Local::Running { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// Ask the local `tailscale` for its status.
pub async fn local(env: &Env) -> Local {
    let Some(bin) = find_program(env, "tailscale") else {
        return Local::NotInstalled;
    };
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(&bin)
            .args(["status", "--json"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let detail = match out {
        Err(_) => "`tailscale status --json` did not answer within 15s".to_string(),
        Ok(Err(e)) => format!("cannot run {}: {e}", bin.display()),
        Ok(Ok(o)) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("`tailscale status` failed: {}", first.trim())
        }
        Ok(Ok(o)) => match parse_status(&String::from_utf8_lossy(&o.stdout)) {
            Err(e) => e,
            Ok(s) if s.is_running() => {
                return Local::Running {
                    bin,
                    status: Box::new(s),
                };
            }
            Ok(s) => format!("BackendState is {}", s.backend_state),
        },
    };
    Local::NotRunning { bin, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("tailscale");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let env = Env::from_pairs([("PATH", d.path().display().to_string())]);
        assert_eq!(find_program(&env, "tailscale"), None, "not executable");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(find_program(&env, "tailscale"), Some(bin));
        }
        assert_eq!(find_program(&Env::default(), "tailscale"), None);
    }
}

//! Changing agents in place: their configuration as a tar, sent over the same ssh path as
//! `agent-army ssh` to the helper that first boot installed (`agent-army-agent update`), which
//! installs it by the same code first boot used. Secrets travel inside the tar, on stdin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::Session;
use crate::engine::Updater;
use crate::error::Result;
use crate::render::{AGENT_HELPER_NAME, StagedFile};
use crate::ssh::{self, Client, Overrides, SshCommand, Target};

/// How long one update may take: npm installs included.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a reachability probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The staged files as a tar: regular files only, fixed times, the modes first boot uses.
pub fn bundle(files: &[StagedFile]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(f.bytes.len() as u64);
        h.set_mode(f.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, &f.path, f.bytes.as_slice())?;
    }
    b.into_inner()
}

/// The remote command line of an update: `sudo -n` unless the user is root.
pub fn update_command(user: &str, args: &[String]) -> String {
    let mut words = Vec::new();
    if user != "root" {
        words.extend(["sudo", "-n"]);
    }
    words.extend([AGENT_HELPER_NAME, "update"]);
    words.extend(args.iter().map(String::as_str));
    words
        .iter()
        .map(|w| ssh::quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ssh path to every agent of the stack, never prompting.
pub struct SshUpdater {
    client: Client,
    overrides: Overrides,
    known_hosts: PathBuf,
    user: String,
    /// Agent → MagicDNS name.
    fqdns: BTreeMap<String, String>,
}

impl SshUpdater {
    /// `user`: the remote login (`None`: the image's login user).
    pub fn open(session: &Session, user: Option<&str>) -> Result<SshUpdater> {
        let config = &session.config;
        let client = ssh::pick_client(&session.env)?;
        let known_hosts = crate::tailnet::known_hosts_path(&session.local_dir, &config.stack);
        if matches!(client, Client::OpenSsh(_)) {
            ssh::prepare_known_hosts(&known_hosts)?;
        }
        let user = user.map(str::to_string).unwrap_or_else(|| {
            crate::provider::profile(config.provider.kind())
                .login_user
                .into()
        });
        Ok(SshUpdater {
            client,
            overrides: Overrides::from_env(&session.env)?,
            known_hosts,
            user,
            fqdns: config
                .agents
                .iter()
                .map(|a| (a.name.clone(), a.fqdn.clone()))
                .collect(),
        })
    }

    fn command(&self, agent: &str, remote: String) -> std::result::Result<SshCommand, String> {
        let fqdn = self
            .fqdns
            .get(agent)
            .ok_or_else(|| format!("{agent} is not declared"))?;
        Ok(ssh::build(
            &self.client,
            &Target {
                user: &self.user,
                fqdn,
                known_hosts: &self.known_hosts,
                overrides: &self.overrides,
                remote: Some(remote),
                batch: true,
            },
        ))
    }

    /// Why each of `agents` cannot be reached now (agents that answer are left out): one
    /// `true` over ssh each, all at once.
    pub async fn unreachable(&self, agents: &[String]) -> BTreeMap<String, String> {
        let mut set = tokio::task::JoinSet::new();
        for agent in agents {
            let cmd = self.command(agent, "true".into());
            let agent = agent.clone();
            set.spawn(async move {
                let r = match cmd {
                    Ok(cmd) => run(&cmd, None, PROBE_TIMEOUT).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                (agent, r)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(Ok((agent, r))) = set.join_next().await {
            if let Err(why) = r {
                out.insert(agent, format!("not reachable over ssh: {why}"));
            }
        }
        out
    }
}

impl Updater for SshUpdater {
    fn update<'a>(
        &'a self,
        agent: &'a str,
        bundle: &'a [u8],
        args: &'a [String],
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<String>, String>> + Send + 'a>> {
        Box::pin(async move {
            let cmd = self.command(agent, update_command(&self.user, args))?;
            tracing::info!(command = %cmd.display(), "update");
            let out = run(&cmd, Some(bundle), UPDATE_TIMEOUT).await?;
            // What the helper says it did (`agent-army-agent: wrote /etc/openclaw-agent.env`).
            Ok(out
                .lines()
                .filter_map(|l| l.strip_prefix("agent-army-agent: "))
                .map(str::to_string)
                .collect())
        })
    }
}

/// Run `cmd` with `stdin` on its standard input: its standard output, or the last line it
/// printed on stderr (or how it ended) when it fails.
async fn run(
    cmd: &SshCommand,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let mut c = tokio::process::Command::from(cmd.std_command());
    c.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.program.display()))?;
    let feed = async {
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A remote side that stops reading early fails below with its own message.
            let _ = pipe.write_all(bytes).await;
            let _ = pipe.shutdown().await;
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(timeout, feed).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{}: {e}", cmd.program.display())),
        Err(_) => return Err(format!("no answer after {}s", timeout.as_secs())),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in stdout.lines() {
        tracing::info!(target: "agent_army::update", "{line}");
    }
    if out.status.success() {
        return Ok(stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let how = match out.status.code() {
        Some(c) => format!("exited {c}"),
        None => "was killed".into(),
    };
    Err(if last.is_empty() {
        how
    } else {
        format!("{last} ({how})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_commands_use_sudo_unless_root() {
        assert_eq!(
            update_command("ubuntu", &["--prune".into()]),
            "sudo -n agent-army-agent update --prune"
        );
        assert_eq!(update_command("root", &[]), "agent-army-agent update");
    }

    #[test]
    fn bundles_are_tars_with_modes_and_no_owner() {
        let files = vec![
            StagedFile {
                path: "agent.env".into(),
                mode: 0o600,
                bytes: b"A='1'\n".to_vec(),
            },
            StagedFile {
                path: "workspace/docs/a.md".into(),
                mode: 0o644,
                bytes: b"# a\n".to_vec(),
            },
        ];
        let tar_bytes = bundle(&files).unwrap();
        let mut ar = tar::Archive::new(tar_bytes.as_slice());
        let got: Vec<(String, u32, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("agent.env".to_string(), 0o600, 0),
                ("workspace/docs/a.md".to_string(), 0o644, 0),
            ]
        );
    }
}

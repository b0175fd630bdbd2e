//! The ssh path to an agent, as every command that runs something on one builds it: `tailscale
//! ssh` when `tailscale` is on PATH, else OpenSSH with the stack's known_hosts file (first key
//! accepted and recorded, a changed key refused; host-key checking is never turned off).

use std::path::{Path, PathBuf};

use crate::env::{Env, vars};
use crate::error::{Error, Result};
use crate::tailnet;

/// The ssh client to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// `tailscale ssh`, at this path.
    Tailscale(PathBuf),
    /// OpenSSH `ssh`, at this path.
    OpenSsh(PathBuf),
}

/// `tailscale` when it is on PATH, else OpenSSH.
pub fn pick_client(env: &Env) -> Result<Client> {
    if let Some(p) = tailnet::find_program(env, "tailscale") {
        return Ok(Client::Tailscale(p));
    }
    if let Some(p) = tailnet::find_program(env, "ssh") {
        return Ok(Client::OpenSsh(p));
    }
    Err(Error::NoSshClient)
}

/// Where OpenSSH connects, when not to the MagicDNS name on port 22 (tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<String>,
}

impl Overrides {
    pub fn from_env(env: &Env) -> Result<Self> {
        let port = match env.get(vars::SSH_PORT) {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                Error::Input(format!("{}={p} is not a port number", vars::SSH_PORT))
            })?),
        };
        Ok(Overrides {
            host: env.get(vars::SSH_HOST_OVERRIDE).map(str::to_string),
            port,
            identity: env.get(vars::SSH_IDENTITY).map(str::to_string),
        })
    }
}

/// One connection to build.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub user: &'a str,
    /// The agent's MagicDNS name.
    pub fqdn: &'a str,
    /// The stack's known_hosts file (OpenSSH).
    pub known_hosts: &'a Path,
    pub overrides: &'a Overrides,
    /// Remote command line (see [`remote_command`]); `None` for a login shell.
    pub remote: Option<String>,
    /// Never prompt (commands agent-army runs itself).
    pub batch: bool,
}

/// A client command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCommand {
    /// Resolved program.
    pub program: PathBuf,
    /// `argv[0]`: the name it was found by.
    pub name: String,
    pub args: Vec<String>,
}

impl SshCommand {
    /// The command line, shell-quoted.
    pub fn display(&self) -> String {
        std::iter::once(&self.name)
            .chain(&self.args)
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn std_command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            c.arg0(&self.name);
        }
        c.args(&self.args);
        c
    }
}

/// Quote `s` for a POSIX shell (unchanged when it needs no quoting).
pub fn quote(s: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b);
    if !s.is_empty() && s.bytes().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The remote command line for `args`: one word is taken as a shell command line (as `ssh`
/// does), several words are quoted so the remote shell sees exactly these arguments.
pub fn remote_command(args: &[String]) -> Option<String> {
    match args {
        [] => None,
        [one] if !one.is_empty() && !one.starts_with('-') => Some(one.clone()),
        many => Some(
            many.iter()
                .enumerate()
                .map(|(i, a)| {
                    // A leading `-word` would be read as an option by ssh.
                    if i == 0 && a.starts_with('-') {
                        format!("'{}'", a.replace('\'', r"'\''"))
                    } else {
                        quote(a)
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// A path as an `ssh -o` value: `%` is a token character, and spaces need quotes.
fn ssh_path(p: &str) -> String {
    let p = p.replace('%', "%%");
    if p.contains(char::is_whitespace) {
        format!("\"{p}\"")
    } else {
        p
    }
}

/// The client command for `target`.
pub fn build(client: &Client, t: &Target) -> SshCommand {
    match client {
        Client::Tailscale(program) => {
            let mut args = vec!["ssh".to_string(), format!("{}@{}", t.user, t.fqdn)];
            args.extend(t.remote.clone());
            SshCommand {
                program: program.clone(),
                name: "tailscale".into(),
                args,
            }
        }
        Client::OpenSsh(program) => {
            let kh = ssh_path(&t.known_hosts.display().to_string());
            let mut args: Vec<String> = vec![
                "-o".into(),
                format!("UserKnownHostsFile={kh}"),
                "-o".into(),
                "StrictHostKeyChecking=accept-new".into(),
                "-o".into(),
                "HashKnownHosts=no".into(),
            ];
            let host = match &t.overrides.host {
                Some(h) => {
                    // Check the key under the agent's name, wherever we connect.
                    args.extend(["-o".into(), format!("HostKeyAlias={}", t.fqdn)]);
                    h.as_str()
                }
                None => t.fqdn,
            };
            if let Some(port) = t.overrides.port {
                args.extend(["-p".into(), port.to_string()]);
            }
            if let Some(id) = &t.overrides.identity {
                args.extend([
                    "-i".into(),
                    id.replace('%', "%%"),
                    "-o".into(),
                    "IdentitiesOnly=yes".into(),
                ]);
            }
            if t.batch {
                args.extend([
                    "-o".into(),
                    "BatchMode=yes".into(),
                    "-o".into(),
                    "ConnectTimeout=15".into(),
                ]);
            }
            args.push("--".into());
            args.push(format!("{}@{host}", t.user));
            args.extend(t.remote.clone());
            SshCommand {
                program: program.clone(),
                name: "ssh".into(),
                args,
            }
        }
    }
}

/// Create the directory of the known_hosts file (mode 0700), so OpenSSH can record keys.
pub fn prepare_known_hosts(known_hosts: &Path) -> Result<()> {
    let Some(dir) = known_hosts.parent() else {
        return Ok(());
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}

//! `ssh`: a shell, or one command, on an agent over the tailnet.
//!
//! With `tailscale` on PATH the connection goes through `tailscale ssh`, which checks host
//! keys against the tailnet's own records. Otherwise OpenSSH connects to the MagicDNS name
//! with a per-stack known_hosts file (`.agent-army/known_hosts/<stack>`): the first key is
//! accepted and recorded, and a different key later is refused. Host-key checking is never
//! turned off; the entry of a replaced agent is dropped by the deploy engine
//! ([`crate::tailnet::forget_host`]).

use std::path::PathBuf;

use clap::Args;

use super::{Ctx, find_agent};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
pub use crate::ssh::{
    Client, Overrides, SshCommand, Target, build, pick_client, prepare_known_hosts, quote,
    remote_command,
};
use crate::stack::{Agent, Config};
use crate::state::State;
use crate::tailnet::{self, Local};

const EXAMPLES: &str = "Examples:
  agent-army ssh pm                                  login shell on agent-pm as ubuntu
  agent-army -s prod ssh agent-eng -- uptime         run one command; its exit code is ours
  agent-army ssh pm -- sh -c 'echo hi; exit 7'       several words are passed exactly
  agent-army ssh pm -- 'journalctl -u openclaw-gateway | tail'   one word is a shell command line
  agent-army ssh pm --user root --print              show the command instead of running it

With `tailscale` on PATH this runs `tailscale ssh <user>@<stack>-<agent>.<tailnet>`; without it,
OpenSSH with the stack's known_hosts file under .agent-army/known_hosts/ (first key accepted and
recorded, a changed key refused).";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SshArgs {
    /// Agent to connect to (`agent-pm`, or `pm` without the `agent-` prefix)
    pub agent: String,
    /// Remote user [default: ubuntu; on a Kubernetes stack the sidecar's user, `tailscale`
    /// (root in kernel mode)]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Print the command, shell-quoted, instead of running it
    #[arg(long)]
    pub print: bool,
    /// Command to run instead of a login shell: one word is a shell command line, several
    /// words are passed as exact arguments
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The agent's server id, or the error telling to deploy it.
pub fn require_deployed(config: &Config, state: &State, agent: &Agent) -> Result<String> {
    state
        .agents
        .get(&agent.name)
        .and_then(|a| a.server_id.clone())
        .ok_or_else(|| Error::NotDeployed {
            agent: agent.name.clone(),
            stack: config.stack.clone(),
        })
}

/// With `tailscale ssh`: the daemon must run and the agent must be on the tailnet.
async fn check_tailnet(ctx: &Ctx, config: &Config, agent: &Agent) -> Result<()> {
    let status = match tailnet::local(&ctx.env).await {
        Local::Running { status, .. } => status,
        Local::NotRunning { detail, .. } => return Err(Error::TailscaleDown { detail }),
        Local::NotInstalled => {
            return Err(Error::TailscaleDown {
                detail: "`tailscale` disappeared from PATH".into(),
            });
        }
    };
    let view = tailnet::classify(&status, &agent.hostname, &agent.fqdn);
    let cx = tailnet::Context {
        cloud: None,
        stack_tailnet: &config.tailnet,
        local_tailnet: status.suffix(),
        agent: &agent.name,
    };
    let finding = tailnet::diagnose(&view, &agent.hostname, &cx);
    let live = view.device.as_ref().is_some_and(|d| d.online);
    match finding {
        Some(f) if !live => Err(Error::Unreachable {
            agent: agent.name.clone(),
            problem: f.message,
            help: f.help,
        }),
        Some(f) => {
            eprintln!("warning: {}: {}\n  help: {}", agent.name, f.message, f.help);
            Ok(())
        }
        None => Ok(()),
    }
}

/// One deployed agent and the ssh path to it: what every command that runs something on an
/// agent (`ssh`, `pair`) sets up the same way.
pub struct Reach {
    pub config: Config,
    pub agent: Agent,
    pub client: Client,
    overrides: Overrides,
    known_hosts: PathBuf,
}

impl Reach {
    /// Load the stack, find the agent (short names too) and check that it is deployed.
    pub fn open(ctx: &Ctx, name: &str) -> Result<Reach> {
        let session = ctx.session()?;
        let agent = find_agent(&session.config, name)?.clone();
        match crate::render::kubernetes::settings(&session.config) {
            // A pod has no server in state: Tailscale SSH reaches its sidecar by name.
            Some(k) if !k.tailscale_ssh => {
                return Err(Error::Input(format!(
                    "stack `{}` has `tailscale_ssh = false`: its sidecars run no SSH server; `kubectl -n {} exec -it {}-0 -c openclaw -- sh` opens a shell in the agent's container",
                    session.config.stack, k.namespace, agent.hostname
                )));
            }
            Some(_) => {}
            None => {
                let state = session.read_state()?;
                require_deployed(&session.config, &state, &agent)?;
            }
        }
        let known_hosts = tailnet::known_hosts_path(&session.local_dir, &session.config.stack);
        let config = session.config;
        Ok(Reach {
            client: pick_client(&ctx.env)?,
            overrides: Overrides::from_env(&ctx.env)?,
            known_hosts,
            config,
            agent,
        })
    }

    /// The user to log in as when none is given: the image's on a VM, the sidecar's on a
    /// Kubernetes stack.
    pub fn default_user(&self) -> &'static str {
        crate::render::kubernetes::settings(&self.config)
            .map_or("ubuntu", crate::render::kubernetes::ssh_user)
    }

    /// The client command line for `remote` (a login shell when `None`).
    pub fn command(&self, user: &str, remote: Option<String>, batch: bool) -> SshCommand {
        build(
            &self.client,
            &Target {
                user,
                fqdn: &self.agent.fqdn,
                known_hosts: &self.known_hosts,
                overrides: &self.overrides,
                remote,
                batch,
            },
        )
    }

    /// Get the path ready before connecting: the tailnet checked (Tailscale SSH), or the
    /// stack's known_hosts file in place (OpenSSH).
    pub async fn prepare(&self, ctx: &Ctx) -> Result<()> {
        match &self.client {
            Client::Tailscale(_) => check_tailnet(ctx, &self.config, &self.agent).await,
            Client::OpenSsh(_) => prepare_known_hosts(&self.known_hosts),
        }
    }
}

pub async fn run(ctx: &Ctx, args: SshArgs) -> Result<ExitStatus> {
    exec_on(
        ctx,
        &args.agent,
        args.user.as_deref(),
        remote_command(&args.command),
        args.print,
    )
    .await
}

/// Run `remote` (a login shell when `None`) on an agent in place of this process, or print the
/// client command line with `print`.
pub async fn exec_on(
    ctx: &Ctx,
    agent: &str,
    user: Option<&str>,
    remote: Option<String>,
    print: bool,
) -> Result<ExitStatus> {
    let reach = Reach::open(ctx, agent)?;
    let cmd = reach.command(user.unwrap_or(reach.default_user()), remote, false);
    if print {
        println!("{}", cmd.display());
        return Ok(ExitStatus::Success);
    }
    reach.prepare(ctx).await?;
    tracing::info!(command = %cmd.display(), "exec");
    exec(&cmd)
}

/// Replace this process with the client, so the terminal, signals and the exit code are the
/// client's own.
#[cfg(unix)]
fn exec(cmd: &SshCommand) -> Result<ExitStatus> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let source = cmd.std_command().exec();
    Err(Error::Io {
        path: cmd.program.clone(),
        source,
    })
}

#[cfg(not(unix))]
fn exec(cmd: &SshCommand) -> Result<ExitStatus> {
    let status = cmd.std_command().status().map_err(|source| Error::Io {
        path: cmd.program.clone(),
        source,
    })?;
    std::process::exit(status.code().unwrap_or(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;
    use std::path::Path;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("ubuntu@h.ts.net"), "ubuntu@h.ts.net");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn remote_commands() {
        assert_eq!(remote_command(&[]), None);
        assert_eq!(remote_command(&s(&["uptime"])).unwrap(), "uptime");
        assert_eq!(
            remote_command(&s(&["ls | wc -l"])).unwrap(),
            "ls | wc -l",
            "one word is a command line"
        );
        assert_eq!(
            remote_command(&s(&["sh", "-c", "echo hi; exit 7"])).unwrap(),
            "sh -c 'echo hi; exit 7'"
        );
        assert_eq!(remote_command(&s(&["-v"])).unwrap(), "'-v'");
        assert_eq!(remote_command(&s(&[""])).unwrap(), "''");
    }

    fn target<'a>(kh: &'a Path, ov: &'a Overrides, remote: Option<&str>) -> Target<'a> {
        Target {
            user: "ubuntu",
            fqdn: "prod-agent-pm.tail1.ts.net",
            known_hosts: kh,
            overrides: ov,
            remote: remote.map(str::to_string),
            batch: false,
        }
    }

    #[test]
    fn tailscale_ssh_command() {
        let ov = Overrides::default();
        let kh = PathBuf::from("/p/.agent-army/known_hosts/prod");
        let c = build(
            &Client::Tailscale("/usr/bin/tailscale".into()),
            &target(&kh, &ov, Some("sh -c 'echo hi'")),
        );
        assert_eq!(
            c.args,
            s(&[
                "ssh",
                "ubuntu@prod-agent-pm.tail1.ts.net",
                "sh -c 'echo hi'"
            ])
        );
        assert_eq!(
            c.display(),
            r"tailscale ssh ubuntu@prod-agent-pm.tail1.ts.net 'sh -c '\''echo hi'\'''"
        );
    }

    #[test]
    fn openssh_command_checks_host_keys() {
        let ov = Overrides::default();
        let kh = PathBuf::from("/p/my project/.agent-army/known_hosts/prod");
        let c = build(
            &Client::OpenSsh("/usr/bin/ssh".into()),
            &target(&kh, &ov, None),
        );
        assert_eq!(
            c.display(),
            "ssh -o 'UserKnownHostsFile=\"/p/my project/.agent-army/known_hosts/prod\"' -o StrictHostKeyChecking=accept-new -o HashKnownHosts=no -- ubuntu@prod-agent-pm.tail1.ts.net"
        );
        assert!(
            !c.args
                .iter()
                .any(|a| a.contains("StrictHostKeyChecking=no"))
        );
    }

    #[test]
    fn openssh_overrides_keep_the_alias() {
        let ov = Overrides {
            host: Some("127.0.0.1".into()),
            port: Some(2222),
            identity: Some("/k/id".into()),
        };
        let kh = PathBuf::from("/kh");
        let mut t = target(&kh, &ov, Some("uptime"));
        t.batch = true;
        let c = build(&Client::OpenSsh("/usr/bin/ssh".into()), &t);
        let line = c.display();
        assert!(
            line.contains("-o HostKeyAlias=prod-agent-pm.tail1.ts.net"),
            "{line}"
        );
        assert!(
            line.contains("-p 2222 -i /k/id -o IdentitiesOnly=yes"),
            "{line}"
        );
        assert!(line.contains("-o BatchMode=yes"), "{line}");
        assert!(line.ends_with("-- ubuntu@127.0.0.1 uptime"), "{line}");
    }

    #[test]
    fn overrides_from_env() {
        let env = Env::from_pairs([("AGENT_ARMY_SSH_PORT", "22x")]);
        assert!(Overrides::from_env(&env).is_err());
        assert_eq!(
            Overrides::from_env(&Env::default()).unwrap(),
            Overrides::default()
        );
    }
}

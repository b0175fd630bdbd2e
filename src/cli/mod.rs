//! Command-line interface: clap types, and one module per subcommand.

pub mod agent_access;
pub mod apply;
pub mod docker;
pub mod docs;
pub mod init;
pub mod kubernetes;
pub mod pair;
pub mod render;
pub mod secrets;
pub mod ssh;
pub mod stacks;
pub mod state;
pub mod status;
pub mod style;
pub mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::env::Env;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::stack::{Agent, Config, Project};

/// Deploy a private fleet of OpenClaw agent VMs on AWS EC2 or Hetzner Cloud, reachable only
/// over your Tailscale tailnet.
#[derive(Debug, Parser)]
#[command(name = "agent-army", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  agent-army init                      scaffold a project and an age identity
  agent-army --stack dev plan          show what deploy would do (works offline)
  agent-army --stack dev render --out rendered/
  agent-army --stack prod deploy --yes --output json
  agent-army --stack prod destroy";

#[derive(Debug, Args)]
pub struct Global {
    /// Stack to operate on (`stacks/<STACK>.toml`) [env: AGENT_ARMY_STACK]
    #[arg(long, short = 's', global = true)]
    pub stack: Option<String>,
    /// Project directory (default: search upwards from the current directory)
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    pub project_dir: Option<PathBuf>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More logging (-v info, -vv debug, -vvv trace); never logs secret values
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress lines or file notes, for CI logs (errors, warnings, results and notes that ask
    /// for action stay)
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour in plans and status: auto (a terminal, unless NO_COLOR is set; CLICOLOR_FORCE
    /// forces it), always or never
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a project, create an age identity if there is none, and add .gitignore entries
    Init(init::InitArgs),
    /// Check the configuration, that every secret resolves, and render every agent
    Validate,
    /// Show what `deploy` would change (works offline when nothing is deployed)
    Plan(apply::PlanArgs),
    /// Create, replace and destroy servers so the cloud matches the stack
    Deploy(apply::DeployArgs),
    /// Destroy everything the stack created
    Destroy(apply::DestroyArgs),
    /// Remove a stack's state lock held by a run that is stuck or gone
    ForceUnlock(apply::ForceUnlockArgs),
    /// Print the deployed agents' hostnames and gateway URLs from state
    Outputs(apply::OutputsArgs),
    /// Print an agent's gateway URL (token masked unless --show-secrets), or open it
    Open(agent_access::OpenArgs),
    /// Show an agent's gateway journal over the tailnet (`-f` to follow)
    Logs(agent_access::LogsArgs),
    /// List the project's stacks: provider, place, agents and state
    Stacks,
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one page per command with --out
    Man(docs::ManArgs),
    /// List the browsers waiting for approval on an agent's gateway, and approve one
    Pair(pair::PairArgs),
    /// Write what deploy creates for each agent to a folder for inspection (cloud-init user
    /// data; Kubernetes: manifests; Docker: the containers' create bodies and files)
    Render(render::RenderArgs),
    /// Manage encrypted secrets in the stack file
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// Move a stack's state between backends (local and S3)
    #[command(subcommand)]
    State(state::StateCmd),
    /// Open a shell, or run one command, on an agent over the tailnet
    Ssh(ssh::SshArgs),
    /// Show each agent's server, tailnet device and gateway; exit 1 when any is unhealthy
    Status(status::StatusArgs),
}

/// What every command gets: the environment seam and global flags.
pub struct Ctx {
    pub env: Env,
    pub cwd: PathBuf,
    pub global: Global,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.global.output == Output::Json
    }

    /// Where the project is searched from: `--project-dir`, else the current directory.
    pub fn start_dir(&self) -> PathBuf {
        self.global
            .project_dir
            .as_ref()
            .map(|d| self.cwd.join(d))
            .unwrap_or_else(|| self.cwd.clone())
    }

    /// Locate the project and stack.
    pub fn project(&self) -> Result<Project> {
        Ok(Project::locate(
            &self.start_dir(),
            self.global.stack.as_deref(),
            &self.env,
        )?)
    }

    /// Open a session on the stack (configuration, state backend, lock, keyring), printing
    /// the configuration's warnings.
    pub fn session(&self) -> Result<crate::app::Session> {
        let (session, warnings) = crate::app::Session::open(&self.project()?, &self.env)?;
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        Ok(session)
    }

    /// Load and validate the configuration, printing warnings.
    pub fn config(&self) -> Result<Config> {
        let project = self.project()?;
        let config = crate::stack::load(&project)?;
        for w in &config.warnings {
            eprintln!("warning: {w}");
        }
        Ok(config)
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli, env: Env, cwd: PathBuf) -> Result<ExitStatus> {
    style::init(cli.global.color, &env);
    let ctx = Ctx {
        env,
        cwd,
        global: cli.global,
    };
    if vm_only(&cli.command).is_some()
        && provider_kind(&ctx) == Some(crate::stack::ProviderKind::Docker)
    {
        return match cli.command {
            Command::Plan(a) => docker::plan(&ctx, a).await,
            Command::Deploy(a) => docker::deploy(&ctx, a).await,
            Command::Destroy(a) => docker::destroy(&ctx, a).await,
            Command::Outputs(a) => docker::outputs(&ctx, a).await,
            Command::Status(a) => docker::status(&ctx, a).await,
            Command::Logs(a) => docker::logs(&ctx, a).await,
            Command::Ssh(a) => docker::ssh(&ctx, a).await,
            Command::Open(a) => docker::open(&ctx, a).await,
            Command::Pair(a) => pair::run(&ctx, a).await,
            other => Err(Error::Usage(format!(
                "`{}` does not drive Docker stacks; use `outputs --show-secrets` for the URLs and `ssh`",
                vm_only(&other).unwrap_or_default()
            ))),
        };
    }
    if let Some(command) = vm_only(&cli.command)
        && let Some(stack) = kubernetes_stack(&ctx)
    {
        return match cli.command {
            Command::Plan(a) => kubernetes::plan(&ctx, a).await,
            Command::Deploy(a) => kubernetes::deploy(&ctx, a).await,
            Command::Status(a) => status::run(&ctx, a).await,
            Command::Ssh(a) => ssh::run(&ctx, a).await,
            Command::Outputs(a) => kubernetes::outputs(&ctx, a).await,
            Command::Logs(a) => kubernetes::logs(&ctx, a).await,
            Command::Pair(a) => pair::run(&ctx, a).await,
            Command::Open(a) => agent_access::open(&ctx, a),
            Command::Destroy(a) => kubernetes::destroy(&ctx, a).await,
            _ => Err(Error::NotOnKubernetes {
                command: command.into(),
                stack,
            }),
        };
    }
    if let Command::Destroy(a) = &cli.command
        && a.delete_volumes
    {
        return Err(Error::Usage(
            "--delete-volumes (--purge) applies to Kubernetes and Docker stacks only (a VM's disk goes with the VM)"
                .into(),
        ));
    }
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Validate => validate::run(&ctx),
        Command::Plan(a) => apply::plan(&ctx, a).await,
        Command::Deploy(a) => apply::deploy(&ctx, a).await,
        Command::Destroy(a) => apply::destroy(&ctx, a).await,
        Command::Outputs(a) => apply::outputs(&ctx, a),
        Command::ForceUnlock(a) => apply::force_unlock(&ctx, a),
        Command::Render(a) => render::run(&ctx, a),
        Command::Secrets(c) => secrets::run(&ctx, c),
        Command::Ssh(a) => ssh::run(&ctx, a).await,
        Command::State(c) => state::run(&ctx, c),
        Command::Pair(a) => pair::run(&ctx, a).await,
        Command::Open(a) => agent_access::open(&ctx, a),
        Command::Logs(a) => agent_access::logs(&ctx, a).await,
        Command::Stacks => stacks::run(&ctx),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(&ctx, a),
        Command::Status(a) => status::run(&ctx, a).await,
    }
}

/// The agent called `name`, or `agent-<name>`.
pub fn find_agent<'a>(config: &'a Config, name: &str) -> Result<&'a Agent> {
    config
        .agent(name)
        .or_else(|| config.agent(&format!("agent-{name}")))
        .ok_or_else(|| Error::UnknownAgent {
            name: name.to_string(),
            stack: config.stack.clone(),
            known: config.agents.iter().map(|a| a.name.clone()).collect(),
        })
}

/// The commands that drive servers (the cloud's API, state of servers, ssh to a VM): on a
/// Kubernetes stack each goes to its Kubernetes form; one without a form is refused rather than
/// let reach cloud code.
fn vm_only(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Plan(_) => "plan",
        Command::Deploy(_) => "deploy",
        Command::Destroy(_) => "destroy",
        Command::Outputs(_) => "outputs",
        Command::Open(_) => "open",
        Command::Logs(_) => "logs",
        Command::Pair(_) => "pair",
        Command::Ssh(_) => "ssh",
        Command::Status(_) => "status",
        _ => return None,
    })
}

/// The stack's provider, when the stack loads.
fn provider_kind(ctx: &Ctx) -> Option<crate::stack::ProviderKind> {
    let project = ctx.project().ok()?;
    Some(crate::stack::load(&project).ok()?.provider.kind())
}

/// The stack's name when it is a Kubernetes stack, so that a VM-only command never reaches
/// cloud code with it. A stack that does not load is left to the command, which reports it.
fn kubernetes_stack(ctx: &Ctx) -> Option<String> {
    let project = ctx.project().ok()?;
    let config = crate::stack::load(&project).ok()?;
    (config.provider.kind() == crate::stack::ProviderKind::Kubernetes).then_some(config.stack)
}

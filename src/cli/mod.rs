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
    use Target::{Docker, Kubernetes, Vm};
    let target = target(&ctx, &cli.command);
    match (cli.command, target) {
        (Command::Plan(a), Vm) => apply::plan(&ctx, a).await,
        (Command::Plan(a), Kubernetes) => kubernetes::plan(&ctx, a).await,
        (Command::Plan(a), Docker) => docker::plan(&ctx, a).await,
        (Command::Deploy(a), Vm) => apply::deploy(&ctx, a).await,
        (Command::Deploy(a), Kubernetes) => kubernetes::deploy(&ctx, a).await,
        (Command::Deploy(a), Docker) => docker::deploy(&ctx, a).await,
        (Command::Destroy(a), Vm) if a.delete_volumes => Err(Error::Usage(
            "--delete-volumes (--purge) applies to Kubernetes and Docker stacks only (a VM's disk goes with the VM)"
                .into(),
        )),
        (Command::Destroy(a), Vm) => apply::destroy(&ctx, a).await,
        (Command::Destroy(a), Kubernetes) => kubernetes::destroy(&ctx, a).await,
        (Command::Destroy(a), Docker) => docker::destroy(&ctx, a).await,
        (Command::Outputs(a), Vm) => apply::outputs(&ctx, a),
        (Command::Outputs(a), Kubernetes) => kubernetes::outputs(&ctx, a).await,
        (Command::Outputs(a), Docker) => docker::outputs(&ctx, a).await,
        (Command::Logs(a), Vm) => agent_access::logs(&ctx, a).await,
        (Command::Logs(a), Kubernetes) => kubernetes::logs(&ctx, a).await,
        (Command::Logs(a), Docker) => docker::logs(&ctx, a).await,
        (Command::Ssh(a), Vm | Kubernetes) => ssh::run(&ctx, a).await,
        (Command::Ssh(a), Docker) => docker::ssh(&ctx, a).await,
        (Command::Open(a), Vm | Kubernetes) => agent_access::open(&ctx, a),
        (Command::Open(a), Docker) => docker::open(&ctx, a).await,
        // These look at the stack's target themselves.
        (Command::Status(a), _) => status::run(&ctx, a).await,
        (Command::Pair(a), _) => pair::run(&ctx, a).await,
        (Command::Init(a), _) => init::run(&ctx, a),
        (Command::Validate, _) => validate::run(&ctx),
        (Command::ForceUnlock(a), _) => apply::force_unlock(&ctx, a),
        (Command::Render(a), _) => render::run(&ctx, a),
        (Command::Secrets(c), _) => secrets::run(&ctx, c),
        (Command::State(c), _) => state::run(&ctx, c),
        (Command::Stacks, _) => stacks::run(&ctx),
        (Command::Completions(a), _) => docs::completions(a),
        (Command::Man(a), _) => docs::man(&ctx, a),
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

/// Where a stack's agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Vm,
    Kubernetes,
    Docker,
}

/// The target of the stack a command works on. A stack that does not load (and a command
/// that needs none) is a VM stack here: the command then reports what is wrong with it.
fn target(ctx: &Ctx, command: &Command) -> Target {
    let by_target = matches!(
        command,
        Command::Plan(_)
            | Command::Deploy(_)
            | Command::Destroy(_)
            | Command::Outputs(_)
            | Command::Logs(_)
            | Command::Ssh(_)
            | Command::Open(_)
    );
    let kind = by_target
        .then(|| {
            let project = ctx.project().ok()?;
            Some(crate::stack::load(&project).ok()?.provider.kind())
        })
        .flatten();
    match kind {
        Some(crate::stack::ProviderKind::Kubernetes) => Target::Kubernetes,
        Some(crate::stack::ProviderKind::Docker) => Target::Docker,
        _ => Target::Vm,
    }
}

//! The crate's error, rendered once at the edge (`main`) with the fix to make.

use std::path::PathBuf;

use crate::exit::ExitStatus;
use crate::provider::ProviderError;
use crate::render::RenderError;
use crate::secrets::SecretError;
use crate::stack::StackError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("secret `{name}`: {source}")]
    Secret { name: String, source: SecretError },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("{provider}: {source}")]
    Provider {
        provider: String,
        source: ProviderError,
    },
    #[error("{failed} of {total} operations failed (see above); state records what exists")]
    Apply { failed: usize, total: usize },
    #[error("cancelled: nothing was changed")]
    Declined,
    #[error(
        "refusing to change the stack without confirmation in a non-interactive run; nothing was changed"
    )]
    Unconfirmed,
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state of stack `{stack}` is locked by {holder}")]
    Locked { stack: String, holder: String },
    #[error(transparent)]
    Tailscale(crate::tailscale_api::TsError),
    #[error("no agent `{name}` in stack `{stack}`")]
    UnknownAgent {
        name: String,
        stack: String,
        known: Vec<String>,
    },
    #[error("agent `{agent}` of stack `{stack}` is not deployed")]
    NotDeployed { agent: String, stack: String },
    #[error("Tailscale is installed but not running here: {detail}")]
    TailscaleDown { detail: String },
    #[error("no ssh client: neither `tailscale` nor `ssh` is on PATH")]
    NoSshClient,
    #[error("agent `{agent}` cannot be reached: {problem}")]
    Unreachable {
        agent: String,
        problem: String,
        help: String,
    },
    #[error("interrupted; state was saved")]
    Interrupted,
    #[error(transparent)]
    Kubeconfig(#[from] crate::provider::kubernetes::kubeconfig::KubeconfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] crate::provider::kubernetes::client::KubeError),
    #[error(
        "`{command}` does not drive Kubernetes stacks yet (stack `{stack}` has `provider = \"kubernetes\"`)"
    )]
    NotOnKubernetes { command: String, stack: String },
    #[error(transparent)]
    Docker(#[from] crate::provider::docker::DockerError),
}

impl Error {
    pub fn secret(name: &str, source: SecretError) -> Self {
        Error::Secret {
            name: name.to_string(),
            source,
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Stack(_) | Error::State(_) | Error::Render(_) | Error::Input(_) => {
                ExitStatus::Config
            }
            Error::Secret { .. } => ExitStatus::Secrets,
            Error::Provider { .. }
            | Error::Apply { .. }
            | Error::Io { .. }
            | Error::Tailscale(_) => ExitStatus::Failure,
            Error::Declined | Error::Unconfirmed => ExitStatus::Declined,
            Error::Usage(_) => ExitStatus::Usage,
            Error::Locked { .. } => ExitStatus::Locked,
            Error::Interrupted => ExitStatus::Interrupted,
            Error::UnknownAgent { .. } => ExitStatus::Usage,
            Error::NotDeployed { .. }
            | Error::TailscaleDown { .. }
            | Error::NoSshClient
            | Error::Unreachable { .. } => ExitStatus::Failure,
            Error::NotOnKubernetes { .. } | Error::Kubeconfig(_) => ExitStatus::Config,
            Error::Kube(_) | Error::Docker(_) => ExitStatus::Failure,
        }
    }

    pub fn help(&self) -> Option<String> {
        match self {
            Error::Stack(e) => e.help(),
            Error::State(e) => e.help(),
            Error::Secret { source, .. } => source.help(),
            Error::Provider { source, .. } => source.advice.clone(),
            Error::Render(RenderError::TooLarge { .. }) => Some(
                "shrink the agent's workspace folder or env; large files belong in a repository the agent clones".into(),
            ),
            Error::Tailscale(e) => e.help(),
            Error::Unconfirmed => Some("review the plan, then pass --yes".into()),
            Error::UnknownAgent { known, .. } => Some(format!(
                "the stack's agents are {} (the `agent-` prefix may be left out)",
                known.join(", ")
            )),
            Error::NotDeployed { stack, .. } => {
                Some(format!("deploy it first: `agent-army --stack {stack} deploy`"))
            }
            Error::TailscaleDown { .. } => Some(
                "start it with `sudo tailscale up` (macOS, Windows: open the Tailscale app and connect), then retry".into(),
            ),
            Error::NoSshClient => Some(
                "install Tailscale (https://tailscale.com/download) or the OpenSSH client".into(),
            ),
            Error::Unreachable { help, .. } => Some(help.clone()),
            Error::Kubeconfig(e) => e.help(),
            Error::Kube(e) => e.help(),
            Error::Docker(e) => e.help(),
            Error::NotOnKubernetes { stack, .. } => Some(format!(
                "write the manifests with `agent-army --stack {stack} render --out DIR --show-secrets`, then apply them with `kubectl apply --server-side --field-manager=agent-army -f DIR`"
            )),
            Error::Locked { .. } => Some(
                "wait for the other run to finish, or pass --lock-timeout; if its process is gone, run `agent-army force-unlock`".into(),
            ),
            _ => None,
        }
    }

    /// The message as printed to stderr.
    pub fn render(&self) -> String {
        let mut s = format!("error: {self}");
        if let Some(h) = self.help() {
            s.push_str(&format!("\n  help: {h}"));
        }
        s
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

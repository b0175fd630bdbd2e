//! The two input files as written on disk (`agent-army.toml`, `stacks/<stack>.toml`), and the
//! validated configuration built from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::openclaw::{ModelProvider, RawModels};
use crate::secrets::SecretRef;

/// `agent-army.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub project: RawProjectSection,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub agents: Vec<RawAgent>,
    /// Self-hosted or OpenAI-compatible model servers.
    pub models: Option<Spanned<RawModels>>,
    /// Where every stack's state lives (a stack's own `[state]` replaces it).
    pub state: Option<RawState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjectSection {
    pub name: Spanned<String>,
    /// Stack used when neither `--stack` nor `AGENT_ARMY_STACK` is given.
    pub default_stack: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub disk_gb: Option<Spanned<u32>>,
    /// npm version or dist-tag of `openclaw` to install.
    pub openclaw_version: Option<Spanned<String>>,
    /// Default model, `provider/model`.
    pub model: Option<Spanned<String>>,
    /// Coding-agent CLIs installed for every agent's user.
    pub coding_agents: Option<Vec<Spanned<String>>>,
    /// Pass-through table deep-merged into every agent's `openclaw.json`.
    pub openclaw: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub instance_type: Option<Spanned<String>>,
    pub disk_gb: Option<Spanned<u32>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Folder (relative to the project) whose files are copied into the agent's workspace.
    pub workspace: Option<Spanned<String>>,
    /// This agent's model, `provider/model`.
    pub model: Option<Spanned<String>>,
    /// Coding-agent CLIs for this agent (replaces the default list).
    pub coding_agents: Option<Vec<Spanned<String>>>,
    /// Pass-through table for this agent's `openclaw.json`.
    pub openclaw: Option<Spanned<toml::Table>>,
}

/// Which cloud a stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Aws,
    Hetzner,
    /// Agents as pods of a Kubernetes cluster, each with a Tailscale sidecar.
    Kubernetes,
    /// Agents as containers of a local Docker engine (a Tailscale sidecar when the stack has
    /// an auth key; otherwise the gateway on 127.0.0.1).
    Docker,
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProviderKind::Aws => "aws",
            ProviderKind::Hetzner => "hetzner",
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::Docker => "docker",
        })
    }
}

/// `stacks/<stack>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStack {
    pub provider: Spanned<ProviderKind>,
    /// AWS region.
    pub region: Option<Spanned<String>>,
    /// Hetzner location.
    pub location: Option<Spanned<String>>,
    /// AWS instance type.
    pub instance_type: Option<Spanned<String>>,
    /// Hetzner server type.
    pub server_type: Option<Spanned<String>>,
    pub image: Option<Spanned<String>>,
    pub disk_gb: Option<Spanned<u32>>,
    /// MagicDNS suffix of the tailnet, e.g. `tail12345.ts.net` (required, but for a Docker
    /// stack without a Tailscale auth key).
    pub tailnet: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_ssh_cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub age_recipients: Vec<Spanned<String>>,
    pub aws: Option<Spanned<RawAws>>,
    /// `[kubernetes]`: where and how agents run as pods.
    pub kubernetes: Option<Spanned<RawKubernetes>>,
    /// `[docker]`: the images and engine of a local Docker stack.
    pub docker: Option<Spanned<RawDocker>>,
    pub tailscale: Option<RawTailscale>,
    #[serde(default)]
    pub secrets: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub agent_secrets: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<String>>>,
    /// Agent → generation of its gateway key derived from `gateway_seed` (bump to rotate
    /// that agent's token; the agent is replaced).
    #[serde(default)]
    pub token_generations: BTreeMap<Spanned<String>, Spanned<u32>>,
    /// The stack's model, `provider/model` (between the project default and an agent's own).
    pub model: Option<Spanned<String>>,
    /// Model servers for this stack (added to the project's; same names are replaced).
    pub models: Option<Spanned<RawModels>>,
    /// Pass-through table for every agent of this stack.
    pub openclaw: Option<Spanned<toml::Table>>,
    /// Where this stack's state lives.
    pub state: Option<RawState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub subnet_id: Option<Spanned<String>>,
    pub metadata_hop_limit: Option<Spanned<u32>>,
}

/// `[kubernetes]` of a stack with `provider = "kubernetes"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    /// The namespace every object of the stack goes into (created by agent-army).
    pub namespace: Option<Spanned<String>>,
    /// kubeconfig context (default: the kubeconfig's current context).
    pub context: Option<Spanned<String>>,
    /// Storage class of the volumes (default: the cluster's default class).
    pub storage_class: Option<Spanned<String>>,
    /// `userspace` (default: no capability) or `kernel` (NET_ADMIN and /dev/net/tun).
    pub tailscale_mode: Option<Spanned<String>>,
    /// Size of the sidecar's state volume in GiB (default 1).
    pub tailscale_state_gb: Option<Spanned<u32>>,
    /// Tailscale SSH into the sidecar (default true, as `--ssh` on the VMs).
    pub tailscale_ssh: Option<Spanned<bool>>,
    /// Image of the OpenClaw container and its set-up (Node.js; openclaw is installed on the
    /// data volume at the pinned version, as on the VMs).
    pub node_image: Option<Spanned<String>>,
    /// Image of the Tailscale sidecar.
    pub tailscale_image: Option<Spanned<String>>,
}

/// `[docker]` of a stack with `provider = "docker"` (every key optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    /// The engine's socket, `unix:///path` (default: `DOCKER_HOST`, else
    /// `/var/run/docker.sock`).
    pub host: Option<Spanned<String>>,
    /// Image of the OpenClaw container (Node.js; openclaw is installed on the data volume at
    /// the pinned version unless the image already has it).
    pub openclaw_image: Option<Spanned<String>>,
    /// Image of the Tailscale sidecar.
    pub tailscale_image: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTailscale {
    /// Tags of the per-agent auth keys minted with an OAuth client.
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
}

/// Default tag of minted auth keys.
pub const DEFAULT_TAILSCALE_TAG: &str = "tag:agent-army";

/// `[state]` in the project or stack file: where the stack's state lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `local` (default) or `s3`.
    pub backend: Spanned<String>,
    pub bucket: Option<Spanned<String>>,
    /// Key prefix inside the bucket (default `agent-army`).
    pub prefix: Option<Spanned<String>>,
    /// The bucket's region (default: the stack's AWS region, else `us-east-1`).
    pub region: Option<Spanned<String>>,
    /// Path-style addressing (`endpoint/bucket/key`), for S3-compatible stores.
    pub path_style: Option<Spanned<bool>>,
}

/// Where a stack's state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateSettings {
    /// `.agent-army/state/<stack>.json` on this machine.
    #[default]
    Local,
    S3(S3Location),
}

/// A bucket and key prefix in S3 or an S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub path_style: bool,
}

/// Default key prefix of remote state.
pub const DEFAULT_STATE_PREFIX: &str = "agent-army";

impl StateSettings {
    /// `local`, or `s3://BUCKET[/PREFIX][?region=R&path_style=true]` (`AGENT_ARMY_STATE`).
    /// `default_region` applies when the URL names none.
    pub fn parse(s: &str, default_region: &str) -> Result<StateSettings, String> {
        if s == "local" {
            return Ok(StateSettings::Local);
        }
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{s}` is neither `local` nor an `s3://BUCKET/PREFIX` URL"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, DEFAULT_STATE_PREFIX));
        check_bucket(bucket)?;
        check_prefix(prefix)?;
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            region: default_region.to_string(),
            path_style: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("region", r)) if !r.is_empty() => loc.region = r.to_string(),
                Some(("path_style", v)) => {
                    loc.path_style = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("path_style must be true or false, not `{v}`")),
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown setting `{pair}` (known: region, path_style)"
                    ));
                }
            }
        }
        Ok(StateSettings::S3(loc))
    }
}

/// An S3 bucket name as AWS allows it: 3-63 lowercase letters, digits, dots and hyphens.
pub fn check_bucket(b: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{b}` is not a bucket name (3-63 lowercase letters, digits, dots and hyphens)"
        ))
    }
}

/// A key prefix: letters, digits and `-_./`, no `..`.
pub fn check_prefix(p: &str) -> Result<(), String> {
    let ok = p.len() <= 200
        && !p.contains("..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{p}` is not a key prefix (letters, digits, `-`, `_`, `.` and `/`)"
        ))
    }
}

/// Provider-specific settings of a validated stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderSettings {
    Aws {
        region: String,
        subnet_id: Option<String>,
        metadata_hop_limit: u32,
    },
    Hetzner {
        location: String,
    },
    Kubernetes(KubernetesSettings),
    Docker(DockerSettings),
}

impl ProviderSettings {
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderSettings::Aws { .. } => ProviderKind::Aws,
            ProviderSettings::Hetzner { .. } => ProviderKind::Hetzner,
            ProviderSettings::Kubernetes(_) => ProviderKind::Kubernetes,
            ProviderSettings::Docker(_) => ProviderKind::Docker,
        }
    }
    /// Region, location or namespace.
    pub fn place(&self) -> &str {
        match self {
            ProviderSettings::Aws { region, .. } => region,
            ProviderSettings::Hetzner { location } => location,
            ProviderSettings::Kubernetes(k) => &k.namespace,
            ProviderSettings::Docker(_) => "local",
        }
    }
}

/// How the Tailscale sidecar reaches the tailnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailscaleMode {
    /// tailscaled's userspace (netstack) networking: no capability, no device.
    Userspace,
    /// A kernel TUN device: NET_ADMIN and /dev/net/tun from the node.
    Kernel,
}

/// The default image of the OpenClaw container: Node.js at the version the VMs install.
pub fn default_node_image() -> String {
    format!(
        "docker.io/library/node:{}-bookworm-slim",
        super::openclaw::NODE_VERSION
    )
}

/// The default image of the Tailscale sidecar.
pub const DEFAULT_TAILSCALE_IMAGE: &str = "ghcr.io/tailscale/tailscale:v1.82.5";

/// Default size of the sidecar's state volume (GiB): tailscaled's state is a few KiB.
pub const DEFAULT_TAILSCALE_STATE_GB: u32 = 1;

/// A Kubernetes stack's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    pub namespace: String,
    pub context: Option<String>,
    pub storage_class: Option<String>,
    pub tailscale_mode: TailscaleMode,
    pub tailscale_state_gb: u32,
    /// `tailscale up --ssh` in the sidecar: `agent-army ssh` lands in the sidecar container.
    pub tailscale_ssh: bool,
    pub node_image: String,
    pub tailscale_image: String,
}

/// A Docker stack's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// `unix:///path` of the engine, when the stack names one.
    pub host: Option<String>,
    pub openclaw_image: String,
    pub tailscale_image: String,
}

/// The default image of a Docker stack's OpenClaw container: the one `scripts/docker-setup`
/// builds (Node.js and the pinned openclaw, preinstalled).
pub fn default_docker_openclaw_image() -> String {
    format!(
        "agent-army-local/openclaw:{}",
        super::openclaw::PINNED_OPENCLAW_VERSION
    )
}

/// Secret names with a meaning to agent-army itself. Every other secret name must be an
/// environment-variable name and is exported to the agent's gateway environment.
pub const RESERVED_SECRETS: &[&str] = &[
    TAILSCALE_AUTH_KEY,
    HCLOUD_TOKEN_SECRET,
    TAILSCALE_API_KEY,
    TAILSCALE_OAUTH_ID,
    TAILSCALE_OAUTH_SECRET,
    GATEWAY_SEED,
];
pub const TAILSCALE_AUTH_KEY: &str = "tailscale_auth_key";
pub const TAILSCALE_API_KEY: &str = "tailscale_api_key";
pub const TAILSCALE_OAUTH_ID: &str = "tailscale_oauth_client_id";
pub const TAILSCALE_OAUTH_SECRET: &str = "tailscale_oauth_client_secret";
pub const HCLOUD_TOKEN_SECRET: &str = "hcloud_token";
/// The stack's gateway seed: every agent's gateway key is derived from it, so any machine
/// with the repository and an identity gets the same tokens.
pub const GATEWAY_SEED: &str = "gateway_seed";

/// Secrets whose change must not replace a running agent: they are only used at first boot
/// (or by agent-army itself), so rotating them must not rebuild the fleet.
pub const BOOT_ONLY_SECRETS: &[&str] = &[
    TAILSCALE_AUTH_KEY,
    HCLOUD_TOKEN_SECRET,
    TAILSCALE_API_KEY,
    TAILSCALE_OAUTH_ID,
    TAILSCALE_OAUTH_SECRET,
    GATEWAY_SEED,
];

/// A validated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub role: String,
    /// `<stack>-<agent>`
    pub hostname: String,
    /// `<stack>-<agent>.<tailnet>`
    pub fqdn: String,
    pub instance_type: String,
    pub image: Option<String>,
    pub disk_gb: u32,
    pub env: BTreeMap<String, String>,
    /// Relative path → contents.
    pub workspace_files: BTreeMap<String, Vec<u8>>,
    /// Secrets exported to this agent (stack-wide ones merged with its own).
    pub secrets: BTreeMap<String, SecretRef>,
    /// `provider/model`, or `None` when no level sets one.
    pub model: Option<String>,
    /// npm package specs of the coding-agent CLIs installed for the agent's user.
    pub coding_agents: Vec<String>,
    /// Pass-through settings (project defaults, then stack, then agent), deep-merged.
    pub openclaw: serde_json::Map<String, serde_json::Value>,
    /// Generation of the gateway key derived from the stack's `gateway_seed` (0 unless
    /// rotated with `token_generations`).
    pub token_generation: u32,
}

/// A validated project + stack.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: String,
    pub stack: String,
    pub root: PathBuf,
    pub stack_file: PathBuf,
    pub provider: ProviderSettings,
    pub tailnet: String,
    pub allowed_ssh_cidrs: Vec<ipnet::IpNet>,
    pub recipients: Vec<String>,
    pub openclaw_version: String,
    /// Custom model providers (project's, then the stack's).
    pub model_providers: BTreeMap<String, ModelProvider>,
    /// Tags of minted Tailscale auth keys.
    pub tailscale_tags: Vec<String>,
    /// Stack-wide secrets (reserved names and agent environment).
    pub secrets: BTreeMap<String, SecretRef>,
    /// Where the stack's state lives (`AGENT_ARMY_STATE` overrides it).
    pub state: StateSettings,
    pub agents: Vec<Agent>,
    /// Things worth telling the user that are not errors.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }
}

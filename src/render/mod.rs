//! Rendering each agent's cloud-init document from `templates/`.
//!
//! The templates are compiled into the binary. Every user-supplied value reaches YAML through
//! the `yaml`/`yaml_block` filters and shell through the `sh` filter (see [`escape`]); JSON is
//! produced by serde, never by templating.

pub mod docker;
pub mod escape;
pub mod kubernetes;
pub mod yaml;

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine as _;
use minijinja::{Environment, context};
use serde::Serialize;

use crate::provider::profile::Packing;
use crate::secrets::{MASK, Secret};
use crate::stack::openclaw::NODE_VERSION;
use crate::stack::{Agent, Config, ProviderKind};

/// Port the OpenClaw gateway listens on (loopback only).
pub const GATEWAY_PORT: u16 = 18789;
/// AWS limit on user data, in raw (pre-base64) bytes.
pub const AWS_USER_DATA_LIMIT: usize = crate::provider::profile::AWS.user_data.limit;
/// Hetzner limit on user data, in characters.
pub const HETZNER_USER_DATA_LIMIT: usize = crate::provider::profile::HETZNER.user_data.limit;

/// The Tailscale auth key, on tmpfs, root-only; removed by step 1 however it ends.
const AUTH_KEY_FILE: &str = "/run/agent-army/tailscale-authkey";
/// The first-boot steps and their runner (see [`crate::boot`]).
const BOOT_DIR: &str = "/var/lib/agent-army/boot";
/// Where cloud-init's `scripts-per-instance` module finds the step scripts.
const PER_INSTANCE_DIR: &str = "/var/lib/cloud/scripts/per-instance";
/// Files the gateway step installs, secrets among them: on tmpfs, so never on disk, and removed
/// by the last step whatever happened before.
const STAGE_DIR: &str = "/run/agent-army/stage";
/// The metadata-service guard (nftables rules, loaded by a unit at every boot).
const GUARD_RULES: &str = "/etc/agent-army/metadata-guard.nft";
const GUARD_UNIT: &str = "/etc/systemd/system/agent-army-metadata-guard.service";
/// The agent's rootless Docker daemon launcher.
const DOCKERD_LAUNCHER: &str = "/usr/local/lib/agent-army/dockerd-rootless";
/// First subordinate uid/gid of the agent's user (rootless Docker), clear of the ranges
/// `useradd` hands to login users from 100000 up.
const SUBID_START: u32 = 524_288;
/// How long a step may run before it is stopped and recorded as failed.
const STEP_TIMEOUT_SECS: u32 = 1800;
/// How long apt waits for a lock held by another package manager.
const APT_LOCK_WAIT_SECS: u32 = 900;
/// Fingerprint of Tailscale's package-repository signing key (pkgs.tailscale.com).
pub const TAILSCALE_KEY_FINGERPRINT: &str = "2596A99EAAB33821893C0A79458CA832957F5868";
/// Home of the agent's unprivileged user on the VM.
pub const AGENT_HOME: &str = "/var/lib/openclaw";
/// The environment variable that carries the gateway token to the gateway (the config refers
/// to it instead of holding the token).
pub const TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";
/// Where the gateway's environment file lives on the VM.
pub const ENV_FILE: &str = "/etc/openclaw-agent.env";
/// The helper that installs an agent's configuration, at first boot and on every in-place
/// update (`templates/agent-army-agent.sh.j2`); on root's PATH.
pub const AGENT_HELPER: &str = "/usr/local/sbin/agent-army-agent";
/// Its name, as the remote command runs it.
pub const AGENT_HELPER_NAME: &str = "agent-army-agent";

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "cloud-config.yaml.j2",
    "boot/lib.sh.j2",
    "boot/run-step.sh.j2",
    "boot/shim.sh.j2",
    "boot/agent-army-boot.sh.j2",
    "boot/1-tailscale.sh.j2",
    "boot/2-packages.sh.j2",
    "boot/3-agent-user.sh.j2",
    "boot/4-docker.sh.j2",
    "boot/5-openclaw.sh.j2",
    "boot/6-gateway.sh.j2",
    "boot/7-serve.sh.j2",
    "openclaw-gateway.service.j2",
    "openclaw-agent.sh.j2",
    "agent-army-agent.sh.j2",
    "metadata-guard.nft.j2",
    "metadata-guard.service.j2",
    "docker-rootless.service.j2",
    "dockerd-rootless.sh.j2",
];

/// Why a document could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template error: {0}")]
    Template(#[from] minijinja::Error),
    #[error(
        "user data for agent `{agent}` is {size} {unit} after compression; the {provider} limit is {limit}"
    )]
    TooLarge {
        agent: String,
        size: usize,
        limit: usize,
        unit: &'static str,
        provider: ProviderKind,
    },
    #[error("compression failed: {0}")]
    Compress(#[from] std::io::Error),
}

/// The secret values that go into an agent's document, or masks.
pub enum Values<'a> {
    /// Secrets and token replaced by `********` (plan, render without `--show-secrets`).
    Masked,
    /// Real values (deploy, render `--show-secrets`).
    Real {
        tailscale_auth_key: &'a Secret,
        /// Agent environment secrets by name.
        env: BTreeMap<String, Secret>,
        gateway_token: &'a str,
    },
}

#[derive(Serialize)]
struct FileEntry {
    path: String,
    mode: &'static str,
    content: String,
    encoding: Option<&'static str>,
}

/// The templates, compiled once per process: a deploy renders several documents per agent, and
/// compiling every template for each of them was the largest cost of a no-op run of a large
/// fleet (see the README's fleet benchmark).
fn environment() -> &'static Environment<'static> {
    static ENV: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(compile);
    &ENV
}

fn compile() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    for (name, src) in TEMPLATES {
        // Templates are compiled in; a syntax error is caught by the unit tests.
        if let Err(e) = env.add_template(name, src) {
            panic!("built-in template {name} is invalid: {e}");
        }
    }
    env.add_filter("yaml", |s: String| escape::yaml_quote(&s));
    env.add_filter("yaml_block", |s: String, indent: usize| {
        escape::yaml_block(&s, indent)
    });
    env.add_filter("sh", |s: String| escape::sh_quote(&s));
    env
}

/// The agent's environment variables, secrets and token included (masked with `Masked`).
fn env_vars(config: &Config, agent: &Agent, values: &Values) -> BTreeMap<String, String> {
    let mut vars = plain_env(config, agent);
    let token = match values {
        Values::Masked => MASK.to_string(),
        Values::Real { gateway_token, .. } => gateway_token.to_string(),
    };
    vars.insert(TOKEN_ENV.into(), token);
    for name in agent.secrets.keys() {
        let v = match values {
            Values::Masked => MASK.to_string(),
            Values::Real { env, .. } => env
                .get(name)
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
        };
        vars.insert(name.clone(), v);
    }
    vars
}

/// The variables of the environment file that are not secret (the token and secrets aside).
pub fn plain_env(config: &Config, agent: &Agent) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("AGENT_ARMY_PROJECT".into(), config.project.clone());
    vars.insert("AGENT_ARMY_STACK".into(), config.stack.clone());
    vars.insert("AGENT_ARMY_AGENT".into(), agent.name.clone());
    vars.insert("AGENT_ARMY_ROLE".into(), agent.role.clone());
    for (k, v) in &agent.env {
        vars.insert(k.clone(), v.clone());
    }
    vars
}

/// The agent's environment file: `KEY='value'` lines, sourced by the gateway unit.
fn env_file(config: &Config, agent: &Agent, values: &Values) -> String {
    let mut out = String::from("# Generated by agent-army; sourced by openclaw-gateway.service\n");
    for (k, v) in env_vars(config, agent, values) {
        out.push_str(&format!("{k}={}\n", escape::sh_quote(&v)));
    }
    out
}

/// An env SecretRef: OpenClaw resolves it from the gateway's environment at start.
fn env_ref(var: &str) -> serde_json::Value {
    serde_json::json!({ "source": "env", "provider": "default", "id": var })
}

/// `openclaw.json` of an agent. It holds no secret: the gateway token and API keys are env
/// references, resolved from the gateway's environment file.
/// - gateway on loopback with token auth, behind `tailscale serve` (the only trusted proxy);
/// - the OpenAI-compatible HTTP API on (same token), for scripts on the tailnet;
/// - the agent's model, and the custom model servers it may use;
/// - the managed workspace, with OpenClaw's first-run bootstrap ritual off (agent-army writes
///   the identity files);
/// - then the pass-through table, deep-merged (keys above that agent-army owns are refused by
///   validation).
pub fn openclaw_json(config: &Config, agent: &Agent) -> String {
    let mut defaults = serde_json::json!({
        "workspace": format!("{AGENT_HOME}/.openclaw/workspace"),
        "skipBootstrap": true,
    });
    if let Some(model) = &agent.model {
        defaults["model"] = serde_json::json!({ "primary": model });
    }
    let mut doc = serde_json::json!({
        "gateway": {
            "mode": "local",
            "bind": "loopback",
            "port": GATEWAY_PORT,
            "auth": { "mode": "token", "token": env_ref(TOKEN_ENV), "allowTailscale": false },
            "trustedProxies": ["127.0.0.1", "::1"],
            "http": { "endpoints": { "chatCompletions": { "enabled": true } } },
        },
        "agents": { "defaults": defaults },
    });
    if !config.model_providers.is_empty() {
        let providers: serde_json::Map<String, serde_json::Value> = config
            .model_providers
            .iter()
            .map(|(name, p)| {
                let mut v = serde_json::json!({
                    "baseUrl": p.base_url,
                    "api": p.api,
                    "models": p.models.iter().map(|m| serde_json::json!({"id": m, "name": m})).collect::<Vec<_>>(),
                });
                if let Some(k) = &p.api_key {
                    v["apiKey"] = env_ref(k);
                }
                (name.clone(), v)
            })
            .collect();
        doc["models"] = serde_json::json!({ "mode": "merge", "providers": providers });
    }
    if let serde_json::Value::Object(map) = &mut doc {
        crate::stack::openclaw::merge(map, &agent.openclaw);
    }
    // serde_json cannot fail on a `Value`.
    serde_json::to_string_pretty(&sorted(doc)).unwrap_or_default() + "\n"
}

/// `v` with every object's keys in sorted order. The file's bytes (and so its fingerprint) must
/// not depend on how the binary was built: serde_json keeps insertion order when a dependency
/// turns on its `preserve_order` feature (a dev-dependency does, in test builds).
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Workspace files: the project's folder, plus the identity files OpenClaw loads every session
/// (IDENTITY.md with the role, and AGENTS.md/SOUL.md when the folder has none).
pub fn workspace_files(agent: &Agent) -> BTreeMap<String, Vec<u8>> {
    let mut files = agent.workspace_files.clone();
    let role = &agent.role;
    let name = &agent.name;
    files.entry("IDENTITY.md".into()).or_insert_with(|| {
        format!("# IDENTITY.md\n\n- Name: {name}\n- Role: {role}\n").into_bytes()
    });
    files.entry("AGENTS.md".into()).or_insert_with(|| {
        format!("# AGENTS.md\n\nYou are {name}. Your role: {role}\n\nWork on what your role covers; say so when a request is outside it.\n").into_bytes()
    });
    files.entry("SOUL.md".into()).or_insert_with(|| {
        format!("# SOUL.md\n\nBe direct, careful and honest about what you did and did not do, as {name} ({role}) should be.\n").into_bytes()
    });
    files
}

/// How file contents are encoded in the document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Plain,
    GzipBase64,
}

/// One file of an agent's configuration, relative to the stage: written to the VM's stage
/// (tmpfs) at first boot, sent as a tar on an in-place update, and installed from there by
/// `agent-army-agent` both times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// What the templates see.
fn context(config: &Config, agent: &Agent) -> minijinja::Value {
    context! {
        version => env!("CARGO_PKG_VERSION"),
        project => config.project,
        stack => config.stack,
        agent => agent.name,
        hostname => agent.hostname,
        auth_key_file => AUTH_KEY_FILE,
        stage_dir => STAGE_DIR,
        boot_dir => BOOT_DIR,
        results => crate::boot::RESULTS_FILE,
        total => crate::boot::STEPS.len(),
        step_timeout => STEP_TIMEOUT_SECS,
        apt_lock_wait => APT_LOCK_WAIT_SECS,
        tailscale_key_fpr => TAILSCALE_KEY_FINGERPRINT,
        subid_start => SUBID_START,
        guard_rules => GUARD_RULES,
        dockerd_launcher => DOCKERD_LAUNCHER,
        port => GATEWAY_PORT,
        node_version => NODE_VERSION,
        agent_home => AGENT_HOME,
        env_file => ENV_FILE,
        token_env => TOKEN_ENV,
    }
}

/// The agent's configuration: everything `deploy` can change in place (see [`StagedFile`]).
/// With `Masked`, the environment file holds masks instead of the token and secrets.
pub fn agent_files(
    config: &Config,
    agent: &Agent,
    values: &Values,
) -> Result<Vec<StagedFile>, RenderError> {
    let env = environment();
    let ctx = context(config, agent);
    let file = |path: &str, mode: u32, bytes: Vec<u8>| StagedFile {
        path: path.to_string(),
        mode,
        bytes,
    };
    let mut files = vec![
        file(
            "openclaw.json",
            0o600,
            openclaw_json(config, agent).into_bytes(),
        ),
        file(
            "openclaw-gateway.service",
            0o644,
            env.get_template("openclaw-gateway.service.j2")?
                .render(&ctx)?
                .into_bytes(),
        ),
        file(
            "openclaw-agent",
            0o644,
            env.get_template("openclaw-agent.sh.j2")?
                .render(&ctx)?
                .into_bytes(),
        ),
        file(
            "agent.env",
            0o600,
            env_file(config, agent, values).into_bytes(),
        ),
        file(
            "openclaw-version",
            0o644,
            format!("{}\n", config.openclaw_version).into_bytes(),
        ),
        file(
            "coding-agents",
            0o644,
            agent
                .coding_agents
                .iter()
                .map(|p| format!("{p}\n"))
                .collect::<String>()
                .into_bytes(),
        ),
    ];
    for (rel, bytes) in workspace_files(agent) {
        files.push(file(&format!("workspace/{rel}"), 0o644, bytes));
    }
    Ok(files)
}

/// A file of the boot document: path on the VM, mode, bytes.
type DocFile = (String, &'static str, Vec<u8>);

/// The files of the machine: first-boot steps, their runner, the helper, the guard, rootless
/// Docker. Changing one of these replaces the VM.
fn machine_files(
    config: &Config,
    agent: &Agent,
    values: &Values,
) -> Result<Vec<DocFile>, RenderError> {
    let env = environment();
    let ctx = context(config, agent);
    let auth_key = match values {
        Values::Masked => MASK.to_string(),
        Values::Real {
            tailscale_auth_key, ..
        } => tailscale_auth_key.expose().to_string(),
    };
    let mut files: Vec<DocFile> = Vec::new();
    let tpl = |name: &str| -> Result<Vec<u8>, RenderError> {
        Ok(env.get_template(name)?.render(&ctx)?.into_bytes())
    };
    files.push((AUTH_KEY_FILE.into(), "0600", auth_key.into_bytes()));
    files.push((format!("{BOOT_DIR}/lib.sh"), "0644", tpl("boot/lib.sh.j2")?));
    files.push((
        format!("{BOOT_DIR}/run-step"),
        "0700",
        tpl("boot/run-step.sh.j2")?,
    ));
    for (i, step) in crate::boot::STEPS.iter().enumerate() {
        let n = i + 1;
        let name = step.name;
        files.push((
            format!("{BOOT_DIR}/steps/{n}-{name}.sh"),
            "0700",
            tpl(&format!("boot/{n}-{name}.sh.j2"))?,
        ));
        let shim = env.get_template("boot/shim.sh.j2")?.render(context! {
            n => n,
            name => name,
            needs => step.needs.join(","),
            what => step.what,
            ..ctx.clone()
        })?;
        files.push((
            format!("{PER_INSTANCE_DIR}/agent-army-{n}-{name}"),
            "0700",
            shim.into_bytes(),
        ));
    }
    files.push((
        crate::boot::REPORTER.into(),
        "0755",
        tpl("boot/agent-army-boot.sh.j2")?,
    ));
    files.push((AGENT_HELPER.into(), "0700", tpl("agent-army-agent.sh.j2")?));
    files.push((
        format!("{BOOT_DIR}/files/docker.service"),
        "0644",
        tpl("docker-rootless.service.j2")?,
    ));
    files.push((
        DOCKERD_LAUNCHER.into(),
        "0755",
        tpl("dockerd-rootless.sh.j2")?,
    ));
    files.push((GUARD_RULES.into(), "0644", tpl("metadata-guard.nft.j2")?));
    files.push((GUARD_UNIT.into(), "0644", tpl("metadata-guard.service.j2")?));
    Ok(files)
}

/// Which files a document carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Machine and agent files: the user data.
    Whole,
    /// The machine's only: what the machine fingerprint hashes.
    Machine,
}

fn render_with(
    config: &Config,
    agent: &Agent,
    values: &Values,
    encoding: Encoding,
    part: Part,
) -> Result<String, RenderError> {
    let env = environment();
    let ctx = context(config, agent);
    let mut files = machine_files(config, agent, values)?;
    if part == Part::Whole {
        for f in agent_files(config, agent, values)? {
            let mode = if f.mode & 0o077 == 0 { "0600" } else { "0644" };
            files.push((format!("{STAGE_DIR}/{}", f.path), mode, f.bytes));
        }
    }
    let entries: Vec<FileEntry> = files
        .into_iter()
        .map(|(path, mode, bytes)| {
            // The helper is the largest file and is read on the VM, not in the document: it
            // always travels compressed, which keeps the documents of typical agents readable
            // and within Hetzner's limit.
            let encoding = if path == AGENT_HELPER {
                Encoding::GzipBase64
            } else {
                encoding
            };
            encode_file(path, mode, bytes, encoding)
        })
        .collect::<Result<_, _>>()?;
    Ok(env
        .get_template("cloud-config.yaml.j2")?
        .render(context! { files => entries, ..ctx })?)
}

/// The masked document without the agent's configuration: a change here replaces the VM.
pub fn machine_document(config: &Config, agent: &Agent) -> Result<String, RenderError> {
    render_with(
        config,
        agent,
        &Values::Masked,
        Encoding::Plain,
        Part::Machine,
    )
}

fn encode_file(
    path: String,
    mode: &'static str,
    bytes: Vec<u8>,
    encoding: Encoding,
) -> Result<FileEntry, RenderError> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    Ok(match (encoding, String::from_utf8(bytes)) {
        (Encoding::Plain, Ok(text)) => FileEntry {
            path,
            mode,
            content: text,
            encoding: None,
        },
        (Encoding::Plain, Err(e)) => FileEntry {
            path,
            mode,
            content: b64(e.as_bytes()),
            encoding: Some("b64"),
        },
        (Encoding::GzipBase64, text) => {
            let bytes = match text {
                Ok(t) => t.into_bytes(),
                Err(e) => e.into_bytes(),
            };
            FileEntry {
                path,
                mode,
                content: packed(&bytes)?,
                encoding: Some("gz+b64"),
            }
        }
    })
}

/// `bytes` gzipped and base64-encoded, computed once per content: the files every agent
/// carries alike (the helper, 8.5 KB) are compressed once per run, not once per agent and
/// document (a no-op deploy of 300 agents spent most of its CPU re-compressing them).
fn packed(bytes: &[u8]) -> std::io::Result<String> {
    use sha2::Digest;
    type Cache = std::collections::HashMap<[u8; 32], std::sync::Arc<str>>;
    static CACHE: std::sync::LazyLock<std::sync::Mutex<Cache>> =
        std::sync::LazyLock::new(Default::default);
    let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
    let cache = || CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = cache().get(&key) {
        return Ok(hit.to_string());
    }
    let text: std::sync::Arc<str> = base64::engine::general_purpose::STANDARD
        .encode(gzip(bytes)?)
        .into();
    cache().insert(key, text.clone());
    Ok(text.to_string())
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    gzip_at(bytes, flate2::Compression::best())
}

fn gzip_at(bytes: &[u8], level: flate2::Compression) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
    enc.write_all(bytes)?;
    enc.finish()
}

/// Whether [`user_data`] would fit the provider's limit, at a fraction of its cost when the
/// answer is clear: a whole document that gzips to under 90% of the limit at the fastest level
/// fits at the best level too (which is what is sent); one closer to the limit is packed as it
/// would be sent. (Checking every agent of a fleet before the lock at the best level was the
/// largest CPU cost of a no-op deploy.)
pub fn check_user_data(config: &Config, agent: &Agent, values: &Values) -> Result<(), RenderError> {
    let kind = config.provider.kind();
    let limit = crate::provider::profile(kind).user_data;
    if matches!(limit.packing, Packing::GzipWhole) {
        let doc = render(config, agent, values)?;
        if limit.measure(doc.as_bytes()) <= limit.limit {
            return Ok(());
        }
        let fast = gzip_at(doc.as_bytes(), flate2::Compression::fast())?;
        if limit.measure(&fast) * 10 <= limit.limit * 9 {
            return Ok(());
        }
    }
    user_data(config, agent, values).map(|_| ())
}

/// The readable `#cloud-config` document for one agent.
pub fn render(config: &Config, agent: &Agent, values: &Values) -> Result<String, RenderError> {
    render_with(config, agent, values, Encoding::Plain, Part::Whole)
}

/// The user data to send to the provider, within its size limit (see
/// [`crate::provider::Profile::user_data`]): the readable document when it fits; else, for
/// AWS, the whole document gzipped (cloud-init detects gzip); for Hetzner, which refuses raw
/// gzip, the same document with its files as `gz+b64`.
pub fn user_data(config: &Config, agent: &Agent, values: &Values) -> Result<Vec<u8>, RenderError> {
    let doc = render(config, agent, values)?;
    let kind = config.provider.kind();
    let limit = crate::provider::profile(kind).user_data;
    if limit.measure(doc.as_bytes()) <= limit.limit {
        return Ok(doc.into_bytes());
    }
    let packed = match limit.packing {
        Packing::GzipWhole => gzip(doc.as_bytes())?,
        Packing::GzipFiles => {
            render_with(config, agent, values, Encoding::GzipBase64, Part::Whole)?.into_bytes()
        }
    };
    let size = limit.measure(&packed);
    if size <= limit.limit {
        return Ok(packed);
    }
    Err(RenderError::TooLarge {
        agent: agent.name.clone(),
        size,
        limit: limit.limit,
        unit: limit.unit,
        provider: kind,
    })
}

#[cfg(test)]
mod tests;

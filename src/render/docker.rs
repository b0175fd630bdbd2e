//! The containers of a Docker stack, as data: per agent, the OpenClaw container and, when the
//! stack has a Tailscale auth key, the Tailscale sidecar that owns the network namespace.
//!
//! The shape is the Kubernetes pod's, from the same functions ([`super::kubernetes`]): the
//! same set-up script, `openclaw.json`, workspace, environment file and gateway token, the
//! same sidecar environment and serve config. What differs is only how Docker carries it:
//! - the configuration is copied into the created container before it starts (one tar per
//!   directory), where Kubernetes mounts a ConfigMap and Secrets;
//! - the set-up runs in the OpenClaw container's command before the gateway (no init
//!   containers);
//! - the auth key is copied onto the sidecar's state volume, which only the sidecar mounts;
//! - without an auth key there is no sidecar: the gateway listens on the container's own
//!   interfaces (`--bind lan`), published on 127.0.0.1 only.
//!
//! Nothing here talks to Docker: `provider::docker` turns these into Engine API requests.

use std::collections::BTreeMap;

use base64::Engine as _;
use hkdf::Hkdf;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::kubernetes::{
    AUTH_KEY, CONFIG_DIR, GATEWAY_ENV_DIR, GATEWAY_ENV_KEY, LABEL_AGENT, LABEL_PROJECT,
    LABEL_STACK, RUN_AS, SERVE_DIR, TAILSCALE_STATE_DIR, config_files, gateway_command,
    openclaw_env, serve_config, setup_script, tailscale_env,
};
use super::{AGENT_HOME, GATEWAY_PORT, Values, env_file};
use crate::secrets::MASK;
use crate::stack::model::{DockerSettings, TAILSCALE_AUTH_KEY};
use crate::stack::{Agent, Config};

/// Which container of an agent a label marks.
pub const LABEL_ROLE: &str = "agent-army/role";
pub const ROLE_OPENCLAW: &str = "openclaw";
pub const ROLE_SIDECAR: &str = "tailscale";
pub const ROLE_DATA: &str = "data";
pub const ROLE_STATE: &str = "tailscale-state";
/// The hash of everything a container is created from (keyed by the gateway token, so it
/// reveals nothing about the secrets in it): a redeploy compares it.
pub const LABEL_CONFIG: &str = "agent-army/config";
/// The hash of each part, for the plan's reason (`env`, `openclaw.json`, ...).
pub const LABEL_PARTS: &str = "agent-army/config-parts";
/// Public id of the agent's gateway key, as on the clouds' servers.
pub const LABEL_KEY_ID: &str = "agent-army/key-id";
/// On a data volume: the 127.0.0.1 port its agent's gateway was published on, so a
/// recreated container keeps its URL.
pub const LABEL_PORT: &str = "agent-army/port";

/// A file copied into a created container before it starts.
#[derive(Debug, Clone, Serialize)]
pub struct File {
    /// Absolute path in the container.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip)]
    pub content: Vec<u8>,
    /// Only directories: `content` is empty.
    pub dir: bool,
}

/// A mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Mount {
    /// A named volume.
    Volume { name: String, target: String },
    /// A private tmpfs (`/tmp`).
    Tmpfs { target: String },
}

/// Where a container's network comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Net {
    /// The stack's bridge network.
    Bridge(String),
    /// Another container's network namespace (`container:<name>`): the sidecar's.
    Container(String),
}

/// One container, as it is created.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub role: &'static str,
    pub image: String,
    /// The network namespace's host name (only a container that owns its namespace).
    pub hostname: Option<String>,
    /// `uid:gid`: never root.
    pub user: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// `NAME=value`, nothing secret.
    pub env: Vec<String>,
    pub net: Net,
    /// The gateway published on `127.0.0.1:<port>` (no sidecar).
    pub publish: Option<u16>,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
    /// `CMD` of the Docker health check.
    pub health: Option<Vec<String>>,
    /// Copied in before the first start (secrets among them).
    pub files: Vec<File>,
    pub labels: BTreeMap<String, String>,
}

/// The containers and volumes of one agent.
#[derive(Debug, Clone)]
pub struct AgentContainers {
    pub agent: String,
    pub openclaw: ContainerSpec,
    pub sidecar: Option<ContainerSpec>,
    /// (volume name, role) of the agent's volumes.
    pub volumes: Vec<(String, &'static str)>,
}

/// Docker names: `<project>-<stack>-<agent>`, so two projects on one engine do not meet.
pub fn container_name(config: &Config, agent: &Agent) -> String {
    format!("{}-{}", config.project, agent.hostname)
}

/// The agent's Tailscale sidecar: `<project>-<stack>-<agent>-tailscale`.
pub fn sidecar_name(config: &Config, agent: &Agent) -> String {
    format!("{}-tailscale", container_name(config, agent))
}

/// The volume of the sidecar's node state (and auth key).
pub fn state_volume_name(config: &Config, agent: &Agent) -> String {
    format!("{}-tailscale-state", container_name(config, agent))
}

/// The stack's bridge network.
pub fn network_name(config: &Config) -> String {
    format!("agent-army-{}-{}", config.project, config.stack)
}

/// Labels of the stack's objects.
pub fn stack_labels(config: &Config) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PROJECT.to_string(), config.project.clone()),
        (LABEL_STACK.to_string(), config.stack.clone()),
    ])
}

/// `label=value` filters selecting everything of the stack.
pub fn stack_filters(config: &Config) -> Vec<String> {
    stack_labels(config)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn agent_labels(config: &Config, agent: &Agent, role: &str) -> BTreeMap<String, String> {
    let mut l = stack_labels(config);
    l.insert(LABEL_AGENT.into(), agent.name.clone());
    l.insert(LABEL_ROLE.into(), role.into());
    l
}

/// Labels of an agent's volume (`role`: data or tailscale-state).
pub fn volume_labels(config: &Config, agent: &Agent, role: &str) -> BTreeMap<String, String> {
    agent_labels(config, agent, role)
}

fn file(path: String, mode: u32, content: Vec<u8>) -> File {
    File {
        path,
        mode,
        uid: RUN_AS,
        gid: RUN_AS,
        content,
        dir: false,
    }
}

fn dir(path: &str, mode: u32) -> File {
    File {
        path: path.into(),
        mode,
        uid: RUN_AS,
        gid: RUN_AS,
        content: Vec::new(),
        dir: true,
    }
}

/// The health check: the gateway answers `/readyz` on its loopback port (run inside the
/// container, where the gateway's loopback is).
fn gateway_health() -> Vec<String> {
    let script = format!(
        "fetch('http://127.0.0.1:{GATEWAY_PORT}/readyz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
    );
    vec!["CMD".into(), "node".into(), "-e".into(), script]
}

/// One agent's containers with real values. `port` is the 127.0.0.1 port of its gateway
/// when the stack has no auth key. The returned specs carry [`LABEL_CONFIG`] and
/// [`LABEL_PARTS`]: hashes keyed by the gateway token.
pub fn agent_containers(
    config: &Config,
    d: &DockerSettings,
    agent: &Agent,
    values: &Values,
    key_id: &str,
    port: Option<u16>,
) -> AgentContainers {
    let name = container_name(config, agent);
    let data_volume = format!("{name}-data");
    let state_volume = state_volume_name(config, agent);
    let sidecar_name = sidecar_name(config, agent);
    // Masked (render, plan): whether the stack names a key; real: whether it resolved to one.
    let tailnet = match values {
        Values::Masked => has_auth_key(config),
        Values::Real {
            tailscale_auth_key, ..
        } => !tailscale_auth_key.expose().is_empty(),
    };
    let token: String = match values {
        Values::Masked => String::new(),
        Values::Real { gateway_token, .. } => gateway_token.to_string(),
    };

    // OpenClaw: the set-up script (as the Kubernetes init container runs it), then the gateway.
    let mut files = config_files(config, agent);
    if !tailnet && let Some(port) = port {
        allow_published_origin(&mut files, port);
    }
    let keys: Vec<(String, String)> = files
        .iter()
        .map(|(k, p, _)| (k.clone(), p.clone()))
        .collect();
    let setup = setup_script(config, agent, &keys);
    let mut oc_files = vec![
        dir(AGENT_HOME, 0o700),
        dir(CONFIG_DIR, 0o755),
        file(format!("{CONFIG_DIR}/setup.sh"), 0o444, setup.into_bytes()),
        dir(GATEWAY_ENV_DIR, 0o500),
        file(
            format!("{GATEWAY_ENV_DIR}/{GATEWAY_ENV_KEY}"),
            0o400,
            env_file(config, agent, values).into_bytes(),
        ),
    ];
    for (key, _, bytes) in files {
        oc_files.push(file(format!("{CONFIG_DIR}/{key}"), 0o444, bytes));
    }
    let bind = if tailnet { "loopback" } else { "lan" };
    let mut openclaw = ContainerSpec {
        name: name.clone(),
        role: ROLE_OPENCLAW,
        image: d.openclaw_image.clone(),
        hostname: (!tailnet).then(|| agent.hostname.clone()),
        user: format!("{RUN_AS}:{RUN_AS}"),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: vec![format!(
            "/bin/sh {CONFIG_DIR}/setup.sh && {}",
            gateway_command(bind)
        )],
        env: openclaw_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        net: if tailnet {
            Net::Container(sidecar_name.clone())
        } else {
            Net::Bridge(network_name(config))
        },
        publish: if tailnet { None } else { port },
        mounts: vec![
            Mount::Volume {
                name: data_volume.clone(),
                target: AGENT_HOME.into(),
            },
            Mount::Tmpfs {
                target: "/tmp".into(),
            },
        ],
        read_only_root: false,
        health: Some(gateway_health()),
        files: oc_files,
        labels: agent_labels(config, agent, ROLE_OPENCLAW),
    };
    openclaw
        .labels
        .insert(LABEL_KEY_ID.into(), key_id.to_string());
    seal(&mut openclaw, &token);

    let mut volumes = vec![(data_volume, ROLE_DATA)];
    let sidecar = tailnet.then(|| {
        let auth = match values {
            Values::Real {
                tailscale_auth_key, ..
            } => tailscale_auth_key.expose().as_bytes().to_vec(),
            Values::Masked => MASK.as_bytes().to_vec(),
        };
        let mut env: Vec<String> =
            tailscale_env(agent, &format!("{TAILSCALE_STATE_DIR}/{AUTH_KEY}"), true)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
        // The stand-in's MagicDNS suffix (real containerboot ignores it).
        env.push(format!("AGENT_ARMY_TAILNET={}", config.tailnet));
        let mut s = ContainerSpec {
            name: sidecar_name.clone(),
            role: ROLE_SIDECAR,
            image: d.tailscale_image.clone(),
            hostname: Some(agent.hostname.clone()),
            user: format!("{RUN_AS}:{RUN_AS}"),
            entrypoint: None,
            cmd: Vec::new(),
            env,
            net: Net::Bridge(network_name(config)),
            publish: None,
            mounts: vec![
                Mount::Volume {
                    name: state_volume.clone(),
                    target: TAILSCALE_STATE_DIR.into(),
                },
                Mount::Tmpfs {
                    target: "/tmp".into(),
                },
            ],
            read_only_root: false,
            health: None,
            files: vec![
                dir(SERVE_DIR, 0o755),
                file(
                    format!("{SERVE_DIR}/serve.json"),
                    0o444,
                    serve_config().into_bytes(),
                ),
                dir(TAILSCALE_STATE_DIR, 0o700),
                file(format!("{TAILSCALE_STATE_DIR}/{AUTH_KEY}"), 0o400, auth),
            ],
            labels: agent_labels(config, agent, ROLE_SIDECAR),
        };
        // The auth key is read by the first start only (as on VMs): a new key does not
        // recreate a running sidecar, so it is left out of the hash.
        seal(&mut s, "");
        s
    });
    if sidecar.is_some() {
        volumes.push((state_volume, ROLE_STATE));
    }
    AgentContainers {
        agent: agent.name.clone(),
        openclaw,
        sidecar,
        volumes,
    }
}

/// The stack names a Tailscale auth key: its agents get a sidecar and join the tailnet
/// (without one, the gateways are published on 127.0.0.1 only).
pub fn has_auth_key(config: &Config) -> bool {
    config.secrets.contains_key(TAILSCALE_AUTH_KEY)
}

/// How often Docker probes the gateway, and how long it waits (nanoseconds, as the Engine API
/// counts them): the first start installs packages unless the image has them.
const HEALTH_INTERVAL_NS: i64 = 5_000_000_000;
const HEALTH_START_PERIOD_NS: i64 = 600_000_000_000;

/// The Engine API's create body of a container (`POST /containers/create?name=<name>`), as
/// deploy sends it: `provider::docker` deserializes exactly this, and `render` prints it.
pub fn create_body(spec: &ContainerSpec) -> Value {
    let mounts: Vec<Value> = spec
        .mounts
        .iter()
        .map(|m| match m {
            Mount::Volume { name, target } => {
                json!({ "Type": "volume", "Source": name, "Target": target })
            }
            Mount::Tmpfs { target } => json!({ "Type": "tmpfs", "Target": target }),
        })
        .collect();
    let network_mode = match &spec.net {
        Net::Bridge(n) => n.clone(),
        Net::Container(c) => format!("container:{c}"),
    };
    let mut host = json!({
        "NetworkMode": network_mode,
        "Mounts": mounts,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "ReadonlyRootfs": spec.read_only_root,
        "Privileged": false,
        "RestartPolicy": { "Name": "unless-stopped" },
    });
    let mut body = json!({
        "Image": spec.image,
        "User": spec.user,
        "Cmd": spec.cmd,
        "Env": spec.env,
        "Labels": spec.labels,
    });
    if let Some(port) = spec.publish {
        let key = format!("{GATEWAY_PORT}/tcp");
        host["PortBindings"] =
            json!({ &key: [{ "HostIp": "127.0.0.1", "HostPort": port.to_string() }] });
        body["ExposedPorts"] = json!({ key: {} });
    }
    if let Some(h) = &spec.hostname {
        body["Hostname"] = json!(h);
    }
    if let Some(e) = &spec.entrypoint {
        body["Entrypoint"] = json!(e);
    }
    if let Some(test) = &spec.health {
        body["Healthcheck"] = json!({
            "Test": test,
            "Interval": HEALTH_INTERVAL_NS,
            "Timeout": HEALTH_INTERVAL_NS,
            "Retries": 3,
            "StartPeriod": HEALTH_START_PERIOD_NS,
        });
    }
    body["HostConfig"] = host;
    body
}

/// The Engine API's create body of the stack's bridge network. Containers on it cannot reach
/// each other (`enable_icc=false`): agents are not each other's clients.
pub fn network_body(config: &Config) -> Value {
    json!({
        "Name": network_name(config),
        "Driver": "bridge",
        "Labels": stack_labels(config),
        "Options": { "com.docker.network.bridge.enable_icc": "false" },
    })
}

/// The port a rendered agent without a sidecar shows: deploy picks a free one on 127.0.0.1
/// (and keeps it across redeploys, on the data volume's label).
pub const RENDER_PORT: u16 = 0;

/// The files copied into a container, for reading: text as is, anything else as base64.
fn files_doc(files: &[File]) -> Vec<Value> {
    files
        .iter()
        .map(|f| {
            let mut v = json!({
                "path": f.path,
                "mode": format!("{:04o}", f.mode),
                "owner": format!("{}:{}", f.uid, f.gid),
            });
            if f.dir {
                v["type"] = json!("directory");
            } else {
                match std::str::from_utf8(&f.content) {
                    Ok(text) => v["content"] = json!(text),
                    Err(_) => {
                        v["content"] =
                            json!(base64::engine::general_purpose::STANDARD.encode(&f.content));
                        v["encoding"] = json!("base64");
                    }
                }
            }
            v
        })
        .collect()
}

/// One container as `render` shows it: its name, the create body, the files copied in.
fn container_doc(spec: &ContainerSpec) -> Value {
    json!({
        "name": spec.name,
        "create": create_body(spec),
        "files": files_doc(&spec.files),
    })
}

/// What deploy creates for one agent, as YAML: its volumes and containers (the Engine API's
/// create bodies and the files copied in before the first start). With `Masked`, the secrets
/// and the gateway token are masks and the config hashes are keyed by no token. Never a
/// cloud-init document: a Docker agent has none.
pub fn agent_document(
    config: &Config,
    d: &DockerSettings,
    agent: &Agent,
    values: &Values,
    key_id: &str,
) -> String {
    let a = agent_containers(config, d, agent, values, key_id, Some(RENDER_PORT));
    let volumes: Vec<Value> = a
        .volumes
        .iter()
        .map(|(name, role)| json!({ "Name": name, "Labels": volume_labels(config, agent, role) }))
        .collect();
    // The sidecar first: the OpenClaw container joins its network namespace.
    let containers: Vec<Value> = a
        .sidecar
        .iter()
        .chain(std::iter::once(&a.openclaw))
        .map(container_doc)
        .collect();
    let mut doc = json!({
        "agent": agent.name,
        "volumes": volumes,
        "containers": containers,
    });
    if a.sidecar.is_none() {
        doc["published"] = json!(format!(
            "the gateway on 127.0.0.1:<port> (HostPort {RENDER_PORT}: deploy picks a free port and keeps it)"
        ));
    }
    format!(
        "# agent-army: what `deploy` creates on the Docker engine for agent `{}` (Engine API bodies)\n---\n{}",
        agent.name,
        super::yaml::to_yaml(&doc)
    )
}

/// The stack's own document: the network and the images the agents run.
pub fn stack_document(config: &Config, d: &DockerSettings) -> String {
    let mut images = vec![d.openclaw_image.clone()];
    if has_auth_key(config) {
        images.push(d.tailscale_image.clone());
    }
    let doc = json!({ "network": network_body(config), "images": images });
    format!(
        "# agent-army: what `deploy` creates on the Docker engine for stack `{}`\n---\n{}",
        config.stack,
        super::yaml::to_yaml(&doc)
    )
}

/// Without a sidecar the browser reaches the gateway at `http://127.0.0.1:<port>` through
/// Docker's port publishing, so the gateway sees the bridge's address, not loopback, and
/// refuses the Control UI's loopback origin (`CONTROL_UI_ORIGIN_NOT_ALLOWED`) unless it is
/// listed in `gateway.controlUi.allowedOrigins`: list exactly the published origin.
fn allow_published_origin(files: &mut [(String, String, Vec<u8>)], port: u16) {
    let Some((_, _, bytes)) = files.iter_mut().find(|(k, _, _)| k == "openclaw.json") else {
        return;
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let origins = json!([format!("http://127.0.0.1:{port}")]);
    match doc["gateway"]["controlUi"].as_object_mut() {
        Some(ui) => {
            ui.insert("allowedOrigins".into(), origins);
        }
        None => doc["gateway"]["controlUi"] = json!({ "allowedOrigins": origins }),
    }
    if let Ok(mut text) = serde_json::to_string_pretty(&doc) {
        text.push('\n');
        *bytes = text.into_bytes();
    }
}

/// HMAC-SHA256 of `content` keyed by `key` (HKDF's extract step is exactly that).
fn mac(key: &str, content: &[u8]) -> String {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(key.as_bytes()), content);
    hex::encode(&prk[..16])
}

/// The parts of a container that a change is reported by, each hashed.
fn parts(spec: &ContainerSpec, key: &str) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    p.insert("image".into(), mac(key, spec.image.as_bytes()));
    let runtime = serde_json::json!({
        "user": spec.user, "entrypoint": spec.entrypoint, "cmd": spec.cmd, "env": spec.env,
        "net": spec.net, "publish": spec.publish, "mounts": spec.mounts, "health": spec.health,
        "hostname": spec.hostname, "read_only_root": spec.read_only_root,
    });
    p.insert("container".into(), mac(key, runtime.to_string().as_bytes()));
    for f in &spec.files {
        if f.dir || f.path.ends_with(&format!("/{AUTH_KEY}")) {
            continue;
        }
        let name = if f.path.ends_with(GATEWAY_ENV_KEY) {
            "env".to_string()
        } else if f.path.contains("/workspace-") {
            "workspace".to_string()
        } else {
            f.path.rsplit('/').next().unwrap_or_default().to_string()
        };
        let mut h = p.remove(&name).unwrap_or_default().into_bytes();
        h.extend_from_slice(f.path.as_bytes());
        h.push(0);
        h.extend_from_slice(format!("{:o}", f.mode).as_bytes());
        h.push(0);
        h.extend_from_slice(&f.content);
        p.insert(name, mac(key, &h));
    }
    p
}

/// Put the hashes on `spec`'s labels.
fn seal(spec: &mut ContainerSpec, key: &str) {
    let parts = parts(spec, key);
    let all = serde_json::to_string(&parts).unwrap_or_default();
    spec.labels
        .insert(LABEL_CONFIG.into(), mac(key, all.as_bytes()));
    spec.labels.insert(LABEL_PARTS.into(), all);
}

/// The parts whose hash differs between two [`LABEL_PARTS`] labels (all of them when one
/// cannot be read): the reasons a container is recreated.
pub fn changed_parts(have: Option<&str>, want: &str) -> Vec<String> {
    let parse = |s: &str| serde_json::from_str::<BTreeMap<String, String>>(s).ok();
    let (Some(have), Some(want)) = (have.and_then(parse), parse(want)) else {
        return vec!["configuration".into()];
    };
    let mut names: Vec<String> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    names.extend(have.keys().filter(|k| !want.contains_key(*k)).cloned());
    names
}

/// One agent's containers from literal project and stack files, with real values (`auth`:
/// the auth key, empty for none; a fixed token), for tests.
#[cfg(test)]
pub(crate) fn fixture(
    project: &str,
    stack: &str,
    auth: &str,
    port: Option<u16>,
) -> (Config, AgentContainers) {
    let d = tempfile::tempdir().unwrap();
    let c = crate::stack::load_from_strs(d.path(), "local", project, stack)
        .unwrap_or_else(|e| panic!("{e}"));
    let auth = crate::secrets::Secret::new(auth.to_string());
    let token = "t".repeat(48);
    let values = Values::Real {
        tailscale_auth_key: &auth,
        env: BTreeMap::new(),
        gateway_token: &token,
    };
    let crate::stack::ProviderSettings::Docker(ds) = &c.provider else {
        panic!("not a docker stack")
    };
    let a = agent_containers(&c, ds, &c.agents[0], &values, "kid", port);
    (c, a)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::secrets::Secret;
    use crate::stack::load_from_strs;

    const PROJECT: &str = "[project]\nname = \"demo\"\n\n[[agents]]\nname = \"agent-pm\"\nrole = \"PM\"\n\n[agents.env]\nTZ = \"UTC\"\n";

    fn containers(stack: &str, auth: &str, env_tz: &str) -> (Config, AgentContainers) {
        fixture(&PROJECT.replace("UTC", env_tz), stack, auth, Some(41000))
    }
    use crate::stack::ProviderSettings;

    #[test]
    fn without_an_auth_key_the_gateway_is_published_on_loopback_only() {
        let (c, a) = containers("provider = \"docker\"\n", "", "UTC");
        assert!(a.sidecar.is_none());
        assert_eq!(a.openclaw.publish, Some(41000));
        assert_eq!(a.openclaw.net, Net::Bridge(network_name(&c)));
        assert!(
            a.openclaw.cmd[0].ends_with("--bind lan"),
            "{:?}",
            a.openclaw.cmd
        );
        assert_eq!(
            a.volumes,
            vec![("demo-local-agent-pm-data".to_string(), ROLE_DATA)]
        );
        assert_eq!(a.openclaw.labels[LABEL_AGENT], "agent-pm");
        assert_eq!(a.openclaw.labels[LABEL_KEY_ID], "kid");
        // The browser's origin through the published port is allowed, and only it.
        let json = |a: &AgentContainers| {
            let f = a
                .openclaw
                .files
                .iter()
                .find(|f| f.path.ends_with("/openclaw.json"))
                .unwrap();
            serde_json::from_slice::<Value>(&f.content).unwrap()
        };
        assert_eq!(
            json(&a)["gateway"]["controlUi"]["allowedOrigins"],
            json!(["http://127.0.0.1:41000"])
        );
        let (_, ts) = containers(
            "provider = \"docker\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n",
            "tskey-auth-X",
            "UTC",
        );
        assert!(json(&ts)["gateway"]["controlUi"].is_null());
    }

    #[test]
    fn with_an_auth_key_the_sidecar_owns_the_network_and_the_key() {
        let stack = "provider = \"docker\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n";
        let (_, a) = containers(stack, "tskey-auth-X", "UTC");
        let s = a.sidecar.as_ref().expect("a sidecar");
        assert_eq!(a.openclaw.net, Net::Container(s.name.clone()));
        assert_eq!(a.openclaw.publish, None);
        assert!(a.openclaw.cmd[0].ends_with("--bind loopback"));
        assert!(s.env.contains(&"TS_HOSTNAME=local-agent-pm".to_string()));
        assert!(
            s.env
                .contains(&format!("TS_AUTHKEY=file:{TAILSCALE_STATE_DIR}/{AUTH_KEY}"))
        );
        // Only the sidecar has the key, and only as a file on its own volume.
        let has_key = |c: &ContainerSpec| {
            c.files.iter().any(|f| f.content == b"tskey-auth-X")
                || c.env.iter().any(|e| e.contains("tskey-auth-X"))
        };
        assert!(has_key(s) && !has_key(&a.openclaw));
        assert!(
            !a.openclaw.mounts.iter().any(
                |m| matches!(m, Mount::Volume { target, .. } if target == TAILSCALE_STATE_DIR)
            )
        );
        assert!(
            !serde_json::to_string(&a.openclaw.labels)
                .unwrap()
                .contains("tskey")
        );
    }

    #[test]
    fn a_changed_env_value_changes_only_the_env_part() {
        let (_, a) = containers("provider = \"docker\"\n", "", "UTC");
        let (_, b) = containers("provider = \"docker\"\n", "", "Europe/Berlin");
        assert_ne!(
            a.openclaw.labels[LABEL_CONFIG],
            b.openclaw.labels[LABEL_CONFIG]
        );
        assert_eq!(
            changed_parts(
                Some(&a.openclaw.labels[LABEL_PARTS]),
                &b.openclaw.labels[LABEL_PARTS]
            ),
            vec!["env".to_string()]
        );
        let (_, again) = containers("provider = \"docker\"\n", "", "UTC");
        assert_eq!(a.openclaw.labels, again.openclaw.labels);
        assert_eq!(changed_parts(None, "{}"), vec!["configuration".to_string()]);
    }

    fn masked(stack: &str) -> (Config, String, String) {
        let d = tempfile::tempdir().unwrap();
        let c = load_from_strs(d.path(), "local", PROJECT, stack).unwrap_or_else(|e| panic!("{e}"));
        let ProviderSettings::Docker(ds) = &c.provider else {
            panic!("not a docker stack")
        };
        let doc = agent_document(&c, ds, &c.agents[0], &Values::Masked, "");
        let stack_doc = stack_document(&c, ds);
        (c, doc, stack_doc)
    }

    const TAILNET_STACK: &str = "provider = \"docker\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n";

    #[test]
    fn render_shows_the_create_bodies_masked_and_never_cloud_init() {
        let (_, doc, stack_doc) = masked(TAILNET_STACK);
        insta::assert_snapshot!("docker_agent_pm_masked", doc);
        insta::assert_snapshot!("docker_stack", stack_doc);
        assert!(!doc.contains("#cloud-config") && !doc.contains("runcmd"));
        // The masked render knows the stack has a key: the sidecar is there, its key masked.
        assert!(doc.contains("demo-local-agent-pm-tailscale"));
        assert!(doc.contains(&format!("{TAILSCALE_STATE_DIR}/{AUTH_KEY}")));
        assert!(doc.contains(MASK));
        // Without a key: no sidecar, the gateway published on 127.0.0.1.
        let (_, plain, stack_plain) = masked("provider = \"docker\"\n");
        assert!(!plain.contains("-tailscale"), "{plain}");
        assert!(plain.contains("HostIp: \"127.0.0.1\""), "{plain}");
        assert!(!stack_plain.contains("tailscale"), "{stack_plain}");
    }

    #[test]
    fn render_with_real_values_shows_them_and_the_deployed_labels() {
        let (c, a) = containers(TAILNET_STACK, "tskey-auth-SHOWN", "UTC");
        let ProviderSettings::Docker(ds) = &c.provider else {
            panic!()
        };
        let auth = Secret::new("tskey-auth-SHOWN".to_string());
        let token = "t".repeat(48);
        let values = Values::Real {
            tailscale_auth_key: &auth,
            env: BTreeMap::new(),
            gateway_token: &token,
        };
        let doc = agent_document(&c, ds, &c.agents[0], &values, "kid");
        assert!(doc.contains("tskey-auth-SHOWN") && doc.contains(&token));
        // The labels are the ones deploy puts on (the hashes keyed by the real token).
        let want = &a.openclaw.labels[LABEL_CONFIG];
        assert!(doc.contains(want.as_str()), "{want}");
    }

    #[test]
    fn the_create_body_is_the_engine_apis() {
        let (_, a) = containers(TAILNET_STACK, "tskey-auth-X", "UTC");
        let s = a.sidecar.as_ref().unwrap();
        let b = create_body(&a.openclaw);
        assert_eq!(
            b["HostConfig"]["NetworkMode"],
            format!("container:{}", s.name)
        );
        assert_eq!(b["HostConfig"]["CapDrop"], json!(["ALL"]));
        assert_eq!(b["User"], "10001:10001");
        assert!(b.get("Hostname").is_none());
        let (_, plain) = containers("provider = \"docker\"\n", "", "UTC");
        let b = create_body(&plain.openclaw);
        assert_eq!(
            b["HostConfig"]["PortBindings"][format!("{GATEWAY_PORT}/tcp")],
            json!([{ "HostIp": "127.0.0.1", "HostPort": "41000" }])
        );
        assert_eq!(
            b["ExposedPorts"],
            json!({ format!("{GATEWAY_PORT}/tcp"): {} })
        );
    }
}

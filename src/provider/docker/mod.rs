//! Docker: a local engine, through its Engine API on a unix socket (`bollard`). Everything
//! Docker-specific stays here: the app layer deals in [`crate::render::docker`]'s specs and
//! in [`Observed`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;

use crate::render::docker::{ContainerSpec, File};
use crate::render::kubernetes::{LABEL_AGENT, LABEL_PROJECT, LABEL_STACK};
use crate::stack::Config;

/// Where the engine is when nothing names it.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// A failed call to the engine, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no Docker engine answers at {socket}: {detail}")]
    Unreachable { socket: String, detail: String },
    #[error("image `{image}` is not on this engine and cannot be pulled: {detail}")]
    NoImage { image: String, detail: String },
    #[error("Docker: {what}: {detail}")]
    Api { what: String, detail: String },
    #[error("no container {container} on this engine")]
    NoContainer { container: String },
    #[error("a {kind} named {name} is on this engine, but this stack did not make it ({owner})")]
    NotOurs {
        kind: &'static str,
        name: String,
        owner: String,
    },
    #[error("{container} did not become healthy within {secs} s ({state}){log}")]
    Unhealthy {
        container: String,
        secs: u64,
        state: String,
        log: String,
    },
}

impl DockerError {
    pub fn help(&self) -> Option<String> {
        Some(match self {
            DockerError::Unreachable { .. } => "start Docker (on Debian: `apt-get install docker.io`, then `systemctl start docker`; or `scripts/docker-setup`, which starts one for this checkout and prints its DOCKER_HOST), or set `[docker] host` / DOCKER_HOST to its socket".into(),
            DockerError::NoImage { .. } => "build the local images with `scripts/docker-setup` (no registry needed), or `docker pull` the image, or set `[docker] openclaw_image` / `tailscale_image`".into(),
            DockerError::Api { .. } => return None,
            DockerError::NotOurs { kind, name, .. } => format!("agent-army never removes or reuses what it did not make: remove or rename that {kind} (`docker {kind} rm {name}`) if you do not need it, or give this project or stack another name"),
            DockerError::NoContainer { container } if container.ends_with("-tailscale") => "the agent has no Tailscale sidecar: its stack has no `tailscale_auth_key`, or it is not deployed (`agent-army deploy`)".into(),
            DockerError::NoContainer { .. } => "the agent is not deployed: run `agent-army deploy`".into(),
            DockerError::Unhealthy { container, .. } => format!("see `docker logs {container}` (or `agent-army logs AGENT`); a deploy again picks up where this one stopped"),
        })
    }
}

fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let what = what.into();
    move |e| DockerError::Api {
        what,
        detail: e.to_string(),
    }
}

/// Who made an object, by its labels: `project p, stack s, agent a`, or `no agent-army labels`.
fn owner(labels: Option<&HashMap<String, String>>) -> String {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    match (get(LABEL_PROJECT), get(LABEL_STACK), get(LABEL_AGENT)) {
        (None, None, None) => "it has no agent-army labels".into(),
        (p, s, a) => format!(
            "its labels say project `{}`, stack `{}`, agent `{}`",
            p.unwrap_or("?"),
            s.unwrap_or("?"),
            a.unwrap_or("?")
        ),
    }
}

/// Whether `labels` name the same project, stack and agent as `want`.
fn same_owner(labels: Option<&HashMap<String, String>>, want: &BTreeMap<String, String>) -> bool {
    [LABEL_PROJECT, LABEL_STACK, LABEL_AGENT]
        .iter()
        .all(|k| labels.and_then(|l| l.get(*k)) == want.get(*k))
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A container of the stack, as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `starting`, `unhealthy` (only with a health check).
    pub health: Option<String>,
    /// The 127.0.0.1 port published for the gateway, if any.
    pub port: Option<u16>,
    /// When its process last started (running containers).
    #[serde(skip)]
    pub started_at: Option<std::time::SystemTime>,
}

impl ObservedContainer {
    pub fn agent(&self) -> &str {
        self.labels
            .get(LABEL_AGENT)
            .map(String::as_str)
            .unwrap_or("")
    }
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).map(String::as_str)
    }
}

/// Everything the engine has for the stack.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    /// (id, name)
    pub networks: Vec<(String, String)>,
    /// (name, labels)
    pub volumes: Vec<(String, BTreeMap<String, String>)>,
    /// The gateway ports recorded on any agent-army data volume of the engine, every
    /// project's and stack's: a new port is never one of them.
    pub ports_taken: std::collections::BTreeSet<u16>,
}

/// What an exec printed, and its exit code.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    pub socket: String,
}

impl Engine {
    /// Connect to `host` (`unix:///path`), else `DOCKER_HOST`, else the default socket, and
    /// agree on an API version (Debian's engine speaks an older one than bollard).
    pub async fn connect(
        host: Option<&str>,
        docker_host: Option<&str>,
    ) -> Result<Self, DockerError> {
        let socket = host
            .or(docker_host.filter(|h| !h.is_empty()))
            .unwrap_or(DEFAULT_SOCKET)
            .to_string();
        let unreachable = |detail: String| DockerError::Unreachable {
            socket: socket.clone(),
            detail,
        };
        if !socket.starts_with("unix://") {
            return Err(unreachable(
                "agent-army talks to a local engine over its unix socket only".into(),
            ));
        }
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine { docker, socket })
    }

    /// Containers (running or not), networks and volumes carrying all of `filters`
    /// (`label=value`).
    pub async fn observe(&self, filters: &[String]) -> Result<Observed, DockerError> {
        let f: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), filters.to_vec())]);
        let containers = self.docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(f.clone()),
            ..Default::default()
        }));
        let networks = self.docker.list_networks(Some(ListNetworksOptions {
            filters: Some(f.clone()),
        }));
        let volumes = self.docker.list_volumes(Some(ListVolumesOptions {
            filters: Some(f.clone()),
        }));
        let recorded = self.docker.list_volumes(Some(ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![crate::render::docker::LABEL_PORT.to_string()],
            )])),
        }));
        let (containers, networks, volumes, recorded) =
            tokio::join!(containers, networks, volumes, recorded);
        let containers = containers.map_err(api("list containers"))?;
        let mut out = Observed::default();
        for c in containers {
            let name = c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let status = c.status.unwrap_or_default();
            let health = ["healthy", "unhealthy", "health: starting"]
                .iter()
                .find(|h| status.contains(&format!("({h})")))
                .map(|h| h.trim_start_matches("health: ").to_string());
            let port = c.ports.unwrap_or_default().iter().find_map(|p| {
                (p.ip.as_deref() == Some("127.0.0.1"))
                    .then_some(p.public_port)
                    .flatten()
            });
            out.containers.push(ObservedContainer {
                id: c.id.unwrap_or_default(),
                name,
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                health,
                port,
                started_at: None,
            });
        }
        // When each running container started: a sidecar that started after its gateway
        // left the gateway in its old network namespace.
        let started = futures_util::future::join_all(
            out.containers
                .iter()
                .filter(|c| c.state == "running")
                .map(|c| async move {
                    let at = self
                        .docker
                        .inspect_container(&c.id, None)
                        .await
                        .ok()
                        .and_then(|i| i.state)
                        .and_then(|s| s.started_at)
                        .and_then(|t| humantime::parse_rfc3339_weak(&t).ok());
                    (c.id.clone(), at)
                }),
        )
        .await;
        for (id, at) in started {
            if let Some(c) = out.containers.iter_mut().find(|c| c.id == id) {
                c.started_at = at;
            }
        }
        out.containers.sort_by(|a, b| a.name.cmp(&b.name));
        for n in networks.map_err(api("list networks"))? {
            out.networks
                .push((n.id.unwrap_or_default(), n.name.unwrap_or_default()));
        }
        for v in volumes
            .map_err(api("list volumes"))?
            .volumes
            .unwrap_or_default()
        {
            out.volumes.push((v.name, v.labels.into_iter().collect()));
        }
        out.volumes.sort();
        out.ports_taken = recorded
            .map_err(api("list volumes"))?
            .volumes
            .unwrap_or_default()
            .iter()
            .filter_map(|v| {
                v.labels
                    .get(crate::render::docker::LABEL_PORT)?
                    .parse()
                    .ok()
            })
            .collect();
        Ok(out)
    }

    /// The image is on the engine, pulled if it is not.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(api(format!("inspect image {image}"))(e)),
        }
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(step) = pull.next().await {
            step.map_err(|e| DockerError::NoImage {
                image: image.to_string(),
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The stack's bridge network, created if missing. Containers on it cannot reach each
    /// other (`enable_icc=false`): agents are not each other's clients.
    pub async fn ensure_network(
        &self,
        config: &Config,
        observed: &Observed,
    ) -> Result<bool, DockerError> {
        let name = crate::render::docker::network_name(config);
        if observed.networks.iter().any(|(_, n)| *n == name) {
            return Ok(false);
        }
        self.docker
            .create_network(network_request(config)?)
            .await
            .map_err(api(format!("create network {name}")))?;
        Ok(true)
    }

    /// A named volume with `labels`, created if missing.
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) if same_owner(Some(&v.labels), labels) => return Ok(()),
            Ok(v) => {
                return Err(DockerError::NotOurs {
                    kind: "volume",
                    name: name.to_string(),
                    owner: owner(Some(&v.labels)),
                });
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(api(format!("inspect volume {name}"))(e)),
        }
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map_err(api(format!("create volume {name}")))?;
        Ok(())
    }

    /// Create the container (not started) and copy its files in. The body is
    /// [`crate::render::docker::create_body`], the one `render` prints.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let body = engine_body(spec)?;
        // One tar per parent directory of the files, extracted at `/`.
        let tar = tar_of(&spec.files).map_err(|e| DockerError::Api {
            what: format!("pack the files of {}", spec.name),
            detail: e.to_string(),
        })?;
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await;
        let created = match created {
            Ok(c) => c,
            // The name is taken by a container the stack's labels did not find.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let labels = self
                    .docker
                    .inspect_container(&spec.name, None)
                    .await
                    .ok()
                    .and_then(|c| c.config)
                    .and_then(|c| c.labels);
                return Err(DockerError::NotOurs {
                    kind: "container",
                    name: spec.name.clone(),
                    owner: owner(labels.as_ref()),
                });
            }
            Err(e) => return Err(api(format!("create container {}", spec.name))(e)),
        };
        if !spec.files.is_empty() {
            let copied = self
                .docker
                .upload_to_container(
                    &created.id,
                    Some(UploadToContainerOptions {
                        path: "/".into(),
                        ..Default::default()
                    }),
                    bollard::body_full(tar.into()),
                )
                .await
                .map_err(api(format!("copy the configuration into {}", spec.name)));
            // A container without its files must not stay: its labels say it is complete.
            if let Err(e) = copied {
                let _ = self.remove(&created.id).await;
                return Err(e);
            }
        }
        Ok(created.id)
    }

    /// The container or volume called `name` that the stack's labels did not find, if the
    /// engine has one: someone else's.
    pub async fn not_ours(
        &self,
        kind: &'static str,
        name: &str,
    ) -> Result<Option<DockerError>, DockerError> {
        let labels = if kind == "volume" {
            match self.docker.inspect_volume(name).await {
                Ok(v) => Some(v.labels),
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(api(format!("inspect volume {name}"))(e)),
            }
        } else {
            match self.docker.inspect_container(name, None).await {
                Ok(c) => c.config.and_then(|c| c.labels),
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(api(format!("inspect container {name}"))(e)),
            }
        };
        Ok(Some(DockerError::NotOurs {
            kind,
            name: name.to_string(),
            owner: owner(labels.as_ref()),
        }))
    }

    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        self.docker
            .start_container(name, None)
            .await
            .map_err(api(format!("start {name}")))
    }

    /// Stop and remove a container; one that is gone already is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let _ = self
            .docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(10),
                    ..Default::default()
                }),
            )
            .await;
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Err(e) if !not_found(&e) => Err(api(format!("remove container {name}"))(e)),
            _ => Ok(()),
        }
    }

    pub async fn remove_network(&self, id: &str) -> Result<(), DockerError> {
        match self.docker.remove_network(id).await {
            Err(e) if !not_found(&e) => Err(api(format!("remove network {id}"))(e)),
            _ => Ok(()),
        }
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Err(e) if !not_found(&e) => Err(api(format!("remove volume {name}"))(e)),
            _ => Ok(()),
        }
    }

    /// Wait until the container's health check passes, or fail with its last output.
    pub async fn wait_healthy(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Duration, DockerError> {
        let start = Instant::now();
        loop {
            let c = self
                .docker
                .inspect_container(name, None)
                .await
                .map_err(api(format!("inspect {name}")))?;
            let state = c.state.unwrap_or_default();
            let health = state
                .health
                .as_ref()
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .unwrap_or_default();
            if health == "healthy" {
                return Ok(start.elapsed());
            }
            let running = state.running.unwrap_or(false);
            if !running && state.restarting != Some(true) || start.elapsed() > timeout {
                let log = self.tail(name, 5).await;
                return Err(DockerError::Unhealthy {
                    container: name.to_string(),
                    secs: start.elapsed().as_secs(),
                    state: if running {
                        format!("running, health {health}")
                    } else {
                        format!("exited {}", state.exit_code.unwrap_or_default())
                    },
                    log: if log.is_empty() {
                        String::new()
                    } else {
                        format!("; last lines:\n{log}")
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The last `n` lines of a container's output.
    pub async fn tail(&self, name: &str, n: u32) -> String {
        let mut out = String::new();
        let mut s = self.logs(name, n, false, None, false);
        while let Some(Ok(chunk)) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk));
        }
        out.trim_end().to_string()
    }

    /// A container's output: the last `tail` lines, then new ones with `follow`.
    pub fn logs(
        &self,
        name: &str,
        tail: u32,
        follow: bool,
        since_unix: Option<i64>,
        timestamps: bool,
    ) -> impl futures_util::Stream<Item = Result<Vec<u8>, DockerError>> + use<> {
        use futures_util::StreamExt;
        let container = name.to_string();
        self.docker
            .logs(
                name,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    follow,
                    tail: tail.to_string(),
                    since: since_unix
                        .and_then(|s| i32::try_from(s).ok())
                        .unwrap_or_default(),
                    timestamps,
                    ..Default::default()
                }),
            )
            .map(move |r| {
                r.map(|o| o.into_bytes().to_vec()).map_err(|e| {
                    if not_found(&e) {
                        DockerError::NoContainer {
                            container: container.clone(),
                        }
                    } else {
                        api(format!("logs of {container}"))(e)
                    }
                })
            })
    }

    /// Run `cmd` in a running container as `user` and collect its output.
    pub async fn exec(
        &self,
        name: &str,
        user: Option<&str>,
        cmd: &[&str],
    ) -> Result<ExecOutput, DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let what = format!("exec in {name}");
        let e = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    user: user.map(str::to_string),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(api(what.clone()))?;
        let mut out = ExecOutput {
            code: -1,
            stdout: String::new(),
            stderr: String::new(),
        };
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&e.id, None)
            .await
            .map_err(api(what.clone()))?
        {
            while let Some(Ok(chunk)) = output.next().await {
                match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    other => out
                        .stdout
                        .push_str(&String::from_utf8_lossy(&other.into_bytes())),
                }
            }
        }
        let inspect = self.docker.inspect_exec(&e.id).await.map_err(api(what))?;
        out.code = inspect.exit_code.unwrap_or(-1);
        Ok(out)
    }
}

/// The files as one tar, paths relative to `/`, with their owners and modes.
fn tar_of(files: &[File]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_uid(u64::from(f.uid));
        h.set_gid(u64::from(f.gid));
        h.set_mode(f.mode);
        h.set_mtime(0);
        let path = f.path.trim_start_matches('/');
        if f.dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(f.content.len() as u64);
            b.append_data(&mut h, path, f.content.as_slice())?;
        }
    }
    b.into_inner()
}

/// Labels as `label=value` filters of one agent.
pub fn agent_filter(project: &str, stack: &str, agent: &str) -> Vec<String> {
    vec![
        format!("{LABEL_PROJECT}={project}"),
        format!("{LABEL_STACK}={stack}"),
        format!("{LABEL_AGENT}={agent}"),
    ]
}

/// A container's create body for bollard: [`crate::render::docker::create_body`] (the Engine API's JSON)
/// read into bollard's model, so deploy sends what `render` shows.
pub fn engine_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, DockerError> {
    serde_json::from_value(crate::render::docker::create_body(spec)).map_err(|e| DockerError::Api {
        what: format!("build the create body of {}", spec.name),
        detail: e.to_string(),
    })
}

/// The stack network's create request: [`crate::render::docker::network_body`] read into bollard's model.
pub fn network_request(config: &Config) -> Result<NetworkCreateRequest, DockerError> {
    serde_json::from_value(crate::render::docker::network_body(config)).map_err(|e| {
        DockerError::Api {
            what: "build the network's create request".into(),
            detail: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::render::Values;
    use crate::secrets::Secret;
    use crate::stack::{ProviderSettings, load_from_strs};

    /// What `render` prints is what deploy sends: bollard reads the body without losing a
    /// field, for both shapes (with and without a sidecar).
    #[test]
    fn bollard_reads_the_rendered_create_body_whole() {
        let project =
            "[project]\nname = \"demo\"\n\n[[agents]]\nname = \"agent-pm\"\nrole = \"PM\"\n";
        for (stack, key) in [
            ("provider = \"docker\"\n", ""),
            (
                "provider = \"docker\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n",
                "tskey-auth-X",
            ),
        ] {
            let d = tempfile::tempdir().unwrap();
            let c =
                load_from_strs(d.path(), "local", project, stack).unwrap_or_else(|e| panic!("{e}"));
            let ProviderSettings::Docker(ds) = &c.provider else {
                panic!("not a docker stack")
            };
            let auth = Secret::new(key.to_string());
            let token = "t".repeat(48);
            let values = Values::Real {
                tailscale_auth_key: &auth,
                env: BTreeMap::new(),
                gateway_token: &token,
            };
            let a = crate::render::docker::agent_containers(
                &c,
                ds,
                &c.agents[0],
                &values,
                "kid",
                Some(41000),
            );
            for spec in a.sidecar.iter().chain(std::iter::once(&a.openclaw)) {
                let body = engine_body(spec).unwrap();
                assert_eq!(
                    serde_json::to_value(&body).unwrap(),
                    crate::render::docker::create_body(spec),
                    "{}",
                    spec.name
                );
            }
            let net = network_request(&c).unwrap();
            assert_eq!(
                serde_json::to_value(&net).unwrap(),
                crate::render::docker::network_body(&c)
            );
        }
    }
}

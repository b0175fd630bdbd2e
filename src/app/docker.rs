//! Docker stacks: `plan`/`deploy` as a comparison of the wanted containers with what the
//! engine has (found by label, so a lost or absent state adopts them), `destroy` by label,
//! and the views `outputs` and `status` show. No server state is kept: the containers' labels
//! carry the hashes a redeploy compares, and the data volume carries the gateway's port.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Session, fleet};
use crate::env::vars;
use crate::error::Result;
use crate::provider::docker::{Engine, Observed, ObservedContainer};
use crate::render::Values;
use crate::render::docker::{
    self as spec, AgentContainers, ContainerSpec, LABEL_CONFIG, LABEL_PARTS, LABEL_PORT,
    LABEL_ROLE, ROLE_DATA, ROLE_OPENCLAW, ROLE_SIDECAR,
};
use crate::secrets::Secret;
use crate::stack::model::DockerSettings;
use crate::stack::{Config, ProviderSettings};

/// The stack's Docker settings, when it is a Docker stack.
pub fn settings(config: &Config) -> Option<&DockerSettings> {
    match &config.provider {
        ProviderSettings::Docker(d) => Some(d),
        _ => None,
    }
}

/// The engine of the stack: `[docker] host`, else `DOCKER_HOST`, else the default socket.
pub async fn connect(session: &Session) -> Result<Engine> {
    let host = settings(&session.config).and_then(|d| d.host.clone());
    let docker_host = session.env.get(vars::DOCKER_HOST);
    Ok(Engine::connect(host.as_deref(), docker_host).await?)
}

/// What happens to one container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    Create,
    /// Remove and create again, for these changed parts (`env`, `openclaw.json`, ...).
    Recreate {
        parts: Vec<String>,
    },
    /// Unchanged but not running.
    Start,
    Keep,
}

/// One agent's changes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentPlan {
    pub agent: String,
    pub openclaw: Change,
    /// `None`: the stack has no sidecar for it.
    pub sidecar: Option<Change>,
}

/// Everything `deploy` would do.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub create_network: bool,
    pub agents: Vec<AgentPlan>,
    /// Containers of the stack that no wanted container is (removed agents, a sidecar the
    /// stack no longer has): removed. Their volumes stay.
    pub remove: Vec<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        !self.create_network
            && self.remove.is_empty()
            && self.agents.iter().all(|a| {
                a.openclaw == Change::Keep && a.sidecar.as_ref().is_none_or(|s| *s == Change::Keep)
            })
    }
}

fn change(want: &ContainerSpec, have: Option<&ObservedContainer>) -> Change {
    match have {
        None => Change::Create,
        Some(h) if h.label(LABEL_CONFIG) != want.labels.get(LABEL_CONFIG).map(String::as_str) => {
            Change::Recreate {
                parts: spec::changed_parts(
                    h.label(LABEL_PARTS),
                    want.labels
                        .get(LABEL_PARTS)
                        .map(String::as_str)
                        .unwrap_or(""),
                ),
            }
        }
        // A gateway that failed its health check (a deploy that stopped there): made again.
        Some(h) if h.health.as_deref() == Some("unhealthy") => Change::Recreate {
            parts: vec!["unhealthy".into()],
        },
        Some(h) if h.state != "running" => Change::Start,
        Some(_) => Change::Keep,
    }
}

/// Compare the wanted containers with the engine's (pure).
pub fn diff(config: &Config, want: &[AgentContainers], observed: &Observed) -> Plan {
    let by_name: BTreeMap<&str, &ObservedContainer> = observed
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut wanted = Vec::new();
    let mut plan = Plan {
        create_network: !observed
            .networks
            .iter()
            .any(|(_, n)| *n == spec::network_name(config)),
        ..Default::default()
    };
    for a in want {
        let sidecar = a.sidecar.as_ref().map(|s| {
            wanted.push(s.name.as_str());
            change(s, by_name.get(s.name.as_str()).copied())
        });
        wanted.push(a.openclaw.name.as_str());
        let mut openclaw = change(&a.openclaw, by_name.get(a.openclaw.name.as_str()).copied());
        // A sidecar that Docker restarted after the gateway started (a crash, an engine
        // restart) left the gateway in its old network namespace: off the tailnet.
        let found = Found {
            openclaw: by_name.get(a.openclaw.name.as_str()).copied(),
            sidecar: a
                .sidecar
                .as_ref()
                .and_then(|s| by_name.get(s.name.as_str()).copied()),
        };
        if stale_namespace(found) && openclaw == Change::Keep {
            openclaw = Change::Recreate {
                parts: vec!["sidecar restarted".into()],
            };
        }
        // A new or restarted sidecar is a new network namespace: the gateway must join it.
        if matches!(
            sidecar,
            Some(Change::Create | Change::Recreate { .. } | Change::Start)
        ) && openclaw != Change::Create
        {
            openclaw = Change::Recreate {
                parts: vec!["sidecar".into()],
            };
        }
        plan.agents.push(AgentPlan {
            agent: a.agent.clone(),
            openclaw,
            sidecar,
        });
    }
    plan.remove = observed
        .containers
        .iter()
        .filter(|c| !wanted.contains(&c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    plan
}

/// Refuse a plan that would make a container or volume whose name the engine already gives
/// to something the stack's labels did not find (another project or stack whose names run
/// together, or something made by hand): before anything is changed or asked.
pub async fn refuse_foreign(
    engine: &Engine,
    want: &[AgentContainers],
    plan: &Plan,
    observed: &Observed,
) -> Result<()> {
    let ours = |name: &str| observed.volumes.iter().any(|(n, _)| n == name);
    let mut asks = Vec::new();
    for (a, p) in want.iter().zip(&plan.agents) {
        if p.openclaw == Change::Create {
            asks.push(("container", a.openclaw.name.as_str()));
        }
        if let (Some(s), Some(Change::Create)) = (&a.sidecar, &p.sidecar) {
            asks.push(("container", s.name.as_str()));
        }
        for (v, _) in &a.volumes {
            if !ours(v) {
                asks.push(("volume", v.as_str()));
            }
        }
    }
    let found =
        futures_util::future::join_all(asks.iter().map(|(kind, name)| engine.not_ours(kind, name)))
            .await;
    for f in found {
        if let Some(e) = f? {
            return Err(e.into());
        }
    }
    Ok(())
}

/// `--replace AGENT`: that agent's containers are made again (its volumes, and so its data,
/// Tailscale identity and port, stay), whatever changed.
pub fn replace(plan: &mut Plan, agents: &[String]) {
    let again = |c: &mut Change| {
        if *c != Change::Create {
            *c = Change::Recreate {
                parts: vec!["--replace".into()],
            };
        }
    };
    for a in plan.agents.iter_mut().filter(|a| agents.contains(&a.agent)) {
        again(&mut a.openclaw);
        if let Some(s) = a.sidecar.as_mut() {
            again(s);
        }
    }
}

/// A free port on 127.0.0.1 (the kernel's pick), none of `taken`.
fn free_port(taken: &std::collections::BTreeSet<u16>) -> Result<u16> {
    let io = |e| crate::error::Error::Io {
        path: "127.0.0.1:0".into(),
        source: e,
    };
    // Held until all are picked, so that the kernel gives each try another port.
    let mut held = Vec::new();
    for _ in 0..32 {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io)?;
        let port = l.local_addr().map_err(io)?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
        held.push(l);
    }
    Err(crate::error::Error::Input(
        "no free port on 127.0.0.1 that no agent-army volume records".into(),
    ))
}

/// The gateway port of an agent without a sidecar: the one its container is published on,
/// else the one its data volume records, else a free one that no other agent has (`taken`:
/// the ports recorded on the engine and those picked in this run).
fn port_for(
    observed: &Observed,
    openclaw: &str,
    data_volume: &str,
    taken: &std::collections::BTreeSet<u16>,
) -> Result<u16> {
    if let Some(p) = observed
        .containers
        .iter()
        .find(|c| c.name == openclaw)
        .and_then(|c| c.port)
    {
        return Ok(p);
    }
    if let Some(p) = observed
        .volumes
        .iter()
        .find(|(n, _)| n == data_volume)
        .and_then(|(_, l)| l.get(LABEL_PORT))
        .and_then(|p| p.parse().ok())
    {
        return Ok(p);
    }
    free_port(taken)
}

/// Every agent's containers with real values (secrets resolved, the agents' gateway keys).
pub fn desired(
    session: &Session,
    keys: &BTreeMap<String, crate::token::GatewayKey>,
    observed: &Observed,
) -> Result<Vec<AgentContainers>> {
    let config = &session.config;
    let Some(d) = settings(config) else {
        return Ok(Vec::new());
    };
    let none = Secret::new(String::new());
    let mut taken = observed.ports_taken.clone();
    let mut out = Vec::new();
    for a in &config.agents {
        let s = fleet::resolve_secrets(config, a, &session.keyring, &session.env)?;
        let key = keys.get(&a.name);
        let token = key.map(|k| k.token()).unwrap_or_default();
        let key_id = key.map(|k| k.key_id()).unwrap_or_default();
        let values = Values::Real {
            tailscale_auth_key: s.auth_key.as_ref().unwrap_or(&none),
            env: s.env.clone(),
            gateway_token: &token,
        };
        let name = spec::container_name(config, a);
        let port = if s.auth_key.is_some() {
            None
        } else {
            let port = port_for(observed, &name, &format!("{name}-data"), &taken)?;
            taken.insert(port);
            Some(port)
        };
        out.push(spec::agent_containers(config, d, a, &values, &key_id, port));
    }
    Ok(out)
}

/// What `deploy` did to one agent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    pub agent: String,
    pub changed: Vec<String>,
    /// Seconds from the container's start to a healthy gateway (changed agents only).
    pub healthy_after_s: Option<f64>,
    pub error: Option<String>,
}

/// Carry out `plan`: images, network, then every agent at once (volumes, sidecar, OpenClaw),
/// each waited for until its gateway is healthy.
pub async fn apply(
    engine: &Engine,
    config: &Config,
    want: &[AgentContainers],
    plan: &Plan,
    observed: &Observed,
    health_timeout: Duration,
) -> Result<Vec<Done>> {
    let mut images: Vec<&str> = want
        .iter()
        .flat_map(|a| std::iter::once(&a.openclaw).chain(a.sidecar.as_ref()))
        .map(|s| s.image.as_str())
        .collect();
    images.sort();
    images.dedup();
    for i in images {
        engine.ensure_image(i).await?;
    }
    for name in &plan.remove {
        engine.remove(name).await?;
    }
    engine.ensure_network(config, observed).await?;
    let jobs = want.iter().zip(&plan.agents).map(|(a, p)| async move {
        let r = apply_agent(engine, config, a, p, health_timeout).await;
        let mut changed = Vec::new();
        if let Some(s) = &p.sidecar
            && *s != Change::Keep
        {
            changed.push(format!("{}: {}", ROLE_SIDECAR, describe(s)));
        }
        if p.openclaw != Change::Keep {
            changed.push(format!("{}: {}", ROLE_OPENCLAW, describe(&p.openclaw)));
        }
        match r {
            Ok(t) => Done {
                agent: a.agent.clone(),
                changed,
                healthy_after_s: t.map(|d| (d.as_millis() as f64) / 1000.0),
                error: None,
            },
            Err(e) => Done {
                agent: a.agent.clone(),
                changed,
                healthy_after_s: None,
                error: Some(e.render()),
            },
        }
    });
    Ok(futures_util::future::join_all(jobs).await)
}

async fn apply_agent(
    engine: &Engine,
    config: &Config,
    a: &AgentContainers,
    p: &AgentPlan,
    health_timeout: Duration,
) -> Result<Option<Duration>> {
    let agent = config
        .agent(&a.agent)
        .ok_or_else(|| crate::error::Error::Input(format!("no agent {}", a.agent)))?;
    for (name, role) in &a.volumes {
        let mut labels = spec::volume_labels(config, agent, role);
        if *role == ROLE_DATA
            && let Some(port) = a.openclaw.publish
        {
            labels.insert(LABEL_PORT.into(), port.to_string());
        }
        engine.ensure_volume(name, &labels).await?;
    }
    if let (Some(s), Some(c)) = (&a.sidecar, &p.sidecar) {
        converge(engine, s, c).await?;
    }
    converge(engine, &a.openclaw, &p.openclaw).await?;
    if p.openclaw == Change::Keep {
        return Ok(None);
    }
    Ok(Some(
        engine
            .wait_healthy(&a.openclaw.name, health_timeout)
            .await?,
    ))
}

async fn converge(engine: &Engine, s: &ContainerSpec, c: &Change) -> Result<()> {
    match c {
        Change::Keep => {}
        Change::Start => engine.start(&s.name).await?,
        // A name the stack's labels did not find is someone else's: create refuses it.
        Change::Create => {
            engine.create(s).await?;
            engine.start(&s.name).await?;
        }
        Change::Recreate { .. } => {
            engine.remove(&s.name).await?;
            engine.create(s).await?;
            engine.start(&s.name).await?;
        }
    }
    Ok(())
}

/// `create`, `recreate (env, openclaw.json)`, `start`, `no change`.
pub fn describe(c: &Change) -> String {
    match c {
        Change::Create => "create".into(),
        Change::Recreate { parts } if parts.iter().any(|p| p == "--replace") => {
            "recreate (--replace)".into()
        }
        Change::Recreate { parts } if parts.iter().any(|p| p == "unhealthy") => {
            "recreate (its health check fails)".into()
        }
        Change::Recreate { parts } if parts.iter().any(|p| p == "sidecar restarted") => {
            "recreate (its sidecar restarted after it)".into()
        }
        Change::Recreate { parts } => format!("recreate ({} changed)", parts.join(", ")),
        Change::Start => "start".into(),
        Change::Keep => "no change".into(),
    }
}

/// What `destroy` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Destroyed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes_removed: Vec<String>,
    pub volumes_kept: Vec<String>,
}

/// Remove the stack's containers (sidecars last: the gateways are in their namespaces) and
/// network; its volumes only with `purge`.
pub async fn destroy(engine: &Engine, observed: &Observed, purge: bool) -> Result<Destroyed> {
    let mut out = Destroyed::default();
    let mut containers: Vec<&ObservedContainer> = observed.containers.iter().collect();
    containers.sort_by_key(|c| c.label(LABEL_ROLE) == Some(ROLE_SIDECAR));
    for c in containers {
        engine.remove(&c.name).await?;
        out.containers.push(c.name.clone());
    }
    for (id, name) in &observed.networks {
        engine.remove_network(id).await?;
        out.networks.push(name.clone());
    }
    for (name, _) in &observed.volumes {
        if purge {
            engine.remove_volume(name).await?;
            out.volumes_removed.push(name.clone());
        } else {
            out.volumes_kept.push(name.clone());
        }
    }
    Ok(out)
}

/// One agent's containers, as the engine has them.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub openclaw: Option<&'a ObservedContainer>,
    pub sidecar: Option<&'a ObservedContainer>,
}

/// The containers of `agent` among those observed.
pub fn found<'a>(
    config: &Config,
    agent: &crate::stack::Agent,
    observed: &'a Observed,
) -> Found<'a> {
    let find = |n: String| observed.containers.iter().find(|c| c.name == n);
    Found {
        openclaw: find(spec::container_name(config, agent)),
        sidecar: find(spec::sidecar_name(config, agent)),
    }
}

/// Whether the gateway runs in a network namespace its sidecar has left: both run, and the
/// sidecar's process started after the gateway's (pure).
pub fn stale_namespace(f: Found) -> bool {
    match (f.openclaw, f.sidecar) {
        (Some(o), Some(s)) if o.state == "running" && s.state == "running" => {
            matches!((o.started_at, s.started_at), (Some(o), Some(s)) if s > o)
        }
        _ => false,
    }
}

/// `tailscale ARGS` in a running sidecar, by exec (its socket is the one the sidecar's
/// tailscaled listens on).
pub async fn sidecar_exec(
    engine: &Engine,
    sidecar: &str,
    args: &[&str],
) -> Result<crate::provider::docker::ExecOutput> {
    /// `tailscale netcheck` takes a few seconds; a sidecar that hangs must not hang `status`.
    const DEADLINE: Duration = Duration::from_secs(60);
    let socket = format!("--socket={}", crate::render::kubernetes::TAILSCALE_SOCKET);
    let mut cmd = vec!["tailscale", socket.as_str()];
    cmd.extend_from_slice(args);
    match tokio::time::timeout(DEADLINE, engine.exec(sidecar, None, &cmd)).await {
        Ok(out) => Ok(out?),
        Err(_) => Err(crate::provider::docker::DockerError::Api {
            what: format!("exec `tailscale {}` in {sidecar}", args.join(" ")),
            detail: format!("no answer within {} s", DEADLINE.as_secs()),
        }
        .into()),
    }
}

/// One agent as `outputs` and `open` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentView {
    pub agent: String,
    pub container: String,
    /// `running (healthy)`, `exited`, `missing`.
    pub openclaw: String,
    pub sidecar: Option<String>,
    /// The gateway's URL (token in the fragment, masked unless asked).
    pub url: Option<String>,
}

fn state_of(c: Option<&ObservedContainer>) -> String {
    match c {
        None => "missing".into(),
        Some(c) => match &c.health {
            Some(h) => format!("{} ({h})", c.state),
            None => c.state.clone(),
        },
    }
}

/// Each agent's containers and URL.
pub async fn views(
    session: &Session,
    engine: &Engine,
    show_secrets: bool,
) -> Result<Vec<AgentView>> {
    let config = &session.config;
    let observed = engine.observe(&spec::stack_filters(config)).await?;
    let keys = if show_secrets {
        let state = session.read_state()?;
        fleet::load_keys(
            &state,
            config,
            &session.keyring,
            &session.env,
            config.agents.iter().map(|a| a.name.clone()),
        )?
    } else {
        BTreeMap::new()
    };
    let mut out = Vec::new();
    for a in &config.agents {
        let f = found(config, a, &observed);
        let token = keys.get(&a.name).map(|k| k.token());
        let url = match (f.sidecar, f.openclaw.and_then(|c| c.port)) {
            (Some(_), _) => Some(fleet::gateway_url(&a.fqdn, token.as_deref())),
            (None, Some(port)) => Some(format!(
                "http://127.0.0.1:{port}/#token={}",
                token.as_deref().unwrap_or(crate::secrets::MASK)
            )),
            (None, None) => None,
        };
        out.push(AgentView {
            agent: a.name.clone(),
            container: spec::container_name(config, a),
            openclaw: state_of(f.openclaw),
            sidecar: f.sidecar.map(|c| state_of(Some(c))),
            url,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str =
        "[project]\nname = \"demo\"\n\n[[agents]]\nname = \"agent-pm\"\nrole = \"PM\"\n";

    /// The wanted containers of one agent, with (`auth`) or without a sidecar.
    fn wanted(auth: &str) -> (Config, Vec<AgentContainers>) {
        let port = auth.is_empty().then_some(41000);
        let (c, a) = crate::render::docker::fixture(PROJECT, "provider = \"docker\"\n", auth, port);
        (c, vec![a])
    }

    /// What the engine would list for `spec`, in `state` and `health`.
    fn seen(spec: &ContainerSpec, state: &str, health: Option<&str>) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{}", spec.name),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: state.into(),
            health: health.map(str::to_string),
            port: spec.publish,
            started_at: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(100)),
        }
    }

    fn observed(config: &Config, containers: Vec<ObservedContainer>) -> Observed {
        Observed {
            containers,
            networks: vec![("n1".into(), spec::network_name(config))],
            ..Default::default()
        }
    }

    #[test]
    fn the_plan_compares_labels_and_states() {
        let (c, want) = wanted("");
        let oc = &want[0].openclaw;
        // Nothing there: the network and the container are made.
        let plan = diff(&c, &want, &Observed::default());
        assert!(plan.create_network);
        assert_eq!(plan.agents[0].openclaw, Change::Create);
        assert_eq!(plan.agents[0].sidecar, None);
        // Running and healthy with the same hash: nothing to do.
        let plan = diff(
            &c,
            &want,
            &observed(&c, vec![seen(oc, "running", Some("healthy"))]),
        );
        assert!(plan.is_noop(), "{plan:?}");
        // Stopped: started. Failed its health check: made again.
        let plan = diff(&c, &want, &observed(&c, vec![seen(oc, "exited", None)]));
        assert_eq!(plan.agents[0].openclaw, Change::Start);
        let plan = diff(
            &c,
            &want,
            &observed(&c, vec![seen(oc, "running", Some("unhealthy"))]),
        );
        assert_eq!(
            plan.agents[0].openclaw,
            Change::Recreate {
                parts: vec!["unhealthy".into()]
            }
        );
        // Another hash: made again; a container the stack no longer wants: removed.
        let mut old = seen(oc, "running", Some("healthy"));
        old.labels.insert(LABEL_CONFIG.into(), "other".into());
        let mut gone = seen(oc, "running", None);
        gone.name = "demo-local-agent-old".into();
        let plan = diff(&c, &want, &observed(&c, vec![old, gone]));
        assert!(matches!(plan.agents[0].openclaw, Change::Recreate { .. }));
        assert_eq!(plan.remove, vec!["demo-local-agent-old".to_string()]);
    }

    #[test]
    fn a_new_port_is_none_recorded_on_the_engine() {
        let taken: std::collections::BTreeSet<u16> =
            (1..=u16::MAX).filter(|p| p % 2 == 0).collect();
        for _ in 0..8 {
            let p = free_port(&taken).unwrap();
            assert!(!taken.contains(&p), "{p}");
        }
        // A port the data volume records wins over a free one.
        let (c, _) = wanted("");
        let mut o = observed(&c, Vec::new());
        o.volumes.push((
            "demo-local-agent-pm-data".into(),
            BTreeMap::from([(LABEL_PORT.to_string(), "41234".to_string())]),
        ));
        assert_eq!(
            port_for(
                &o,
                "demo-local-agent-pm",
                "demo-local-agent-pm-data",
                &taken
            )
            .unwrap(),
            41234
        );
    }

    #[test]
    fn a_new_or_restarted_sidecar_takes_the_gateway_with_it() {
        let (c, want) = wanted("tskey-auth-x");
        let (oc, sc) = (&want[0].openclaw, want[0].sidecar.as_ref().unwrap());
        let running = |sidecar_state: &str| {
            observed(
                &c,
                vec![
                    seen(oc, "running", Some("healthy")),
                    seen(sc, sidecar_state, None),
                ],
            )
        };
        assert!(diff(&c, &want, &running("running")).is_noop());
        // A stopped sidecar starts in a new network namespace: the gateway must join it.
        let plan = diff(&c, &want, &running("exited"));
        assert_eq!(plan.agents[0].sidecar, Some(Change::Start));
        assert_eq!(
            plan.agents[0].openclaw,
            Change::Recreate {
                parts: vec!["sidecar".into()]
            }
        );
        // A sidecar that Docker restarted after the gateway: the gateway is made again.
        let mut restarted = running("running");
        restarted.containers[1].started_at =
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(200));
        assert!(stale_namespace(found(&c, &c.agents[0], &restarted)));
        let plan = diff(&c, &want, &restarted);
        assert_eq!(plan.agents[0].sidecar, Some(Change::Keep));
        assert_eq!(
            describe(&plan.agents[0].openclaw),
            "recreate (its sidecar restarted after it)"
        );
        // --replace: both made again, whatever changed.
        let mut plan = diff(&c, &want, &running("running"));
        replace(&mut plan, &["agent-pm".into()]);
        let again = Change::Recreate {
            parts: vec!["--replace".into()],
        };
        assert_eq!(plan.agents[0].openclaw, again);
        assert_eq!(plan.agents[0].sidecar, Some(again.clone()));
        assert_eq!(describe(&again), "recreate (--replace)");
    }
}

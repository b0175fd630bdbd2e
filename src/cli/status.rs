//! `status`: each agent's server in the cloud, its device on the tailnet, and whether its
//! gateway answers. Exits 1 when any agent is unhealthy, so CI can gate on it.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::Ctx;
use super::ssh::{self, Client, Overrides, SshCommand, Target};
use crate::app::health::{
    AgentReport, BootView, Gateway, Look, Netcheck, judge, judge_boot, unreachable,
};
use crate::boot::Boot;
use crate::env::vars;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::provider::Provider;
use crate::stack::{Config, ProviderKind};
use crate::state::LocalStore;
use crate::tailnet::{self, Local};

const EXAMPLES: &str = "Examples:
  agent-army status                      cloud, tailnet and gateway of every agent
  agent-army -s prod status --output json
  agent-army status --netcheck           also run `tailscale netcheck` on every agent over ssh
  agent-army status --no-boot            skip reading each agent's first-boot results over ssh
  agent-army status || alert             exit status 1 when any agent is unhealthy

An agent is healthy when its server runs, its device is online on the tailnet under its own
name, its first boot did not fail, and its gateway answers on https://<stack>-<agent>.<tailnet>/.
The first-boot results are read over ssh from agents that are online on the tailnet.";

/// Default `tailscale netcheck` run time, plus the ssh connection.
const NETCHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Reading the first-boot results: the ssh connection, then one `cat`.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct StatusArgs {
    /// Also run `tailscale netcheck` on every agent (over ssh, in parallel): UDP, NAT type,
    /// nearest DERP region, and the risk of relayed connections
    #[arg(long)]
    pub netcheck: bool,
    /// Do not read each agent's first-boot step results over ssh
    #[arg(long)]
    pub no_boot: bool,
    /// Remote user for the ssh reads (first boot, --netcheck)
    #[arg(long, default_value = "ubuntu")]
    pub user: String,
    /// How long to wait for each gateway to answer
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The local Tailscale client, as reported.
#[derive(Debug, Serialize)]
struct LocalView {
    available: bool,
    backend_state: Option<String>,
    version: Option<String>,
    tailnet: Option<String>,
    magic_dns_suffix: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Doc<'a> {
    project: &'a str,
    stack: &'a str,
    provider: ProviderKind,
    tailnet: LocalView,
    agents: Vec<AgentReport>,
    healthy: bool,
    unhealthy: usize,
    /// False for a Docker stack without a tailnet: its gateways are on 127.0.0.1.
    #[serde(skip)]
    tailnet_used: bool,
}

fn probe_url(template: &str, fqdn: &str) -> String {
    template.replace("{host}", fqdn)
}

/// The innermost cause of an HTTP error, which is the readable part.
fn root_cause(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(timeout));
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if e.is_connect() && !text.contains("connect") {
        format!("cannot connect: {text}")
    } else {
        text
    }
}

/// Ask the gateway an authenticated question (`GET /control-ui-config.json` needs the token):
/// 200 is a working gateway; anything else is judged in [`gateway_finding`].
async fn probe(
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    timeout: Duration,
) -> Gateway {
    let authenticated = token.is_some();
    let mut req = http.get(&url);
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        // `tailscale serve` answers 502 when nothing listens behind it.
        Ok(r) if r.status() == reqwest::StatusCode::BAD_GATEWAY => Gateway {
            url,
            answers: false,
            status: Some(502),
            error: Some(
                "`tailscale serve` answers 502: the gateway behind it is not running".into(),
            ),
            authenticated,
        },
        Ok(r) => Gateway {
            url,
            answers: true,
            status: Some(r.status().as_u16()),
            error: None,
            authenticated,
        },
        Err(e) => Gateway {
            url,
            answers: false,
            status: None,
            error: Some(root_cause(&e, timeout)),
            authenticated,
        },
    }
}

/// A remote command's outcome: its stdout, or why there is none (timeout, ssh failure, or the
/// command's own exit status with its last line of stderr).
async fn remote_output(
    cmd: SshCommand,
    timeout: Duration,
) -> std::result::Result<(i32, String), String> {
    let mut c = tokio::process::Command::from(cmd.std_command());
    c.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, c.output()).await {
        Err(_) => return Err(format!("no answer within {}s", timeout.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", cmd.program.display())),
        Ok(Ok(o)) => o,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    // 255: ssh itself failed (connection, authentication, host key).
    if code == 255 || out.status.code().is_none() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("# Warning"))
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(format!(
            "`{}` exited with {}{}",
            cmd.display(),
            out.status
                .code()
                .map_or("a signal".into(), |c| c.to_string()),
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ));
    }
    Ok((code, stdout))
}

async fn netcheck(cmd: SshCommand) -> Netcheck {
    let fail = Netcheck::unread;
    let display = cmd.display();
    let stdout = match remote_output(cmd, NETCHECK_TIMEOUT).await {
        Err(e) => return fail(e),
        Ok((code, out)) if code != 0 && !out.contains('{') => {
            return fail(format!("`{display}` exited with {code}"));
        }
        Ok((_, out)) => out,
    };
    match tailnet::parse_netcheck(&stdout) {
        Ok(r) => Netcheck {
            summary: Some(tailnet::summarize(&r)),
            error: None,
        },
        Err(e) => fail(e),
    }
}

/// The VM's first-boot results (`agent-army-boot`, installed by the user data).
async fn boot_results(cmd: SshCommand) -> BootView {
    let display = cmd.display();
    match remote_output(cmd, BOOT_TIMEOUT).await {
        Err(e) => BootView::unread(e),
        Ok((0, out)) => {
            let boot = Boot::parse(&out);
            BootView {
                summary: Some(boot.summary()),
                boot: Some(boot),
                error: None,
            }
        }
        Ok((3, _)) => {
            let boot = Boot::parse("");
            BootView {
                summary: Some(boot.summary()),
                boot: Some(boot),
                error: None,
            }
        }
        Ok((127, _)) => BootView::unread(format!(
            "`{}` is not on the VM (deployed by an older agent-army?)",
            crate::boot::REPORTER_NAME
        )),
        Ok((code, _)) => BootView::unread(format!("`{display}` exited with {code}")),
    }
}

fn local_view(local: &Local) -> LocalView {
    match local {
        Local::NotInstalled => LocalView {
            available: false,
            backend_state: None,
            version: None,
            tailnet: None,
            magic_dns_suffix: None,
            error: Some("`tailscale` is not installed here (not on PATH)".into()),
        },
        Local::NotRunning { detail, .. } => LocalView {
            available: false,
            backend_state: None,
            version: None,
            tailnet: None,
            magic_dns_suffix: None,
            error: Some(format!("Tailscale is not running here: {detail}")),
        },
        Local::Running { status, .. } => LocalView {
            available: true,
            backend_state: Some(status.backend_state.clone()),
            version: Some(status.version.clone()),
            tailnet: status.current_tailnet.as_ref().map(|t| t.name.clone()),
            magic_dns_suffix: Some(status.suffix().to_string()),
            error: None,
        },
    }
}

pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    match config.provider.kind() {
        ProviderKind::Kubernetes => return run_kubernetes(ctx, &session, args).await,
        ProviderKind::Docker => return run_docker(ctx, &session, args).await,
        _ => {}
    }
    let state = session.read_state()?;

    // The cloud and the gateways first: the probes also bring up the paths to the agents, so
    // the tailnet status read afterwards shows how traffic really flows.
    let observe = async {
        if state.is_empty() {
            return Ok(None);
        }
        let cloud = crate::app::cloud::connect(&session).await?;
        cloud
            .observe()
            .await
            .map(Some)
            .map_err(|source| Error::Provider {
                provider: config.provider.kind().to_string(),
                source,
            })
    };
    let template = ctx
        .env
        .get(vars::GATEWAY_PROBE_URL)
        .unwrap_or("https://{host}/control-ui-config.json")
        .to_string();
    // The agents' tokens, when this machine can decrypt the gateway keys: the probe then
    // proves the token works, not only that something answers.
    let tokens: BTreeMap<String, String> = {
        crate::app::fleet::load_keys(
            &state,
            config,
            &session.keyring,
            &ctx.env,
            config.agents.iter().map(|a| a.name.clone()),
        )
        .map(|keys| keys.into_iter().map(|(k, v)| (k, v.token())).collect())
        .unwrap_or_default()
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("agent-army/", env!("CARGO_PKG_VERSION")))
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Input(format!("cannot start an HTTP client: {e}")))?;
    let probes = async {
        let mut set = tokio::task::JoinSet::new();
        for a in &config.agents {
            if state
                .agents
                .get(&a.name)
                .and_then(|s| s.server_id.as_ref())
                .is_none()
            {
                continue;
            }
            let (name, url, http, t) = (
                a.name.clone(),
                probe_url(&template, &a.fqdn),
                http.clone(),
                args.timeout,
            );
            let token = tokens.get(&a.name).cloned();
            set.spawn(async move { (name, probe(http, url, token, t).await) });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok((name, g)) = r {
                out.insert(name, g);
            }
        }
        out
    };
    let (observed, gateways) = tokio::join!(observe, probes);
    let observed = observed?;
    let local = tailnet::local(&ctx.env).await;
    let status = local.status();

    let mut agents = Vec::new();
    for a in &config.agents {
        let (server_id, cloud) = crate::app::fleet::server_word(&state, observed.as_ref(), &a.name);
        let view = status.map(|s| tailnet::classify(s, &a.hostname, &a.fqdn));
        let finding = diagnose(config, a, view.as_ref(), status, &cloud);
        let gateway = gateways.get(&a.name).cloned();
        let (healthy, problems) = judge(
            a,
            &cloud,
            view.as_ref(),
            finding,
            gateway.as_ref(),
            &Look::vm(&a.name),
        );
        agents.push(AgentReport {
            agent: a.name.clone(),
            hostname: a.fqdn.clone(),
            server_id,
            cloud,
            tailnet: view,
            gateway,
            boot: None,
            netcheck: None,
            sidecar: None,
            healthy,
            problems,
        });
    }

    if args.netcheck || !args.no_boot {
        let remote = Remote::open(ctx, config, &local)?;
        if !args.no_boot {
            let direct = remote.overrides.host.is_some();
            run_boots(&remote, &args.user, direct, &mut agents).await;
            for r in agents.iter_mut() {
                let name = r.agent.clone();
                judge_boot(&name, r);
            }
        }
        if args.netcheck {
            run_netchecks(&remote, &args.user, &mut agents).await;
        }
    }

    Ok(report(ctx, config, &local, agents))
}

/// What this machine's tailnet says about an agent, given what its server or pod is.
fn diagnose(
    config: &Config,
    a: &crate::stack::Agent,
    view: Option<&tailnet::AgentTailnet>,
    status: Option<&tailnet::Status>,
    cloud: &str,
) -> Option<tailnet::Finding> {
    let (v, s) = (view?, status?);
    tailnet::diagnose(
        v,
        &a.hostname,
        &tailnet::Context {
            cloud: Some(cloud),
            stack_tailnet: &config.tailnet,
            local_tailnet: s.suffix(),
            agent: &a.name,
        },
    )
}

/// Print the report (a table, or JSON) and say whether every agent is healthy.
fn report(ctx: &Ctx, config: &Config, local: &Local, agents: Vec<AgentReport>) -> ExitStatus {
    let unhealthy = agents.iter().filter(|a| !a.healthy).count();
    let doc = Doc {
        project: &config.project,
        stack: &config.stack,
        provider: config.provider.kind(),
        tailnet: local_view(local),
        tailnet_used: config.provider.kind() != ProviderKind::Docker
            || config
                .secrets
                .contains_key(crate::stack::model::TAILSCALE_AUTH_KEY)
            || agents.iter().any(|a| a.sidecar.is_some()),
        agents,
        healthy: unhealthy == 0,
        unhealthy,
    };
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        anstream::print!("{}", super::style::status_table(&text(config, &doc)));
    }
    if unhealthy == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

/// The agents' tokens, when this machine can decrypt the gateway keys: the probe then proves
/// the token works, not only that something answers.
fn tokens(
    ctx: &Ctx,
    session: &crate::app::Session,
    state: &crate::state::State,
) -> BTreeMap<String, String> {
    let config = &session.config;
    crate::app::fleet::load_keys(
        state,
        config,
        &session.keyring,
        &ctx.env,
        config.agents.iter().map(|a| a.name.clone()),
    )
    .map(|keys| keys.into_iter().map(|(k, v)| (k, v.token())).collect())
    .unwrap_or_default()
}

fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("agent-army/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Input(format!("cannot start an HTTP client: {e}")))
}

/// A Kubernetes stack: each agent's pod (from the API server) instead of a server, its
/// sidecar's own `tailscale status --json` and, with `--netcheck`, `tailscale netcheck`, both
/// by exec in the sidecar (no ssh), and the gateway probe as on the VMs. The tailnet columns
/// come from this machine's Tailscale when it runs, as on the VMs; otherwise from the
/// sidecar's view of itself.
async fn run_kubernetes(
    ctx: &Ctx,
    session: &crate::app::Session,
    args: StatusArgs,
) -> Result<ExitStatus> {
    use crate::app::health::{SidecarHints, netcheck_reading, sidecar_status};
    use crate::app::kubernetes as kube;
    let config = &session.config;
    let namespace = config.provider.place().to_string();
    let state = session.read_state()?;
    let (client, _) = kube::connect(session)?;
    let template = ctx
        .env
        .get(vars::GATEWAY_PROBE_URL)
        .unwrap_or("https://{host}/control-ui-config.json")
        .to_string();
    let tokens = tokens(ctx, session, &state);
    let http = http_client(args.timeout)?;
    let pods = kube::pods(session, &client).await?;
    let running = |name: &str| pods.get(name).is_some_and(|p| p.word == "running");

    // Per running pod, at once: the gateway probe, the sidecar's status, its netcheck.
    let reads = config.agents.iter().filter(|a| running(&a.name)).map(|a| {
        let (client, http) = (&client, http.clone());
        let pod = pods
            .get(&a.name)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let url = probe_url(&template, &a.fqdn);
        let token = tokens.get(&a.name).cloned();
        let netcheck = args.netcheck;
        async move {
            let gateway = probe(http, url, token, args.timeout);
            let status = kube::sidecar_exec(session, client, &pod, &["status", "--json"]);
            let check = async {
                if !netcheck {
                    return None;
                }
                Some(
                    match kube::sidecar_exec(session, client, &pod, &["netcheck", "--format=json"])
                        .await
                    {
                        Err(e) => Netcheck::unread(e.to_string()),
                        Ok(out) => netcheck_reading(
                            &String::from_utf8_lossy(&out.stdout),
                            &String::from_utf8_lossy(&out.stderr),
                            out.message.as_deref(),
                        ),
                    },
                )
            };
            let (gateway, status, check) = tokio::join!(gateway, status, check);
            let status = match status {
                Err(e) => Err(e.to_string()),
                Ok(out) => sidecar_status(
                    out.exit_code.map(i64::from),
                    &String::from_utf8_lossy(&out.stdout),
                    &String::from_utf8_lossy(&out.stderr),
                    out.message.as_deref(),
                ),
            };
            (a.name.clone(), (gateway, status, check))
        }
    });
    let mut read: BTreeMap<String, _> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect();
    let local = tailnet::local(&ctx.env).await;
    let local_status = local.status();

    let mut agents = Vec::new();
    for a in &config.agents {
        let pod = pods.get(&a.name);
        let word = pod.map_or("not deployed".to_string(), |p| p.word.clone());
        let (gateway, sidecar_status, netcheck) = match read.remove(&a.name) {
            Some((g, s, n)) => (Some(g), Some(s), n),
            None => (None, None, None),
        };
        let mut problems = Vec::new();
        if let Some(p) = pod.filter(|p| p.word != "running") {
            problems.push(tailnet::Finding {
                unhealthy: true,
                message: format!("pod {} is {}", p.name, p.word),
                help: format!(
                    "see `kubectl -n {namespace} describe pod {0}` and `kubectl -n {namespace} logs {0} --all-containers`",
                    p.name
                ),
            });
        }
        let pod_name = pod.map(|p| p.name.clone()).unwrap_or_default();
        agents.push(sidecar_report(
            config,
            a,
            Reading {
                word,
                server_id: pod.map(|p| p.name.clone()),
                local_status,
                sidecar_status,
                problems,
                gateway,
                netcheck,
            },
            &SidecarHints {
                logs: format!("kubectl -n {namespace} logs {pod_name} -c tailscale"),
                state: format!(
                    "delete the pod's Tailscale state (volume claim `tailscale-{pod_name}`)"
                ),
            },
        ));
    }
    Ok(report(ctx, config, &local, agents))
}

/// What was read about an agent whose Tailscale runs in a sidecar (a pod's, a container's).
struct Reading<'a> {
    /// The pod's or the OpenClaw container's state: `running`, `exited`, `not deployed`.
    word: String,
    server_id: Option<String>,
    local_status: Option<&'a tailnet::Status>,
    /// The sidecar's own `tailscale status --json`, when it was asked.
    sidecar_status: Option<std::result::Result<tailnet::Status, String>>,
    /// What the pod or the containers say, root causes first.
    problems: Vec<tailnet::Finding>,
    gateway: Option<Gateway>,
    netcheck: Option<Netcheck>,
}

/// Judge an agent behind a sidecar. The tailnet columns come from this machine's Tailscale
/// when it runs, as on the VMs, otherwise from the sidecar's view of itself. The pod's, the
/// containers' or the sidecar's problem, when there is one, is the root cause `judge` puts
/// first; it then adds only what that does not explain.
fn sidecar_report(
    config: &Config,
    a: &crate::stack::Agent,
    r: Reading,
    hints: &crate::app::health::SidecarHints,
) -> AgentReport {
    use crate::app::health::{SidecarView, sidecar_finding, sidecar_tailnet};
    let Reading {
        word,
        server_id,
        local_status,
        sidecar_status,
        mut problems,
        gateway,
        netcheck,
    } = r;
    let sidecar = sidecar_status.as_ref().map(|s| match s {
        Ok(st) => SidecarView::from_status(st),
        Err(e) => SidecarView::unread(e.clone()),
    });
    let view = match (local_status, &sidecar_status) {
        (Some(s), _) => Some(tailnet::classify(s, &a.hostname, &a.fqdn)),
        (None, Some(Ok(st))) => Some(sidecar_tailnet(st, &a.hostname, &a.fqdn)),
        _ => None,
    };
    if let Some(v) = &sidecar
        && let Some(f) = sidecar_finding(v, hints)
    {
        problems.push(f);
    }
    let lead = match problems.iter().position(|p| p.unhealthy) {
        Some(i) => Some(problems.remove(i)),
        None => diagnose(config, a, view.as_ref(), local_status, &word),
    };
    let (healthy, mut judged) = judge(
        a,
        &word,
        view.as_ref(),
        lead,
        gateway.as_ref(),
        &Look::container(&a.name),
    );
    judged.extend(problems);
    AgentReport {
        agent: a.name.clone(),
        hostname: a.fqdn.clone(),
        server_id,
        cloud: word,
        tailnet: view,
        gateway,
        boot: None,
        netcheck,
        sidecar,
        healthy: healthy && !judged.iter().any(|p| p.unhealthy),
        problems: judged,
    }
}

/// A Docker stack: each agent's containers (from the engine) instead of a server. An agent
/// with a Tailscale sidecar is judged as on Kubernetes: the sidecar's own `tailscale status
/// --json` and, with `--netcheck`, `tailscale netcheck`, both by `docker exec`, and the
/// gateway probed over the tailnet. An agent without one (no auth key) is reached on the
/// 127.0.0.1 port its gateway is published on, and no tailnet is asked about it.
async fn run_docker(
    ctx: &Ctx,
    session: &crate::app::Session,
    args: StatusArgs,
) -> Result<ExitStatus> {
    use crate::app::docker as local;
    use crate::app::health::{SidecarHints, judge_local, netcheck_reading, sidecar_status};
    let config = &session.config;
    let engine = local::connect(session).await?;
    let observed = engine
        .observe(&crate::render::docker::stack_filters(config))
        .await?;
    let state = session.read_state()?;
    let tokens = tokens(ctx, session, &state);
    let http = http_client(args.timeout)?;
    let template = ctx
        .env
        .get(vars::GATEWAY_PROBE_URL)
        .unwrap_or("https://{host}/control-ui-config.json")
        .to_string();
    let running = |c: Option<&crate::provider::docker::ObservedContainer>| {
        c.is_some_and(|c| c.state == "running")
    };

    // Per agent whose gateway runs, at once: the probe, the sidecar's status, its netcheck.
    let reads = config.agents.iter().filter_map(|a| {
        let f = local::found(config, a, &observed);
        let openclaw = f.openclaw.filter(|c| c.state == "running")?;
        let url = match (f.sidecar, openclaw.port) {
            (Some(_), _) => probe_url(&template, &a.fqdn),
            (None, Some(port)) => format!("http://127.0.0.1:{port}/control-ui-config.json"),
            (None, None) => return None,
        };
        let sidecar = f
            .sidecar
            .filter(|c| c.state == "running")
            .map(|c| c.name.clone());
        let (engine, http, token) = (&engine, http.clone(), tokens.get(&a.name).cloned());
        let netcheck = args.netcheck;
        Some(async move {
            let gateway = probe(http, url, token, args.timeout);
            let status = async {
                let sidecar = sidecar.as_deref()?;
                Some(
                    match local::sidecar_exec(engine, sidecar, &["status", "--json"]).await {
                        Err(e) => Err(e.render()),
                        Ok(out) => sidecar_status(Some(out.code), &out.stdout, &out.stderr, None),
                    },
                )
            };
            let check = async {
                let sidecar = sidecar.as_deref().filter(|_| netcheck)?;
                Some(
                    match local::sidecar_exec(engine, sidecar, &["netcheck", "--format=json"]).await
                    {
                        Err(e) => Netcheck::unread(e.render()),
                        Ok(out) => netcheck_reading(&out.stdout, &out.stderr, None),
                    },
                )
            };
            let (gateway, status, check) = tokio::join!(gateway, status, check);
            (a.name.clone(), (gateway, status, check))
        })
    });
    let mut read: BTreeMap<String, _> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect();
    let local_tailnet = tailnet::local(&ctx.env).await;
    let local_status = local_tailnet.status();

    let mut agents = Vec::new();
    for a in &config.agents {
        let f = local::found(config, a, &observed);
        let look = Look::container(&a.name);
        let word = match f.openclaw {
            None if f.sidecar.is_none() => "not deployed".to_string(),
            None => "missing".to_string(),
            Some(c) => c.state.clone(),
        };
        let (gateway, sidecar_status, netcheck) = match read.remove(&a.name) {
            Some((g, s, n)) => (Some(g), s, n),
            None => (None, None, None),
        };
        let mut problems = Vec::new();
        let container = |what: &str, c: &crate::provider::docker::ObservedContainer, logs: &str| {
            tailnet::Finding {
                unhealthy: true,
                message: format!("{what} {} is {}", c.name, c.state),
                help: format!("see `{logs}`; `agent-army deploy` starts it again"),
            }
        };
        match f.openclaw {
            None if f.sidecar.is_none() => {}
            None => problems.push(tailnet::Finding {
                unhealthy: true,
                message: format!(
                    "its OpenClaw container {} is missing",
                    crate::render::docker::container_name(config, a)
                ),
                help: "run `agent-army deploy`".into(),
            }),
            Some(c) if c.state != "running" => {
                problems.push(container("its OpenClaw container", c, &look.logs))
            }
            Some(_) => {}
        }
        if local::stale_namespace(f) {
            problems.push(tailnet::Finding {
                unhealthy: true,
                message: "its Tailscale sidecar restarted after the gateway: the gateway is left in the sidecar's old network namespace, off the tailnet".into(),
                help: "run `agent-army deploy`: it makes the OpenClaw container again, in the sidecar's namespace".into(),
            });
        }
        if let Some(c) = f.sidecar.filter(|c| c.state != "running") {
            problems.push(container(
                "its Tailscale sidecar",
                c,
                &format!("agent-army logs {} --tailscale", a.name),
            ));
        }
        let server_id = f.openclaw.or(f.sidecar).map(|c| c.name.clone());
        if f.sidecar.is_some() {
            agents.push(sidecar_report(
                config,
                a,
                Reading {
                    word,
                    server_id,
                    local_status,
                    sidecar_status,
                    problems,
                    gateway,
                    netcheck,
                },
                &SidecarHints {
                    logs: format!("agent-army logs {} --tailscale", a.name),
                    state: format!(
                        "remove its Tailscale state (`agent-army destroy`, then `docker volume rm {}`)",
                        crate::render::docker::state_volume_name(config, a)
                    ),
                },
            ));
            continue;
        }
        let lead = problems
            .iter()
            .position(|p| p.unhealthy)
            .map(|i| problems.remove(i));
        let (healthy, mut judged) = if word == "not deployed" {
            judge(a, &word, None, None, None, &look)
        } else {
            judge_local(a, running(f.openclaw), lead, gateway.as_ref(), &look)
        };
        judged.extend(problems);
        agents.push(AgentReport {
            agent: a.name.clone(),
            hostname: a.fqdn.clone(),
            server_id,
            cloud: word,
            tailnet: None,
            gateway,
            boot: None,
            netcheck,
            sidecar: None,
            healthy: healthy && !judged.iter().any(|p| p.unhealthy),
            problems: judged,
        });
    }
    Ok(report(ctx, config, &local_tailnet, agents))
}

/// How `status` reaches the agents over ssh: the same client, overrides and known_hosts as
/// `agent-army ssh`, never prompting.
struct Remote {
    client: Client,
    overrides: Overrides,
    known_hosts: std::path::PathBuf,
}

impl Remote {
    fn open(ctx: &Ctx, config: &Config, local: &Local) -> Result<Remote> {
        let client = match local {
            Local::Running { bin, .. } => Client::Tailscale(bin.clone()),
            // Without a local tailnet, OpenSSH may still reach the agents (overrides, routes).
            _ => match ssh::pick_client(&ctx.env)? {
                Client::Tailscale(_) => match tailnet::find_program(&ctx.env, "ssh") {
                    Some(p) => Client::OpenSsh(p),
                    None => return Err(Error::NoSshClient),
                },
                c => c,
            },
        };
        let overrides = Overrides::from_env(&ctx.env)?;
        let base = LocalStore::base_dir(&config.root, &ctx.env);
        let known_hosts = tailnet::known_hosts_path(&base, &config.stack);
        if matches!(client, Client::OpenSsh(_)) {
            ssh::prepare_known_hosts(&known_hosts)?;
        }
        Ok(Remote {
            client,
            overrides,
            known_hosts,
        })
    }

    fn command(&self, user: &str, fqdn: &str, args: &[&str]) -> SshCommand {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        ssh::build(
            &self.client,
            &Target {
                user,
                fqdn,
                known_hosts: &self.known_hosts,
                overrides: &self.overrides,
                remote: ssh::remote_command(&args),
                batch: true,
            },
        )
    }
}

/// `tailscale netcheck --format=json` on every reachable agent, in parallel.
async fn run_netchecks(remote: &Remote, user: &str, agents: &mut [AgentReport]) {
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in agents.iter_mut().enumerate() {
        if let Some(reason) = unreachable(r) {
            r.netcheck = Some(Netcheck::unread(reason));
            continue;
        }
        let cmd = remote.command(
            user,
            &r.hostname,
            &["tailscale", "netcheck", "--format=json"],
        );
        set.spawn(async move { (i, netcheck(cmd).await) });
    }
    while let Some(done) = set.join_next().await {
        if let Ok((i, n)) = done {
            agents[i].netcheck = Some(n);
        }
    }
}

/// Every reachable agent's first-boot results, in parallel. Without a local tailnet only when
/// an ssh host override says where the agents are (MagicDNS names would not resolve).
async fn run_boots(remote: &Remote, user: &str, direct: bool, agents: &mut [AgentReport]) {
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in agents.iter_mut().enumerate() {
        let skip = unreachable(r).or_else(|| {
            (r.tailnet.is_none() && !direct)
                .then(|| "not read: this machine is not on the tailnet".to_string())
        });
        if let Some(reason) = skip {
            r.boot = Some(BootView::unread(reason));
            continue;
        }
        let cmd = remote.command(user, &r.hostname, &[crate::boot::REPORTER_NAME]);
        set.spawn(async move { (i, boot_results(cmd).await) });
    }
    while let Some(done) = set.join_next().await {
        if let Ok((i, b)) = done {
            agents[i].boot = Some(b);
        }
    }
}

fn text(config: &Config, doc: &Doc) -> String {
    let mut out = format!(
        "Stack `{}` of project `{}` on {} {}",
        config.stack,
        config.project,
        config.provider.kind(),
        config.provider.place(),
    );
    if doc.tailnet_used {
        out.push_str(&format!(", tailnet {}", config.tailnet));
    }
    out.push('\n');
    match &doc.tailnet {
        _ if !doc.tailnet_used => {
            out.push_str("No tailnet: each gateway is published on 127.0.0.1 of this machine\n")
        }
        LocalView { error: Some(e), .. } => {
            out.push_str(&format!(
                "error: {e}: the agents' tailnet state is unknown\n  help: {}\n",
                if e.contains("not installed") {
                    "install Tailscale (https://tailscale.com/download) and run `sudo tailscale up`"
                } else {
                    "start it with `sudo tailscale up` (macOS, Windows: open the Tailscale app and connect)"
                }
            ));
        }
        v => out.push_str(&format!(
            "This machine: Tailscale {} ({}), tailnet {}\n",
            v.version.as_deref().unwrap_or("?"),
            v.backend_state.as_deref().unwrap_or("?"),
            v.magic_dns_suffix.as_deref().unwrap_or("?"),
        )),
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = doc
        .agents
        .iter()
        .map(|a| {
            // The device the agent lives on: the live one when a stale one holds the name.
            let dev = a.tailnet.as_ref().and_then(|t| {
                t.device
                    .as_ref()
                    .filter(|d| d.online)
                    .or_else(|| t.others.iter().find(|o| o.online))
                    .or(t.device.as_ref())
            });
            vec![
                a.agent.clone(),
                a.cloud.clone(),
                match &a.tailnet {
                    Some(t) => t.presence.to_string(),
                    None if !doc.tailnet_used => "not used".into(),
                    None => "unknown".into(),
                },
                dev.map_or("-".into(), |d| {
                    if d.ips.is_empty() {
                        "-".into()
                    } else {
                        d.ips.join(" ")
                    }
                }),
                dev.map_or("-".into(), |d| d.link.to_string()),
                dev.and_then(|d| d.last_seen.clone())
                    .unwrap_or_else(|| "-".into()),
                match &a.gateway {
                    None => "-".into(),
                    Some(g) if g.answers => {
                        format!("answers ({})", g.status.unwrap_or_default())
                    }
                    Some(_) => "no answer".into(),
                },
                match a.boot.as_ref().and_then(|b| b.boot.as_ref()) {
                    Some(b) if b.state == "failed" => "failed".into(),
                    Some(b) => b.state.clone(),
                    None => "-".into(),
                },
                if a.healthy { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    out.push_str(&crate::output::columns(
        &[
            "AGENT",
            "CLOUD",
            "TAILNET",
            "ADDRESSES",
            "PATH",
            "LAST SEEN",
            "GATEWAY",
            "BOOT",
            "HEALTHY",
        ],
        &rows,
    ));
    let mut notes = String::new();
    for a in &doc.agents {
        for p in &a.problems {
            let tag = if p.unhealthy { "" } else { "note: " };
            notes.push_str(&format!(
                "{tag}{}: {}\n  help: {}\n",
                a.agent, p.message, p.help
            ));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    if doc.agents.iter().any(|a| a.netcheck.is_some()) {
        out.push('\n');
        let rows: Vec<Vec<String>> = doc
            .agents
            .iter()
            .filter_map(|a| {
                let n = a.netcheck.as_ref()?;
                Some(match (&n.summary, &n.error) {
                    (Some(s), _) => vec![
                        a.agent.clone(),
                        if s.udp { "yes" } else { "no" }.into(),
                        s.global_v4.clone().unwrap_or_else(|| "-".into()),
                        match s.hard_nat {
                            Some(true) => "hard".into(),
                            Some(false) => "easy".into(),
                            None => "unknown".into(),
                        },
                        match (s.preferred_derp, s.preferred_derp_latency_ms) {
                            (Some(r), Some(ms)) => format!("region {r} ({ms} ms)"),
                            (Some(r), None) => format!("region {r}"),
                            _ => "-".into(),
                        },
                        if s.relay_risk {
                            format!("yes: {}", s.reasons.join("; "))
                        } else {
                            "no".into()
                        },
                    ],
                    (None, e) => vec![
                        a.agent.clone(),
                        "?".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        e.clone().unwrap_or_default(),
                    ],
                })
            })
            .collect();
        out.push_str(&crate::output::columns(
            &[
                "NETCHECK",
                "UDP",
                "PUBLIC IPV4",
                "NAT",
                "PREFERRED DERP",
                "RELAY RISK",
            ],
            &rows,
        ));
    }
    out.push('\n');
    let total = doc.agents.len();
    if doc.unhealthy == 0 {
        out.push_str(&format!("All {total} agents are healthy.\n"));
    } else {
        out.push_str(&format!("{} of {total} agents unhealthy.\n", doc.unhealthy));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_urls() {
        assert_eq!(
            probe_url("https://{host}/", "a.ts.net"),
            "https://a.ts.net/"
        );
        assert_eq!(
            probe_url("http://127.0.0.1:9/{host}", "a.ts.net"),
            "http://127.0.0.1:9/a.ts.net"
        );
    }
}

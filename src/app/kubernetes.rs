//! Kubernetes stacks: `plan` compares the rendered objects with what the API server holds
//! under the stack's labels, `deploy` server-side applies what changed and deletes what the
//! project no longer has, `destroy` deletes what the labels find. No state of servers is kept:
//! the API server holds the objects, their labels find them again.

use std::time::Duration;

use serde_json::Value;

use super::{Session, fleet};
use crate::env::vars;
use crate::error::{Error, Result};
use crate::provider::kubernetes::diff::{self, Action, Change, KubePlan, Live};
use crate::provider::kubernetes::{self as kube, Request, client::KubeClient, kubeconfig};
use crate::render::{self, Values, kubernetes as manifests};
use crate::stack::model::KubernetesSettings;

/// What one request did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    pub method: &'static str,
    pub path: String,
    /// `Kind/name`.
    pub what: String,
    pub action: Action,
}

/// The stack's objects with real values: its own first, then each agent's. The gateway keys
/// come from state (missing ones are created under the stack's lock), as `render
/// --show-secrets` does.
pub fn objects(session: &Session, lock_wait: Duration) -> Result<Vec<Value>> {
    let config = &session.config;
    let Some(k) = manifests::settings(config) else {
        return Ok(Vec::new());
    };
    let secrets = config
        .agents
        .iter()
        .map(|a| fleet::resolve_secrets(config, a, &session.keyring, &session.env))
        .collect::<Result<Vec<_>>>()?;
    let keys = session.gateway_keys("deploy", lock_wait)?;
    let placeholder = fleet::minted_placeholder();
    let mut out = manifests::stack_objects(config, k);
    for (a, s) in config.agents.iter().zip(&secrets) {
        let token = keys.get(&a.name).map(|k| k.token()).unwrap_or_default();
        let values = Values::Real {
            tailscale_auth_key: s.auth_key.as_ref().unwrap_or(&placeholder),
            env: s.env.clone(),
            gateway_token: &token,
        };
        let objs = render::kubernetes::agent_objects(config, k, a, &values);
        render::kubernetes::check_limits(a, &objs).map_err(Error::Input)?;
        out.extend(objs);
    }
    Ok(out)
}

/// The API server of the stack's context, from the kubeconfig.
pub fn connect(session: &Session) -> Result<(KubeClient, String)> {
    let k = manifests::settings(&session.config)
        .ok_or_else(|| Error::Input("not a Kubernetes stack".into()))?;
    let target = kubeconfig::resolve(&session.env, k.context.as_deref())?;
    let timeout = session
        .env
        .get(vars::REQUEST_TIMEOUT_MS)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60));
    let client = KubeClient::new(&target, timeout)?;
    Ok((client, target.source))
}

/// The plan of a Kubernetes stack: its rendered objects (stamped with their hashes) against
/// what the API server holds under the stack's labels.
pub struct Planned {
    pub objects: Vec<Value>,
    pub plan: KubePlan,
    /// Where the kubeconfig came from and which server it names.
    pub source: String,
    pub client: KubeClient,
}

fn settings(session: &Session) -> Result<&KubernetesSettings> {
    manifests::settings(&session.config)
        .ok_or_else(|| Error::Input("not a Kubernetes stack".into()))
}

/// What the API server holds of the stack: its labelled objects of the listed kinds, and the
/// namespace (`None` when it does not exist). The lists go out together.
pub async fn observe(session: &Session, client: &KubeClient) -> Result<(Vec<Live>, Option<Live>)> {
    let k = settings(session)?;
    let selector = manifests::stack_selector(&session.config);
    let lists = diff::LISTED.iter().map(|kind| {
        let selector = &selector;
        async move {
            let r = kube::list(kind, &k.namespace, selector)
                .map_err(|e| Error::Input(e.to_string()))?;
            let answer = client.send(&r).await?;
            Ok::<_, Error>(
                answer["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| Live::from_api(kind, o))
                    .collect::<Vec<_>>(),
            )
        }
    });
    let namespace = async {
        Ok::<_, Error>(
            client
                .get_opt(&kube::get_namespace(&k.namespace))
                .await?
                .map(|o| Live::from_api("Namespace", &o)),
        )
    };
    let (lists, namespace) = tokio::join!(futures_util::future::join_all(lists), namespace);
    let mut live = Vec::new();
    for l in lists {
        live.extend(l?);
    }
    Ok((live, namespace?))
}

/// Render, connect and compare.
pub async fn plan(
    session: &Session,
    lock_wait: Duration,
    replace: &std::collections::BTreeSet<String>,
) -> Result<Planned> {
    // Everything renders (every secret resolves) before the cluster is asked anything.
    let mut objects = objects(session, lock_wait)?;
    objects.iter_mut().for_each(diff::stamp);
    let (client, source) = connect(session)?;
    let (live, namespace) = observe(session, &client).await?;
    let config = &session.config;
    let plan = diff::diff(
        &objects,
        &live,
        namespace.as_ref(),
        &config.project,
        &config.stack,
        replace,
    );
    Ok(Planned {
        objects,
        plan,
        source,
        client,
    })
}

/// How many requests go to the API server at once when agents' objects are applied.
const APPLY_CONCURRENCY: usize = 16;

/// Make the plan's changes: the namespace and the stack's policies first, then every agent's
/// objects at once (each agent's in order: Secrets and ConfigMap before the StatefulSet that
/// mounts them), then the deletes of what the project no longer has. The first failure stops
/// the run; what came before stays applied, and the next `deploy` plans from there.
pub async fn apply(session: &Session, planned: &Planned, namespace: &str) -> Result<Vec<Done>> {
    use futures_util::StreamExt;
    let client = &planned.client;
    let mut done = Vec::new();
    let request = |c: &Change| -> Result<Request> {
        match (c.action, c.desired) {
            (Action::Create | Action::Recreate, Some(i)) => kube::apply(&planned.objects[i], false),
            (Action::Update, Some(i)) => kube::apply(&planned.objects[i], true),
            (Action::Restart, _) => kube::delete("Pod", namespace, &c.name),
            _ => kube::delete(&c.kind, namespace, &c.name),
        }
        .map_err(|e| Error::Input(format!("cannot {:?} {}/{}: {e}", c.action, c.kind, c.name)))
    };
    let send = |c: &Change| {
        let r = request(c);
        let what = format!("{}/{}", c.kind, c.name);
        let action = c.action;
        let orphan = (action == Action::Recreate)
            .then(|| kube::delete(&c.kind, namespace, &c.name))
            .transpose()
            .map_err(|e| Error::Input(e.to_string()));
        async move {
            let r = r?;
            // Its fixed fields changed: the StatefulSet goes without its pod (orphaned), then
            // comes back with the new ones and adopts the pod by its labels.
            if let Some(del) = orphan? {
                let path = del
                    .path
                    .replace("propagationPolicy=Foreground", "propagationPolicy=Orphan");
                client
                    .send(&Request {
                        path: path.clone(),
                        ..del
                    })
                    .await?;
                wait_gone(session, client, &[path]).await?;
            }
            client.send(&r).await?;
            Ok::<_, Error>(Done {
                method: r.method,
                path: r.path,
                what,
                action,
            })
        }
    };
    let changes: Vec<&Change> = planned
        .plan
        .changes
        .iter()
        .filter(|c| !matches!(c.action, Action::Keep | Action::Foreign))
        .collect();
    // The stack's own objects, in order.
    for c in changes
        .iter()
        .filter(|c| c.agent.is_none() && c.action != Action::Delete)
    {
        done.push(send(c).await?);
    }
    // Each agent's applies in order, the agents at once.
    let mut by_agent: std::collections::BTreeMap<&str, Vec<&Change>> = Default::default();
    for c in changes
        .iter()
        .filter(|c| c.agent.is_some() && c.action != Action::Delete)
    {
        by_agent
            .entry(c.agent.as_deref().unwrap_or_default())
            .or_default()
            .push(c);
    }
    let mut agents = futures_util::stream::iter(by_agent.into_values().map(|cs| {
        let send = &send;
        async move {
            let mut out = Vec::new();
            for c in cs {
                out.push(send(c).await?);
            }
            Ok::<_, Error>(out)
        }
    }))
    .buffer_unordered(APPLY_CONCURRENCY);
    while let Some(r) = agents.next().await {
        done.extend(r?);
    }
    drop(agents);
    // Deletes last, in the listed order: the StatefulSets, gone before what their pods mount.
    let mut stopping = Vec::new();
    for c in changes.iter().filter(|c| c.action == Action::Delete) {
        if c.kind != "StatefulSet" && !stopping.is_empty() {
            wait_gone(session, client, &std::mem::take(&mut stopping)).await?;
        }
        let d = send(c).await?;
        if c.kind == "StatefulSet" {
            stopping.push(d.path.clone());
        }
        done.push(d);
    }
    wait_gone(session, client, &stopping).await?;
    Ok(done)
}

/// `destroy`: what the API server holds under the stack's labels, deleted object by object
/// (StatefulSets first, in the foreground); with `delete_volumes`, the agents' volume claims
/// and the namespace too, when the stack made it.
pub struct Destroyed {
    pub source: String,
    pub client: KubeClient,
    pub requests: Vec<(String, Request)>,
    /// The namespace exists without the stack's labels: kept even with `--delete-volumes`.
    pub foreign_namespace: bool,
    /// What others keep in the stack's namespace (kept then, with `--delete-volumes`).
    pub shared_namespace: Vec<String>,
}

pub async fn destroy_requests(session: &Session, delete_volumes: bool) -> Result<Destroyed> {
    let k = settings(session)?;
    let config = &session.config;
    let (client, source) = connect(session)?;
    let (live, namespace) = observe(session, &client).await?;
    let ours = |l: &Live| {
        l.stack.as_deref() == Some(config.stack.as_str())
            && l.project.as_deref() == Some(config.project.as_str())
    };
    let mut targets: Vec<Live> = Vec::new();
    for kind in diff::LISTED {
        let mut of_kind: Vec<Live> = live
            .iter()
            .filter(|l| l.kind == *kind && ours(l))
            .cloned()
            .collect();
        of_kind.sort_by(|a, b| a.name.cmp(&b.name));
        targets.extend(of_kind);
    }
    let foreign_namespace = namespace.as_ref().is_some_and(|n| !ours(n));
    let mut shared_namespace = Vec::new();
    if delete_volumes {
        let r = kube::list(
            "PersistentVolumeClaim",
            &k.namespace,
            &manifests::stack_selector(config),
        )
        .map_err(|e| Error::Input(e.to_string()))?;
        let claims = client.send(&r).await?;
        let mut claims: Vec<Live> = claims["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| Live::from_api("PersistentVolumeClaim", o))
            .filter(|l| ours(l))
            .collect();
        claims.sort_by(|a, b| a.name.cmp(&b.name));
        targets.extend(claims);
        // The namespace goes with the stack's own objects only: not when another stack (or
        // anyone) keeps something in it.
        if let Some(n) = namespace.filter(|n| ours(n)) {
            let mut others = Vec::new();
            for kind in ["Pod", "StatefulSet", "Service", "PersistentVolumeClaim"] {
                let r =
                    kube::list(kind, &k.namespace, "").map_err(|e| Error::Input(e.to_string()))?;
                let all = client.send(&r).await?;
                others.extend(
                    all["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|o| Live::from_api(kind, o))
                        .filter(|l| !ours(l))
                        .map(|l| format!("{}/{}", l.kind, l.name)),
                );
            }
            if others.is_empty() {
                targets.push(n);
            } else {
                shared_namespace = others;
            }
        }
    }
    let requests = targets
        .iter()
        .map(|l| {
            kube::delete(&l.kind, &k.namespace, &l.name)
                .map(|r| (format!("{}/{}", l.kind, l.name), r))
                .map_err(|e| Error::Input(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Destroyed {
        source,
        client,
        requests,
        foreign_namespace,
        shared_namespace,
    })
}

/// How long a deleted StatefulSet may take to go (its pod's grace period is 30 s).
const GONE_WITHIN: Duration = Duration::from_secs(180);

/// Wait until the objects at `paths` are gone (GET answers 404). A foreground delete only marks
/// a StatefulSet; it goes once its pod has stopped, and only then may the Secrets the pod
/// mounts go.
async fn wait_gone(session: &Session, client: &KubeClient, paths: &[String]) -> Result<()> {
    let poll = session.env.poll_interval();
    let start = tokio::time::Instant::now();
    for path in paths {
        let get = Request {
            method: "GET",
            path: path.split('?').next().unwrap_or(path).to_string(),
            content_type: None,
            body: None,
        };
        while client.get_opt(&get).await?.is_some() {
            if start.elapsed() > GONE_WITHIN {
                return Err(Error::Input(format!(
                    "{} is still there {}s after its delete: its pod does not stop (see `kubectl describe` on it); nothing after it was deleted",
                    get.path,
                    GONE_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(poll).await;
        }
    }
    Ok(())
}

/// Send `requests` one after the other, waiting for each deleted StatefulSet to be gone before
/// what follows it; the first failure stops the run.
pub async fn send(
    session: &Session,
    client: &KubeClient,
    requests: Vec<(String, Request)>,
) -> Result<Vec<Done>> {
    let mut done = Vec::new();
    let mut stopping = Vec::new();
    for (what, r) in requests {
        if !what.starts_with("StatefulSet/") && !stopping.is_empty() {
            wait_gone(session, client, &std::mem::take(&mut stopping)).await?;
        }
        client.send(&r).await?;
        if what.starts_with("StatefulSet/") {
            stopping.push(r.path.clone());
        }
        done.push(Done {
            method: r.method,
            path: r.path,
            what,
            action: Action::Delete,
        });
    }
    wait_gone(session, client, &stopping).await?;
    Ok(done)
}

/// One agent's pod as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// `running` (phase Running and ready), `pending`, `not ready`, or what a container waits
    /// on (`CrashLoopBackOff (openclaw)`).
    pub word: String,
    pub restarts: u64,
}

/// A pod's word from its status (pure).
pub fn pod_view(pod: &Value) -> PodView {
    let st = &pod["status"];
    let containers = st["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let waiting = containers.iter().find_map(|c| {
        c["state"]["waiting"]["reason"]
            .as_str()
            .map(|r| format!("{r} ({})", c["name"].as_str().unwrap_or("?")))
    });
    let ready = st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let phase = st["phase"].as_str().unwrap_or("Unknown");
    let word = match (phase, ready, waiting) {
        ("Running", true, _) => "running".to_string(),
        (_, _, Some(w)) => w,
        ("Running", false, None) => "not ready".to_string(),
        (p, _, None) => p.to_lowercase(),
    };
    PodView {
        name: pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        word,
        restarts: containers
            .iter()
            .filter_map(|c| c["restartCount"].as_u64())
            .sum(),
    }
}

/// The stack's pods by agent.
pub async fn pods(
    session: &Session,
    client: &KubeClient,
) -> Result<std::collections::BTreeMap<String, PodView>> {
    let k = settings(session)?;
    let r = kube::list(
        "Pod",
        &k.namespace,
        &manifests::stack_selector(&session.config),
    )
    .map_err(|e| Error::Input(e.to_string()))?;
    let answer = client.send(&r).await?;
    Ok(answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let agent = p["metadata"]["labels"][manifests::LABEL_AGENT].as_str()?;
            Some((agent.to_string(), pod_view(p)))
        })
        .collect())
}

/// Run `tailscale --socket=… <args>` in an agent's sidecar.
pub async fn sidecar_exec(
    session: &Session,
    client: &KubeClient,
    pod: &str,
    args: &[&str],
) -> Result<kube::client::ExecOutput> {
    let k = settings(session)?;
    let socket = format!("--socket={}", manifests::TAILSCALE_SOCKET);
    let mut command = vec!["tailscale", socket.as_str()];
    command.extend_from_slice(args);
    let path = kube::exec_path(&k.namespace, pod, manifests::SIDECAR, &command);
    Ok(client.exec(&path).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_words() {
        let pod = |phase: &str, ready: bool, waiting: Option<&str>| {
            let mut c =
                json!({ "name": "openclaw", "restartCount": 2, "state": { "running": {} } });
            if let Some(w) = waiting {
                c["state"] = json!({ "waiting": { "reason": w } });
            }
            json!({
                "metadata": { "name": "dev-pm-0" },
                "status": {
                    "phase": phase,
                    "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
                    "containerStatuses": [c, { "name": "tailscale", "restartCount": 1 }],
                },
            })
        };
        assert_eq!(pod_view(&pod("Running", true, None)).word, "running");
        assert_eq!(pod_view(&pod("Running", true, None)).restarts, 3);
        assert_eq!(pod_view(&pod("Running", false, None)).word, "not ready");
        assert_eq!(
            pod_view(&pod("Running", false, Some("CrashLoopBackOff"))).word,
            "CrashLoopBackOff (openclaw)"
        );
        assert_eq!(pod_view(&pod("Pending", false, None)).word, "pending");
        assert_eq!(pod_view(&json!({})).word, "unknown");
    }
}

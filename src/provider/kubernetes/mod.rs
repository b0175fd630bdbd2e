//! Kubernetes: the requests a server-side apply sends, built as data (pure, unit-tested).
//!
//! Every object is applied with `PATCH <object path>?fieldManager=agent-army` and
//! `Content-Type: application/apply-patch+yaml` (JSON is YAML): the API server merges the
//! fields agent-army owns and keeps the others'. An update adds `force=true`, taking back fields
//! another manager changed on agent-army's own objects (as `kubectl apply --server-side
//! --force-conflicts` does); a create does not, so an object of the same name that someone else
//! made answers 409 Conflict instead of being taken over.
//! `plan` lists the stack's objects by label selector ([`diff`]); removal deletes what the
//! listing found, one object at a time; volume claims (the agents' data) and the namespace
//! (which would take them along) only when asked.

use serde_json::Value;

#[cfg(feature = "cloud")]
pub mod client;
pub mod diff;
#[cfg(feature = "cloud")]
pub mod kubeconfig;

use crate::render::kubernetes::FIELD_MANAGER;

/// The kinds agent-army creates: (apiVersion, kind, plural, namespaced).
pub const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("v1", "Secret", "secrets", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Service", "services", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
];

/// Why an object has no request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("object without {0}")]
    Missing(&'static str),
    #[error("agent-army does not apply objects of kind `{0}`")]
    UnknownKind(String),
}

/// One HTTP request to the API server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    pub method: &'static str,
    /// Path and query, e.g. `/api/v1/namespaces/x/secrets/y?fieldManager=agent-army&force=true`.
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Option<String>,
}

/// The content type of a server-side apply.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// The collection path of a kind: `/api/v1[/namespaces/NS]/PLURAL` for the core group,
/// `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL` otherwise.
pub fn collection_path(api_version: &str, plural: &str, namespace: Option<&str>) -> String {
    let root = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match namespace {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}"),
        None => format!("{root}/{plural}"),
    }
}

/// The server-side apply of one object; `force` for an object agent-army already owns.
pub fn apply(obj: &Value, force: bool) -> Result<Request, ApiError> {
    let text = |v: &Value, what: &'static str| {
        v.as_str()
            .map(str::to_string)
            .ok_or(ApiError::Missing(what))
    };
    let api_version = text(&obj["apiVersion"], "apiVersion")?;
    let kind = text(&obj["kind"], "kind")?;
    let name = text(&obj["metadata"]["name"], "metadata.name")?;
    let &(_, _, plural, namespaced) = KINDS
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)
        .ok_or_else(|| ApiError::UnknownKind(kind.clone()))?;
    let ns = if namespaced {
        Some(text(&obj["metadata"]["namespace"], "metadata.namespace")?)
    } else {
        None
    };
    Ok(Request {
        method: "PATCH",
        path: format!(
            "{}/{name}?fieldManager={FIELD_MANAGER}{}",
            collection_path(&api_version, plural, ns.as_deref()),
            if force { "&force=true" } else { "" }
        ),
        content_type: Some(APPLY_PATCH),
        // serde_json cannot fail on a `Value`.
        body: Some(serde_json::to_string(obj).unwrap_or_default()),
    })
}

/// Percent-encoding of a label selector for a query string (`,` `=` `/` and the rest).
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `(apiVersion, plural, namespaced)` of a kind agent-army handles (pods included, for
/// `status`).
pub fn kind_info(kind: &str) -> Option<(&'static str, &'static str, bool)> {
    if kind == "Pod" {
        return Some(("v1", "pods", true));
    }
    KINDS
        .iter()
        .find(|(_, k, _, _)| *k == kind)
        .map(|&(v, _, plural, namespaced)| (v, plural, namespaced))
}

fn request(method: &'static str, path: String) -> Request {
    Request {
        method,
        path,
        content_type: None,
        body: None,
    }
}

/// The objects of a kind in `namespace` that carry the labels of `selector`.
pub fn list(kind: &str, namespace: &str, selector: &str) -> Result<Request, ApiError> {
    let (v, plural, _) = kind_info(kind).ok_or_else(|| ApiError::UnknownKind(kind.into()))?;
    Ok(request(
        "GET",
        format!(
            "{}?labelSelector={}",
            collection_path(v, plural, Some(namespace)),
            encode_query(selector)
        ),
    ))
}

/// One namespace (a 404 says it does not exist).
pub fn get_namespace(namespace: &str) -> Request {
    request("GET", format!("/api/v1/namespaces/{namespace}"))
}

/// The delete of one object. A StatefulSet goes in the foreground: the API server removes it
/// once its pod is gone, so the Secrets deleted after it are no longer mounted anywhere.
pub fn delete(kind: &str, namespace: &str, name: &str) -> Result<Request, ApiError> {
    let (v, plural, namespaced) =
        kind_info(kind).ok_or_else(|| ApiError::UnknownKind(kind.into()))?;
    let path = format!(
        "{}/{name}",
        collection_path(v, plural, namespaced.then_some(namespace))
    );
    Ok(request(
        "DELETE",
        if kind == "StatefulSet" {
            format!("{path}?propagationPolicy=Foreground")
        } else {
            path
        },
    ))
}

/// The path of a container's log: the last `tail` lines, then (with `follow`) what comes,
/// only lines newer than `since_seconds` when given, each line prefixed with its RFC 3339 time
/// with `timestamps`.
pub fn log_path(
    namespace: &str,
    pod: &str,
    container: &str,
    tail: u32,
    follow: bool,
    since_seconds: Option<u64>,
    timestamps: bool,
) -> String {
    let mut path = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/log?container={}&tailLines={tail}",
        encode_query(container)
    );
    if follow {
        path.push_str("&follow=true");
    }
    if let Some(s) = since_seconds {
        path.push_str(&format!("&sinceSeconds={s}"));
    }
    if timestamps {
        path.push_str("&timestamps=true");
    }
    path
}

/// The path of an exec in one container (stdout and stderr, no stdin, no TTY), as `kubectl
/// exec` asks it: one `command` parameter per argument.
pub fn exec_path(namespace: &str, pod: &str, container: &str, command: &[&str]) -> String {
    let mut path = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/exec?container={}&stdout=true&stderr=true",
        encode_query(container)
    );
    for arg in command {
        path.push_str("&command=");
        path.push_str(&encode_query(arg));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_paths_for_core_grouped_and_cluster_objects() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
                "/api/v1/namespaces/a",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}}),
                "/api/v1/namespaces/a/secrets/s",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "x", "namespace": "a"}}),
                "/apis/apps/v1/namespaces/a/statefulsets/x",
            ),
            (
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "a"}}),
                "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/p",
            ),
        ];
        for (obj, path) in cases {
            assert!(!apply(&obj, false).unwrap().path.contains("force"));
            let r = apply(&obj, true).unwrap();
            assert_eq!(r.method, "PATCH");
            assert_eq!(r.path, format!("{path}?fieldManager=agent-army&force=true"));
            assert_eq!(r.content_type, Some(APPLY_PATCH));
            assert_eq!(
                serde_json::from_str::<Value>(r.body.as_deref().unwrap()).unwrap(),
                obj
            );
        }
        assert_eq!(
            apply(
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}),
                true
            ),
            Err(ApiError::UnknownKind("Pod".into()))
        );
        assert_eq!(
            apply(
                &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "p"}}),
                true
            ),
            Err(ApiError::Missing("metadata.namespace"))
        );
    }

    #[test]
    fn lists_deletes_and_execs() {
        let sel = "agent-army/project=demo,agent-army/stack=dev";
        assert_eq!(
            list("StatefulSet", "agents", sel).unwrap().path,
            "/apis/apps/v1/namespaces/agents/statefulsets?labelSelector=agent-army%2Fproject%3Ddemo%2Cagent-army%2Fstack%3Ddev"
        );
        assert_eq!(
            list("Pod", "agents", sel).unwrap().path,
            "/api/v1/namespaces/agents/pods?labelSelector=agent-army%2Fproject%3Ddemo%2Cagent-army%2Fstack%3Ddev"
        );
        assert_eq!(
            delete("StatefulSet", "agents", "dev-pm").unwrap().path,
            "/apis/apps/v1/namespaces/agents/statefulsets/dev-pm?propagationPolicy=Foreground"
        );
        assert_eq!(
            delete("Namespace", "agents", "agents").unwrap().path,
            "/api/v1/namespaces/agents"
        );
        assert_eq!(
            delete("PersistentVolumeClaim", "agents", "data-dev-pm-0")
                .unwrap()
                .path,
            "/api/v1/namespaces/agents/persistentvolumeclaims/data-dev-pm-0"
        );
        assert!(list("Ingress", "agents", sel).is_err());
        assert_eq!(
            log_path(
                "agents",
                "dev-pm-0",
                "openclaw",
                100,
                true,
                Some(3600),
                true
            ),
            "/api/v1/namespaces/agents/pods/dev-pm-0/log?container=openclaw&tailLines=100&follow=true&sinceSeconds=3600&timestamps=true"
        );
        assert_eq!(
            log_path("agents", "dev-pm-0", "openclaw", 5, false, None, false),
            "/api/v1/namespaces/agents/pods/dev-pm-0/log?container=openclaw&tailLines=5"
        );
        assert_eq!(
            exec_path(
                "agents",
                "dev-pm-0",
                "tailscale",
                &["tailscale", "--socket=/tmp/t.sock", "status", "--json"]
            ),
            "/api/v1/namespaces/agents/pods/dev-pm-0/exec?container=tailscale&stdout=true&stderr=true&command=tailscale&command=--socket%3D%2Ftmp%2Ft.sock&command=status&command=--json"
        );
    }
}

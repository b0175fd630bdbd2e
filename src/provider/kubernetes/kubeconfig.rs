//! Where the API server is and who we are to it: the usual kubeconfig resolution (the first
//! file of `KUBECONFIG`, else `~/.kube/config`, else the pod's in-cluster service account),
//! the stack's `context` or the file's current one.
//!
//! First cut: bearer tokens (inline or `tokenFile`), client certificates and the cluster's CA
//! (inline or a file). Exec credential plugins and auth providers are refused with a message
//! that names them, never half-used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::env::{Env, vars};

/// In-cluster service account files.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach and authenticate to an API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://host:port` (or `http://` for a local test server).
    pub server: String,
    /// PEM of the CA to trust, when the kubeconfig names one.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub auth: Auth,
    /// Where this came from, for messages: a file and context, or "in-cluster".
    pub source: String,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Token(String),
    /// PEM certificate and key.
    ClientCert {
        cert: Vec<u8>,
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Token(_) => "Token(********)",
            Auth::ClientCert { .. } => "ClientCert(********)",
        })
    }
}

/// Why no target could be resolved.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error(
        "no kubeconfig: {} is unset, ~/.kube/config does not exist, and this is not a pod",
        vars::KUBECONFIG
    )]
    None,
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a kubeconfig: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {what}", .path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("{}: user `{user}` authenticates with {how}, which agent-army does not run yet", .path.display())]
    Unsupported {
        path: PathBuf,
        user: String,
        how: &'static str,
    },
}

impl KubeconfigError {
    pub fn help(&self) -> Option<String> {
        match self {
            KubeconfigError::None => Some(format!(
                "set {} to your kubeconfig, or write ~/.kube/config",
                vars::KUBECONFIG
            )),
            KubeconfigError::Unsupported { .. } => Some(
                "use a context whose user has a token or a client certificate (e.g. a service account token)".into(),
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context")]
    value: T,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
struct Context {
    cluster: String,
    user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-key")]
    key_file: Option<PathBuf>,
    exec: Option<serde_json::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
    #[serde(flatten)]
    _other: BTreeMap<String, serde_json::Value>,
}

/// The kubeconfig file to read: the first of `KUBECONFIG`'s list (merging several files is
/// not done yet), else `~/.kube/config` when it exists.
pub fn kubeconfig_path(env: &Env) -> Option<PathBuf> {
    if let Some(list) = env.get(vars::KUBECONFIG) {
        return list.split(':').find(|p| !p.is_empty()).map(PathBuf::from);
    }
    env.home()
        .map(|h| h.join(".kube/config"))
        .filter(|p| p.exists())
}

/// Resolve the target: a kubeconfig (with `context`, else its current context), else the
/// in-cluster service account.
pub fn resolve(env: &Env, context: Option<&str>) -> Result<Target, KubeconfigError> {
    if let Some(path) = kubeconfig_path(env) {
        let text = std::fs::read_to_string(&path).map_err(|source| KubeconfigError::Io {
            path: path.clone(),
            source,
        })?;
        return from_text(&path, &text, context);
    }
    if let (Some(host), Some(port)) = (
        env.get(vars::KUBERNETES_SERVICE_HOST),
        env.get(vars::KUBERNETES_SERVICE_PORT),
    ) {
        let read = |name: &str| {
            let path = Path::new(SA_DIR).join(name);
            std::fs::read(&path).map_err(|source| KubeconfigError::Io { path, source })
        };
        let token = String::from_utf8_lossy(&read("token")?).trim().to_string();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        return Ok(Target {
            server: format!("https://{host}:{port}"),
            ca_pem: Some(read("ca.crt")?),
            insecure: false,
            auth: Auth::Token(token),
            source: "in-cluster service account".into(),
        });
    }
    Err(KubeconfigError::None)
}

/// Resolve from a kubeconfig's text (relative file paths are relative to its folder).
pub fn from_text(
    path: &Path,
    text: &str,
    context: Option<&str>,
) -> Result<Target, KubeconfigError> {
    let file: File = serde_saphyr::from_str(text).map_err(|e| KubeconfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |what: String| KubeconfigError::Invalid {
        path: path.to_path_buf(),
        what,
    };
    let ctx_name = match context.map(str::to_string).or(file.current_context.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(invalid(
                "no current-context, and the stack names no `context`".into(),
            ));
        }
    };
    let ctx = file
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .ok_or_else(|| {
            let known: Vec<_> = file.contexts.iter().map(|c| c.name.as_str()).collect();
            invalid(format!(
                "no context `{ctx_name}` (it has: {})",
                known.join(", ")
            ))
        })?;
    let cluster = file
        .clusters
        .iter()
        .find(|c| c.name == ctx.value.cluster)
        .ok_or_else(|| {
            invalid(format!(
                "context `{ctx_name}` names cluster `{}`, which it does not define",
                ctx.value.cluster
            ))
        })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let read = |p: &Path| {
        let p = base.join(p);
        std::fs::read(&p).map_err(|source| KubeconfigError::Io { path: p, source })
    };
    let b64 = |s: &str, what: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| invalid(format!("{what} is not base64")))
    };
    let ca_pem = match (&cluster.value.ca_data, &cluster.value.ca_file) {
        (Some(d), _) => Some(b64(d, "certificate-authority-data")?),
        (None, Some(f)) => Some(read(f)?),
        (None, None) => None,
    };
    let default_user = NamedUser {
        name: String::new(),
        user: User::default(),
    };
    let user = match &ctx.value.user {
        Some(u) => file.users.iter().find(|x| &x.name == u).ok_or_else(|| {
            invalid(format!(
                "context `{ctx_name}` names user `{u}`, which it does not define"
            ))
        })?,
        None => &default_user,
    };
    let u = &user.user;
    let unsupported = |how| KubeconfigError::Unsupported {
        path: path.to_path_buf(),
        user: user.name.clone(),
        how,
    };
    let auth = if let Some(t) = &u.token {
        Auth::Token(t.clone())
    } else if let Some(f) = &u.token_file {
        Auth::Token(String::from_utf8_lossy(&read(f)?).trim().to_string())
    } else if u.cert_data.is_some() || u.cert_file.is_some() {
        let cert = match (&u.cert_data, &u.cert_file) {
            (Some(d), _) => b64(d, "client-certificate-data")?,
            (None, Some(f)) => read(f)?,
            _ => Vec::new(),
        };
        let key = match (&u.key_data, &u.key_file) {
            (Some(d), _) => b64(d, "client-key-data")?,
            (None, Some(f)) => read(f)?,
            (None, None) => {
                return Err(invalid(format!(
                    "user `{}` has a client certificate but no key",
                    user.name
                )));
            }
        };
        Auth::ClientCert { cert, key }
    } else if u.exec.is_some() {
        return Err(unsupported("an exec credential plugin"));
    } else if u.auth_provider.is_some() {
        return Err(unsupported("an auth provider"));
    } else {
        Auth::None
    };
    Ok(Target {
        server: cluster.value.server.trim_end_matches('/').to_string(),
        ca_pem,
        insecure: cluster.value.insecure,
        auth,
        source: format!("{} (context `{ctx_name}`)", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c1
  cluster:
    server: https://10.0.0.1:6443/
    certificate-authority-data: LS0tLS1CRUdJTg==
contexts:
- name: dev
  context:
    cluster: c1
    user: u1
    namespace: x
- name: eks
  context:
    cluster: c1
    user: u2
users:
- name: u1
  user:
    token: abc
- name: u2
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
"#;

    #[test]
    fn current_context_token_and_ca() {
        let t = from_text(Path::new("/k/config"), CONFIG, None).unwrap();
        assert_eq!(t.server, "https://10.0.0.1:6443");
        assert_eq!(t.ca_pem.as_deref(), Some(&b"-----BEGIN"[..]));
        assert_eq!(t.auth, Auth::Token("abc".into()));
        assert_eq!(format!("{:?}", t.auth), "Token(********)");
        assert!(t.source.contains("context `dev`"));
    }

    #[test]
    fn named_context_and_what_is_refused() {
        let e = from_text(Path::new("/k/config"), CONFIG, Some("eks")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/k/config: user `u2` authenticates with an exec credential plugin, which agent-army does not run yet"
        );
        let e = from_text(Path::new("/k/config"), CONFIG, Some("prod")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/k/config: no context `prod` (it has: dev, eks)"
        );
        let e = from_text(Path::new("/k/config"), "clusters: 3\n", None).unwrap_err();
        assert!(
            e.to_string().starts_with("/k/config is not a kubeconfig"),
            "{e}"
        );
    }
}

//! Where the API server is and who we are to it: the usual kubeconfig resolution (the files of
//! `KUBECONFIG`, merged as kubectl merges them, else `~/.kube/config`, else the pod's
//! in-cluster service account), the stack's `context` or the current one.
//!
//! Bearer tokens (inline or `tokenFile`), client certificates, the cluster's CA (inline or a
//! file) and exec credential plugins (`aws eks get-token`, `gke-gcloud-auth-plugin`, …: the
//! `client.authentication.k8s.io` protocol). The deprecated auth providers are refused with a
//! message that names them, never half-used.

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
    /// An exec credential plugin, not run yet ([`run_exec`] turns it into one of the others).
    Exec(ExecPlugin),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(********)"),
            Auth::ClientCert { .. } => f.write_str("ClientCert(********)"),
            Auth::Exec(e) => write!(f, "Exec({})", e.command),
        }
    }
}

/// A user's `exec` stanza.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecPlugin {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<ExecEnv>,
    #[serde(rename = "installHint", default)]
    pub install_hint: Option<String>,
    #[serde(rename = "provideClusterInfo", default)]
    pub provide_cluster_info: bool,
    /// The folder of the kubeconfig that named it: a relative command path is relative to it.
    #[serde(skip)]
    pub base: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecEnv {
    pub name: String,
    pub value: String,
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
    #[error("the exec credential plugin `{command}` failed: {message}")]
    Exec {
        command: String,
        message: String,
        install_hint: Option<String>,
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
                "use a context whose user has a token, a client certificate or an exec plugin (e.g. `gke-gcloud-auth-plugin` instead of the `gcp` auth provider)".into(),
            ),
            KubeconfigError::Exec { install_hint, .. } => Some(install_hint.clone().unwrap_or_else(|| {
                "run the plugin's command yourself to see why; `kubectl` runs it the same way".into()
            })),
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
    exec: Option<ExecPlugin>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// The kubeconfig files to read: every file of `KUBECONFIG`'s list that exists (as kubectl,
/// which skips missing ones), else `~/.kube/config` when it exists.
pub fn kubeconfig_paths(env: &Env) -> Vec<PathBuf> {
    if let Some(list) = env.get(vars::KUBECONFIG) {
        let listed: Vec<PathBuf> = list
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        // A single file must exist (the error names it); in a list, missing ones are skipped.
        if listed.len() == 1 {
            return listed;
        }
        return listed.into_iter().filter(|p| p.exists()).collect();
    }
    env.home()
        .map(|h| h.join(".kube/config"))
        .filter(|p| p.exists())
        .into_iter()
        .collect()
}

/// Resolve the target: a kubeconfig (with `context`, else its current context), else the
/// in-cluster service account.
pub fn resolve(env: &Env, context: Option<&str>) -> Result<Target, KubeconfigError> {
    let paths = kubeconfig_paths(env);
    if !paths.is_empty() {
        let files = paths
            .into_iter()
            .map(|path| {
                std::fs::read_to_string(&path)
                    .map(|text| (path.clone(), text))
                    .map_err(|source| KubeconfigError::Io { path, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut target = from_files(&files, context)?;
        if let Auth::Exec(plugin) = &target.auth {
            target.auth = run_exec(plugin, &target)?;
        }
        return Ok(target);
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

/// Resolve from one kubeconfig's text (relative file paths are relative to its folder).
pub fn from_text(
    path: &Path,
    text: &str,
    context: Option<&str>,
) -> Result<Target, KubeconfigError> {
    from_files(&[(path.to_path_buf(), text.to_string())], context)
}

/// An entry of a merged kubeconfig and the file it came from.
struct Sourced<'a, T> {
    path: &'a Path,
    value: &'a T,
}

impl<T> Sourced<'_, T> {
    fn base(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Resolve from the files of `KUBECONFIG`, merged as kubectl merges them: the first file that
/// defines a cluster, context or user by a name wins, and so does the first `current-context`
/// that is set. Relative paths are relative to the folder of the file that holds them.
pub fn from_files(
    files: &[(PathBuf, String)],
    context: Option<&str>,
) -> Result<Target, KubeconfigError> {
    let parsed = files
        .iter()
        .map(|(path, text)| {
            serde_saphyr::from_str::<File>(text)
                .map(|f| (path.as_path(), f))
                .map_err(|e| KubeconfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let first = files
        .first()
        .map(|(p, _)| p.clone())
        .ok_or(KubeconfigError::None)?;
    let current = parsed
        .iter()
        .find_map(|(_, f)| f.current_context.clone().filter(|c| !c.is_empty()));
    let ctx_name = match context.map(str::to_string).or(current) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(KubeconfigError::Invalid {
                path: first,
                what: "no current-context, and the stack names no `context`".into(),
            });
        }
    };
    let ctx = parsed
        .iter()
        .find_map(|(p, f)| {
            f.contexts
                .iter()
                .find(|c| c.name == ctx_name)
                .map(|c| Sourced {
                    path: p,
                    value: &c.value,
                })
        })
        .ok_or_else(|| {
            let mut known: Vec<&str> = parsed
                .iter()
                .flat_map(|(_, f)| f.contexts.iter().map(|c| c.name.as_str()))
                .collect();
            known.dedup();
            KubeconfigError::Invalid {
                path: first.clone(),
                what: format!("no context `{ctx_name}` (it has: {})", known.join(", ")),
            }
        })?;
    let invalid = |what: String| KubeconfigError::Invalid {
        path: ctx.path.to_path_buf(),
        what,
    };
    let cluster = parsed
        .iter()
        .find_map(|(p, f)| {
            f.clusters
                .iter()
                .find(|c| c.name == ctx.value.cluster)
                .map(|c| Sourced {
                    path: p,
                    value: &c.value,
                })
        })
        .ok_or_else(|| {
            invalid(format!(
                "context `{ctx_name}` names cluster `{}`, which it does not define",
                ctx.value.cluster
            ))
        })?;
    let read = |base: &Path, p: &Path| {
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
        (None, Some(f)) => Some(read(cluster.base(), f)?),
        (None, None) => None,
    };
    let default_user = User::default();
    let (user_name, user) = match &ctx.value.user {
        Some(u) => parsed
            .iter()
            .find_map(|(p, f)| {
                f.users.iter().find(|x| &x.name == u).map(|x| Sourced {
                    path: p,
                    value: &x.user,
                })
            })
            .map(|s| (u.clone(), s))
            .ok_or_else(|| {
                invalid(format!(
                    "context `{ctx_name}` names user `{u}`, which it does not define"
                ))
            })?,
        None => (
            String::new(),
            Sourced {
                path: ctx.path,
                value: &default_user,
            },
        ),
    };
    let u = user.value;
    let base = user.base();
    let unsupported = |how| KubeconfigError::Unsupported {
        path: user.path.to_path_buf(),
        user: user_name.clone(),
        how,
    };
    // Refused rather than ignored: acting as the underlying (usually broader) identity, or
    // anonymously, is not what the kubeconfig asked for.
    if ["as", "as-groups", "as-uid", "as-user-extra"]
        .iter()
        .any(|k| u.other.contains_key(*k))
    {
        return Err(unsupported("impersonation (`as`)"));
    }
    if u.other.contains_key("username") || u.other.contains_key("password") {
        return Err(unsupported("a username and password"));
    }
    let auth = if let Some(t) = &u.token {
        Auth::Token(t.clone())
    } else if let Some(f) = &u.token_file {
        Auth::Token(String::from_utf8_lossy(&read(base, f)?).trim().to_string())
    } else if u.cert_data.is_some() || u.cert_file.is_some() {
        let cert = match (&u.cert_data, &u.cert_file) {
            (Some(d), _) => b64(d, "client-certificate-data")?,
            (None, Some(f)) => read(base, f)?,
            _ => Vec::new(),
        };
        let key = match (&u.key_data, &u.key_file) {
            (Some(d), _) => b64(d, "client-key-data")?,
            (None, Some(f)) => read(base, f)?,
            (None, None) => {
                return Err(invalid(format!(
                    "user `{user_name}` has a client certificate but no key"
                )));
            }
        };
        Auth::ClientCert { cert, key }
    } else if let Some(e) = &u.exec {
        Auth::Exec(ExecPlugin {
            base: base.to_path_buf(),
            ..e.clone()
        })
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
        source: format!("{} (context `{ctx_name}`)", ctx.path.display()),
    })
}

/// The `ExecCredential` a plugin prints.
#[derive(Debug, Deserialize)]
struct ExecCredential {
    status: Option<ExecStatus>,
}

#[derive(Debug, Deserialize)]
struct ExecStatus {
    token: Option<String>,
    #[serde(rename = "clientCertificateData")]
    cert: Option<String>,
    #[serde(rename = "clientKeyData")]
    key: Option<String>,
}

/// What a plugin is told in `KUBERNETES_EXEC_INFO`: never interactive (agent-army may run in
/// CI); the cluster when the stanza asks for it.
pub fn exec_info(plugin: &ExecPlugin, target: &Target) -> serde_json::Value {
    let mut spec = serde_json::json!({ "interactive": false });
    if plugin.provide_cluster_info {
        use base64::Engine as _;
        let mut cluster = serde_json::json!({
            "server": target.server,
            "insecure-skip-tls-verify": target.insecure,
        });
        if let Some(ca) = &target.ca_pem {
            cluster["certificate-authority-data"] =
                base64::engine::general_purpose::STANDARD.encode(ca).into();
        }
        spec["cluster"] = cluster;
    }
    serde_json::json!({
        "apiVersion": plugin.api_version,
        "kind": "ExecCredential",
        "spec": spec,
    })
}

/// The credential a plugin's output holds (pure).
pub fn parse_credential(stdout: &[u8]) -> Result<Auth, String> {
    let cred: ExecCredential = serde_json::from_slice(stdout)
        .map_err(|e| format!("its output is not an ExecCredential: {e}"))?;
    let st = cred.status.ok_or("its ExecCredential has no `status`")?;
    match (st.token, st.cert, st.key) {
        (Some(t), _, _) if !t.is_empty() => Ok(Auth::Token(t)),
        (_, Some(c), Some(k)) => Ok(Auth::ClientCert {
            cert: c.into_bytes(),
            key: k.into_bytes(),
        }),
        _ => Err("its ExecCredential has neither a token nor a client certificate and key".into()),
    }
}

/// Run an exec credential plugin as kubectl does: its command (relative to the kubeconfig's
/// folder when it names a path), its arguments and environment on top of ours,
/// `KUBERNETES_EXEC_INFO`, no stdin; its stderr is the user's (plugins explain themselves
/// there). Each agent-army run asks once; the credential is never stored.
pub fn run_exec(plugin: &ExecPlugin, target: &Target) -> Result<Auth, KubeconfigError> {
    let fail = |message: String| KubeconfigError::Exec {
        command: plugin.command.clone(),
        message,
        install_hint: plugin.install_hint.clone(),
    };
    let program = if plugin.command.contains('/') {
        plugin.base.join(&plugin.command)
    } else {
        PathBuf::from(&plugin.command)
    };
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&plugin.args)
        .envs(plugin.env.iter().map(|e| (&e.name, &e.value)))
        .env(
            vars::KUBERNETES_EXEC_INFO,
            exec_info(plugin, target).to_string(),
        )
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let out = cmd.output().map_err(|e| {
        fail(if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{}` is not installed (not found)", program.display())
        } else {
            format!("cannot run `{}`: {e}", program.display())
        })
    })?;
    if !out.status.success() {
        return Err(fail(format!(
            "it exited with {}",
            out.status
                .code()
                .map_or("a signal".to_string(), |c| c.to_string())
        )));
    }
    parse_credential(&out.stdout).map_err(fail)
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
    fn named_context_exec_plugins_and_what_is_refused() {
        let t = from_text(Path::new("/k/config"), CONFIG, Some("eks")).unwrap();
        match &t.auth {
            Auth::Exec(p) => {
                assert_eq!(p.command, "aws");
                assert_eq!(p.base, Path::new("/k"));
                assert_eq!(p.api_version, "client.authentication.k8s.io/v1beta1");
            }
            other => panic!("{other:?}"),
        }
        let gcp = CONFIG.replace(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n",
            "    auth-provider:\n      name: gcp\n",
        );
        let e = from_text(Path::new("/k/config"), &gcp, Some("eks")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/k/config: user `u2` authenticates with an auth provider, which agent-army does not run yet"
        );
        let as_admin = CONFIG.replace("    token: abc\n", "    token: abc\n    as: admin\n");
        let e = from_text(Path::new("/k/config"), &as_admin, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/k/config: user `u1` authenticates with impersonation (`as`), which agent-army does not run yet"
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

    #[test]
    fn files_merge_first_definition_and_first_current_context_win() {
        let second = r#"apiVersion: v1
current-context: other
clusters:
- name: c1
  cluster:
    server: https://shadowed:6443
- name: c2
  cluster:
    server: https://10.0.0.2:6443
    certificate-authority: ca.pem
contexts:
- name: prod
  context:
    cluster: c2
    user: u3
users:
- name: u1
  user:
    token: shadowed
- name: u3
  user:
    token: prod-token
"#;
        let files = vec![
            (PathBuf::from("/a/config"), CONFIG.to_string()),
            (PathBuf::from("/b/config"), second.to_string()),
        ];
        // The first file's current context, cluster and user win over the second's.
        let t = from_files(&files, None).unwrap();
        assert_eq!(t.server, "https://10.0.0.1:6443");
        assert_eq!(t.auth, Auth::Token("abc".into()));
        // A context only the second defines, its CA path relative to the second's folder.
        let e = from_files(&files, Some("prod")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read /b/ca.pem: No such file or directory (os error 2)"
        );
        let no_ca = second.replace("    certificate-authority: ca.pem\n", "");
        let files = vec![
            (PathBuf::from("/a/config"), CONFIG.to_string()),
            (PathBuf::from("/b/config"), no_ca),
        ];
        let t = from_files(&files, Some("prod")).unwrap();
        assert_eq!(t.server, "https://10.0.0.2:6443");
        assert_eq!(t.auth, Auth::Token("prod-token".into()));
        assert_eq!(t.source, "/b/config (context `prod`)");
    }

    #[test]
    fn exec_credentials_and_what_the_plugin_is_told() {
        assert_eq!(
            parse_credential(
                br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"k8s-aws-v1.abc","expirationTimestamp":"2026-11-30T05:00:00Z"}}"#
            ),
            Ok(Auth::Token("k8s-aws-v1.abc".into()))
        );
        assert_eq!(
            parse_credential(
                br#"{"kind":"ExecCredential","status":{"clientCertificateData":"CERT","clientKeyData":"KEY"}}"#
            ),
            Ok(Auth::ClientCert {
                cert: b"CERT".to_vec(),
                key: b"KEY".to_vec()
            })
        );
        assert!(parse_credential(br#"{"kind":"ExecCredential","status":{}}"#).is_err());
        assert!(parse_credential(b"not json").is_err());
        let t = from_text(Path::new("/k/config"), CONFIG, Some("eks")).unwrap();
        let Auth::Exec(p) = &t.auth else { panic!() };
        let info = exec_info(p, &t);
        assert_eq!(info["kind"], "ExecCredential");
        assert_eq!(info["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(info["spec"]["interactive"], false);
        assert!(info["spec"].get("cluster").is_none());
        let with_cluster = ExecPlugin {
            provide_cluster_info: true,
            ..p.clone()
        };
        let info = exec_info(&with_cluster, &t);
        assert_eq!(info["spec"]["cluster"]["server"], "https://10.0.0.1:6443");
        assert_eq!(
            info["spec"]["cluster"]["certificate-authority-data"],
            "LS0tLS1CRUdJTg=="
        );
    }
}

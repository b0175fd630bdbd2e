//! Sending [`Request`]s to the API server with reqwest (already agent-army's HTTP client for
//! Hetzner and Tailscale: no new dependency).

use std::time::Duration;

use serde_json::Value;

use super::Request;
use super::kubeconfig::{Auth, Target};

/// An API server answered with an error, or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{method} {path}: {status} {reason}: {message}")]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
        message: String,
    },
    #[error("{method} {path}: {source}")]
    Http {
        method: &'static str,
        path: String,
        source: reqwest::Error,
    },
    #[error("the kubeconfig's certificates: {0}")]
    Tls(reqwest::Error),
    #[error("exec {path}: {message}")]
    Exec { path: String, message: String },
}

impl KubeError {
    pub fn help(&self) -> Option<String> {
        match self {
            KubeError::Api { status: 401, .. } => {
                Some("the API server refused the credentials: check the kubeconfig's user".into())
            }
            KubeError::Api { status: 403, .. } => Some(
                "the user may not do this: it needs create, patch and delete on the stack's kinds in the namespace (and on namespaces)".into(),
            ),
            KubeError::Exec { .. } => Some(
                "the user needs `get` and `create` on `pods/exec` in the namespace; is the pod running?"
                    .into(),
            ),
            KubeError::Http { .. } => {
                Some("is the cluster reachable from here (VPN, context)?".into())
            }
            _ => None,
        }
    }
}

pub struct KubeClient {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
    /// Of every request, and of an exec's command.
    timeout: Duration,
}

impl KubeClient {
    pub fn new(target: &Target, timeout: Duration) -> Result<KubeClient, KubeError> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("agent-army/", env!("CARGO_PKG_VERSION")));
        // The kubeconfig's CA alone, as kubectl trusts it: not the system's roots besides.
        if let Some(pem) = &target.ca_pem {
            b = b.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(pem).map_err(KubeError::Tls)?,
            );
        }
        if target.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let mut token = None;
        match &target.auth {
            Auth::None => {}
            Auth::Token(t) => token = Some(t.clone()),
            // `kubeconfig::resolve` runs the plugin before a client is made.
            Auth::Exec(plugin) => {
                return Err(KubeError::Exec {
                    path: target.server.clone(),
                    message: format!("the credential plugin `{}` was not run", plugin.command),
                });
            }
            Auth::ClientCert { cert, key } => {
                let mut pem = cert.clone();
                pem.push(b'\n');
                pem.extend_from_slice(key);
                b = b.identity(reqwest::Identity::from_pem(&pem).map_err(KubeError::Tls)?);
            }
        }
        Ok(KubeClient {
            http: b.build().map_err(KubeError::Tls)?,
            server: target.server.clone(),
            token,
            timeout,
        })
    }

    /// Send one request; the answer's JSON (`null` when it has none). A 404 on a delete is
    /// no error: what is gone is what was asked for.
    pub async fn send(&self, r: &Request) -> Result<Value, KubeError> {
        let method =
            reqwest::Method::from_bytes(r.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self
            .http
            .request(method, format!("{}{}", self.server, r.path))
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = r.content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = &r.body {
            req = req.body(b.clone());
        }
        let http = |source| KubeError::Http {
            method: r.method,
            path: r.path.clone(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(http)?;
        let parsed = serde_json::from_str::<Value>(&text);
        if status == 404 && r.method == "DELETE" {
            return Ok(Value::Null);
        }
        if (200..300).contains(&status) {
            // An answer that is not the API's JSON (an auth proxy's login page, say) must not
            // read as "nothing there".
            return match parsed {
                Ok(body) if r.method != "GET" || body.is_object() => Ok(body),
                _ => Err(KubeError::Api {
                    method: r.method,
                    path: r.path.clone(),
                    status,
                    reason: "NotTheAPI".into(),
                    message: format!(
                        "the answer is not the Kubernetes API's JSON: {}",
                        text.chars().take(120).collect::<String>()
                    ),
                }),
            };
        }
        let body = parsed.unwrap_or(Value::Null);
        Err(KubeError::Api {
            method: r.method,
            path: r.path.clone(),
            status,
            reason: body["reason"].as_str().unwrap_or_default().to_string(),
            message: body["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(300).collect()),
        })
    }
}

/// What a command run by exec printed, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code (0 when the API server reports success); `None` when it said nothing.
    pub exit_code: Option<i32>,
    /// The API server's message when the command could not run or failed.
    pub message: Option<String>,
}

/// The subprotocol of exec streams: each binary message starts with its channel (1 stdout,
/// 2 stderr, 3 the final `Status`).
pub const EXEC_PROTOCOL: &str = "v4.channel.k8s.io";

/// Fold one exec message into the output (pure, unit-tested).
pub fn exec_message(out: &mut ExecOutput, data: &[u8]) {
    let Some((&channel, rest)) = data.split_first() else {
        return;
    };
    match channel {
        1 => out.stdout.extend_from_slice(rest),
        2 => out.stderr.extend_from_slice(rest),
        3 => {
            let status: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
            if status["status"] == "Success" {
                out.exit_code = Some(0);
                return;
            }
            out.message = status["message"].as_str().map(str::to_string);
            // `NonZeroExitCode` carries the code as a cause.
            out.exit_code = status["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["reason"] == "ExitCode")
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse().ok());
        }
        _ => {}
    }
}

impl KubeClient {
    /// GET one object; `None` when the API server answers 404.
    pub async fn get_opt(&self, r: &Request) -> Result<Option<Value>, KubeError> {
        match self.send(r).await {
            Ok(v) => Ok(Some(v)),
            Err(KubeError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET `path` and hand each chunk of the body to `sink` as it arrives (a followed log
    /// streams until the server ends it).
    pub async fn stream(&self, path: &str, mut sink: impl FnMut(&[u8])) -> Result<(), KubeError> {
        let http = |source| KubeError::Http {
            method: "GET",
            path: path.to_string(),
            source,
        };
        let mut req = self
            .http
            .get(format!("{}{path}", self.server))
            // A followed log has no end: only the connection has a timeout.
            .timeout(Duration::from_secs(60 * 60 * 24 * 365));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(http)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.text().await.map_err(http)?;
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(KubeError::Api {
                method: "GET",
                path: path.to_string(),
                status,
                reason: body["reason"].as_str().unwrap_or_default().to_string(),
                message: body["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(300).collect()),
            });
        }
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            sink(&chunk);
        }
        Ok(())
    }

    /// Run a command in a container (`path` from [`super::exec_path`]) over a WebSocket, as
    /// `kubectl exec` does, and collect what it prints until the API server closes the stream.
    pub async fn exec(&self, path: &str) -> Result<ExecOutput, KubeError> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
        use tokio_tungstenite::tungstenite::{Message, protocol::Role};

        let fail = |message: String| KubeError::Exec {
            path: path.to_string(),
            message,
        };
        let key = generate_key();
        let mut req = self
            .http
            .get(format!("{}{path}", self.server))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", &key)
            .header("Sec-WebSocket-Protocol", EXEC_PROTOCOL);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|source| KubeError::Http {
            method: "GET",
            path: path.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        if status != 101 {
            let text = resp.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 403 {
                return Err(fail(format!(
                    "403 Forbidden: {}",
                    body["message"].as_str().unwrap_or("exec is not allowed")
                )));
            }
            return Err(KubeError::Api {
                method: "GET",
                path: path.to_string(),
                status,
                reason: body["reason"].as_str().unwrap_or_default().to_string(),
                message: body["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(300).collect()),
            });
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        if header("Sec-WebSocket-Accept") != derive_accept_key(key.as_bytes()) {
            return Err(fail("the WebSocket handshake's accept key is wrong".into()));
        }
        if header("Sec-WebSocket-Protocol") != EXEC_PROTOCOL {
            return Err(fail(format!(
                "the API server speaks `{}`, not {EXEC_PROTOCOL}",
                header("Sec-WebSocket-Protocol")
            )));
        }
        let upgraded = resp
            .upgrade()
            .await
            .map_err(|e| fail(format!("cannot upgrade the connection: {e}")))?;
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
        let mut out = ExecOutput::default();
        // The HTTP client's timeout ends with the upgrade: the command has its own.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => {
                    return Err(fail(format!("no end within {}s", self.timeout.as_secs())));
                }
                Ok(None) => break,
                Ok(Some(m)) => m,
            };
            match msg {
                Ok(Message::Binary(data)) => exec_message(&mut out, &data),
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                // The API server may drop the connection right after the status.
                Err(_) if out.exit_code.is_some() => break,
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_messages_by_channel_and_the_exit_code_from_the_status() {
        let mut out = ExecOutput::default();
        exec_message(&mut out, b"\x01{\"a\":");
        exec_message(&mut out, b"\x011}");
        exec_message(&mut out, b"\x02warning\n");
        exec_message(&mut out, b"");
        let status = |json: &[u8]| [b"\x03".as_slice(), json].concat();
        exec_message(
            &mut out,
            &status(br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [false], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#),
        );
        assert_eq!(out.stdout, b"{\"a\":1}");
        assert_eq!(out.stderr, b"warning\n");
        assert_eq!(out.exit_code, Some(3));
        assert!(out.message.as_deref().unwrap().contains("exit code 3"));
        let mut ok = ExecOutput::default();
        exec_message(&mut ok, &status(br#"{"metadata":{},"status":"Success"}"#));
        assert_eq!(ok.exit_code, Some(0));
    }
}

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
}

impl KubeClient {
    pub fn new(target: &Target, timeout: Duration) -> Result<KubeClient, KubeError> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("agent-army/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &target.ca_pem {
            b = b
                .add_root_certificate(reqwest::Certificate::from_pem(pem).map_err(KubeError::Tls)?);
        }
        if target.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let mut token = None;
        match &target.auth {
            Auth::None => {}
            Auth::Token(t) => token = Some(t.clone()),
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
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) || (status == 404 && r.method == "DELETE") {
            return Ok(body);
        }
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

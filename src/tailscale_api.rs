//! The Tailscale control-plane API (optional): removing stale devices so hostnames stay exact,
//! and minting one-off, pre-authorized auth keys per agent.
//!
//! Credentials are stack secrets: `tailscale_api_key` (an API access token) or an OAuth client
//! (`tailscale_oauth_client_id` + `tailscale_oauth_client_secret`, exchanged at
//! `POST /api/v2/oauth/token`). The base URL can be overridden with `AGENT_ARMY_TAILSCALE_API`.

use std::time::Duration;

use serde::Deserialize;

use crate::backoff;
use crate::secrets::Secret;

pub const DEFAULT_BASE: &str = "https://api.tailscale.com";
/// Lifetime of minted auth keys.
pub const KEY_EXPIRY_SECONDS: u64 = 3600;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TsError {
    #[error("Tailscale API: authentication failed (401): {0}")]
    Unauthorized(String),
    #[error("Tailscale API: permission denied (403): {0}")]
    Forbidden(String),
    #[error("Tailscale API: not found (404): {0}")]
    NotFound(String),
    #[error("Tailscale API: rate limited (429) after retries: {0}")]
    RateLimited(String),
    #[error("Tailscale API: {status}: {message}")]
    Other { status: u16, message: String },
    #[error("Tailscale API unreachable: {0}")]
    Transport(String),
}

impl TsError {
    pub fn help(&self) -> Option<String> {
        match self {
            TsError::Unauthorized(_) => Some("check `tailscale_api_key` or the OAuth client id/secret in the stack's secrets; API keys expire after 90 days at most".into()),
            TsError::Forbidden(_) => Some("the OAuth client needs the `devices:core` and `auth_keys` scopes, and must own the tags in `[tailscale] tags`".into()),
            TsError::RateLimited(_) => Some("wait a minute and re-run; agent-army already retried".into()),
            _ => None,
        }
    }
}

/// How agent-army authenticates to the API.
pub enum Credentials {
    ApiKey(Secret),
    OAuth {
        client_id: Secret,
        client_secret: Secret,
    },
}

/// A device of the tailnet (the fields agent-army uses).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub last_seen: Option<String>,
}

#[derive(Deserialize)]
struct DeviceList {
    devices: Vec<Device>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

#[derive(Deserialize)]
struct KeyResponse {
    id: String,
    key: String,
}

/// Whether `device` is `host` or one of its `host-N` duplicates.
pub fn matches_host(device: &Device, host: &str) -> bool {
    let label = device.name.split('.').next().unwrap_or_default();
    let dup = |l: &str| {
        l.strip_prefix(host)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    label == host || dup(label) || device.hostname == host
}

/// A logged-in client.
pub struct TailscaleApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
    oauth: bool,
}

impl TailscaleApi {
    /// Authenticate (exchanging OAuth client credentials for a token when needed).
    pub async fn connect(base: &str, creds: Credentials) -> Result<Self, TsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TsError::Transport(e.to_string()))?;
        let base = base.trim_end_matches('/').to_string();
        match creds {
            Credentials::ApiKey(k) => Ok(TailscaleApi {
                http,
                base,
                token: k,
                oauth: false,
            }),
            Credentials::OAuth {
                client_id,
                client_secret,
            } => {
                let url = format!("{base}/api/v2/oauth/token");
                let form = [
                    ("client_id", client_id.expose()),
                    ("client_secret", client_secret.expose()),
                    ("grant_type", "client_credentials"),
                ];
                let resp = send_retrying(|| http.post(&url).form(&form)).await?;
                let t: TokenResponse = resp
                    .json()
                    .await
                    .map_err(|e| TsError::Transport(e.to_string()))?;
                Ok(TailscaleApi {
                    http,
                    base,
                    token: Secret::new(t.access_token),
                    oauth: true,
                })
            }
        }
    }

    /// Whether keys can be minted (OAuth clients only: personal API keys mint keys tied to a
    /// user, which agent-army does not want on servers).
    pub fn can_mint(&self) -> bool {
        self.oauth
    }

    pub async fn devices(&self) -> Result<Vec<Device>, TsError> {
        let url = format!("{}/api/v2/tailnet/-/devices", self.base);
        let resp = send_retrying(|| self.http.get(&url).bearer_auth(self.token.expose())).await?;
        let list: DeviceList = resp
            .json()
            .await
            .map_err(|e| TsError::Transport(e.to_string()))?;
        Ok(list.devices)
    }

    pub async fn delete_device(&self, id: &str) -> Result<(), TsError> {
        let url = format!("{}/api/v2/device/{id}", self.base);
        match send_retrying(|| self.http.delete(&url).bearer_auth(self.token.expose())).await {
            Ok(_) | Err(TsError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A pre-authorized, single-use, non-ephemeral key with `tags`, valid for one hour.
    pub async fn mint_key(
        &self,
        tags: &[String],
        description: &str,
    ) -> Result<(String, Secret), TsError> {
        let url = format!("{}/api/v2/tailnet/-/keys", self.base);
        let body = serde_json::json!({
            "capabilities": {"devices": {"create": {
                "reusable": false,
                "ephemeral": false,
                "preauthorized": true,
                "tags": tags,
            }}},
            "expirySeconds": KEY_EXPIRY_SECONDS,
            "description": description,
        });
        let resp = send_retrying(|| {
            self.http
                .post(&url)
                .bearer_auth(self.token.expose())
                .json(&body)
        })
        .await?;
        let k: KeyResponse = resp
            .json()
            .await
            .map_err(|e| TsError::Transport(e.to_string()))?;
        Ok((k.id, Secret::new(k.key)))
    }
}

/// Send with retries on 429 (honouring `Retry-After`, capped) and 5xx / transport errors.
async fn send_retrying(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, TsError> {
    let attempts = 6;
    for attempt in 1..=attempts {
        let last = attempt == attempts;
        // 0.2 s doubling: at most 3.2 s before the last attempt.
        let delay = backoff::exponential(Duration::from_millis(200), attempt, Duration::MAX);
        let resp = match make().send().await {
            Ok(r) => r,
            Err(e) if !last => {
                tracing::debug!("tailscale api transport error, retrying: {e}");
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(e) => return Err(TsError::Transport(e.without_url().to_string())),
        };
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(30)));
        let message = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        match status {
            429 | 500..=599 if !last => {
                tokio::time::sleep(retry_after.unwrap_or(delay)).await;
            }
            401 => return Err(TsError::Unauthorized(message)),
            403 => return Err(TsError::Forbidden(message)),
            404 => return Err(TsError::NotFound(message)),
            429 => return Err(TsError::RateLimited(message)),
            _ => return Err(TsError::Other { status, message }),
        }
    }
    Err(TsError::Transport("retries exhausted".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, hostname: &str) -> Device {
        Device {
            id: "1".into(),
            name: name.into(),
            hostname: hostname.into(),
            last_seen: None,
        }
    }

    #[test]
    fn host_and_numbered_duplicates_match() {
        assert!(matches_host(
            &dev("dev-agent-pm.tail1.ts.net", "x"),
            "dev-agent-pm"
        ));
        assert!(matches_host(
            &dev("dev-agent-pm-1.tail1.ts.net", "x"),
            "dev-agent-pm"
        ));
        assert!(matches_host(
            &dev("dev-agent-pm-12.tail1.ts.net", "x"),
            "dev-agent-pm"
        ));
        assert!(matches_host(
            &dev("whatever.tail1.ts.net", "dev-agent-pm"),
            "dev-agent-pm"
        ));
        assert!(!matches_host(
            &dev("dev-agent-pm-x.tail1.ts.net", "y"),
            "dev-agent-pm"
        ));
        assert!(!matches_host(
            &dev("dev-agent-pmo.tail1.ts.net", "y"),
            "dev-agent-pm"
        ));
        assert!(!matches_host(
            &dev("dev-agent-pm-.tail1.ts.net", "y"),
            "dev-agent-pm"
        ));
        // `dev-agent` must not swallow `dev-agent-pm`.
        assert!(!matches_host(
            &dev("dev-agent-pm.tail1.ts.net", "y"),
            "dev-agent"
        ));
    }
}

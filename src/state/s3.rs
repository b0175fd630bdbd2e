//! State in S3 or an S3-compatible store (AWS S3, Hetzner Object Storage, MinIO, R2), locked
//! with conditional writes, as Terraform's S3 backend does with `use_lockfile`:
//! - the lock is an object created with `If-None-Match: *` (exactly one creator wins) that
//!   records its holder, and is deleted on release;
//! - every state write carries `If-Match` with the ETag this run read (or `If-None-Match: *`
//!   when there was none), so a lost update is refused by the store itself.
//!
//! Objects: `<prefix>/<project>/<stack>/state.json` and `.../lock.json`. Requests are signed
//! with SigV4 (`aws-sigv4`, the SDK's own signer) using the standard AWS credential chain
//! (`aws-config`); the endpoint is `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS.
//! The store is reached from the synchronous [`StateBackend`] calls through its own small
//! runtime on a scoped thread: never the command's runtime, whose workers may all be waiting
//! on the engine's state mutex while a write is in flight.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use super::{State, StateBackend, StateError, decode, encode};
use crate::env::{Env, vars};
use crate::lock::{Holder, LockError, LockGuard, Unlocked};
use crate::stack::model::S3Location;

/// The S3 backend of one stack.
pub struct S3Store {
    loc: S3Location,
    /// `<prefix>/<project>/<stack>/`
    base: String,
    endpoint: Option<String>,
    http: reqwest::Client,
    sdk: tokio::sync::OnceCell<aws_config::SdkConfig>,
    /// Credentials given directly (tests); `None`: the standard AWS chain.
    credentials: Option<aws_credential_types::Credentials>,
    /// ETag of the state object as this run last read or wrote it (`None`: absent).
    etag: Mutex<Option<String>>,
    /// The store's own runtime (one worker); `None` if it could not be started.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // Dropped from inside the command's runtime: shut down without blocking.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What a request returned.
struct Reply {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

impl S3Store {
    pub fn new(loc: S3Location, project: &str, stack: &str, env: &Env) -> S3Store {
        let prefix = loc.prefix.trim_matches('/');
        let base = if prefix.is_empty() {
            format!("{project}/{stack}/")
        } else {
            format!("{prefix}/{project}/{stack}/")
        };
        let endpoint = env
            .get(vars::AWS_ENDPOINT_URL_S3)
            .or_else(|| env.get(vars::AWS_ENDPOINT_URL))
            .map(|e| e.trim_end_matches('/').to_string());
        let http = reqwest::Client::builder()
            .user_agent(concat!("agent-army/", env!("CARGO_PKG_VERSION")))
            .timeout(env.request_timeout().unwrap_or(Duration::from_secs(60)))
            .build()
            .unwrap_or_default();
        S3Store {
            loc,
            base,
            endpoint,
            http,
            sdk: tokio::sync::OnceCell::new(),
            credentials: None,
            etag: Mutex::new(None),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("agent-army-s3")
                .enable_all()
                .build()
                .ok(),
        }
    }

    /// Run a request to completion from synchronous code, on the store's runtime.
    fn block<T: Send>(
        &self,
        f: impl std::future::Future<Output = Result<T, String>> + Send,
    ) -> Result<T, String> {
        let Some(rt) = &self.runtime else {
            return Err("cannot start the S3 client's runtime".into());
        };
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|_| Err("the S3 request thread panicked".into()))
        })
    }

    /// Sign with these credentials instead of the standard chain.
    pub fn with_credentials(mut self, access_key: &str, secret_key: &str) -> S3Store {
        self.credentials = Some(aws_credential_types::Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "agent-army",
        ));
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    fn url(&self, key: &str) -> String {
        let bucket = &self.loc.bucket;
        match (&self.endpoint, self.loc.path_style) {
            (Some(e), true) => format!("{e}/{bucket}/{key}"),
            (Some(e), false) => match e.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{bucket}.{host}/{key}"),
                None => format!("{e}/{bucket}/{key}"),
            },
            (None, true) => format!(
                "https://s3.{}.amazonaws.com/{bucket}/{key}",
                self.loc.region
            ),
            (None, false) => format!(
                "https://{bucket}.s3.{}.amazonaws.com/{key}",
                self.loc.region
            ),
        }
    }

    /// `s3://bucket/key`, for messages.
    fn shown(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.loc.bucket)
    }

    async fn request(
        &self,
        method: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let sdk = self
            .sdk
            .get_or_init(|| async {
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.loc.region.clone()))
                    .load()
                    .await
            })
            .await;
        let creds = match (&self.credentials, sdk.credentials_provider()) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => p
                .provide_credentials()
                .await
                .map_err(|e| format!("no AWS credentials: {e}"))?,
            (None, None) => return Err("no AWS credentials provider".into()),
        };
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.loc.region)
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let url = self.url(key);
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.http.request(method, &url);
        for (k, v) in headers.iter().copied().chain(instructions.headers()) {
            req = req.header(k, v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
        Ok(Reply { status, etag, body })
    }

    fn remote_err(&self, key: &str, message: String) -> StateError {
        StateError::Remote {
            location: self.shown(key),
            message,
        }
    }

    fn unexpected(reply: &Reply) -> String {
        let text = String::from_utf8_lossy(&reply.body);
        let code = text
            .split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or("");
        format!("HTTP {} {code}", reply.status)
    }

    fn lock_holder(&self) -> Result<Option<(Holder, Option<String>)>, LockError> {
        let key = self.key("lock.json");
        let reply = self
            .block(self.request("GET", &key, &[], Vec::new()))
            .map_err(|message| LockError::Remote {
                location: self.shown(&key),
                message,
            })?;
        match reply.status {
            404 => Ok(None),
            200 => {
                let holder = serde_json::from_slice::<Holder>(&reply.body).map_err(|e| {
                    LockError::Remote {
                        location: self.shown(&key),
                        message: format!("the lock object is not a lock record: {e}"),
                    }
                })?;
                Ok(Some((holder, reply.etag)))
            }
            _ => Err(LockError::Remote {
                location: self.shown(&key),
                message: Self::unexpected(&reply),
            }),
        }
    }
}

/// Deletes the lock object when the run ends, if it is still this run's.
struct S3Lock {
    store: S3StoreHandle,
    id: String,
}

/// What the release needs: the store's request path, without borrowing the store.
#[derive(Clone)]
struct S3StoreHandle(std::sync::Arc<S3Store>);

impl Drop for S3Lock {
    fn drop(&mut self) {
        let store = &self.store.0;
        if let Ok(Some((h, _))) = store.lock_holder()
            && h.id == self.id
        {
            let key = store.key("lock.json");
            if let Err(e) = store.block(store.request("DELETE", &key, &[], Vec::new())) {
                eprintln!(
                    "warning: could not release the lock {}: {e}; remove it with `agent-army force-unlock {}`",
                    store.shown(&key),
                    self.id
                );
            }
        }
    }
}

/// The backend, shared so that the lock's release can reach it.
pub struct SharedS3(std::sync::Arc<S3Store>);

impl SharedS3 {
    pub fn new(store: S3Store) -> SharedS3 {
        SharedS3(std::sync::Arc::new(store))
    }
}

impl StateBackend for SharedS3 {
    fn location(&self) -> String {
        self.0.shown(&self.0.key("state.json"))
    }

    fn read(&self) -> Result<Option<State>, StateError> {
        let s = &self.0;
        let key = s.key("state.json");
        let reply = s
            .block(s.request("GET", &key, &[], Vec::new()))
            .map_err(|m| s.remote_err(&key, m))?;
        match reply.status {
            404 => {
                *s.etag.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(None)
            }
            200 => {
                *s.etag.lock().unwrap_or_else(|p| p.into_inner()) = reply.etag.clone();
                decode(&reply.body, Path::new(&s.shown(&key))).map(Some)
            }
            _ => Err(s.remote_err(&key, S3Store::unexpected(&reply))),
        }
    }

    fn lock(&self, operation: &str, user: &str, wait: Duration) -> Result<LockGuard, LockError> {
        let s = &self.0;
        let key = s.key("lock.json");
        let holder = Holder::this_process(operation, user);
        let body = serde_json::to_vec(&holder).unwrap_or_default();
        let deadline = Instant::now() + wait;
        loop {
            let reply = s
                .block(s.request("PUT", &key, &[("if-none-match", "*")], body.clone()))
                .map_err(|message| LockError::Remote {
                    location: s.shown(&key),
                    message,
                })?;
            match reply.status {
                200 | 201 => break,
                // 412: another holder created it first; 409: a concurrent conditional write.
                412 | 409 => {
                    if Instant::now() >= deadline {
                        let shown = match s.lock_holder()? {
                            Some((h, _)) => h.describe(),
                            None => "another run (it released the lock just now; try again)".into(),
                        };
                        return Err(LockError::Held(shown));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                _ => {
                    return Err(LockError::Remote {
                        location: s.shown(&key),
                        message: S3Store::unexpected(&reply),
                    });
                }
            }
        }
        let id = holder.id.clone();
        Ok(LockGuard::new(
            id.clone(),
            None,
            S3Lock {
                store: S3StoreHandle(self.0.clone()),
                id,
            },
        ))
    }

    fn write(&self, _lock: &LockGuard, state: &mut State) -> Result<(), StateError> {
        let s = &self.0;
        let key = s.key("state.json");
        let body = encode(state, Path::new(&s.shown(&key)))?;
        let known = s.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let condition = match &known {
            Some(etag) => ("if-match", etag.as_str()),
            None => ("if-none-match", "*"),
        };
        let reply = s
            .block(s.request(
                "PUT",
                &key,
                &[condition, ("content-type", "application/json")],
                body,
            ))
            .map_err(|m| s.remote_err(&key, m))?;
        match reply.status {
            200 | 201 => {
                *s.etag.lock().unwrap_or_else(|p| p.into_inner()) = reply.etag;
                Ok(())
            }
            412 | 409 => Err(StateError::Conflict {
                location: s.shown(&key),
            }),
            _ => Err(s.remote_err(&key, S3Store::unexpected(&reply))),
        }
    }

    fn remove(&self, _lock: &LockGuard) -> Result<(), StateError> {
        let s = &self.0;
        let key = s.key("state.json");
        let reply = s
            .block(s.request("DELETE", &key, &[], Vec::new()))
            .map_err(|m| s.remote_err(&key, m))?;
        match reply.status {
            200 | 204 | 404 => {
                *s.etag.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(())
            }
            _ => Err(s.remote_err(&key, S3Store::unexpected(&reply))),
        }
    }

    fn force_unlock(&self, id: &str) -> Result<Unlocked, LockError> {
        let s = &self.0;
        let key = s.key("lock.json");
        match s.lock_holder()? {
            None => Ok(Unlocked::NotHeld),
            Some((h, _)) if h.id == id => {
                s.block(s.request("DELETE", &key, &[], Vec::new()))
                    .map_err(|message| LockError::Remote {
                        location: s.shown(&key),
                        message,
                    })?;
                Ok(Unlocked::Removed(h))
            }
            Some((h, _)) => Err(LockError::WrongId {
                given: id.to_string(),
                holder: h.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(path_style: bool) -> S3Location {
        S3Location {
            bucket: "acme-state".into(),
            prefix: "/agent-army/".into(),
            region: "eu-central-1".into(),
            path_style,
        }
    }

    #[test]
    fn object_urls_follow_the_addressing_style_and_endpoint() {
        let env = Env::default();
        let s = S3Store::new(loc(false), "acme", "prod", &env);
        assert_eq!(
            s.url(&s.key("state.json")),
            "https://acme-state.s3.eu-central-1.amazonaws.com/agent-army/acme/prod/state.json"
        );
        let s = S3Store::new(loc(true), "acme", "prod", &env);
        assert_eq!(
            s.url(&s.key("lock.json")),
            "https://s3.eu-central-1.amazonaws.com/acme-state/agent-army/acme/prod/lock.json"
        );
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/"),
            ("AWS_ENDPOINT_URL_S3", "https://fsn1.your-objectstorage.com"),
        ]);
        let s = S3Store::new(loc(false), "acme", "prod", &env);
        assert_eq!(
            s.url(&s.key("state.json")),
            "https://acme-state.fsn1.your-objectstorage.com/agent-army/acme/prod/state.json"
        );
        let env = Env::from_pairs([("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/")]);
        let s = S3Store::new(loc(true), "acme", "prod", &env);
        assert_eq!(
            s.url(&s.key("state.json")),
            "http://127.0.0.1:9000/acme-state/agent-army/acme/prod/state.json"
        );
    }
}

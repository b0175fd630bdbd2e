//! Hetzner Cloud API v1: one firewall with no inbound rules, one break-glass SSH key, one
//! server per agent, labels on everything.
//!
//! The API allows 3600 requests per hour per project, so this client is frugal:
//! - the stack is observed with two label-selected listings (servers, firewalls);
//! - every wait (server created, server deleted, firewall rules set) goes through ONE shared
//!   poll loop that asks for all pending actions in one `GET /actions?id=..&id=..` call per
//!   interval, however many agents are being created at once;
//! - polling slows down when `RateLimit-Remaining` runs low, and a 429 is waited out until
//!   `RateLimit-Reset` (capped, jittered) and retried, never failing the deploy;
//! - 5xx answers (`server_error`, `unavailable`, `timeout`), `locked`/`conflict` and connection
//!   errors are retried a few times with jittered exponential backoff.
//!
//! Crash safety: server names are unique per Hetzner project, so a create retried after a
//! lost answer (or a crash) meets `uniqueness_error`; the server of that name is adopted when
//! its labels say it is this agent's with the same fingerprint. The SSH key and the firewall
//! are reused the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use tokio::time::Instant;

use super::{
    NetworkSpec, Observed, ObservedNetwork, ObservedServer, Provider, ProviderError, ServerSpec,
    ServerState, StackId, tags,
};
use crate::secrets::Secret;
use crate::stack::ProviderKind;

pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";
/// Largest page the API serves.
const PER_PAGE: u32 = 50;
/// Action ids per `GET /actions` call: the default page size, so one page always holds them.
const ACTION_IDS_PER_CALL: usize = 25;
/// Retries of 5xx / locked / connection failures (after the first attempt).
const MAX_RETRIES: u32 = 4;
/// Longest single wait for the rate limit to recover.
const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(60);
/// Total time one call may spend waiting out 429s before giving up (the limit is per hour).
const RATE_LIMIT_GIVE_UP: Duration = Duration::from_secs(75 * 60);
/// How long a server may take to be created or deleted.
const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a firewall may stay attached to servers that are being deleted.
const FIREWALL_IN_USE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const RULE_DESCRIPTION: &str = "agent-army allowed_ssh_cidrs";

/// Label key with agent-army's prefix.
pub fn label_key(k: &str) -> String {
    format!("agent-army/{k}")
}

/// `agent-army/project=P,agent-army/stack=S[,extra k=v...]`.
pub fn label_selector(stack: &StackId, extra: &[(&str, &str)]) -> String {
    let mut parts = vec![
        format!("{}={}", label_key(tags::PROJECT), stack.project),
        format!("{}={}", label_key(tags::STACK), stack.stack),
    ];
    parts.extend(extra.iter().map(|(k, v)| format!("{}={v}", label_key(k))));
    parts.join(",")
}

/// The labels agent-army puts on a resource.
fn labels(stack: &StackId, role: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(label_key(tags::PROJECT), stack.project.clone());
    m.insert(label_key(tags::STACK), stack.stack.clone());
    m.insert(label_key(tags::ROLE), role.to_string());
    for (k, v) in extra {
        m.insert(label_key(k), v.to_string());
    }
    m
}

fn is_ours(stack: &StackId, l: &HashMap<String, String>) -> bool {
    l.get(&label_key(tags::PROJECT)) == Some(&stack.project)
        && l.get(&label_key(tags::STACK)) == Some(&stack.stack)
}

// ---- API shapes (only the fields we read) ----------------------------------------------

#[derive(Debug, Clone, Deserialize)]
struct ServerObj {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    created: String,
    #[serde(default)]
    labels: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct FirewallObj {
    id: u64,
    #[serde(default)]
    labels: HashMap<String, String>,
    #[serde(default)]
    rules: Vec<RuleObj>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RuleObj {
    #[serde(default)]
    direction: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    source_ips: Vec<String>,
    #[serde(default)]
    destination_ips: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct SshKeyObj {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    public_key: String,
}

#[derive(Debug, Clone, Deserialize)]
struct ActionObj {
    id: u64,
    #[serde(default)]
    command: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: Option<ActionErr>,
}

#[derive(Debug, Clone, Deserialize)]
struct ActionErr {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct CreateServerResp {
    server: ServerObj,
    action: Option<ActionObj>,
    #[serde(default)]
    next_actions: Vec<ActionObj>,
}

#[derive(Deserialize)]
struct ActionResp {
    action: ActionObj,
}

#[derive(Deserialize)]
struct ActionsResp {
    #[serde(default)]
    actions: Vec<ActionObj>,
}

#[derive(Deserialize)]
struct FirewallResp {
    firewall: FirewallObj,
}

#[derive(Deserialize)]
struct SshKeyResp {
    ssh_key: SshKeyObj,
}

#[derive(Deserialize)]
struct ServerResp {
    server: ServerObj,
}

// ---- pure helpers (unit-tested below) --------------------------------------------------

/// What the last answer said about the rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix time (seconds) when the limit is fully restored.
    pub reset: Option<u64>,
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (any case).
pub fn parse_rate_headers(h: &HeaderMap) -> RateInfo {
    let num = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    RateInfo {
        limit: num("ratelimit-limit"),
        remaining: num("ratelimit-remaining"),
        reset: num("ratelimit-reset"),
    }
}

/// How long to wait after a 429: until the reset time, at least 1 s (the bucket refills one
/// request per second), at most [`RATE_LIMIT_MAX_WAIT`], plus `jitter`.
pub fn rate_limit_wait(reset: Option<u64>, now_unix: u64, jitter: Duration) -> Duration {
    let secs = reset.map(|r| r.saturating_sub(now_unix)).unwrap_or(1);
    Duration::from_secs(secs).clamp(Duration::from_secs(1), RATE_LIMIT_MAX_WAIT) + jitter
}

/// Poll interval for actions: `base`, slower when few requests remain this hour.
pub fn poll_delay(base: Duration, remaining: Option<u64>, limit: Option<u64>) -> Duration {
    match (remaining, limit) {
        (Some(r), Some(l)) if l > 0 && r * 20 < l => base.max(Duration::from_secs(10)),
        (Some(r), Some(l)) if l > 0 && r * 5 < l => base.max(Duration::from_secs(3)),
        _ => base,
    }
}

/// Backoff before retry number `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s.. capped at 8 s, plus
/// up to half of it as jitter (`jitter_frac` in 0..=1).
pub fn backoff(attempt: u32, jitter_frac: f64) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(4))
        .min(Duration::from_secs(8));
    base + base.mul_f64(jitter_frac.clamp(0.0, 1.0) / 2.0)
}

/// Firewall rules for `allowed_ssh_cidrs`: none at all, or one inbound tcp/22 rule.
pub fn firewall_rules(cidrs: &[String]) -> Value {
    if cidrs.is_empty() {
        return json!([]);
    }
    json!([{
        "direction": "in",
        "protocol": "tcp",
        "port": "22",
        "source_ips": cidrs,
        "description": RULE_DESCRIPTION,
    }])
}

/// CIDRs allowed to port 22 by `rules`; any other rule shows up as a marker so that the plan
/// sees drift and resets the rules.
fn cidrs_from_rules(rules: &[RuleObj]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        let ssh = r.direction == "in" && r.protocol == "tcp" && r.port.as_deref() == Some("22");
        if ssh {
            out.extend(r.source_ips.iter().cloned());
        } else {
            out.push(format!(
                "(rule {} {} {} {})",
                r.direction,
                r.protocol,
                r.port.as_deref().unwrap_or("-"),
                if r.direction == "in" {
                    r.source_ips.join(" ")
                } else {
                    r.destination_ips.join(" ")
                }
            ));
        }
    }
    out
}

fn map_status(s: &str) -> ServerState {
    match s {
        "initializing" | "starting" => ServerState::Pending,
        "running" => ServerState::Running,
        "stopping" => ServerState::Stopping,
        "off" => ServerState::Stopped,
        "deleting" => ServerState::Deleting,
        other => ServerState::Other(other.to_string()),
    }
}

/// Whether two OpenSSH public key lines hold the same key (comments ignored).
fn same_public_key(a: &str, b: &str) -> bool {
    let k = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    !k(a).is_empty() && k(a) == k(b)
}

/// Advice for a Hetzner error code.
pub fn advice_for(code: &str, message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let s = match code {
        "unauthorized" => {
            "check the Hetzner API token: HCLOUD_TOKEN, or the stack's `hcloud_token` secret (`agent-army secrets set hcloud_token`)"
        }
        "forbidden" => {
            "the Hetzner API token may not do this: create a Read & Write token for the project"
        }
        "rate_limit_exceeded" => {
            "Hetzner allows 3600 API requests per hour per project, shared by every tool using it: wait a few minutes, lower --parallelism, or stop other clients of the project"
        }
        "resource_unavailable" | "placement_error" => {
            "the server type is not available in this location right now: set another `location` or `server_type` in the stack file (or `instance_type` on the agent), or retry later"
        }
        "invalid_input" if m.contains("unsupported location for server type") => {
            "this server type is not offered in this location: choose another `location` or `server_type` in the stack file (or `instance_type` on the agent)"
        }
        "uniqueness_error" => {
            "a Hetzner resource with this name already exists in the project but is not this stack's (another agent-army project or stack with the same names, or created by hand): delete or rename it, or use another stack name"
        }
        "resource_limit_exceeded" => {
            "the Hetzner project reached a resource limit (e.g. number of servers): remove resources or ask Hetzner support to raise it"
        }
        "server_error" | "unavailable" | "timeout" | "bad_gateway" => {
            "the Hetzner API is having trouble: run the command again later (it converges)"
        }
        "spec_violation" => {
            "a request or answer does not match the Hetzner OpenAPI spec: this is a bug in agent-army, please report it"
        }
        _ => return None,
    };
    Some(s.to_string())
}

/// A non-2xx answer as a [`ProviderError`]: Hetzner's `{"error":{code,message,details}}`, or
/// the `application/problem+json` of a validating proxy (Prism), or raw text.
pub fn api_error(status: u16, content_type: &str, body: &str) -> ProviderError {
    let v: Option<Value> = serde_json::from_str(body).ok();
    if content_type.contains("problem+json") {
        let v = v.unwrap_or(Value::Null);
        let title = v["title"].as_str().unwrap_or("problem");
        let mut msgs: Vec<String> = v["validation"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        let loc = x["location"]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .map(|p| {
                                        p.as_str().map(str::to_string).unwrap_or(p.to_string())
                                    })
                                    .collect::<Vec<_>>()
                                    .join(".")
                            })
                            .unwrap_or_default();
                        format!("{loc}: {}", x["message"].as_str().unwrap_or(""))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if msgs.is_empty()
            && let Some(d) = v["detail"].as_str()
        {
            msgs.push(d.to_string());
        }
        let code = if status == 401 {
            "unauthorized"
        } else {
            "spec_violation"
        };
        let message = format!("{status} {title}: {}", msgs.join("; "));
        let mut e = ProviderError::new(code, message);
        e.advice = advice_for(code, "");
        return e;
    }
    if let Some(err) = v
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
    {
        let code = err["code"].as_str().unwrap_or("unknown").to_string();
        let mut message = err["message"].as_str().unwrap_or("").to_string();
        let fields: Vec<String> = err["details"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| {
                        let name = f["name"].as_str()?;
                        let msgs: Vec<&str> = f["messages"]
                            .as_array()
                            .map(|m| m.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        (!msgs.is_empty()).then(|| format!("{name}: {}", msgs.join(", ")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !fields.is_empty() {
            message = format!("{message} ({})", fields.join("; "));
        }
        let advice = advice_for(&code, &message);
        let mut e = ProviderError::new(code, message);
        e.advice = advice;
        return e;
    }
    let code = match status {
        401 => "unauthorized",
        429 => "rate_limit_exceeded",
        500 => "server_error",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "timeout",
        _ => "http_error",
    };
    let text: String = body.chars().take(300).collect();
    let mut e = ProviderError::new(code, format!("HTTP {status}: {}", text.trim()));
    e.advice = advice_for(code, "");
    e
}

/// Worth another attempt: the API had trouble or the resource is busy with another action.
fn is_retryable(status: u16, code: &str) -> bool {
    matches!(
        code,
        "server_error" | "unavailable" | "timeout" | "bad_gateway" | "locked" | "conflict"
    ) || (matches!(status, 500 | 502 | 503 | 504) && code != "spec_violation")
}

fn action_error(a: &ActionObj) -> ProviderError {
    let (code, msg) = a
        .error
        .as_ref()
        .map(|e| (e.code.clone(), e.message.clone()))
        .unwrap_or_else(|| ("action_failed".into(), String::new()));
    let code = if code.is_empty() {
        "action_failed".to_string()
    } else {
        code
    };
    let mut e = ProviderError::new(
        code.clone(),
        format!("action {} ({}) failed: {msg}", a.command, a.id),
    );
    e.advice = advice_for(&code, &msg);
    e
}

fn jitter() -> f64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32() as f64 / u32::MAX as f64
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_id(what: &str, id: &str) -> Result<u64, ProviderError> {
    id.parse::<u64>().map_err(|_| {
        ProviderError::new(
            "invalid_id",
            format!("{what} id `{id}` is not a Hetzner id (a number)"),
        )
    })
}

// ---- the client -----------------------------------------------------------------------

#[derive(Default)]
struct RateState {
    info: RateInfo,
    /// No request goes out before this instant (set by a 429 or an exhausted limit).
    blocked_until: Option<Instant>,
}

type Waiter = oneshot::Sender<Result<(), ProviderError>>;

/// Actions somebody waits for, served by one poll loop.
#[derive(Default)]
struct Waiters {
    pending: BTreeMap<u64, Vec<Waiter>>,
    /// Whether the poll loop task is running.
    polling: bool,
}

/// How a server's deletion is to be awaited.
enum Deletion {
    Action(u64),
    /// The delete call found no such server.
    Gone,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    token: Secret,
    stack: StackId,
    location: String,
    poll: Duration,
    rate: Mutex<RateState>,
    waiters: Mutex<Waiters>,
    /// Server id → actions of its creation (create, start, apply firewall).
    created: Mutex<HashMap<String, Vec<u64>>>,
    deleting: Mutex<HashMap<String, Deletion>>,
    /// The stack's break-glass key id, looked up when a spec comes without one.
    break_glass: OnceCell<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct HetznerProvider {
    inner: Arc<Inner>,
}

/// Hetzner's list price of a server type per month in one location, in EUR.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MonthlyPrice {
    pub net: f64,
    pub gross: f64,
}

#[derive(Deserialize)]
struct ServerTypeObj {
    name: String,
    prices: Vec<PriceObj>,
}
#[derive(Deserialize)]
struct PriceObj {
    location: String,
    price_monthly: PriceValue,
}
#[derive(Deserialize)]
struct PriceValue {
    net: String,
    gross: String,
}

impl HetznerProvider {
    /// The monthly list price of `server_type` in the stack's location, from the API's own
    /// server-type prices; `None` when the type is unknown or not sold there.
    pub async fn monthly_price(
        &self,
        server_type: &str,
    ) -> Result<Option<MonthlyPrice>, ProviderError> {
        let me = &self.inner;
        let types: Vec<ServerTypeObj> = me
            .list_all(
                "/server_types",
                "server_types",
                &[("name", server_type.to_string())],
            )
            .await?;
        Ok(types
            .iter()
            .filter(|t| t.name == server_type)
            .flat_map(|t| &t.prices)
            .find(|p| p.location == me.location)
            .and_then(|p| {
                Some(MonthlyPrice {
                    net: p.price_monthly.net.parse().ok()?,
                    gross: p.price_monthly.gross.parse().ok()?,
                })
            }))
    }

    pub fn new(
        endpoint: &str,
        token: Secret,
        stack: StackId,
        location: String,
        poll: Duration,
        request_timeout: Option<Duration>,
    ) -> Result<Self, ProviderError> {
        let base = endpoint.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ProviderError::new(
                "invalid_endpoint",
                format!("Hetzner endpoint `{base}` is not an http(s) URL"),
            )
            .with_advice(format!("unset HCLOUD_ENDPOINT to use {DEFAULT_ENDPOINT}")));
        }
        if token.expose().trim().is_empty() {
            return Err(
                ProviderError::new("unauthorized", "the Hetzner API token is empty")
                    .with_advice(advice_for("unauthorized", "").unwrap_or_default()),
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("agent-army/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .timeout(request_timeout.unwrap_or(Duration::from_secs(90)))
            .build()
            .map_err(|e| ProviderError::new("client_init", e.to_string()))?;
        Ok(HetznerProvider {
            inner: Arc::new(Inner {
                http,
                base,
                token,
                stack,
                location,
                poll: poll.max(Duration::from_millis(10)),
                rate: Mutex::new(RateState::default()),
                waiters: Mutex::new(Waiters::default()),
                created: Mutex::new(HashMap::new()),
                deleting: Mutex::new(HashMap::new()),
                break_glass: OnceCell::new(),
            }),
        })
    }
}

impl Inner {
    /// `agent-army-<project>-<stack>`: name of the firewall and the SSH key.
    fn resource_name(&self) -> String {
        format!("agent-army-{}-{}", self.stack.project, self.stack.stack)
    }

    fn selector(&self, extra: &[(&str, &str)]) -> String {
        label_selector(&self.stack, extra)
    }

    fn note_rate(&self, h: &HeaderMap) {
        let info = parse_rate_headers(h);
        let mut r = lock(&self.rate);
        if info.remaining.is_some() {
            r.info = info;
        }
        if info.remaining == Some(0) {
            // The bucket refills one request per second.
            let until = Instant::now() + Duration::from_secs(1);
            r.blocked_until = Some(r.blocked_until.map_or(until, |b| b.max(until)));
        }
    }

    fn block_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut r = lock(&self.rate);
        r.blocked_until = Some(r.blocked_until.map_or(until, |b| b.max(until)));
    }

    async fn throttle(&self) {
        let until = lock(&self.rate).blocked_until;
        if let Some(u) = until
            && u > Instant::now()
        {
            tokio::time::sleep_until(u).await;
        }
    }

    fn poll_delay(&self) -> Duration {
        let info = lock(&self.rate).info;
        poll_delay(self.poll, info.remaining, info.limit)
    }

    /// One API call with rate-limit waits and retries. `T` is read from the JSON answer
    /// (`null` for an empty one).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.base);
        let mut attempt: u32 = 0;
        let mut rate_waited = Duration::ZERO;
        loop {
            self.throttle().await;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.token.expose());
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let answer = match req.send().await {
                Ok(resp) => {
                    self.note_rate(resp.headers());
                    let status = resp.status().as_u16();
                    let ctype = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    resp.text().await.map(|t| (status, ctype, t))
                }
                Err(e) => Err(e),
            };
            let (status, ctype, text) = match answer {
                Ok(a) => a,
                Err(e) => {
                    if attempt < MAX_RETRIES {
                        attempt += 1;
                        let d = backoff(attempt, jitter());
                        tracing::info!("{method} {path}: {e}; retry {attempt} in {d:?}");
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    return Err(ProviderError {
                        code: "request_failed".into(),
                        message: format!("{method} {path}: {e}"),
                        advice: Some(
                            "check network access to the Hetzner API (or HCLOUD_ENDPOINT)".into(),
                        ),
                        transient: true,
                    });
                }
            };
            if (200..300).contains(&status) {
                let v: Value = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        ProviderError::new(
                            "invalid_response",
                            format!("{method} {path}: answer is not JSON: {e}"),
                        )
                    })?
                };
                return serde_json::from_value(v).map_err(|e| {
                    ProviderError::new(
                        "invalid_response",
                        format!("{method} {path}: unexpected answer: {e}"),
                    )
                });
            }
            let mut err = api_error(status, &ctype, &text);
            if status == 429 || err.code == "rate_limit_exceeded" {
                let reset = lock(&self.rate).info.reset;
                let wait = rate_limit_wait(
                    reset,
                    now_unix(),
                    Duration::from_millis((jitter() * 250.0) as u64),
                );
                if rate_waited + wait <= RATE_LIMIT_GIVE_UP {
                    rate_waited += wait;
                    if wait >= Duration::from_secs(10) {
                        tracing::warn!(
                            "Hetzner API rate limit reached (3600 requests/hour); waiting {}s",
                            wait.as_secs()
                        );
                    } else {
                        tracing::info!("{method} {path}: rate limited; waiting {wait:?}");
                    }
                    self.block_for(wait);
                    continue;
                }
                err.advice = advice_for("rate_limit_exceeded", "");
                return Err(err);
            }
            if is_retryable(status, &err.code) {
                if attempt < MAX_RETRIES {
                    attempt += 1;
                    let d = backoff(attempt, jitter());
                    tracing::info!("{method} {path}: {err}; retry {attempt} in {d:?}");
                    tokio::time::sleep(d).await;
                    continue;
                }
                err.transient = true;
            }
            err.message = format!("{} (on {method} {path})", err.message);
            return Err(err);
        }
    }

    /// Every item of a paginated listing.
    async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        filters: &[(&str, String)],
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let mut page: u64 = 1;
        loop {
            let mut q: Vec<(&str, String)> = filters.to_vec();
            q.push(("per_page", PER_PAGE.to_string()));
            q.push(("page", page.to_string()));
            let v: Value = self.call(Method::GET, path, &q, None).await?;
            let items: Vec<T> = serde_json::from_value(v[key].clone()).map_err(|e| {
                ProviderError::new(
                    "invalid_response",
                    format!("GET {path}: unexpected `{key}`: {e}"),
                )
            })?;
            out.extend(items);
            match v["meta"]["pagination"]["next_page"].as_u64() {
                Some(n) if n > page && page < 10_000 => page = n,
                _ => return Ok(out),
            }
        }
    }

    // ---- actions ----------------------------------------------------------------------

    /// Wait until all `ids` succeed (or one fails), sharing one poll loop with every other
    /// waiter of this provider.
    async fn wait_actions(self: &Arc<Self>, ids: &[u64], what: &str) -> Result<(), ProviderError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut rxs = Vec::with_capacity(ids.len());
        let start_poller = {
            let mut w = lock(&self.waiters);
            for id in ids {
                let (tx, rx) = oneshot::channel();
                w.pending.entry(*id).or_default().push(tx);
                rxs.push(rx);
            }
            !std::mem::replace(&mut w.polling, true)
        };
        if start_poller {
            tokio::spawn(Self::poll_actions(self.clone()));
        }
        let all = async {
            for rx in rxs {
                match rx.await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(ProviderError::new(
                            "internal",
                            "the action poller stopped unexpectedly",
                        ));
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(WAIT_TIMEOUT, all).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::new(
                "timeout",
                format!(
                    "{what}: not done after {} minutes",
                    WAIT_TIMEOUT.as_secs() / 60
                ),
            )),
        }
    }

    /// The one poll loop: every interval, one `GET /actions?id=..` for all pending actions
    /// (in chunks of [`ACTION_IDS_PER_CALL`]); ends when nobody waits any more.
    async fn poll_actions(self: Arc<Self>) {
        // Should this task panic, waiters learn it (their senders drop) instead of hanging,
        // and the next waiter starts a new loop.
        struct Guard<'a>(&'a Mutex<Waiters>);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut w = lock(self.0);
                    w.polling = false;
                    w.pending.clear();
                }
            }
        }
        let _guard = Guard(&self.waiters);
        loop {
            tokio::time::sleep(self.poll_delay()).await;
            let ids: Vec<u64> = {
                let mut w = lock(&self.waiters);
                w.pending.retain(|_, txs| {
                    txs.retain(|tx| !tx.is_closed());
                    !txs.is_empty()
                });
                if w.pending.is_empty() {
                    w.polling = false;
                    return;
                }
                w.pending.keys().copied().collect()
            };
            for chunk in ids.chunks(ACTION_IDS_PER_CALL) {
                let q: Vec<(&str, String)> =
                    chunk.iter().map(|id| ("id", id.to_string())).collect();
                let r: Result<ActionsResp, ProviderError> =
                    self.call(Method::GET, "/actions", &q, None).await;
                let mut w = lock(&self.waiters);
                match r {
                    Ok(resp) => {
                        for a in resp.actions {
                            let done = match a.status.as_str() {
                                "success" => Ok(()),
                                "error" => Err(action_error(&a)),
                                _ => continue,
                            };
                            for tx in w.pending.remove(&a.id).unwrap_or_default() {
                                let _ = tx.send(done.clone());
                            }
                        }
                    }
                    Err(e) => {
                        for id in chunk {
                            for tx in w.pending.remove(id).unwrap_or_default() {
                                let _ = tx.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Fallback when no action is known: poll the server itself.
    async fn wait_server(&self, id: u64, gone: bool) -> Result<(), ProviderError> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let r: Result<ServerResp, ProviderError> = self
                .call(Method::GET, &format!("/servers/{id}"), &[], None)
                .await;
            match r {
                Err(e) if e.code == "not_found" => {
                    return if gone {
                        Ok(())
                    } else {
                        Err(ProviderError::new(
                            "not_found",
                            format!("server {id} disappeared while starting"),
                        ))
                    };
                }
                Err(e) => return Err(e),
                Ok(s) if !gone && s.server.status == "running" => return Ok(()),
                Ok(s) if !gone && s.server.status == "deleting" => {
                    return Err(ProviderError::new(
                        "unexpected_state",
                        format!("server {id} is being deleted instead of starting"),
                    ));
                }
                Ok(_) => {}
            }
            if Instant::now() > deadline {
                return Err(ProviderError::new(
                    "timeout",
                    format!(
                        "server {id} did not {} in {} minutes",
                        if gone { "go away" } else { "start" },
                        WAIT_TIMEOUT.as_secs() / 60
                    ),
                ));
            }
            tokio::time::sleep(self.poll_delay()).await;
        }
    }

    // ---- network ----------------------------------------------------------------------

    async fn ensure_ssh_key(&self, public_key: &str) -> Result<String, ProviderError> {
        let name = self.resource_name();
        let body = json!({
            "name": name,
            "public_key": public_key.trim(),
            "labels": labels(&self.stack, tags::ROLE_SSH_KEY, &[]),
        });
        let err = match self
            .call::<SshKeyResp>(Method::POST, "/ssh_keys", &[], Some(&body))
            .await
        {
            Ok(r) => return Ok(r.ssh_key.id.to_string()),
            Err(e) if e.code == "uniqueness_error" => e,
            Err(e) => return Err(e),
        };
        // Left by an interrupted run? Reuse it when it is the same key; replace a stale one.
        let ours: Vec<SshKeyObj> = self.stack_ssh_keys().await?;
        if let Some(k) = ours
            .iter()
            .find(|k| same_public_key(&k.public_key, public_key))
        {
            return Ok(k.id.to_string());
        }
        if let Some(k) = ours.iter().find(|k| k.name == name) {
            self.delete_ssh_key(k.id).await?;
            let r: SshKeyResp = self
                .call(Method::POST, "/ssh_keys", &[], Some(&body))
                .await?;
            return Ok(r.ssh_key.id.to_string());
        }
        Err(ProviderError {
            message: format!("SSH key `{name}`: {}", err.message),
            ..err
        })
    }

    async fn delete_ssh_key(&self, id: u64) -> Result<(), ProviderError> {
        match self
            .call::<Value>(Method::DELETE, &format!("/ssh_keys/{id}"), &[], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == "not_found" => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn ensure_firewall(self: &Arc<Self>, cidrs: &[String]) -> Result<u64, ProviderError> {
        let name = self.resource_name();
        let body = json!({
            "name": name,
            "labels": labels(&self.stack, tags::ROLE_NETWORK, &[]),
            "rules": firewall_rules(cidrs),
        });
        let err = match self
            .call::<FirewallResp>(Method::POST, "/firewalls", &[], Some(&body))
            .await
        {
            Ok(r) => return Ok(r.firewall.id),
            Err(e) if e.code == "uniqueness_error" => e,
            Err(e) => return Err(e),
        };
        let same_name: Vec<FirewallObj> = self
            .list_all("/firewalls", "firewalls", &[("name", name.clone())])
            .await?;
        if let Some(f) = same_name.iter().find(|f| is_ours(&self.stack, &f.labels)) {
            let mut have = cidrs_from_rules(&f.rules);
            let mut want = cidrs.to_vec();
            have.sort();
            want.sort();
            if have != want {
                self.set_rules(f.id, cidrs).await?;
            }
            return Ok(f.id);
        }
        Err(ProviderError {
            message: format!("firewall `{name}`: {}", err.message),
            ..err
        })
    }

    async fn set_rules(self: &Arc<Self>, id: u64, cidrs: &[String]) -> Result<(), ProviderError> {
        let body = json!({ "rules": firewall_rules(cidrs) });
        let r: ActionsResp = self
            .call(
                Method::POST,
                &format!("/firewalls/{id}/actions/set_rules"),
                &[],
                Some(&body),
            )
            .await?;
        let ids: Vec<u64> = r.actions.iter().map(|a| a.id).collect();
        self.wait_actions(&ids, &format!("firewall {id} rules"))
            .await
    }

    /// The stack's labelled break-glass SSH keys.
    async fn stack_ssh_keys(&self) -> Result<Vec<SshKeyObj>, ProviderError> {
        self.list_all(
            "/ssh_keys",
            "ssh_keys",
            &[(
                "label_selector",
                self.selector(&[(tags::ROLE, tags::ROLE_SSH_KEY)]),
            )],
        )
        .await
    }

    /// The stack's break-glass key, for a server spec that comes without one.
    async fn break_glass_key(&self) -> Result<Option<String>, ProviderError> {
        self.break_glass
            .get_or_try_init(|| async {
                let keys: Vec<SshKeyObj> = self.stack_ssh_keys().await?;
                Ok(keys.first().map(|k| k.id.to_string()))
            })
            .await
            .cloned()
    }

    /// A failed server create, with advice when the type is not available in the location.
    fn create_error(&self, spec: &ServerSpec, mut e: ProviderError) -> ProviderError {
        let unsupported = e.code == "invalid_input"
            && e.message
                .to_ascii_lowercase()
                .contains("unsupported location for server type");
        if unsupported || matches!(e.code.as_str(), "resource_unavailable" | "placement_error") {
            e.advice = Some(format!(
                "server type `{}` is {} in location `{}`: choose another `location` or `server_type` in the stack file (or `instance_type` on the agent){}",
                spec.instance_type,
                if unsupported {
                    "not offered"
                } else {
                    "not available right now"
                },
                self.location,
                if unsupported { "" } else { ", or retry later" }
            ));
        }
        e
    }

    /// After a uniqueness error on create: the server of that name, if it is this agent's
    /// (then either created by a call whose answer was lost, or an old server still being
    /// deleted: a run that died right after deleting it for a replacement).
    async fn same_name(&self, spec: &ServerSpec) -> Result<Option<ServerObj>, ProviderError> {
        let servers: Vec<ServerObj> = self
            .list_all("/servers", "servers", &[("name", spec.hostname.clone())])
            .await?;
        Ok(servers.into_iter().find(|s| {
            is_ours(&self.stack, &s.labels)
                && s.labels.get(&label_key(tags::AGENT)) == Some(&spec.agent)
        }))
    }
}

impl Provider for HetznerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }

    async fn observe(&self) -> Result<Observed, ProviderError> {
        let me = &self.inner;
        let sel = vec![("label_selector", me.selector(&[]))];
        let (servers, firewalls) = tokio::join!(
            me.list_all::<ServerObj>("/servers", "servers", &sel),
            me.list_all::<FirewallObj>("/firewalls", "firewalls", &sel),
        );
        let mut obs = Observed::default();
        for s in servers? {
            obs.servers.push(ObservedServer {
                id: s.id.to_string(),
                agent: s
                    .labels
                    .get(&label_key(tags::AGENT))
                    .cloned()
                    .unwrap_or_default(),
                fingerprint: s.labels.get(&label_key(tags::FINGERPRINT)).cloned(),
                key_id: s.labels.get(&label_key(tags::KEY_ID)).cloned(),
                state: map_status(&s.status),
                name: s.name,
                created: s.created,
            });
        }
        for f in firewalls? {
            if f.labels
                .get(&label_key(tags::ROLE))
                .is_some_and(|r| r != tags::ROLE_NETWORK)
            {
                continue;
            }
            obs.networks.push(ObservedNetwork {
                id: f.id.to_string(),
                ssh_cidrs: cidrs_from_rules(&f.rules),
                ssh_key_id: None,
            });
        }
        obs.servers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(obs)
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<ObservedNetwork, ProviderError> {
        let me = &self.inner;
        let ssh_key_id = match &spec.ssh_public_key {
            Some(pk) => Some(me.ensure_ssh_key(pk).await?),
            None => None,
        };
        let id = me.ensure_firewall(&spec.ssh_cidrs).await?;
        Ok(ObservedNetwork {
            id: id.to_string(),
            ssh_cidrs: spec.ssh_cidrs.clone(),
            ssh_key_id,
        })
    }

    async fn update_network(&self, id: &str, spec: &NetworkSpec) -> Result<(), ProviderError> {
        let id = parse_id("firewall", id)?;
        self.inner.set_rules(id, &spec.ssh_cidrs).await
    }

    async fn delete_network(&self, network: &ObservedNetwork) -> Result<(), ProviderError> {
        let me = &self.inner;
        let id = parse_id("firewall", &network.id)?;
        // Hetzner detaches a firewall from deleted servers shortly after they go.
        let deadline = Instant::now() + FIREWALL_IN_USE_TIMEOUT;
        loop {
            match me
                .call::<Value>(Method::DELETE, &format!("/firewalls/{id}"), &[], None)
                .await
            {
                Ok(_) => break,
                Err(e) if e.code == "not_found" => break,
                Err(e) if e.code == "resource_in_use" && Instant::now() < deadline => {
                    tokio::time::sleep(me.poll_delay().max(Duration::from_millis(200))).await;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(k) = &network.ssh_key_id {
            me.delete_ssh_key(parse_id("SSH key", k)?).await?;
        }
        // Once the stack has no firewall left, no break-glass key of it should remain either.
        let sel = vec![("label_selector", me.selector(&[]))];
        let left: Vec<FirewallObj> = me.list_all("/firewalls", "firewalls", &sel).await?;
        if left.is_empty() {
            let keys: Vec<SshKeyObj> = me
                .list_all(
                    "/ssh_keys",
                    "ssh_keys",
                    &[(
                        "label_selector",
                        me.selector(&[(tags::ROLE, tags::ROLE_SSH_KEY)]),
                    )],
                )
                .await?;
            for k in keys {
                me.delete_ssh_key(k.id).await?;
            }
        }
        Ok(())
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<String, ProviderError> {
        let me = &self.inner;
        let firewall = parse_id("firewall", &spec.network_id)?;
        let ssh_key = match &spec.ssh_key_id {
            Some(k) => Some(k.clone()),
            None => me.break_glass_key().await?,
        };
        if ssh_key.is_none() {
            tracing::warn!(
                "no break-glass SSH key for {}: Hetzner will e-mail a root password",
                spec.hostname
            );
        }
        let user_data = String::from_utf8(spec.user_data.clone()).map_err(|_| {
            ProviderError::new("invalid_user_data", "the rendered user data is not UTF-8")
        })?;
        let body = json!({
            "name": spec.hostname,
            "server_type": spec.instance_type,
            "image": spec.image.as_deref().unwrap_or(super::profile::HETZNER.default_image.lookup),
            "location": me.location,
            "labels": labels(&me.stack, tags::ROLE_SERVER, &[
                (tags::AGENT, spec.agent.as_str()),
                (tags::FINGERPRINT, spec.fingerprint.as_str()),
                (tags::KEY_ID, spec.key_id.as_str()),
            ]),
            "user_data": user_data,
            "ssh_keys": ssh_key.into_iter().collect::<Vec<_>>(),
            "firewalls": [{ "firewall": firewall }],
            "public_net": { "enable_ipv4": true, "enable_ipv6": true },
            "start_after_create": true,
        });
        let mut waited_for_old = false;
        loop {
            let e = match me
                .call::<CreateServerResp>(Method::POST, "/servers", &[], Some(&body))
                .await
            {
                Ok(r) => {
                    let id = r.server.id.to_string();
                    let actions: Vec<u64> = r
                        .action
                        .iter()
                        .chain(r.next_actions.iter())
                        .map(|a| a.id)
                        .collect();
                    lock(&me.created).insert(id.clone(), actions);
                    return Ok(id);
                }
                Err(e) => e,
            };
            if e.code != "uniqueness_error" {
                return Err(me.create_error(spec, e));
            }
            match me.same_name(spec).await? {
                // The old server of a replacement whose run died after deleting it: its name
                // is free once it is gone.
                Some(s) if s.status == "deleting" && !waited_for_old => {
                    me.wait_server(s.id, true).await?;
                    waited_for_old = true;
                }
                // The server holding the name finished deleting between the refused create
                // and the lookup: the name is free now.
                None if !waited_for_old => waited_for_old = true,
                // A create whose answer was lost (retry after a 5xx or a dropped connection).
                Some(s)
                    if s.status != "deleting"
                        && s.labels.get(&label_key(tags::FINGERPRINT))
                            == Some(&spec.fingerprint) =>
                {
                    return Ok(s.id.to_string());
                }
                _ => {
                    return Err(ProviderError {
                        message: format!("server `{}`: {}", spec.hostname, e.message),
                        ..e
                    });
                }
            }
        }
    }

    async fn wait_running(&self, id: &str) -> Result<(), ProviderError> {
        let me = &self.inner;
        let actions = lock(&me.created).remove(id);
        match actions {
            Some(ids) if !ids.is_empty() => me.wait_actions(&ids, &format!("server {id}")).await,
            _ => me.wait_server(parse_id("server", id)?, false).await,
        }
    }

    async fn delete_server(&self, id: &str) -> Result<(), ProviderError> {
        let me = &self.inner;
        let n = parse_id("server", id)?;
        let d = match me
            .call::<ActionResp>(Method::DELETE, &format!("/servers/{n}"), &[], None)
            .await
        {
            Ok(r) => Deletion::Action(r.action.id),
            Err(e) if e.code == "not_found" => Deletion::Gone,
            Err(e) => return Err(e),
        };
        lock(&me.deleting).insert(id.to_string(), d);
        Ok(())
    }

    async fn wait_deleted(&self, ids: &[String]) -> Result<(), ProviderError> {
        let me = &self.inner;
        let mut actions = Vec::new();
        let mut unknown = Vec::new();
        for id in ids {
            match lock(&me.deleting).remove(id) {
                Some(Deletion::Action(a)) => actions.push(a),
                Some(Deletion::Gone) => {}
                None => unknown.push(parse_id("server", id)?),
            }
        }
        me.wait_actions(&actions, &format!("deleting server(s) {}", ids.join(", ")))
            .await?;
        for id in unknown {
            me.wait_server(id, true).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn stack() -> StackId {
        StackId {
            project: "acme-agents".into(),
            stack: "dev".into(),
        }
    }

    #[test]
    fn selector_lists_project_and_stack_then_extras() {
        assert_eq!(
            label_selector(&stack(), &[]),
            "agent-army/project=acme-agents,agent-army/stack=dev"
        );
        assert_eq!(
            label_selector(&stack(), &[("role", "break-glass-ssh-key")]),
            "agent-army/project=acme-agents,agent-army/stack=dev,agent-army/role=break-glass-ssh-key"
        );
    }

    #[test]
    fn labels_carry_role_and_extras() {
        let l = labels(&stack(), tags::ROLE_SERVER, &[(tags::AGENT, "agent-pm")]);
        assert_eq!(l["agent-army/project"], "acme-agents");
        assert_eq!(l["agent-army/stack"], "dev");
        assert_eq!(l["agent-army/role"], "agent");
        assert_eq!(l["agent-army/agent"], "agent-pm");
        let owned: HashMap<String, String> = l.into_iter().collect();
        assert!(is_ours(&stack(), &owned));
        let other = StackId {
            project: "acme-agents".into(),
            stack: "prod".into(),
        };
        assert!(!is_ours(&other, &owned));
    }

    #[test]
    fn hetzner_error_body_maps_code_message_fields_and_advice() {
        let e = api_error(
            422,
            "application/json",
            r#"{"error":{"code":"invalid_input","message":"invalid input in field 'name'","details":{"fields":[{"name":"name","messages":["must be a valid hostname"]}]}}}"#,
        );
        assert_eq!(e.code, "invalid_input");
        assert_eq!(
            e.message,
            "invalid input in field 'name' (name: must be a valid hostname)"
        );
        assert!(e.advice.is_none());
        assert!(!e.transient);

        let e = api_error(
            422,
            "application/json",
            r#"{"error":{"code":"invalid_input","message":"unsupported location for server type","details":{}}}"#,
        );
        assert!(e.advice.unwrap().contains("another `location`"));

        for (code, needle) in [
            ("uniqueness_error", "already exists"),
            ("rate_limit_exceeded", "3600"),
            ("unauthorized", "HCLOUD_TOKEN"),
            ("resource_unavailable", "another `location`"),
        ] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m","details":{{}}}}}}"#);
            let e = api_error(409, "application/json", &body);
            assert_eq!(e.code, code);
            assert!(e.advice.as_deref().unwrap().contains(needle), "{code}");
        }
    }

    #[test]
    fn prism_problem_json_is_a_spec_violation_with_its_messages() {
        let body = r#"{"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY","title":"Invalid request","status":422,"detail":"Your request is not valid","validation":[{"location":["body","server_type"],"severity":"Error","code":"required","message":"Request body must have required property 'server_type'"}]}"#;
        let e = api_error(422, "application/problem+json", body);
        assert_eq!(e.code, "spec_violation");
        assert_eq!(
            e.message,
            "422 Invalid request: body.server_type: Request body must have required property 'server_type'"
        );
        assert!(e.advice.unwrap().contains("bug"));
        let e = api_error(
            401,
            "application/problem+json",
            r#"{"title":"Invalid security scheme used","detail":"no auth"}"#,
        );
        assert_eq!(e.code, "unauthorized");
        assert!(e.message.contains("no auth"));
    }

    #[test]
    fn non_json_errors_fall_back_to_status() {
        let e = api_error(502, "text/html", "<html>bad gateway</html>");
        assert_eq!(e.code, "bad_gateway");
        assert!(is_retryable(502, &e.code));
        assert!(!is_retryable(422, "invalid_input"));
        assert!(!is_retryable(409, "uniqueness_error"));
        assert!(is_retryable(423, "locked"));
        assert!(!is_retryable(500, "spec_violation"));
    }

    #[test]
    fn rate_limit_headers_parse_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert("RateLimit-Limit", HeaderValue::from_static("3600"));
        h.insert("ratelimit-remaining", HeaderValue::from_static("12"));
        h.insert("RATELIMIT-RESET", HeaderValue::from_static("1731000000"));
        assert_eq!(
            parse_rate_headers(&h),
            RateInfo {
                limit: Some(3600),
                remaining: Some(12),
                reset: Some(1_731_000_000)
            }
        );
        assert_eq!(parse_rate_headers(&HeaderMap::new()), RateInfo::default());
    }

    #[test]
    fn rate_limit_wait_is_clamped() {
        let j = Duration::from_millis(100);
        assert_eq!(
            rate_limit_wait(Some(1005), 1000, j),
            Duration::from_millis(5100)
        );
        // Reset already passed or unknown: one refill second.
        assert_eq!(
            rate_limit_wait(Some(990), 1000, j),
            Duration::from_millis(1100)
        );
        assert_eq!(
            rate_limit_wait(None, 1000, Duration::ZERO),
            Duration::from_secs(1)
        );
        // A full hour away: capped.
        assert_eq!(
            rate_limit_wait(Some(4600), 1000, Duration::ZERO),
            RATE_LIMIT_MAX_WAIT
        );
    }

    #[test]
    fn polling_slows_down_when_few_requests_remain() {
        let base = Duration::from_millis(500);
        assert_eq!(poll_delay(base, Some(3000), Some(3600)), base);
        assert_eq!(poll_delay(base, None, None), base);
        assert_eq!(
            poll_delay(base, Some(500), Some(3600)),
            Duration::from_secs(3)
        );
        assert_eq!(
            poll_delay(base, Some(100), Some(3600)),
            Duration::from_secs(10)
        );
        assert_eq!(
            poll_delay(Duration::from_secs(30), Some(100), Some(3600)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(3));
        assert_eq!(backoff(30, 0.0), Duration::from_secs(8));
    }

    #[test]
    fn firewall_rules_round_trip() {
        assert_eq!(firewall_rules(&[]), json!([]));
        let cidrs = vec!["203.0.113.0/24".to_string(), "2001:db8::/32".to_string()];
        let rules = firewall_rules(&cidrs);
        assert_eq!(rules[0]["port"], "22");
        assert_eq!(rules[0]["direction"], "in");
        assert_eq!(rules[0]["protocol"], "tcp");
        let parsed: Vec<RuleObj> = serde_json::from_value(rules).unwrap();
        assert_eq!(cidrs_from_rules(&parsed), cidrs);
        assert!(cidrs_from_rules(&[]).is_empty());
    }

    #[test]
    fn other_rules_count_as_drift() {
        let rules: Vec<RuleObj> = serde_json::from_value(json!([
            {"direction":"in","protocol":"tcp","port":"80","source_ips":["0.0.0.0/0"]},
            {"direction":"out","protocol":"icmp","port":null,"destination_ips":["0.0.0.0/0"]}
        ]))
        .unwrap();
        let c = cidrs_from_rules(&rules);
        assert_eq!(c.len(), 2);
        assert!(c[0].contains("tcp 80"), "{c:?}");
        assert!(c[1].contains("out icmp"), "{c:?}");
    }

    #[test]
    fn statuses_and_keys() {
        assert_eq!(map_status("initializing"), ServerState::Pending);
        assert_eq!(map_status("running"), ServerState::Running);
        assert_eq!(map_status("off"), ServerState::Stopped);
        assert!(map_status("deleting").is_gone());
        assert_eq!(
            map_status("rebuilding"),
            ServerState::Other("rebuilding".into())
        );
        assert!(same_public_key(
            "ssh-ed25519 AAAAC3Nza comment-a",
            "ssh-ed25519 AAAAC3Nza other\n"
        ));
        assert!(!same_public_key("ssh-ed25519 AAAA", "ssh-ed25519 BBBB"));
        assert!(!same_public_key("", ""));
        assert!(parse_id("server", "42").is_ok());
        assert_eq!(parse_id("server", "i-123").unwrap_err().code, "invalid_id");
    }

    #[test]
    fn action_errors_keep_their_code() {
        let a = ActionObj {
            id: 7,
            command: "create_server".into(),
            status: "error".into(),
            error: Some(ActionErr {
                code: "resource_unavailable".into(),
                message: "no capacity".into(),
            }),
        };
        let e = action_error(&a);
        assert_eq!(e.code, "resource_unavailable");
        assert!(e.message.contains("create_server (7) failed: no capacity"));
        assert!(e.advice.is_some());
    }

    #[test]
    fn new_rejects_bad_endpoint_and_empty_token() {
        let p = HetznerProvider::new(
            "ftp://x",
            Secret::new("t"),
            stack(),
            "fsn1".into(),
            Duration::from_millis(100),
            None,
        );
        assert_eq!(p.err().unwrap().code, "invalid_endpoint");
        let p = HetznerProvider::new(
            DEFAULT_ENDPOINT,
            Secret::new(" "),
            stack(),
            "fsn1".into(),
            Duration::from_millis(100),
            None,
        );
        let e = p.err().unwrap();
        assert_eq!(e.code, "unauthorized");
    }
}

//! Hetzner Cloud API v1: one firewall with no inbound rules, one break-glass SSH key, one
//! server per agent, labels on everything.
//!
//! The API allows 3600 requests per hour per project, so this client is frugal:
//! - the stack is observed with two label-selected listings (servers, firewalls);
//! - every wait (server created, server deleted, firewall rules set) goes through ONE shared
//!   poll loop that asks for all pending actions in one `GET /actions?id=..&id=..` call per
//!   interval, however many agents are being created at once;
//! - no more calls are in flight than `RateLimit-Remaining` allows (the provider's
//!   [`Governor`], which also halves its window on a 429);
//! - polling slows down when `RateLimit-Remaining` runs low, and a 429 is waited out until
//!   `RateLimit-Reset` (capped, jittered) and retried, never failing the deploy;
//! - 5xx answers (`server_error`, `unavailable`, `timeout`), `locked`/`conflict` and connection
//!   errors are retried a few times with jittered exponential backoff.
//!
//! Crash safety: server names are unique per Hetzner project, so a create retried after a
//! lost answer (or a crash) meets `uniqueness_error`; the server of that name is adopted when
//! its labels say it is this agent's with the same fingerprint. The SSH key and the firewall
//! are reused the same way.
//!
//! The module is split along its seams: `wire` (the API's JSON), `client` (calls, retries,
//! rate limits), `actions` (the shared poll loop), `resources` (firewall, SSH key,
//! labels) and `errors` (error codes and advice); this module holds the provider itself.

mod actions;
mod client;
mod errors;
mod resources;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::time::Instant;

pub use client::{RateInfo, backoff, parse_rate_headers, poll_delay, rate_limit_wait};
pub use errors::{advice_for, api_error};
pub use resources::{firewall_rules, label_key, label_selector};

use super::governor::{Governor, MAX_IN_FLIGHT};
use super::{
    NetworkSpec, Observed, ObservedNetwork, ObservedServer, Provider, ProviderError, ServerSpec,
    Shape, StackId, tags,
};
use crate::secrets::Secret;
use crate::stack::ProviderKind;
use actions::Waiters;
use client::RateState;
use resources::{cidrs_from_rules, labels, map_status};
use wire::{ActionResp, CreateServerResp, FirewallObj, ServerObj, ServerTypeObj, SshKeyObj};

pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";
/// How long a firewall may stay attached to servers that are being deleted.
const FIREWALL_IN_USE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

fn parse_id(what: &str, id: &str) -> Result<u64, ProviderError> {
    id.parse::<u64>().map_err(|_| {
        ProviderError::new(
            "invalid_id",
            format!("{what} id `{id}` is not a Hetzner id (a number)"),
        )
    })
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
    /// How many calls may be in flight: the published budget, halved on 429s.
    gov: Governor,
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
                gov: Governor::new(MAX_IN_FLIGHT),
                waiters: Mutex::new(Waiters::default()),
                created: Mutex::new(HashMap::new()),
                deleting: Mutex::new(HashMap::new()),
                break_glass: OnceCell::new(),
            }),
        })
    }
}

impl Provider for HetznerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }

    async fn preflight(&self, shapes: &[Shape]) -> Result<(), ProviderError> {
        if shapes.is_empty() {
            return Ok(());
        }
        let mut sizes: Vec<&String> = shapes.iter().map(|s| &s.size).collect();
        sizes.dedup();
        let me = &self.inner;
        let types: Vec<ServerTypeObj> = me.list_all("/server_types", "server_types", &[]).await?;
        // Every location appears in some server type's prices.
        let mut locations: Vec<&str> = types
            .iter()
            .flat_map(|t| t.prices.iter().map(|p| p.location.as_str()))
            .collect();
        locations.sort_unstable();
        locations.dedup();
        if !locations.contains(&me.location.as_str()) {
            return Err(ProviderError::new(
                "invalid_location",
                format!("Hetzner has no location `{}`", me.location),
            )
            .with_advice(format!(
                "set `location` in the stack file to one of: {}",
                locations.join(", ")
            )));
        }
        for size in sizes {
            let Some(t) = types.iter().find(|t| t.name == **size) else {
                return Err(ProviderError::new(
                    "invalid_server_type",
                    format!("Hetzner has no server type `{size}`"),
                )
                .with_advice("set `server_type` to one `hcloud server-type list` shows"));
            };
            if !t.prices.iter().any(|p| p.location == me.location) {
                let offered: Vec<&str> = t.prices.iter().map(|p| p.location.as_str()).collect();
                return Err(ProviderError::new(
                    "server_type_unavailable",
                    format!(
                        "server type `{size}` is not offered in `{}` (it is in: {})",
                        me.location,
                        offered.join(", ")
                    ),
                )
                .with_advice("pick another server type or location"));
            }
        }
        Ok(())
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
                key_id: s
                    .labels
                    .get(&label_key(tags::KEY_ID))
                    .filter(|k| !k.is_empty())
                    .cloned(),
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
        // Independent: both go out at once.
        let key = async {
            match &spec.ssh_public_key {
                Some(pk) => me.ensure_ssh_key(pk).await.map(Some),
                None => Ok(None),
            }
        };
        let (ssh_key_id, id) = tokio::join!(key, me.ensure_firewall(&spec.ssh_cidrs));
        let (ssh_key_id, id) = (ssh_key_id?, id?);
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
    use resources::tests::stack;

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

//! The action poller: every wait (server created or deleted, firewall rules set) goes
//! through one shared loop that asks for all pending actions each interval, 25 ids a call, the
//! calls at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::errors::action_error;
use super::wire::{ActionsResp, ServerResp};
use super::{Inner, lock};
use crate::provider::ProviderError;

/// Action ids per `GET /actions` call: the default page size, so one page always holds them.
const ACTION_IDS_PER_CALL: usize = 25;
/// How long a server may take to be created or deleted.
const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

type Waiter = oneshot::Sender<Result<(), ProviderError>>;

/// Actions somebody waits for, served by one poll loop.
#[derive(Default)]
pub(super) struct Waiters {
    pending: BTreeMap<u64, Vec<Waiter>>,
    /// Whether the poll loop task is running.
    polling: bool,
}

impl Inner {
    /// Wait until all `ids` succeed (or one fails), sharing one poll loop with every other
    /// waiter of this provider.
    pub(super) async fn wait_actions(
        self: &Arc<Self>,
        ids: &[u64],
        what: &str,
    ) -> Result<(), ProviderError> {
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
            // The chunks go out at once (the governor paces them), not one after the other.
            let me: &Inner = &self;
            let answers = futures_util::future::join_all(ids.chunks(ACTION_IDS_PER_CALL).map(
                |chunk| async move {
                    let q: Vec<(&str, String)> =
                        chunk.iter().map(|id| ("id", id.to_string())).collect();
                    let r: Result<ActionsResp, ProviderError> =
                        me.call(Method::GET, "/actions", &q, None).await;
                    (chunk, r)
                },
            ))
            .await;
            for (chunk, r) in answers {
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
    pub(super) async fn wait_server(&self, id: u64, gone: bool) -> Result<(), ProviderError> {
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
}

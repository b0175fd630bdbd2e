//! The instance poller: every wait (an instance running, instances gone) goes through one
//! shared loop that asks for the states of all awaited instances in one `DescribeInstances`
//! per interval (chunks of [`IDS_PER_CALL`]), however many agents are being created at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use tokio::sync::oneshot;

use super::errors::err;
use super::resources::map_state;
use crate::provider::governor::Governor;
use crate::provider::{ProviderError, ServerState};

/// Values per filter that EC2 accepts.
const IDS_PER_CALL: usize = 200;
/// How long an instance may take to run or to go.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Running,
    Gone,
}

type Waiter = (Want, oneshot::Sender<Result<(), ProviderError>>);

#[derive(Default)]
pub(super) struct Waiters {
    pending: BTreeMap<String, Vec<Waiter>>,
    polling: bool,
}

/// What the poller needs, cloned into its task.
#[derive(Clone)]
pub(super) struct Poller {
    pub client: Client,
    pub gov: Arc<Governor>,
    pub poll: Duration,
    pub waiters: Arc<Mutex<Waiters>>,
}

fn lock(m: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `state` (`None`: not listed) ends a wait for `want`, and how.
pub(super) fn settle(
    want: Want,
    id: &str,
    state: Option<&ServerState>,
) -> Option<Result<(), ProviderError>> {
    match (want, state) {
        (Want::Running, Some(ServerState::Running)) => Some(Ok(())),
        // Not listed yet (EC2 is eventually consistent right after RunInstances), or starting.
        (Want::Running, None | Some(ServerState::Pending)) => None,
        (Want::Running, Some(other)) => Some(Err(ProviderError::new(
            "UnexpectedState",
            format!("instance {id} is {other} instead of running"),
        ))),
        (Want::Gone, None | Some(ServerState::Gone)) => Some(Ok(())),
        (Want::Gone, Some(_)) => None,
    }
}

impl Poller {
    /// Wait until every instance of `ids` is as wanted, sharing one poll loop.
    pub async fn wait(&self, ids: &[String], want: Want, what: &str) -> Result<(), ProviderError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut rxs = Vec::with_capacity(ids.len());
        let start = {
            let mut w = lock(&self.waiters);
            for id in ids {
                let (tx, rx) = oneshot::channel();
                w.pending.entry(id.clone()).or_default().push((want, tx));
                rxs.push(rx);
            }
            !std::mem::replace(&mut w.polling, true)
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        let all = async {
            for rx in rxs {
                rx.await.map_err(|_| {
                    ProviderError::new("Internal", "the instance poller stopped unexpectedly")
                })??;
            }
            Ok(())
        };
        match tokio::time::timeout(WAIT_TIMEOUT, all).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::new(
                "Timeout",
                format!(
                    "{what}: not done in {} minutes",
                    WAIT_TIMEOUT.as_secs() / 60
                ),
            )),
        }
    }

    async fn run(self) {
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
            tokio::time::sleep(self.poll).await;
            let ids: Vec<String> = {
                let mut w = lock(&self.waiters);
                w.pending.retain(|_, v| {
                    v.retain(|(_, tx)| !tx.is_closed());
                    !v.is_empty()
                });
                if w.pending.is_empty() {
                    w.polling = false;
                    return;
                }
                w.pending.keys().cloned().collect()
            };
            // The chunks go out at once (the governor paces them), not one after the other.
            let me = &self;
            let answers = futures_util::future::join_all(
                ids.chunks(IDS_PER_CALL)
                    .map(|chunk| async move { (chunk, me.states(chunk).await) }),
            )
            .await;
            for (chunk, r) in answers {
                let mut w = lock(&self.waiters);
                for id in chunk {
                    let Some(waiting) = w.pending.remove(id) else {
                        continue;
                    };
                    let mut keep = Vec::new();
                    for (want, tx) in waiting {
                        let done = match &r {
                            Ok(states) => settle(want, id, states.get(id)),
                            Err(e) => Some(Err(e.clone())),
                        };
                        match done {
                            Some(d) => {
                                let _ = tx.send(d);
                            }
                            None => keep.push((want, tx)),
                        }
                    }
                    if !keep.is_empty() {
                        w.pending.insert(id.clone(), keep);
                    }
                }
            }
        }
    }

    /// The states of `ids` (terminated ones included, unknown ones left out), by a filter
    /// rather than `InstanceIds`: an id EC2 does not list yet does not fail the others.
    async fn states(&self, ids: &[String]) -> Result<BTreeMap<String, ServerState>, ProviderError> {
        let mut out = BTreeMap::new();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = self.gov.run(pages.next()).await {
            let page = page.map_err(err)?;
            for r in page.reservations() {
                for i in r.instances() {
                    if let Some(id) = i.instance_id() {
                        out.insert(id.to_string(), map_state(i.state().and_then(|s| s.name())));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_end_on_the_wanted_state_or_a_wrong_one() {
        let run = |s: Option<ServerState>| settle(Want::Running, "i-1", s.as_ref());
        assert!(run(None).is_none(), "not listed yet: keep waiting");
        assert!(run(Some(ServerState::Pending)).is_none());
        assert!(run(Some(ServerState::Running)).unwrap().is_ok());
        let e = run(Some(ServerState::Deleting)).unwrap().unwrap_err();
        assert_eq!(e.code, "UnexpectedState");
        let gone = |s: Option<ServerState>| settle(Want::Gone, "i-1", s.as_ref());
        assert!(gone(None).unwrap().is_ok(), "not listed: gone");
        assert!(gone(Some(ServerState::Gone)).unwrap().is_ok());
        assert!(gone(Some(ServerState::Deleting)).is_none());
    }
}

//! How many API calls may be in flight at once: set by what the cloud says, not by a constant.
//!
//! Two signals, one window:
//! - **Throttles** (EC2's `RequestLimitExceeded`): additive increase, multiplicative decrease,
//!   as TCP does with congestion. The window grows by one per success until the first throttle
//!   (slow start: it doubles every round trip), then by one per window's worth of successes;
//!   a throttle halves it, at most once per round trip, so a burst of throttles answering
//!   calls sent before the cut does not cut it again.
//! - **A published budget** (Hetzner's `RateLimit-Remaining`): no more calls in flight than
//!   the budget has requests left (at least one; the client waits out an empty bucket itself).
//!
//! The window never exceeds the cap (`--parallelism`, or [`MAX_IN_FLIGHT`]) and never falls
//! below one. Calls take a [`Permit`] before they go out and give it back when answered.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The most calls in flight at once when no cap is given.
pub const MAX_IN_FLIGHT: usize = 512;
/// Calls in flight before the cloud has said anything.
const INITIAL_WINDOW: f64 = 32.0;
/// The shortest round trip assumed when deciding whether a throttle is news.
const MIN_RTT: Duration = Duration::from_millis(20);

/// The window and what it has seen (pure: the clock is passed in, so it is unit-tested).
#[derive(Debug, Clone)]
pub struct Window {
    cap: f64,
    window: f64,
    slow_start: bool,
    in_flight: usize,
    /// When the window was last halved: throttles of calls sent before it are old news.
    last_cut: Option<Instant>,
    /// Smoothed round trip of answered calls.
    rtt: Option<Duration>,
    budget: Option<u64>,
    pub stats: Stats,
}

/// What a run's governor did, for `--verbose` logs and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls: u64,
    pub throttles: u64,
    pub cuts: u64,
    pub peak_in_flight: usize,
    pub waits: u64,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, MAX_IN_FLIGHT) as f64;
        Window {
            cap,
            window: INITIAL_WINDOW.min(cap),
            slow_start: true,
            in_flight: 0,
            last_cut: None,
            rtt: None,
            budget: None,
            stats: Stats::default(),
        }
    }

    /// How many calls may be in flight now.
    pub fn limit(&self) -> usize {
        let w = self.window.floor().clamp(1.0, self.cap) as usize;
        match self.budget {
            Some(b) => w.min((b as usize).max(1)),
            None => w,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Take a slot if one is free.
    pub fn try_take(&mut self) -> bool {
        if self.in_flight < self.limit() {
            self.in_flight += 1;
            self.stats.calls += 1;
            self.stats.peak_in_flight = self.stats.peak_in_flight.max(self.in_flight);
            true
        } else {
            false
        }
    }

    /// A call taken at `sent` was answered at `now`; `throttled`: the cloud refused it for
    /// its rate (the caller retries it).
    pub fn release(&mut self, sent: Instant, now: Instant, throttled: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let took = now.saturating_duration_since(sent);
        self.rtt = Some(match self.rtt {
            Some(r) => (r * 7 + took) / 8,
            None => took,
        });
        if throttled {
            self.throttle(sent, now);
        } else if self.last_cut.is_none_or(|c| sent >= c) {
            // Only calls sent since the last cut say the new window works.
            self.window += if self.slow_start {
                1.0
            } else {
                1.0 / self.window
            };
            self.window = self.window.min(self.cap);
        }
    }

    /// The cloud throttled a call sent at `sent`.
    pub fn throttle(&mut self, sent: Instant, now: Instant) {
        self.stats.throttles += 1;
        let rtt = self.rtt.unwrap_or(MIN_RTT).max(MIN_RTT);
        let news = match self.last_cut {
            None => true,
            Some(c) => sent >= c || now.saturating_duration_since(c) >= rtt,
        };
        if news {
            self.window = (self.window / 2.0).max(1.0);
            self.slow_start = false;
            self.last_cut = Some(now);
            self.stats.cuts += 1;
        }
    }

    /// The cloud said how many requests it still allows (`None`: it stopped saying).
    pub fn set_budget(&mut self, remaining: Option<u64>) {
        self.budget = remaining;
    }
}

/// The window, shared by every call of one cloud client.
pub struct Governor {
    window: Mutex<Window>,
    freed: Notify,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor")
            .field("limit", &self.limit())
            .finish()
    }
}

/// A slot for one call; dropping it without [`Permit::throttled`] counts as a success.
pub struct Permit<'a> {
    gov: &'a Governor,
    sent: Instant,
    throttled: bool,
}

impl Permit<'_> {
    /// The call was refused for the cloud's rate.
    pub fn throttled(mut self) {
        self.throttled = true;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let cut = {
            let mut w = self.gov.lock();
            let cuts = w.stats.cuts;
            w.release(self.sent, Instant::now(), self.throttled);
            (w.stats.cuts > cuts).then(|| w.limit())
        };
        if let Some(limit) = cut {
            tracing::info!("throttled by the cloud: at most {limit} calls in flight now");
        }
        self.gov.freed.notify_waiters();
    }
}

impl Governor {
    pub fn new(cap: usize) -> Self {
        Governor {
            window: Mutex::new(Window::new(cap)),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a slot.
    pub async fn permit(&self) -> Permit<'_> {
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut w = self.lock();
                if w.try_take() {
                    if waited {
                        w.stats.waits += 1;
                    }
                    return Permit {
                        gov: self,
                        sent: Instant::now(),
                        throttled: false,
                    };
                }
            }
            waited = true;
            freed.await;
        }
    }

    /// Run `call` in a slot.
    pub async fn run<T>(&self, call: impl Future<Output = T>) -> T {
        let _permit = self.permit().await;
        call.await
    }

    /// A throttle seen outside a permit's own answer (e.g. by the SDK's retry of it): cuts
    /// the window as a throttle of a call sent just now would.
    pub fn throttled_now(&self) {
        let now = Instant::now();
        let cut = {
            let mut w = self.lock();
            let (cuts, rtt) = (w.stats.cuts, w.rtt.unwrap_or(MIN_RTT));
            w.throttle(now.checked_sub(rtt).unwrap_or(now), now);
            (w.stats.cuts > cuts).then(|| w.limit())
        };
        if let Some(limit) = cut {
            tracing::info!("throttled by the cloud: at most {limit} calls in flight now");
        }
    }

    pub fn set_budget(&self, remaining: Option<u64>) {
        self.lock().set_budget(remaining);
        self.freed.notify_waiters();
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    pub fn limit(&self) -> usize {
        self.lock().limit()
    }
}

/// `call.governed(&gov).await`: the call in a slot of `gov`.
pub trait Governed: Future + Send + Sized {
    fn governed(self, gov: &Governor) -> impl Future<Output = Self::Output> + Send + '_
    where
        Self: 'static,
        Self::Output: Send,
    {
        gov.run(self)
    }
}

impl<F: Future + Send> Governed for F {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// Take `n` slots at `sent` and answer them all at `now`.
    fn round(w: &mut Window, n: usize, sent: Instant, now: Instant, throttled: usize) {
        for _ in 0..n {
            assert!(w.try_take());
        }
        for i in 0..n {
            w.release(sent, now, i < throttled);
        }
    }

    #[test]
    fn slow_start_doubles_each_round_until_the_cap() {
        let t = Instant::now();
        let mut w = Window::new(100);
        assert_eq!(w.limit(), 32);
        round(&mut w, 32, t, at(t, 100), 0);
        assert_eq!(w.limit(), 64);
        round(&mut w, 64, at(t, 100), at(t, 200), 0);
        assert_eq!(w.limit(), 100, "capped");
        let mut small = Window::new(4);
        assert_eq!(small.limit(), 4);
        assert!((0..4).all(|_| small.try_take()));
        assert!(!small.try_take(), "no fifth call while four are out");
    }

    #[test]
    fn a_throttle_halves_once_per_round_trip_then_growth_is_linear() {
        let t = Instant::now();
        let mut w = Window::new(512);
        round(&mut w, 32, t, at(t, 100), 0);
        assert_eq!(w.limit(), 64);
        // A burst of 10 throttles answering calls sent before the cut: one halving.
        round(&mut w, 64, at(t, 100), at(t, 200), 10);
        assert_eq!(w.stats.throttles, 10);
        assert_eq!(w.stats.cuts, 1);
        let after_cut = w.limit();
        assert_eq!(
            after_cut, 32,
            "halved once from 64, successes before the cut ignored"
        );
        // Congestion avoidance: about one more per window's worth of successes.
        round(&mut w, 32, at(t, 300), at(t, 400), 0);
        assert_eq!(w.limit(), 32, "32 + 32 x 1/32.x is just under 33");
        round(&mut w, 32, at(t, 400), at(t, 500), 0);
        assert_eq!(w.limit(), 33);
        // A throttle of a call sent after the cut is news: halve again.
        round(&mut w, 1, at(t, 500), at(t, 600), 1);
        assert_eq!(w.limit(), 16);
        assert_eq!(w.stats.cuts, 2);
    }

    #[test]
    fn never_below_one() {
        let t = Instant::now();
        let mut w = Window::new(8);
        for i in 0..20 {
            round(&mut w, 1, at(t, i * 1000), at(t, i * 1000 + 10), 1);
        }
        assert_eq!(w.limit(), 1);
        assert!(w.try_take());
        assert!(!w.try_take());
    }

    #[test]
    fn a_published_budget_bounds_the_window() {
        let mut w = Window::new(512);
        w.set_budget(Some(3));
        assert_eq!(w.limit(), 3);
        w.set_budget(Some(0));
        assert_eq!(
            w.limit(),
            1,
            "one call still goes out (and waits out the reset)"
        );
        w.set_budget(Some(3000));
        assert_eq!(w.limit(), 32, "a large budget leaves the window as it is");
        w.set_budget(None);
        assert_eq!(w.limit(), 32);
    }

    #[tokio::test]
    async fn permits_wait_for_a_free_slot() {
        let gov = std::sync::Arc::new(Governor::new(2));
        let a = gov.permit().await;
        let _b = gov.permit().await;
        let g2 = gov.clone();
        let third = tokio::spawn(async move {
            let _c = g2.permit().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "a third call waits while two are out");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third call goes once a slot is free")
            .unwrap();
        let s = gov.stats();
        assert_eq!(s.calls, 3);
        assert_eq!(s.peak_in_flight, 2);
        assert_eq!(s.waits, 1);
    }
}

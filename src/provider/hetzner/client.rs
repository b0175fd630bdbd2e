//! The HTTP client: one API call with rate-limit waits and jittered retries, paginated
//! listings, and the pure helpers (rate headers, waits, poll interval, backoff) behind them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use super::errors::{advice_for, api_error, is_retryable};
use super::{Inner, lock};
use crate::backoff::jitter_frac as jitter;
use crate::provider::ProviderError;

/// Largest page the API serves.
const PER_PAGE: u32 = 50;
/// Retries of 5xx / locked / connection failures (after the first attempt).
const MAX_RETRIES: u32 = 4;
/// Longest single wait for the rate limit to recover.
const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(60);
/// Total time one call may spend waiting out 429s before giving up (the limit is per hour).
const RATE_LIMIT_GIVE_UP: Duration = Duration::from_secs(75 * 60);

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
    let base =
        crate::backoff::exponential(Duration::from_millis(500), attempt, Duration::from_secs(8));
    base + base.mul_f64(jitter_frac.clamp(0.0, 1.0) / 2.0)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- the client -----------------------------------------------------------------------

#[derive(Default)]
pub(super) struct RateState {
    info: RateInfo,
    /// No request goes out before this instant (set by a 429 or an exhausted limit).
    blocked_until: Option<Instant>,
}

impl Inner {
    fn note_rate(&self, h: &HeaderMap) {
        let info = parse_rate_headers(h);
        let mut r = lock(&self.rate);
        if info.remaining.is_some() {
            r.info = info;
            self.gov.set_budget(info.remaining);
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

    pub(super) fn poll_delay(&self) -> Duration {
        let info = lock(&self.rate).info;
        poll_delay(self.poll, info.remaining, info.limit)
    }

    /// One API call with rate-limit waits and retries. `T` is read from the JSON answer
    /// (`null` for an empty one).
    pub(super) async fn call<T: DeserializeOwned>(
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
            let permit = self.gov.permit().await;
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
                    drop(permit);
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
                permit.throttled();
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
            drop(permit);
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

    /// Every item of a paginated listing, in pages of [`PER_PAGE`]: the first page says how
    /// many there are (`last_page`), and the rest are asked for at once rather than one
    /// after the other (a fleet of 300 is 6 pages: 2 round trips instead of 6).
    pub(super) async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        filters: &[(&str, String)],
    ) -> Result<Vec<T>, ProviderError> {
        let page_of = |page: u64| async move {
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
            let pagination = &v["meta"]["pagination"];
            let next = pagination["next_page"].as_u64();
            let last = pagination["last_page"].as_u64();
            Ok::<_, ProviderError>((items, next, last))
        };
        let (mut out, mut next, last) = page_of(1).await?;
        let mut page: u64 = 1;
        if let (Some(n), Some(last)) = (next, last)
            && n == 2
            && last <= 10_000
        {
            let rest = futures_util::future::try_join_all((2..=last).map(&page_of)).await?;
            for (items, _, _) in rest {
                out.extend(items);
            }
            return Ok(out);
        }
        // No last page given: one page after the other.
        while let Some(n) = next.filter(|n| *n > page && page < 10_000) {
            let (items, after, _) = page_of(n).await?;
            out.extend(items);
            page = n;
            next = after;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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
}

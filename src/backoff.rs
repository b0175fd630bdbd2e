//! Exponential backoff shared by the cloud clients (Hetzner's API calls, EC2's
//! `RunInstances`, the Tailscale API): one doubling rule and one source of jitter, each client
//! keeping its own initial delay, cap and way of applying the jitter.

use std::time::Duration;

/// `initial` doubled for every retry after the first (`attempt` is 1-based: retry 1 waits
/// `initial`), at most `cap`.
pub(crate) fn exponential(initial: Duration, attempt: u32, cap: Duration) -> Duration {
    initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap)
}

/// A random fraction in `0..=1` from the OS, to spread retries of concurrent clients.
pub(crate) fn jitter_frac() -> f64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32() as f64 / u32::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_initial_and_is_capped() {
        let ms = Duration::from_millis;
        let half = ms(500);
        // Hetzner: 0.5 s doubling, at most 8 s.
        let h: Vec<_> = (1..=7)
            .map(|a| exponential(half, a, Duration::from_secs(8)))
            .collect();
        assert_eq!(
            h,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(8000),
                ms(8000)
            ]
        );
        // EC2 RunInstances: 0.5 s doubling, at most 20 s.
        assert_eq!(exponential(half, 6, Duration::from_secs(20)), ms(16_000));
        assert_eq!(exponential(half, 7, Duration::from_secs(20)), ms(20_000));
        // Tailscale API: 0.2 s doubling, no cap.
        let t: Vec<_> = (1..=5)
            .map(|a| exponential(ms(200), a, Duration::MAX))
            .collect();
        assert_eq!(t, [ms(200), ms(400), ms(800), ms(1600), ms(3200)]);
        // Attempt 0 counts as the first retry; huge attempts do not overflow.
        assert_eq!(exponential(half, 0, Duration::MAX), half);
        assert_eq!(
            exponential(half, u32::MAX, Duration::from_secs(8)),
            ms(8000)
        );
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter_frac();
            assert!((0.0..=1.0).contains(&j), "{j}");
        }
    }
}

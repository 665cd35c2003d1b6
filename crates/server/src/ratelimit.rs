//! Per-key rate limits: a token bucket per API key (by key id), refilled at
//! `per_second` up to `burst`. A request that finds the bucket empty is
//! answered 429 with `Retry-After` (whole seconds until a token is back)
//! before any work is done for it.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Instant;

use lru::LruCache;

/// Keys tracked at once; the least recently seen is forgotten (it starts
/// again with a full bucket).
const TRACKED_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per key.
    pub per_second: f64,
    /// Requests a key may send at once after being idle.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<LruCache<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let cap = NonZeroUsize::new(TRACKED_KEYS).unwrap_or(NonZeroUsize::MIN);
        RateLimiter {
            limit,
            buckets: Mutex::new(LruCache::new(cap)),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Take a token for `key_id` at `now`: `Ok` or `Err(seconds to wait)`.
    pub fn check(&self, key_id: &str, now: Instant) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let burst = self.limit.burst.max(1.0);
        let rate = self.limit.per_second.max(f64::MIN_POSITIVE);
        let b = buckets.get_or_insert_mut(key_id.to_owned(), || Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate_per_key() {
        let l = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("k", t0), Ok(()));
        }
        assert_eq!(l.check("k", t0), Err(1));
        assert_eq!(l.check("other", t0), Ok(()), "keys are independent");
        let later = t0 + Duration::from_millis(500);
        assert_eq!(
            l.check("k", later),
            Ok(()),
            "one token back after 0.5 s at 2/s"
        );
        assert_eq!(l.check("k", later), Err(1));
        let much_later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.check("k", much_later), Ok(()));
        }
        assert!(
            l.check("k", much_later).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn slow_rates_ask_for_a_longer_wait() {
        let l = RateLimiter::new(RateLimit {
            per_second: 0.1,
            burst: 1.0,
        });
        let t0 = Instant::now();
        assert_eq!(l.check("k", t0), Ok(()));
        assert_eq!(l.check("k", t0), Err(10));
    }
}

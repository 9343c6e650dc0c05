//! Per-token request rate limits: a token bucket per principal, refilled continuously.
//! A request over the limit is answered 429 with `Retry-After`, before any work is done.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets of every principal seen since the process started.
pub struct RateLimiter {
    default_per_second: u64,
    burst: u64,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    pub fn new(default_per_second: u64, burst: u64) -> Self {
        Self {
            default_per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `principal`'s bucket, or says how long to wait for one.
    /// `own_rate` is the token's own limit, when it has one.
    pub fn check(&self, principal: i64, own_rate: Option<u32>) -> Result<(), Duration> {
        let rate = own_rate.map(u64::from).unwrap_or(self.default_per_second);
        if rate == 0 {
            return Ok(());
        }
        let rate = rate as f64;
        // A token with a higher own rate gets a burst of the same proportion.
        let capacity = (self.burst as f64).max(rate * 2.0).max(1.0);
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = buckets.entry(principal).or_insert(Bucket {
            tokens: capacity,
            refilled_at: now,
        });
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_wait_for_the_rate() {
        let limiter = RateLimiter::new(10, 5);
        // capacity = max(5, 2 × 10) = 20
        for _ in 0..20 {
            assert!(limiter.check(1, None).is_ok());
        }
        let wait = limiter.check(1, None).expect_err("over the burst");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Other principals have their own buckets.
        assert!(limiter.check(2, None).is_ok());
        // A token's own rate wins over the default; 0 everywhere means no limit.
        assert!((0..1000).all(|_| limiter.check(3, Some(1000)).is_ok()));
        let off = RateLimiter::new(0, 0);
        assert!((0..10_000).all(|_| off.check(1, None).is_ok()));
    }
}

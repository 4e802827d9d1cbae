//! Per-client token buckets (sans-IO: `now` is an argument). IPv6 clients are keyed by their /64,
//! the smallest block one host usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most distinct clients tracked; beyond it, full (idle) buckets are dropped first.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Allows `burst` requests at once and `per_second` on average.
    pub fn new(burst: u32, per_second: f64) -> Self {
        RateLimiter {
            burst: f64::from(burst),
            per_second,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `client`; when none is left, says how long until one is.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = bucket_key(client);
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(&key) {
            self.prune(now);
        }
        let (burst, rate) = (self.burst, self.per_second);
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    fn prune(&mut self, now: Instant) {
        let (burst, rate) = (self.burst, self.per_second);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
        });
        if self.buckets.len() >= MAX_CLIENTS {
            self.buckets.clear();
        }
    }
}

fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked above")),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let mut limiter = RateLimiter::new(3, 2.0);
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
        }
        let wait = limiter.check(ip, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.check(ip, t0 + Duration::from_millis(500)).is_ok());
        // Another client has its own bucket.
        assert!(limiter.check("203.0.113.8".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 1.0);
        assert!(
            limiter
                .check("2001:db8:1:2::1".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(
            limiter
                .check("2001:db8:1:2::ffff".parse().unwrap(), t0)
                .is_err()
        );
        assert!(
            limiter
                .check("2001:db8:1:3::1".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(
            limiter
                .check("::ffff:192.0.2.1".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(
            limiter.check("192.0.2.1".parse().unwrap(), t0).is_err(),
            "mapped v4 is the same client"
        );
    }
}

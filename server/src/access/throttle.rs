//! Throttling guesses: wrong tokens per address, and failed password logins per account and
//! per address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::http::limits::address_key;

/// Wrong tokens, counted per address in a leaky bucket: each failure adds one, and one drains
/// away every `leak` (so an address that stops guessing is soon forgotten). While the bucket
/// holds more than `capacity`, further wrong tokens from that address are answered 429.
///
/// Only wrong tokens are ever refused: a request carrying the right token (by header, query or
/// login cookie) is let in whatever its address did before, so a page that makes a visitor's
/// browser send wrong `?token=`s (an `<img>` is enough) cannot lock the visitor out. The
/// throttle therefore does not stop a guesser from learning that a guess was right: what
/// protects the token is its length (a generated one has 192 random bits).
pub struct FailureBucket {
    capacity: f64,
    leak: Duration,
    levels: DashMap<IpAddr, (f64, Instant)>,
}

/// Wrong tokens an address may send before it must wait.
pub const TOKEN_FAILURES_ALLOWED: u32 = 20;
/// How often one wrong token is forgiven.
pub const TOKEN_FAILURE_LEAK: Duration = Duration::from_secs(3);

impl Default for FailureBucket {
    fn default() -> Self {
        FailureBucket::new(TOKEN_FAILURES_ALLOWED, TOKEN_FAILURE_LEAK)
    }
}

impl FailureBucket {
    pub fn new(capacity: u32, leak: Duration) -> FailureBucket {
        FailureBucket {
            capacity: capacity as f64,
            leak,
            levels: DashMap::new(),
        }
    }

    fn level_at(&self, key: IpAddr, now: Instant) -> f64 {
        self.levels.get(&key).map_or(0.0, |entry| {
            let (level, at) = *entry;
            let drained = now.saturating_duration_since(at).as_secs_f64() / self.leak.as_secs_f64();
            (level - drained).max(0.0)
        })
    }

    /// How long `ip` must wait before another wrong token is looked at, if at all.
    pub fn wait(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let level = self.level_at(address_key(ip), now);
        (level >= self.capacity).then(|| {
            self.leak
                .mul_f64(level - self.capacity + 1.0)
                .max(Duration::from_secs(1))
        })
    }

    /// A wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let key = address_key(ip);
        // The map is keyed by whoever connects: forget drained addresses now and then.
        if self.levels.len() > 10_000 {
            let full_drain = self.leak.mul_f64(self.capacity + 1.0);
            self.levels
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < full_drain);
        }
        let level = self.level_at(key, now) + 1.0;
        self.levels.insert(key, (level, now));
    }
}

/// Failed logins, by account and by address: after a few, each further attempt must wait
/// longer (doubling, at most a minute). An account's failures do not slow other accounts down.
#[derive(Default)]
pub struct Throttle {
    failures: DashMap<String, (u32, Instant)>,
}

const FREE_FAILURES_PER_ACCOUNT: u32 = 3;
const FREE_FAILURES_PER_ADDRESS: u32 = 20;

impl Throttle {
    fn wait(&self, key: &str, free: u32) -> Option<Duration> {
        let entry = self.failures.get(key)?;
        let (count, last) = *entry;
        if count < free {
            return None;
        }
        let delay = Duration::from_secs((1u64 << (count - free).min(6)).min(60));
        let ready = last + delay;
        let now = Instant::now();
        (ready > now).then(|| ready - now)
    }

    /// How long this attempt must wait, if at all.
    pub fn check(&self, account: &str, address: &str) -> Option<Duration> {
        let by_account = self.wait(&format!("user:{account}"), FREE_FAILURES_PER_ACCOUNT);
        let by_address = self.wait(&format!("addr:{address}"), FREE_FAILURES_PER_ADDRESS);
        by_account.max(by_address)
    }

    /// Counts an attempt against an account and an address. Password attempts are counted when
    /// they start (and forgiven if they succeed), so a burst of parallel guesses cannot all slip
    /// through before the first failure is known.
    pub fn failed(&self, account: &str, address: &str) {
        self.count(format!("user:{account}"));
        self.count(format!("addr:{address}"));
    }

    fn count(&self, key: String) {
        // Forget old failures now and then: the map is keyed by whatever names are sent.
        if self.failures.len() > 10_000 {
            let hour_ago = Instant::now() - Duration::from_secs(3600);
            self.failures.retain(|_, (_, last)| *last > hour_ago);
        }
        let mut entry = self.failures.entry(key).or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now();
    }

    /// A password attempt succeeded: the account starts afresh, and the address is forgiven
    /// the attempt counted when it started.
    pub fn succeeded(&self, account: &str, address: &str) {
        self.failures.remove(&format!("user:{account}"));
        if let Some(mut entry) = self.failures.get_mut(&format!("addr:{address}")) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_leak_away() {
        let bucket = FailureBucket::new(3, Duration::from_secs(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.wait(ip, t0), None);
            bucket.failed(ip, t0);
        }
        let wait = bucket.wait(ip, t0).expect("the fourth wrong token waits");
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(
            bucket.wait(other, t0),
            None,
            "other addresses are not slowed"
        );
        // One failure drains away every 2 s: after the wait, one more try; after 6 s, all.
        assert_eq!(bucket.wait(ip, t0 + wait), None);
        bucket.failed(ip, t0 + wait);
        assert!(bucket.wait(ip, t0 + wait).is_some());
        assert_eq!(bucket.wait(ip, t0 + Duration::from_secs(20)), None);
        bucket.failed(ip, t0 + Duration::from_secs(20));
        assert_eq!(bucket.wait(ip, t0 + Duration::from_secs(20)), None);
    }

    #[test]
    fn a_burst_of_guesses_is_held_back_before_any_fails() {
        let throttle = Throttle::default();
        // Three attempts in flight at once (counted as they start): the fourth waits.
        for _ in 0..FREE_FAILURES_PER_ACCOUNT {
            assert_eq!(throttle.check("ada", "10.0.0.1"), None);
            throttle.failed("ada", "10.0.0.1");
        }
        assert!(throttle.check("ada", "10.0.0.1").is_some());
        // Other accounts are not slowed down.
        assert_eq!(throttle.check("bob", "10.0.0.2"), None);
        // A success starts the account afresh.
        throttle.succeeded("ada", "10.0.0.1");
        assert_eq!(throttle.check("ada", "10.0.0.1"), None);
    }
}

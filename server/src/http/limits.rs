//! Limits that hold under attack: wrong tokens are throttled per address without ever locking
//! the right token out; each address may hold only so many connections at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Whom a limit counts: an IPv4 address, or an IPv6 /64 (what one subscriber is given, so
/// rotating through it gains nothing). An IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

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

/// Open connections per address (websockets included: a connection's slot is held by its
/// socket, which an upgrade hands on). Without a cap, one address holding ~20,000 half-open
/// requests used up the server's file descriptors and every honest request timed out.
pub struct ConnectionLimits {
    /// At most this many at once from one address (`address_key`); 0: no limit.
    per_address: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    last_warning: Mutex<Option<Instant>>,
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    key: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(per_address: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            per_address,
            open: Mutex::default(),
            last_warning: Mutex::default(),
        })
    }

    /// A place for a new connection from `ip`, or `None` when that address holds its limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        if self.per_address == 0 {
            return Some(Slot {
                limits: self.clone(),
                key: None,
            });
        }
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.per_address {
            drop(open);
            self.warn(key);
            return None;
        }
        *count += 1;
        Some(Slot {
            limits: self.clone(),
            key: Some(key),
        })
    }

    /// Says that connections are being refused, at most once a minute.
    fn warn(&self, key: IpAddr) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            tracing::warn!(
                "refusing new connections from {key}: it already holds {} (max_connections_per_address)",
                self.per_address
            );
        }
    }

    pub fn per_address(&self) -> usize {
        self.per_address
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

/// A client's socket holding its connection's place for as long as it is open.
pub struct CountedStream {
    tcp: TcpStream,
    _slot: Slot,
}

impl CountedStream {
    pub fn new(tcp: TcpStream, slot: Slot) -> CountedStream {
        CountedStream { tcp, _slot: slot }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Turns a connection away: a short 503 if the socket takes it at once (never waiting on the
/// client), then closed.
pub fn refuse(tcp: TcpStream, limit: usize) {
    let body = format!(
        "{{\"message\":\"too many connections from your address (at most {limit} at once): close some and try again\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
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
    fn connections_are_capped_per_address() {
        let limits = ConnectionLimits::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.admit(ip).expect("first");
        let _b = limits.admit(ip).expect("second");
        assert!(limits.admit(ip).is_none(), "a third is refused");
        assert!(limits.admit("10.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(limits.admit(ip).is_some(), "a place was freed");
        let unlimited = ConnectionLimits::new(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.admit(ip).unwrap()).collect();
        assert_eq!(held.len(), 100);
    }

    #[test]
    fn an_ipv6_subnet_counts_as_one() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}

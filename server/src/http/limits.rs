//! Connection limits that hold under attack: each address may hold only so many connections
//! at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
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

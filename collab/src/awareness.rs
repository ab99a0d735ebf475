//! Awareness (presence and cursors) as the room relays it.
//!
//! An awareness update is `varUint n` then n × (`varUint clientID`, `varUint clock`,
//! `varString JSON state or "null"`). The room keeps the newest state per client id, remembers which
//! connection speaks for each id (no connection can overwrite or clear another's), stamps the `user`
//! field with the connection's authenticated [`Identity`], drops a state not renewed within the
//! timeout, and drops a connection's states at once when it leaves.

use std::collections::HashMap;

use serde_json::Value;
use tokio::time::{Duration, Instant};

use crate::protocol::{read_var_uint, write_var_bytes, write_var_uint};
use crate::{ConnectionId, Identity};

struct Entry {
    clock: u64,
    /// The stamped JSON state; `None` once removed.
    state: Option<String>,
    owner: Option<ConnectionId>,
    renewed: Instant,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed awareness update: {0}")]
pub struct AwarenessError(&'static str);

#[derive(Default)]
pub struct AwarenessTable {
    entries: HashMap<u64, Entry>,
}

impl AwarenessTable {
    /// Applies an update from `conn` and returns the update to relay to everyone, if anything changed.
    pub fn apply(
        &mut self,
        conn: ConnectionId,
        identity: &Identity,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, AwarenessError> {
        let mut pos = 0;
        let next = |pos: &mut usize, what: &'static str| -> Result<u64, AwarenessError> {
            let (value, used) = read_var_uint(&payload[*pos..]).ok_or(AwarenessError(what))?;
            *pos += used;
            Ok(value)
        };
        let count = next(&mut pos, "entry count")?;
        let mut changed = Vec::new();
        for _ in 0..count {
            let client = next(&mut pos, "client id")?;
            let clock = next(&mut pos, "clock")?;
            let len = next(&mut pos, "state length")? as usize;
            if len > payload.len() - pos {
                return Err(AwarenessError("state runs past the end"));
            }
            let json = std::str::from_utf8(&payload[pos..pos + len])
                .map_err(|_| AwarenessError("state is not UTF-8"))?;
            pos += len;
            let state = stamp(json, identity)?;
            if self.accept(conn, client, clock, state, now) {
                changed.push(client);
            }
        }
        Ok((!changed.is_empty()).then(|| self.encode(changed)))
    }

    fn accept(
        &mut self,
        conn: ConnectionId,
        client: u64,
        clock: u64,
        state: Option<String>,
        now: Instant,
    ) -> bool {
        match self.entries.get_mut(&client) {
            None => {
                if state.is_none() {
                    return false;
                }
                self.entries.insert(
                    client,
                    Entry {
                        clock,
                        state,
                        owner: Some(conn),
                        renewed: now,
                    },
                );
                true
            }
            Some(entry) => {
                match entry.owner {
                    Some(owner) if owner != conn => return false,
                    _ => {}
                }
                if state.is_none() && entry.state.is_none() {
                    return false;
                }
                // The clocks everyone else sees are the ones we relay, so we keep them strictly
                // increasing ourselves. A reconnecting y-websocket client re-sends its last
                // clock, which our removal already passed: its state is taken anyway and
                // relayed with a clock past ours (the client adopts it when it hears it back).
                if clock <= entry.clock {
                    if state == entry.state {
                        entry.renewed = now;
                        return false;
                    }
                    entry.clock += 1;
                } else {
                    entry.clock = clock;
                }
                entry.owner = state.as_ref().map(|_| conn);
                entry.state = state;
                entry.renewed = now;
                true
            }
        }
    }

    /// Clears every state `conn` spoke for; returns the removal to relay.
    pub fn remove_connection(&mut self, conn: ConnectionId) -> Option<Vec<u8>> {
        let mut removed = Vec::new();
        for (client, entry) in self.entries.iter_mut() {
            if entry.owner == Some(conn) {
                entry.owner = None;
                if entry.state.take().is_some() {
                    entry.clock += 1;
                    removed.push(*client);
                }
            }
        }
        (!removed.is_empty()).then(|| self.encode(removed))
    }

    /// Clears states not renewed within `timeout`; returns the removal to relay.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Option<Vec<u8>> {
        let mut removed = Vec::new();
        for (client, entry) in self.entries.iter_mut() {
            if entry.state.is_some() && now.duration_since(entry.renewed) >= timeout {
                entry.state = None;
                entry.owner = None;
                entry.clock += 1;
                removed.push(*client);
            }
        }
        (!removed.is_empty()).then(|| self.encode(removed))
    }

    /// When the oldest live state runs out, if any.
    pub fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.state.is_some())
            .map(|e| e.renewed + timeout)
            .min()
    }

    /// Every live state, for a newcomer or a query.
    pub fn encode_all(&self) -> Option<Vec<u8>> {
        let live: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state.is_some())
            .map(|(c, _)| *c)
            .collect();
        (!live.is_empty()).then(|| self.encode(live))
    }

    pub fn live_states(&self) -> usize {
        self.entries.values().filter(|e| e.state.is_some()).count()
    }

    fn encode(&self, clients: Vec<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_uint(&mut out, clients.len() as u64);
        for client in clients {
            let entry = &self.entries[&client];
            write_var_uint(&mut out, client);
            write_var_uint(&mut out, entry.clock);
            write_var_bytes(
                &mut out,
                entry.state.as_deref().unwrap_or("null").as_bytes(),
            );
        }
        out
    }
}

/// Replaces the `user` field of a state with the authenticated identity. `None` for a removal.
fn stamp(json: &str, identity: &Identity) -> Result<Option<String>, AwarenessError> {
    let value: Value =
        serde_json::from_str(json).map_err(|_| AwarenessError("state is not JSON"))?;
    match value {
        Value::Null => Ok(None),
        Value::Object(mut state) => {
            let user = serde_json::to_value(identity).expect("identity serializes");
            state.insert("user".into(), user);
            Ok(Some(Value::Object(state).to_string()))
        }
        _ => Err(AwarenessError("state must be an object or null")),
    }
}

/// Decodes an awareness update into (client, clock, state) triples, for tests and clients.
pub fn decode_update(payload: &[u8]) -> Option<Vec<(u64, u64, Value)>> {
    let mut pos = 0;
    let next = |p: &mut usize| -> Option<u64> {
        let (v, used) = read_var_uint(&payload[*p..])?;
        *p += used;
        Some(v)
    };
    let count = next(&mut pos)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let client = next(&mut pos)?;
        let clock = next(&mut pos)?;
        let len = next(&mut pos)? as usize;
        let json = payload.get(pos..pos + len)?;
        pos += len;
        out.push((client, clock, serde_json::from_slice(json).ok()?));
    }
    Some(out)
}

/// Encodes one awareness entry, as a client would send it.
pub fn encode_update(client: u64, clock: u64, state: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_var_uint(&mut out, 1);
    write_var_uint(&mut out, client);
    write_var_uint(&mut out, clock);
    write_var_bytes(&mut out, state.to_string().as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ada() -> Identity {
        Identity::from_username("ada")
    }

    #[test]
    fn stamps_the_authenticated_user_over_a_claimed_one() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let claim = encode_update(7, 1, &json!({"user": {"name": "root"}, "cursors": []}));
        let relayed = table
            .apply(ConnectionId(1), &ada(), &claim, now)
            .unwrap()
            .unwrap();
        let entries = decode_update(&relayed).unwrap();
        assert_eq!(entries[0].2["user"]["username"], "ada");
        assert_eq!(entries[0].2["cursors"], json!([]));
    }

    #[test]
    fn another_connection_cannot_overwrite_or_clear_a_state() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let mine = encode_update(7, 1, &json!({"a": 1}));
        table.apply(ConnectionId(1), &ada(), &mine, now).unwrap();
        let forged = encode_update(7, 9, &Value::Null);
        assert_eq!(
            table.apply(ConnectionId(2), &ada(), &forged, now).unwrap(),
            None
        );
        assert_eq!(table.live_states(), 1);
    }

    #[test]
    fn stale_states_expire_and_leavers_are_cleared() {
        let mut table = AwarenessTable::default();
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        table
            .apply(
                ConnectionId(1),
                &ada(),
                &encode_update(1, 1, &json!({})),
                start,
            )
            .unwrap();
        table
            .apply(
                ConnectionId(2),
                &ada(),
                &encode_update(2, 1, &json!({})),
                start,
            )
            .unwrap();
        assert_eq!(table.expire(start + Duration::from_secs(29), timeout), None);
        table
            .apply(
                ConnectionId(2),
                &ada(),
                &encode_update(2, 2, &json!({})),
                start + Duration::from_secs(20),
            )
            .unwrap();
        let removal = table
            .expire(start + Duration::from_secs(31), timeout)
            .unwrap();
        let entries = decode_update(&removal).unwrap();
        assert_eq!(entries, vec![(1, 2, Value::Null)]);
        let removal = table.remove_connection(ConnectionId(2)).unwrap();
        assert_eq!(decode_update(&removal).unwrap(), vec![(2, 3, Value::Null)]);
        assert_eq!(table.encode_all(), None);
    }

    #[test]
    fn a_reconnecting_client_is_seen_again_at_once() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let state = json!({"cursors": []});
        table
            .apply(ConnectionId(1), &ada(), &encode_update(9, 4, &state), now)
            .unwrap();
        let removal = table.remove_connection(ConnectionId(1)).unwrap();
        assert_eq!(decode_update(&removal).unwrap()[0].1, 5);
        // y-websocket's reconnect re-sends clock 4: relayed with a clock peers accept.
        let relayed = table
            .apply(ConnectionId(2), &ada(), &encode_update(9, 4, &state), now)
            .unwrap()
            .expect("the state is back");
        let entries = decode_update(&relayed).unwrap();
        assert_eq!(entries[0].1, 6);
        assert!(entries[0].2.is_object());
    }

    #[test]
    fn malformed_updates_are_errors() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        assert!(table.apply(ConnectionId(1), &ada(), &[1, 7], now).is_err());
        assert!(table
            .apply(
                ConnectionId(1),
                &ada(),
                &encode_update(1, 1, &json!(5)),
                now
            )
            .is_err());
    }
}

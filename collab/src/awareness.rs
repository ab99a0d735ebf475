//! Awareness (presence and cursors) as the room relays it.
//!
//! An awareness update is `varUint n` then n × (`varUint clientID`, `varUint clock`,
//! `varString JSON state or "null"`). The room keeps the newest state per client id, remembers which
//! connection speaks for each id (no connection can overwrite or clear another's), stamps the `user`
//! field with the connection's authenticated [`Identity`], drops a state not renewed within the
//! timeout, and drops a connection's states at once when it leaves.
//!
//! Limits, so that relaying can never amplify what one client sends:
//! - a connection speaks for at most [`MAX_CLIENTS_PER_CONNECTION`] client ids over its life (a
//!   real client uses one per document connection); an update claiming more is refused whole;
//! - a state is at most [`MAX_STATE_BYTES`] of JSON;
//! - entries of one update naming the same client id are relayed once (the last one wins), and
//!   entries naming ids that others speak for (y-websocket echoes everyone's changes back) are
//!   skipped without being parsed.
//!
//! A client id belongs to the *person* (the identity's `username`) who first used it, for as long
//! as the room lives: when its connection leaves, the state is freed and only a small record stays
//! (the person and the last clock relayed, so that the same person reconnecting — y-websocket
//! reuses its client id — is relayed with a clock peers accept, and nobody else can take the id
//! over). These records are bounded: [`MAX_RETIRED_PER_PERSON`] per person and
//! [`MAX_RETIRED`] in all, the oldest forgotten first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tokio::time::{Duration, Instant};

use crate::protocol::{read_var_uint, write_var_bytes, write_var_uint};
use crate::{ConnectionId, Identity};

/// How many awareness client ids one connection may speak for over its life.
pub const MAX_CLIENTS_PER_CONNECTION: usize = 4;
/// The largest awareness state accepted, in bytes of JSON as the client sent it.
pub const MAX_STATE_BYTES: usize = 64 << 10;
/// Client ids whose connection left, remembered per person (the oldest forgotten first).
pub const MAX_RETIRED_PER_PERSON: usize = 16;
/// Client ids whose connection left, remembered in all (the oldest forgotten first).
pub const MAX_RETIRED: usize = 65_536;

struct Entry {
    /// The clock last relayed for this id.
    clock: u64,
    /// Who first used this id (an identity's `username`); nobody else may use it.
    person: Arc<str>,
    /// The connection speaking for it; `None` once that connection left.
    conn: Option<ConnectionId>,
    /// The stamped JSON state; `None` once removed or expired.
    state: Option<String>,
    renewed: Instant,
    /// When its connection left: the key of its record in the retirement orders.
    retired: Option<u64>,
}

/// The client ids one connection has spoken for.
struct Speaker {
    person: Arc<str>,
    clients: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AwarenessError {
    #[error("malformed awareness update: {0}")]
    Malformed(&'static str),
    #[error(
        "awareness update refused: a connection may speak for at most {} client ids",
        MAX_CLIENTS_PER_CONNECTION
    )]
    TooManyClients,
    #[error(
        "awareness update refused: a state of {0} bytes exceeds the limit of {limit} bytes",
        limit = MAX_STATE_BYTES
    )]
    StateTooLarge(usize),
}

#[derive(Default)]
pub struct AwarenessTable {
    entries: HashMap<u64, Entry>,
    speakers: HashMap<ConnectionId, Speaker>,
    /// Retired client ids by retirement number, oldest first: all of them, and per person.
    retired: BTreeMap<u64, u64>,
    retired_by_person: HashMap<Arc<str>, BTreeMap<u64, u64>>,
    next_retirement: u64,
}

/// What an update says about one client id this connection may speak for.
struct Said<'a> {
    client: u64,
    clock: u64,
    json: &'a str,
}

impl AwarenessTable {
    /// Applies an update from `conn` and returns the update to relay to everyone, if anything
    /// changed. An error leaves the table as it was.
    pub fn apply(
        &mut self,
        conn: ConnectionId,
        identity: &Identity,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, AwarenessError> {
        use AwarenessError::Malformed;
        let person: Arc<str> = match self.speakers.get(&conn) {
            Some(speaker) => speaker.person.clone(),
            None => Arc::from(identity.username.as_str()),
        };
        let spoken = self.speakers.get(&conn).map_or(0, |s| s.clients.len());
        let mut pos = 0;
        let next = |pos: &mut usize, what: &'static str| -> Result<u64, AwarenessError> {
            let (value, used) = read_var_uint(&payload[*pos..]).ok_or(Malformed(what))?;
            *pos += used;
            Ok(value)
        };
        let count = next(&mut pos, "entry count")?;
        // At most MAX_CLIENTS_PER_CONNECTION distinct ids: the last entry for each.
        let mut said: Vec<Said> = Vec::new();
        let mut claims = 0;
        for _ in 0..count {
            let client = next(&mut pos, "client id")?;
            let clock = next(&mut pos, "clock")?;
            let len = next(&mut pos, "state length")?;
            if len > (payload.len() - pos) as u64 {
                return Err(Malformed("state runs past the end"));
            }
            let bytes = &payload[pos..pos + len as usize];
            pos += len as usize;
            let is_null = bytes.trim_ascii() == b"null";
            match self.entries.get(&client) {
                // Someone else's (y-websocket echoes every change it hears): not ours to touch.
                Some(entry) if entry.conn.is_some_and(|c| c != conn) => continue,
                Some(entry) if entry.conn.is_none() && entry.person != person => continue,
                // Clearing an id nobody speaks for changes nothing.
                Some(entry) if entry.conn.is_none() && is_null => continue,
                None if is_null => continue,
                _ => {}
            }
            if len as usize > MAX_STATE_BYTES {
                return Err(AwarenessError::StateTooLarge(len as usize));
            }
            let json = std::str::from_utf8(bytes).map_err(|_| Malformed("state is not UTF-8"))?;
            if let Some(earlier) = said.iter_mut().find(|s| s.client == client) {
                *earlier = Said {
                    client,
                    clock,
                    json,
                };
                continue;
            }
            let ours = self
                .entries
                .get(&client)
                .is_some_and(|e| e.conn == Some(conn));
            if !ours {
                claims += 1;
                if spoken + claims > MAX_CLIENTS_PER_CONNECTION {
                    return Err(AwarenessError::TooManyClients);
                }
            }
            said.push(Said {
                client,
                clock,
                json,
            });
        }
        let stamped = said
            .iter()
            .map(|s| Ok((s.client, s.clock, stamp(s.json, identity)?)))
            .collect::<Result<Vec<_>, AwarenessError>>()?;
        let mut changed = Vec::new();
        for (client, clock, state) in stamped {
            if self.accept(conn, &person, client, clock, state, now) {
                changed.push(client);
            }
        }
        Ok((!changed.is_empty()).then(|| self.encode(changed)))
    }

    /// Takes one entry `conn` may speak for (checked by `apply`); whether anything changed.
    fn accept(
        &mut self,
        conn: ConnectionId,
        person: &Arc<str>,
        client: u64,
        clock: u64,
        state: Option<String>,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.entries.get(&client) else {
            let Some(state) = state else {
                return false;
            };
            self.entries.insert(
                client,
                Entry {
                    clock,
                    person: person.clone(),
                    conn: Some(conn),
                    state: Some(state),
                    renewed: now,
                    retired: None,
                },
            );
            self.speak_for(conn, person, client);
            return true;
        };
        if entry.conn.is_none() {
            // The same person again (a reconnecting client): the id is theirs once more.
            if state.is_none() {
                return false;
            }
            if let Some(number) = entry.retired {
                self.forget_retirement(number, person);
            }
            let entry = self.entries.get_mut(&client).expect("present");
            entry.retired = None;
            entry.conn = Some(conn);
            self.speak_for(conn, person, client);
        }
        let entry = self.entries.get_mut(&client).expect("present");
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
        entry.state = state;
        entry.renewed = now;
        true
    }

    fn speak_for(&mut self, conn: ConnectionId, person: &Arc<str>, client: u64) {
        let speaker = self.speakers.entry(conn).or_insert_with(|| Speaker {
            person: person.clone(),
            clients: Vec::new(),
        });
        if !speaker.clients.contains(&client) {
            speaker.clients.push(client);
        }
    }

    /// Clears every state `conn` spoke for and frees them; returns the removal to relay.
    pub fn remove_connection(&mut self, conn: ConnectionId) -> Option<Vec<u8>> {
        let speaker = self.speakers.remove(&conn)?;
        let mut removed = Vec::new();
        for client in &speaker.clients {
            let entry = self
                .entries
                .get_mut(client)
                .expect("a speaker's ids are kept");
            if entry.state.take().is_some() {
                entry.clock += 1;
                removed.push(*client);
            }
        }
        let removal = (!removed.is_empty()).then(|| self.encode(removed));
        for client in speaker.clients {
            self.retire(client);
        }
        removal
    }

    /// Keeps a record of an id whose connection left: its person and clock, nothing more.
    fn retire(&mut self, client: u64) {
        let number = self.next_retirement;
        self.next_retirement += 1;
        let entry = self.entries.get_mut(&client).expect("present");
        entry.conn = None;
        entry.state = None;
        entry.retired = Some(number);
        let person = entry.person.clone();
        self.retired.insert(number, client);
        let mine = self.retired_by_person.entry(person).or_default();
        mine.insert(number, client);
        if mine.len() > MAX_RETIRED_PER_PERSON {
            let (oldest, _) = mine.pop_first().expect("not empty");
            self.forget(oldest);
        }
        while self.retired.len() > MAX_RETIRED {
            let (oldest, _) = self.retired.first_key_value().expect("not empty");
            self.forget(*oldest);
        }
    }

    /// Forgets the retired id of this retirement number entirely.
    fn forget(&mut self, number: u64) {
        let Some(client) = self.retired.remove(&number) else {
            return;
        };
        if let Some(entry) = self.entries.remove(&client) {
            self.forget_retirement(number, &entry.person);
        }
    }

    fn forget_retirement(&mut self, number: u64, person: &Arc<str>) {
        self.retired.remove(&number);
        if let Some(mine) = self.retired_by_person.get_mut(person) {
            mine.remove(&number);
            if mine.is_empty() {
                self.retired_by_person.remove(person);
            }
        }
    }

    /// Clears states not renewed within `timeout`; returns the removal to relay. The connection
    /// still speaks for the id and may send a state again.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Option<Vec<u8>> {
        let mut removed = Vec::new();
        for (client, entry) in self.entries.iter_mut() {
            if entry.state.is_some() && now.duration_since(entry.renewed) >= timeout {
                entry.state = None;
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
        serde_json::from_str(json).map_err(|_| AwarenessError::Malformed("state is not JSON"))?;
    match value {
        Value::Null => Ok(None),
        Value::Object(mut state) => {
            let user = serde_json::to_value(identity).expect("identity serializes");
            state.insert("user".into(), user);
            Ok(Some(Value::Object(state).to_string()))
        }
        _ => Err(AwarenessError::Malformed("state must be an object or null")),
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

    fn bob() -> Identity {
        Identity::from_username("bob")
    }

    /// An update of many entries, as a hostile client would hand-make it.
    fn encode_many(entries: &[(u64, u64, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_uint(&mut out, entries.len() as u64);
        for (client, clock, state) in entries {
            write_var_uint(&mut out, *client);
            write_var_uint(&mut out, *clock);
            write_var_bytes(&mut out, state.to_string().as_bytes());
        }
        out
    }

    #[test]
    fn an_update_naming_many_client_ids_is_refused_whole() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let state = json!({"cursors": [], "pad": "x".repeat(20)});
        let flood: Vec<_> = (0..50_000).map(|c| (c, 1, state.clone())).collect();
        let result = table.apply(ConnectionId(1), &ada(), &encode_many(&flood), now);
        assert_eq!(result, Err(AwarenessError::TooManyClients));
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("at most 4 client ids"));
        // Nothing was kept or relayed, not even the first four.
        assert_eq!(table.live_states(), 0);
        assert_eq!(table.entries.len(), 0);
        assert_eq!(table.encode_all(), None);
        // Four ids in one update are accepted, relayed once each.
        let four: Vec<_> = (0..4).map(|c| (c, 1, state.clone())).collect();
        let relayed = table
            .apply(ConnectionId(1), &ada(), &encode_many(&four), now)
            .unwrap()
            .unwrap();
        assert_eq!(decode_update(&relayed).unwrap().len(), 4);
    }

    #[test]
    fn a_connection_speaks_for_at_most_four_ids_over_its_life() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        for client in 0..4 {
            let update = encode_update(client, 1, &json!({}));
            assert!(table
                .apply(ConnectionId(1), &ada(), &update, now)
                .unwrap()
                .is_some());
            // Cleared again at once: the id still counts.
            let clear = encode_update(client, 2, &Value::Null);
            table.apply(ConnectionId(1), &ada(), &clear, now).unwrap();
        }
        let fifth = encode_update(4, 1, &json!({}));
        assert_eq!(
            table.apply(ConnectionId(1), &ada(), &fifth, now),
            Err(AwarenessError::TooManyClients)
        );
        // Its own ids stay usable; another connection has its own allowance.
        let again = encode_update(3, 3, &json!({"back": true}));
        assert!(table
            .apply(ConnectionId(1), &ada(), &again, now)
            .unwrap()
            .is_some());
        assert!(table
            .apply(ConnectionId(2), &ada(), &fifth, now)
            .unwrap()
            .is_some());
        assert_eq!(table.entries.len(), 5);
    }

    #[test]
    fn repeated_entries_for_one_id_are_relayed_once() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let repeated: Vec<_> = (0..10_000).map(|i| (7, i, json!({ "n": i }))).collect();
        let relayed = table
            .apply(ConnectionId(1), &ada(), &encode_many(&repeated), now)
            .unwrap()
            .unwrap();
        let entries = decode_update(&relayed).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, 7);
        assert_eq!(entries[0].2["n"], 9_999);
        assert_eq!(entries[0].2["user"]["username"], "ada");
    }

    #[test]
    fn echoes_of_others_are_skipped_and_not_counted() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        // Twenty people present, each on a connection of their own.
        for n in 0..20u64 {
            let person = Identity::from_username(&format!("p{n}"));
            let update = encode_update(100 + n, 1, &json!({}));
            table
                .apply(ConnectionId(100 + n), &person, &update, now)
                .unwrap();
        }
        // Bob's y-websocket client echoes all of them back with its own state: only his is
        // taken, and nobody else's state is touched.
        let mut echo: Vec<_> = (0..20u64)
            .map(|n| (100 + n, 1, json!({"forged": true})))
            .collect();
        echo.push((5, 1, json!({"mine": true})));
        let relayed = table
            .apply(ConnectionId(1), &bob(), &encode_many(&echo), now)
            .unwrap()
            .unwrap();
        let entries = decode_update(&relayed).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, 5);
        let all = decode_update(&table.encode_all().unwrap()).unwrap();
        assert_eq!(all.len(), 21);
        assert!(all.iter().all(|(_, _, s)| s.get("forged").is_none()));
    }

    #[test]
    fn a_state_beyond_the_limit_is_refused() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let big = json!({ "pad": "x".repeat(MAX_STATE_BYTES) });
        assert!(matches!(
            table.apply(ConnectionId(1), &ada(), &encode_update(1, 1, &big), now),
            Err(AwarenessError::StateTooLarge(_))
        ));
        assert_eq!(table.entries.len(), 0);
    }

    #[test]
    fn a_leaver_s_states_are_freed_and_only_bounded_records_stay() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let state = json!({"pad": "x".repeat(1000)});
        // Ada reconnects 100 times, each time with four new ids.
        for round in 0..100u64 {
            let conn = ConnectionId(round);
            let four: Vec<_> = (0..4).map(|c| (round * 4 + c, 1, state.clone())).collect();
            table.apply(conn, &ada(), &encode_many(&four), now).unwrap();
            let removal = table.remove_connection(conn).unwrap();
            assert_eq!(decode_update(&removal).unwrap().len(), 4);
        }
        assert_eq!(table.live_states(), 0);
        assert!(table.speakers.is_empty());
        assert!(table.entries.values().all(|e| e.state.is_none()));
        assert_eq!(table.entries.len(), MAX_RETIRED_PER_PERSON);
        assert_eq!(table.retired.len(), MAX_RETIRED_PER_PERSON);
        // The newest are the ones remembered.
        assert!(table.entries.contains_key(&399));
        assert!(!table.entries.contains_key(&0));
    }

    #[test]
    fn retired_records_are_bounded_in_all() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        for n in 0..(MAX_RETIRED as u64 + 100) {
            let person = Identity::from_username(&format!("guest:{n}"));
            let conn = ConnectionId(n);
            table
                .apply(conn, &person, &encode_update(n, 1, &json!({})), now)
                .unwrap();
            table.remove_connection(conn);
        }
        assert_eq!(table.entries.len(), MAX_RETIRED);
        assert_eq!(table.retired_by_person.len(), MAX_RETIRED);
        assert!(!table.entries.contains_key(&99));
        assert!(table.entries.contains_key(&100));
    }

    #[test]
    fn a_client_id_belongs_to_the_person_who_first_used_it() {
        let mut table = AwarenessTable::default();
        let now = Instant::now();
        let state = json!({"cursors": []});
        table
            .apply(ConnectionId(1), &ada(), &encode_update(9, 4, &state), now)
            .unwrap();
        // While Ada is here, and after she left, Bob cannot take her id over.
        let claim = encode_update(9, 50, &json!({"cursors": [1]}));
        assert_eq!(
            table.apply(ConnectionId(2), &bob(), &claim, now).unwrap(),
            None
        );
        table.remove_connection(ConnectionId(1)).unwrap();
        assert_eq!(
            table.apply(ConnectionId(2), &bob(), &claim, now).unwrap(),
            None
        );
        assert_eq!(table.live_states(), 0);
        // Ada reconnecting with her old id and clock is relayed with a clock peers accept.
        let relayed = table
            .apply(ConnectionId(3), &ada(), &encode_update(9, 4, &state), now)
            .unwrap()
            .expect("her state is back");
        let entries = decode_update(&relayed).unwrap();
        assert_eq!(entries[0].1, 6);
        assert_eq!(entries[0].2["user"]["username"], "ada");
        assert!(table.retired.is_empty());
        assert!(table.retired_by_person.is_empty());
    }
}

//! The one y-websocket client of the tests and of the load generator: a real yrs document over
//! a real websocket, speaking y-protocols framed the way the server it talks to expects (plain,
//! Hocuspocus's document-name envelope, or nothing but relayed frames for the bare broadcast
//! ceiling).
//!
//! The handshake: the client sends its state vector (sync step 1) and the server answers with
//! what the client lacks (sync step 2); the server's own step 1 is answered the same way. After
//! that each side sends its edits as sync updates. Quire's room handles one connection's
//! messages in order and sends to each connection in order, so a test that waits for the answer
//! to a later message knows every earlier one has been handled ([`YClient::sentinel`]).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use collab::protocol::{self, decode_frame, Frame};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, ReadTxn, StateVector, Text, Transact, TransactionMut, Update};

use crate::TestServer;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a server frames y-protocols messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// y-websocket's messages as they are (Quire, jupyter-collaboration, pycrdt-websocket,
    /// y-websocket, y-sweet).
    Plain,
    /// Hocuspocus: every message starts with the document's name, and the connection
    /// authenticates before it syncs.
    Hocuspocus { document: String },
    /// The bare broadcast ceiling: frames are relayed to the room's other sockets, nothing
    /// answers a sync request, every client starts from the same local document.
    Relay,
}

/// Where a client connects.
#[derive(Clone, Debug)]
pub struct Room {
    pub url: String,
    pub framing: Framing,
}

/// Who drives the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A test against Quire: every RAW and awareness message is kept, and a frame that does not
    /// decode or an update that does not apply fails the test.
    Test,
    /// The load generator: nothing is kept (ten thousand clients must fit), and what another
    /// server sends that this client does not read is skipped.
    Load,
}

/// What one received message did.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A document update (or sync step 2) was applied.
    Applied,
    /// The server's sync step 1 arrived (and was answered, unless relayed).
    Asked,
    /// Anything else: awareness, a server's own message.
    Other,
    Closed,
}

/// A y-websocket client holding a real yrs document.
pub struct YClient {
    pub doc: Doc,
    socket: Socket,
    framing: Framing,
    purpose: Purpose,
    pub synced: bool,
    /// RAW JSON messages received (tests only).
    pub raw: Vec<String>,
    /// Awareness payloads received (tests only).
    pub awareness: Vec<Bytes>,
    /// The close code and reason, once the socket closed.
    pub closed: Option<(u16, String)>,
    /// Sync updates received (the echo of our own edits included).
    pub updates_received: usize,
    /// Bytes of websocket payload received.
    pub bytes_in: usize,
    awareness_clock: u32,
    /// When set, each received update is checked for this client's own items (the chaos
    /// figures count an edit as acknowledged once the server has sent it back).
    pub track_echoes: bool,
    /// The clock just past the highest item of this client's that the server sent back.
    pub echoed_clock: u32,
}

/// A client's websocket buffers: small, so that ten thousand idle clients fit in the load
/// generator (tungstenite's default read buffer is 128 KiB), and messages as large as the
/// biggest document measured.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

/// A random 32-bit client id, as Yjs makes in a browser (yrs makes 53-bit ones, which y-sweet
/// mangles when it relays them).
fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() as u32).max(1) as u64
}

impl YClient {
    /// Opens the room for `path` the way JupyterLab does, and waits until synced.
    pub async fn join(server: &TestServer, path: &str) -> YClient {
        let (file_id, session_id) = server.session(path);
        let mut client = YClient::connect(&server.room_url(&file_id, &session_id)).await;
        client.sync().await;
        client
    }

    /// Connects to a Quire room (the token in `url`), without syncing yet.
    pub async fn connect(url: &str) -> YClient {
        YClient::try_connect(url, None)
            .await
            .expect("websocket connects")
    }

    /// Connects with a cookie instead of the token (a live-share guest, as a browser would).
    pub async fn connect_with_cookie(url: &str, cookie: &str) -> YClient {
        YClient::try_connect(url, Some(cookie))
            .await
            .expect("websocket connects")
    }

    /// Connects to a Quire room with an optional cookie; an error when the server refuses the
    /// upgrade.
    pub async fn try_connect(url: &str, cookie: Option<&str>) -> Result<YClient> {
        let mut request = url.into_client_request().context("a websocket URL")?;
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().context("a cookie header")?);
        }
        YClient::open(request, Framing::Plain, Purpose::Test, None).await
    }

    /// A load generator's client: opens the websocket and starts the handshake
    /// (authentication and sync step 1). With `base`, the document starts as that update (the
    /// relay ceiling's shared starting point).
    pub async fn connect_room(room: &Room, base: Option<&[u8]>) -> Result<YClient> {
        let request = room.url.as_str().into_client_request()?;
        let mut client = YClient::open(request, room.framing.clone(), Purpose::Load, base)
            .await
            .with_context(|| format!("websocket to {}", room.url))?;
        match &client.framing {
            Framing::Relay => client.synced = true,
            Framing::Hocuspocus { .. } => {
                // Auth message, token sub-type, an empty token: the server has no
                // onAuthenticate hook, so any token is accepted.
                let mut auth = Vec::new();
                protocol::write_var_uint(&mut auth, 2);
                protocol::write_var_uint(&mut auth, 0);
                protocol::write_var_bytes(&mut auth, b"");
                client.send_payload(&auth).await?;
                client.send_step1().await?;
            }
            Framing::Plain => client.send_step1().await?,
        }
        Ok(client)
    }

    /// [`connect_room`](Self::connect_room), then reads until the server's sync step 2 has
    /// been applied.
    pub async fn join_room(room: &Room, base: Option<&[u8]>, timeout: Duration) -> Result<YClient> {
        let mut client = YClient::connect_room(room, base).await?;
        client.wait_synced(timeout).await?;
        Ok(client)
    }

    async fn open(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        framing: Framing,
        purpose: Purpose,
        base: Option<&[u8]>,
    ) -> Result<YClient> {
        // Like browsers, disable Nagle's algorithm: edits are small frames.
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), true)
                .await?;
        let doc = collab::notebook::new_doc_with_client(random_client_id());
        if let Some(base) = base {
            doc.transact_mut()
                .apply_update(Update::decode_v1(base)?)
                .map_err(|e| anyhow!("base update: {e}"))?;
        }
        Ok(YClient {
            doc,
            socket,
            framing,
            purpose,
            synced: false,
            raw: Vec::new(),
            awareness: Vec::new(),
            closed: None,
            updates_received: 0,
            bytes_in: 0,
            awareness_clock: 0,
            track_echoes: false,
            echoed_clock: 0,
        })
    }

    /// Sends our state vector and reads until the server's step 2 arrives.
    pub async fn sync(&mut self) {
        self.send_step1().await.expect("send");
        let ok = self.pump_until(Duration::from_secs(10), |c| c.synced).await;
        assert!(ok, "not synced within 10 s (closed: {:?})", self.closed);
    }

    /// Reads until synced; an error after `timeout` or when the socket closes first.
    pub async fn wait_synced(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.synced {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => bail!("not synced within {timeout:?}"),
                Ok(Event::Closed) => bail!("the server closed the socket before sync"),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Asks for the server's state again and waits for the answer: once it arrives, the
    /// server has handled everything this client sent before.
    pub async fn resync(&mut self, timeout: Duration) -> Result<()> {
        self.synced = false;
        self.send_step1().await?;
        self.wait_synced(timeout).await
    }

    /// Gives an empty document its content (the first client on a server that does not read
    /// notebook files), and waits until the server holds it.
    pub async fn seed(&mut self, update: &[u8]) -> Result<()> {
        self.apply(update);
        self.send_update(update).await?;
        self.resync(Duration::from_secs(120)).await
    }

    async fn send_step1(&mut self) -> Result<()> {
        let sv = self.doc.transact().state_vector().encode_v1();
        self.send_payload(&protocol::encode_sync_step1(&sv)).await
    }

    /// Sends one y-protocols message, wrapped as the server expects.
    pub async fn send_payload(&mut self, payload: &[u8]) -> Result<()> {
        let frame = match &self.framing {
            Framing::Hocuspocus { document } => {
                let mut framed = Vec::with_capacity(payload.len() + document.len() + 2);
                protocol::write_var_bytes(&mut framed, document.as_bytes());
                framed.extend_from_slice(payload);
                Bytes::from(framed)
            }
            _ => Bytes::copy_from_slice(payload),
        };
        self.send_message(Message::Binary(frame)).await
    }

    /// Sends one websocket message as it is (a test's text frame, say).
    pub async fn send_message(&mut self, message: Message) -> Result<()> {
        self.socket.send(message).await.context("websocket send")
    }

    /// Sends one frame; a test fails if the socket is gone.
    pub async fn send(&mut self, frame: Bytes) {
        self.send_payload(&frame).await.expect("send");
    }

    /// Sends a document update as a sync update.
    pub async fn send_update(&mut self, update: &[u8]) -> Result<()> {
        self.send_payload(&protocol::encode_sync_update(update))
            .await
    }

    /// Makes a local change and sends it as an update.
    pub async fn edit(&mut self, f: impl FnOnce(&mut TransactionMut)) {
        let update = {
            let mut txn = self.doc.transact_mut();
            f(&mut txn);
            txn.encode_update_v1()
        };
        self.send(protocol::encode_sync_update(&update)).await;
    }

    /// Appends text to the source of cell `index`.
    pub async fn append_to_cell(&mut self, index: u32, text: &str) {
        self.edit(|txn| {
            let source = collab::notebook::cell_source(txn, index).expect("cell exists");
            source.push(txn, text);
        })
        .await;
    }

    /// Appends one character to the first cell's source and sends the update.
    pub async fn type_character(&mut self) -> Result<()> {
        let update = {
            let mut txn = self.doc.transact_mut();
            let source = collab::notebook::cell_source(&txn, 0)
                .ok_or_else(|| anyhow!("the document has no first cell"))?;
            let len = source.len(&txn);
            source.insert(&mut txn, len, "x");
            txn.encode_update_v1()
        };
        self.send_update(&update).await
    }

    /// Sends this client's awareness state: a user and a cursor, as a CodeMirror binding does
    /// on every keystroke (and y-protocols renews every 15 s).
    pub async fn send_awareness(&mut self, cursor: u32) -> Result<()> {
        self.awareness_clock += 1;
        let client = self.doc.client_id().get();
        let state = serde_json::json!({
            "user": {"name": format!("bench {client}"), "color": "green"},
            "cursor": {"anchor": cursor, "head": cursor},
        });
        let update = collab::awareness::encode_update(client, self.awareness_clock as u64, &state);
        self.send_payload(&protocol::encode_awareness(&update))
            .await
    }

    /// Every awareness entry received: (client, clock, state), a removal's state null.
    pub fn awareness_entries(&self) -> Vec<(u64, u64, Value)> {
        self.awareness
            .iter()
            .flat_map(|payload| {
                collab::awareness::decode_update(payload).expect("relayed awareness decodes")
            })
            .collect()
    }

    pub fn sources(&self) -> Vec<String> {
        self.notebook()
            .cells
            .into_iter()
            .map(|c| c.source)
            .collect()
    }

    pub fn notebook(&self) -> collab::Notebook {
        collab::Notebook::from_doc(&self.doc.transact())
    }

    /// The number of cells in the document.
    pub fn cell_count(&self) -> u32 {
        let txn = self.doc.transact();
        txn.get_array("cells").map(|c| c.len(&txn)).unwrap_or(0)
    }

    /// Reads until the document holds `cells` cells (some servers answer a sync before they
    /// have loaded what they stored, and send it as an update after).
    pub async fn wait_cells(&mut self, cells: u32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.cell_count() != cells {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => bail!(
                    "the document has {} cells after {timeout:?}, not {cells}",
                    self.cell_count()
                ),
                Ok(Event::Closed) => bail!("the server closed the socket"),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Reads one message and acts on it (applies updates, answers a step 1, keeps what a test
    /// reads).
    pub async fn next_event(&mut self) -> Event {
        if self.closed.is_some() {
            return Event::Closed;
        }
        loop {
            let message = match self.socket.next().await {
                None => {
                    self.closed = Some((1006, "connection dropped".into()));
                    return Event::Closed;
                }
                Some(Err(_)) => {
                    self.closed = Some((1006, "connection error".into()));
                    return Event::Closed;
                }
                Some(Ok(message)) => message,
            };
            match message {
                Message::Binary(data) => {
                    self.bytes_in += data.len();
                    return self.handle(data).await;
                }
                Message::Close(frame) => {
                    self.closed = Some(
                        frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((u16::from(CloseCode::Status), String::new())),
                    );
                    return Event::Closed;
                }
                _ => {}
            }
        }
    }

    /// Reads messages, handling them, until `done` holds, the socket closes, or time runs out.
    pub async fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&YClient) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if self.closed.is_some() {
                return false;
            }
            if tokio::time::timeout_at(deadline, self.next_event())
                .await
                .is_err()
            {
                return done(self);
            }
        }
        true
    }

    /// Reads whatever arrives within `duration` (pacing for the chaos runs; an absence check
    /// waits for a [`sentinel`](Self::sentinel) instead).
    pub async fn pump_for(&mut self, duration: Duration) {
        self.pump_until(duration, |_| false).await;
    }

    /// The code of the server's close frame, if it sent one (1005 and 1006 are never sent: they
    /// stand for a close frame without a code and a dropped connection).
    pub fn close_code(&self) -> Option<u16> {
        self.closed
            .as_ref()
            .map(|(code, _)| *code)
            .filter(|code| !matches!(code, 1005 | 1006))
    }

    /// The local port of the websocket's TCP connection.
    pub fn local_port(&self) -> Option<u16> {
        match self.socket.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
                tcp.local_addr().ok().map(|a| a.port())
            }
            _ => None,
        }
    }

    async fn handle(&mut self, data: Bytes) -> Event {
        let data = match &self.framing {
            Framing::Hocuspocus { .. } => {
                // Skip the document name; only sync and awareness messages matter here (not
                // the auth answer nor the "saved" acknowledgements).
                let Some((len, used)) = protocol::read_var_uint(&data) else {
                    return Event::Other;
                };
                let rest = data.slice((used + len as usize).min(data.len())..);
                match rest.first() {
                    Some(0) | Some(1) => rest,
                    _ => return Event::Other,
                }
            }
            _ => data,
        };
        let frame = match decode_frame(&data, usize::MAX) {
            Ok(frame) => frame,
            Err(e) => {
                assert!(self.purpose == Purpose::Load, "server frames decode: {e}");
                return Event::Other;
            }
        };
        match frame {
            Frame::SyncStep1(sv) => {
                if self.framing == Framing::Relay {
                    return Event::Asked;
                }
                let Ok(sv) = StateVector::decode_v1(&sv) else {
                    assert!(self.purpose == Purpose::Load, "server state vectors decode");
                    return Event::Other;
                };
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                let _ = self
                    .send_payload(&protocol::encode_sync_step2(&update))
                    .await;
                Event::Asked
            }
            Frame::SyncStep2(update) => {
                self.apply(&update);
                self.synced = true;
                Event::Applied
            }
            Frame::SyncUpdate(update) => {
                self.apply(&update);
                self.updates_received += 1;
                Event::Applied
            }
            Frame::Awareness(payload) => {
                if self.purpose == Purpose::Test {
                    self.awareness.push(payload);
                }
                Event::Other
            }
            Frame::Raw { text, .. } => {
                if self.purpose == Purpose::Test {
                    self.raw.push(text);
                }
                Event::Other
            }
            Frame::QueryAwareness => Event::Other,
        }
    }

    fn apply(&mut self, update: &[u8]) {
        let update = match Update::decode_v1(update) {
            Ok(update) => update,
            Err(e) => {
                assert!(self.purpose == Purpose::Load, "server updates decode: {e}");
                return;
            }
        };
        if self.track_echoes {
            // (Not `Update::state_vector`: it counts only runs that start at clock 0.)
            let own = self.doc.client_id();
            let end = update
                .insertions(true)
                .iter()
                .filter(|(client, _)| **client == own)
                .filter_map(|(_, ranges)| ranges.iter().map(|r| r.end).max())
                .max();
            self.echoed_clock = self.echoed_clock.max(end.unwrap_or(0));
        }
        let applied = self.doc.transact_mut().apply_update(update);
        if let Err(e) = applied {
            assert!(self.purpose == Purpose::Load, "server updates apply: {e}");
        }
    }

    /// Makes a local change, sends it, and waits until the server has echoed an update back
    /// (so it is durable).
    pub async fn edit_and_wait_echo(&mut self, f: impl FnOnce(&mut TransactionMut)) {
        let before = self.updates_received;
        self.edit(f).await;
        let echoed = self
            .pump_until(Duration::from_secs(10), |c| c.updates_received > before)
            .await;
        assert!(
            echoed,
            "the server did not echo the edit (RAW: {:?}, closed: {:?})",
            self.raw, self.closed
        );
    }

    /// Appends text to the source of cell `index` and waits for the echo.
    pub async fn append_and_wait_echo(&mut self, index: u32, text: &str) {
        self.edit_and_wait_echo(|txn| {
            let source = collab::notebook::cell_source(txn, index).expect("cell exists");
            source.push(txn, text);
        })
        .await;
    }

    /// JupyterLab's RAW save; returns the reply's status.
    pub async fn save(&mut self, save_id: u64) -> String {
        self.send(protocol::encode_raw_save(save_id)).await;
        // (A save's reply, not another request's that happens to carry the same number.)
        let reply = self
            .wait_raw(Duration::from_secs(30), |m| {
                m["type"] == "save" && m["responseTo"] == save_id
            })
            .await;
        let reply = reply
            .unwrap_or_else(|| panic!("no reply to save {save_id} (closed: {:?})", self.closed));
        reply["status"].as_str().unwrap_or_default().to_string()
    }

    /// Sends one of our RAW JSON requests.
    pub async fn request(&mut self, message: Value) {
        self.send(protocol::encode_raw(&message.to_string())).await;
    }

    /// Asks the server to run a cell (starting the notebook's kernel if needed); returns the
    /// server's answer (`status` "queued" or "refused").
    pub async fn execute(&mut self, cell_id: &str) -> Value {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.request(serde_json::json!({"type": "execute", "cell_id": cell_id, "request_id": id}))
            .await;
        self.wait_raw(Duration::from_secs(60), |m| {
            m["type"] == "execute" && m["responseTo"] == id
        })
        .await
        .unwrap_or_else(|| panic!("no answer to execute {cell_id} (closed: {:?})", self.closed))
    }

    /// Waits until the room has handled everything this client sent so far: asks for the
    /// server's state again (a sync step 1, which every connection may send and which changes
    /// nothing) and waits for the answer. False if the connection closed instead, or no answer
    /// came within `timeout`.
    pub async fn settle(&mut self, timeout: Duration) -> bool {
        self.closed.is_none() && self.resync(timeout).await.is_ok()
    }

    /// The sentinel of an absence check: [`settle`](Self::settle), which must succeed. The
    /// room handles one connection's messages in order and sends to each connection in order,
    /// so once the answer is here everything this client sent before has been handled, and
    /// everything the room sent this client before handling it has arrived: a test that first
    /// saw the room handle a forbidden action (its refusal, or another client's sentinel) can
    /// then assert that the action's effect is absent here.
    pub async fn sentinel(&mut self) {
        let settled = self.settle(Duration::from_secs(30)).await;
        assert!(
            settled,
            "no answer to the sentinel (closed: {:?})",
            self.closed
        );
    }

    /// Waits for a RAW JSON message matching `pick`.
    pub async fn wait_raw(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let find = |c: &YClient| {
            c.raw
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(r).ok())
                .find(|m| pick(m))
        };
        self.pump_until(timeout, |c| find(c).is_some()).await;
        find(self)
    }

    /// The server-written `state` map, as JSON.
    pub fn state(&self) -> Value {
        let txn = self.doc.transact();
        match txn.get_map("state") {
            Some(map) => collab::notebook::out_to_json(&txn, &yrs::Out::YMap(map)),
            None => Value::Null,
        }
    }

    /// How the last run of a cell stands: `queued`, `running`, `ok`, `error` or `aborted`.
    pub fn run_status(&self, cell_id: &str) -> String {
        self.state()["executions"][cell_id]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the cell's run has finished; returns its status.
    pub async fn wait_run(&mut self, cell_id: &str, timeout: Duration) -> String {
        let done =
            |c: &YClient| matches!(c.run_status(cell_id).as_str(), "ok" | "error" | "aborted");
        assert!(
            self.pump_until(timeout, done).await,
            "cell {cell_id} did not finish within {timeout:?}: {} (closed: {:?})",
            self.run_status(cell_id),
            self.closed
        );
        self.run_status(cell_id)
    }

    /// A cell as the document holds it.
    pub fn cell(&self, cell_id: &str) -> collab::Cell {
        self.notebook()
            .cells
            .into_iter()
            .find(|c| c.id == cell_id)
            .unwrap_or_else(|| panic!("no cell {cell_id}"))
    }

    /// Waits for the server to close the socket; returns its code and reason.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        self.pump_until(timeout, |c| c.closed.is_some()).await;
        self.closed
            .clone()
            .expect("the server closes the connection")
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

//! A virtual client: one real yrs document and one websocket speaking y-protocols, framed the
//! way the server it talks to expects (plain, Hocuspocus's document-name envelope, or nothing
//! but relayed frames for the bare broadcast ceiling).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use collab::protocol::{self, decode_frame, Frame};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, ReadTxn, StateVector, Text, Transact, Update};

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

/// What one received message did.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A document update (or sync step 2) was applied.
    Applied,
    /// Anything else: awareness, a step 1 answered, a server's own message.
    Other,
    Closed,
}

pub struct Client {
    pub doc: Doc,
    socket: Socket,
    framing: Framing,
    pub synced: bool,
    /// Bytes of websocket payload received.
    pub bytes_in: usize,
    awareness_clock: u32,
    /// When set, each received update is checked for this client's own items (the chaos
    /// figures count an edit as acknowledged once the server has sent it back).
    pub track_echoes: bool,
    /// The clock just past the highest item of this client's that the server sent back.
    pub echoed_clock: u32,
    /// The close code the server sent, if it closed the socket with one.
    pub close_code: Option<u16>,
}

/// A client's websocket buffers: small, so that ten thousand idle clients fit in the load
/// generator (tungstenite's default read buffer is 128 KiB).
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

impl Client {
    /// Opens the websocket and starts the handshake (authentication and sync step 1). With
    /// `base`, the document starts as that update (the relay ceiling's shared starting point).
    pub async fn connect(room: &Room, base: Option<&[u8]>) -> Result<Client> {
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(&room.url, Some(socket_config()), true)
                .await
                .with_context(|| format!("websocket to {}", room.url))?;
        let doc = collab::notebook::new_doc_with_client(random_client_id());
        if let Some(base) = base {
            doc.transact_mut()
                .apply_update(Update::decode_v1(base)?)
                .map_err(|e| anyhow!("base update: {e}"))?;
        }
        let mut client = Client {
            doc,
            socket,
            framing: room.framing.clone(),
            synced: false,
            bytes_in: 0,
            awareness_clock: 0,
            track_echoes: false,
            echoed_clock: 0,
            close_code: None,
        };
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

    /// Connects and reads until the server's sync step 2 has been applied.
    pub async fn join(room: &Room, base: Option<&[u8]>, timeout: Duration) -> Result<Client> {
        let mut client = Client::connect(room, base).await?;
        client.wait_synced(timeout).await?;
        Ok(client)
    }

    pub async fn wait_synced(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.synced {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("not synced within {timeout:?}");
            }
            match tokio::time::timeout(left, self.next_event()).await {
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
    async fn send_payload(&mut self, payload: &[u8]) -> Result<()> {
        let frame = match &self.framing {
            Framing::Hocuspocus { document } => {
                let mut framed = Vec::with_capacity(payload.len() + document.len() + 2);
                protocol::write_var_bytes(&mut framed, document.as_bytes());
                framed.extend_from_slice(payload);
                Bytes::from(framed)
            }
            _ => Bytes::copy_from_slice(payload),
        };
        self.socket
            .send(Message::Binary(frame))
            .await
            .context("websocket send")
    }

    /// Sends a document update as a sync update.
    pub async fn send_update(&mut self, update: &[u8]) -> Result<()> {
        self.send_payload(&protocol::encode_sync_update(update))
            .await
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
        let state = format!(
            r#"{{"user":{{"name":"bench {}","color":"green"}},"cursor":{{"anchor":{cursor},"head":{cursor}}}}}"#,
            self.doc.client_id()
        );
        let mut update = Vec::with_capacity(state.len() + 16);
        protocol::write_var_uint(&mut update, 1);
        protocol::write_var_uint(&mut update, self.doc.client_id().get());
        protocol::write_var_uint(&mut update, self.awareness_clock as u64);
        protocol::write_var_bytes(&mut update, state.as_bytes());
        self.send_payload(&protocol::encode_awareness(&update))
            .await
    }

    /// Reads until the document holds `cells` cells (some servers answer a sync before they
    /// have loaded what they stored, and send it as an update after).
    pub async fn wait_cells(&mut self, cells: u32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.cell_count() != cells {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.next_event()).await {
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

    /// The number of cells in the document.
    pub fn cell_count(&self) -> u32 {
        let txn = self.doc.transact();
        txn.get_array("cells").map(|c| c.len(&txn)).unwrap_or(0)
    }

    /// Reads one message and acts on it (applies updates, answers a step 1).
    pub async fn next_event(&mut self) -> Event {
        loop {
            let Some(Ok(message)) = self.socket.next().await else {
                return Event::Closed;
            };
            match message {
                Message::Binary(data) => {
                    self.bytes_in += data.len();
                    return self.handle(data).await;
                }
                Message::Close(frame) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Event::Closed;
                }
                _ => {}
            }
        }
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
        match decode_frame(&data, usize::MAX) {
            Ok(Frame::SyncStep1(sv)) => {
                if self.framing == Framing::Relay {
                    return Event::Other;
                }
                let Ok(sv) = StateVector::decode_v1(&sv) else {
                    return Event::Other;
                };
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                let _ = self
                    .send_payload(&protocol::encode_sync_step2(&update))
                    .await;
                Event::Other
            }
            Ok(Frame::SyncStep2(update)) => {
                self.apply(&update);
                self.synced = true;
                Event::Applied
            }
            Ok(Frame::SyncUpdate(update)) => {
                self.apply(&update);
                Event::Applied
            }
            _ => Event::Other,
        }
    }

    fn apply(&mut self, update: &[u8]) {
        if let Ok(update) = Update::decode_v1(update) {
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
            let _ = self.doc.transact_mut().apply_update(update);
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

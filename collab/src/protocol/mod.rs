//! The websocket framing shared by y-websocket, pycrdt-websocket and JupyterLab's provider.
//!
//! Every frame is binary and starts with a lib0 varUint message type:
//!
//! ```text
//! 0 SYNC             varUint sub-type (0 step 1, 1 step 2, 2 update) + varUint8Array payload
//! 1 AWARENESS        varUint8Array: n × (varUint clientID, varUint clock, varString JSON state)
//! 2 RAW              varString (Jupyter's own: "save" + varUint id from clients, JSON from us)
//! 3 QUERY_AWARENESS  nothing
//! ```
//!
//! The handshake: on connect the server sends its step 1 (a state vector); the client answers with
//! step 2 (what the server lacks) and sends its own step 1, which the server answers with step 2
//! to that client only. A client counts itself synced when it receives step 2.
//!
//! The RAW messages (JSON both ways, and JupyterLab's `"save"`) are typed in [`messages`]; the
//! close codes the server ends a connection with are [`CloseCode`].

mod close;
mod messages;

pub use close::CloseCode;
pub use messages::{
    ClientRequest, InvalidRaw, MalformedRequest, RawText, RefusedAction, Reply, Request, RequestId,
    RequestKind, SaveReply, ServerEvent, ServerMessage, Status,
};

use bytes::Bytes;

pub const MSG_SYNC: u64 = 0;
pub const MSG_AWARENESS: u64 = 1;
pub const MSG_RAW: u64 = 2;
pub const MSG_QUERY_AWARENESS: u64 = 3;

pub const SYNC_STEP1: u64 = 0;
pub const SYNC_STEP2: u64 = 1;
pub const SYNC_UPDATE: u64 = 2;

/// One decoded frame. Payloads are slices of the received buffer, not copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SyncStep1(Bytes),
    SyncStep2(Bytes),
    SyncUpdate(Bytes),
    Awareness(Bytes),
    /// A RAW message: its leading string, and whatever bytes follow it.
    Raw {
        text: String,
        tail: Bytes,
    },
    QueryAwareness,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("empty frame")]
    Empty,
    #[error("truncated frame: {0}")]
    Truncated(&'static str),
    #[error("unknown message type {0}")]
    UnknownType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("RAW message is not valid UTF-8")]
    InvalidUtf8,
}

impl FrameError {
    /// The websocket close code for a connection that sent this frame.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooLarge { .. } => CloseCode::TooLarge,
            _ => CloseCode::BadRequest,
        }
    }
}

/// Decodes one frame, refusing anything above `limit` bytes.
pub fn decode_frame(data: &Bytes, limit: usize) -> Result<Frame, FrameError> {
    if data.len() > limit {
        return Err(FrameError::TooLarge {
            size: data.len(),
            limit,
        });
    }
    if data.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut reader = Reader { data, pos: 0 };
    let frame = match reader.var_uint("message type")? {
        MSG_SYNC => {
            let sub = reader.var_uint("sync message type")?;
            let payload = reader.var_bytes("sync payload")?;
            match sub {
                SYNC_STEP1 => Frame::SyncStep1(payload),
                SYNC_STEP2 => Frame::SyncStep2(payload),
                SYNC_UPDATE => Frame::SyncUpdate(payload),
                other => return Err(FrameError::UnknownSyncType(other)),
            }
        }
        MSG_AWARENESS => Frame::Awareness(reader.var_bytes("awareness payload")?),
        MSG_RAW => {
            let raw = reader.var_bytes("RAW string")?;
            let text = String::from_utf8(raw.to_vec()).map_err(|_| FrameError::InvalidUtf8)?;
            Frame::Raw {
                text,
                tail: data.slice(reader.pos..),
            }
        }
        MSG_QUERY_AWARENESS => Frame::QueryAwareness,
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(frame)
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn var_uint(&mut self, what: &'static str) -> Result<u64, FrameError> {
        let (value, used) =
            read_var_uint(&self.data[self.pos..]).ok_or(FrameError::Truncated(what))?;
        self.pos += used;
        Ok(value)
    }

    fn var_bytes(&mut self, what: &'static str) -> Result<Bytes, FrameError> {
        let len = self.var_uint(what)?;
        let remaining = (self.data.len() - self.pos) as u64;
        if len > remaining {
            return Err(FrameError::Truncated(what));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(self.data.slice(start..self.pos))
    }
}

/// Reads a lib0 varUint; `None` when the input ends first or the value overflows 64 bits.
pub fn read_var_uint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().enumerate().take(10) {
        let chunk = (byte & 0x7f) as u64;
        let shift = 7 * i as u32;
        if shift >= 64 || (shift == 63 && chunk > 1) {
            return None;
        }
        value |= chunk << shift;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

pub fn write_var_uint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn sync_frame(sub: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 12);
    write_var_uint(&mut out, MSG_SYNC);
    write_var_uint(&mut out, sub);
    write_var_bytes(&mut out, payload);
    out.into()
}

pub fn encode_sync_step1(state_vector: &[u8]) -> Bytes {
    sync_frame(SYNC_STEP1, state_vector)
}

pub fn encode_sync_step2(update: &[u8]) -> Bytes {
    sync_frame(SYNC_STEP2, update)
}

pub fn encode_sync_update(update: &[u8]) -> Bytes {
    sync_frame(SYNC_UPDATE, update)
}

pub fn encode_awareness(update: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(update.len() + 8);
    write_var_uint(&mut out, MSG_AWARENESS);
    write_var_bytes(&mut out, update);
    out.into()
}

pub fn encode_query_awareness() -> Bytes {
    Bytes::from_static(&[MSG_QUERY_AWARENESS as u8])
}

/// A RAW frame carrying one of the server's JSON messages.
pub fn encode_message(message: &ServerMessage) -> Bytes {
    encode_raw(&message.to_json())
}

/// A RAW frame carrying one string.
pub fn encode_raw(text: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 8);
    write_var_uint(&mut out, MSG_RAW);
    write_var_bytes(&mut out, text.as_bytes());
    out.into()
}

/// The RAW save request JupyterLab sends: "save" followed by a varUint request id.
pub fn encode_raw_save(save_id: u64) -> Bytes {
    let mut out = Vec::new();
    write_var_uint(&mut out, MSG_RAW);
    write_var_bytes(&mut out, b"save");
    write_var_uint(&mut out, save_id);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_uint_round_trips() {
        for value in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            write_var_uint(&mut out, value);
            assert_eq!(read_var_uint(&out), Some((value, out.len())));
        }
        assert_eq!(read_var_uint(&[0x80]), None);
        assert_eq!(read_var_uint(&[0xff; 11]), None);
    }

    #[test]
    fn decodes_each_frame_kind() {
        let update = encode_sync_update(&[1, 2, 3]);
        assert_eq!(
            decode_frame(&update, 1024),
            Ok(Frame::SyncUpdate(Bytes::from_static(&[1, 2, 3])))
        );
        assert_eq!(
            decode_frame(&encode_sync_step1(&[0]), 1024),
            Ok(Frame::SyncStep1(Bytes::from_static(&[0])))
        );
        assert_eq!(
            decode_frame(&encode_awareness(&[0]), 1024),
            Ok(Frame::Awareness(Bytes::from_static(&[0])))
        );
        assert_eq!(
            decode_frame(&encode_query_awareness(), 1024),
            Ok(Frame::QueryAwareness)
        );
        match decode_frame(&encode_raw_save(7), 1024).unwrap() {
            Frame::Raw { text, tail } => {
                assert_eq!(text, "save");
                assert_eq!(read_var_uint(&tail), Some((7, 1)));
            }
            other => panic!("expected RAW, got {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_frames_with_a_reason() {
        let too_big = Bytes::from(vec![0u8; 2000]);
        assert_eq!(
            decode_frame(&too_big, 1000),
            Err(FrameError::TooLarge {
                size: 2000,
                limit: 1000
            })
        );
        assert_eq!(decode_frame(&Bytes::new(), 10), Err(FrameError::Empty));
        // A sync update announcing 100 bytes but carrying 2.
        let truncated = Bytes::from_static(&[0, 2, 100, 1, 2]);
        assert_eq!(
            decode_frame(&truncated, 1024),
            Err(FrameError::Truncated("sync payload"))
        );
        assert_eq!(
            decode_frame(&Bytes::from_static(&[9]), 1024),
            Err(FrameError::UnknownType(9))
        );
        assert_eq!(
            decode_frame(&Bytes::from_static(&[0, 5, 0]), 1024),
            Err(FrameError::UnknownSyncType(5))
        );
        assert_eq!(
            decode_frame(&Bytes::from_static(&[2, 2, 0xff, 0xfe]), 1024),
            Err(FrameError::InvalidUtf8)
        );
    }
}

/// The browser app's protocol types (`web/src/generated/protocol.ts`) are generated from the
/// types above: this test fails when the checked-in file is not what they generate.
/// `QUIRE_WRITE_GENERATED=1 cargo test -p collab --lib generated_typescript` rewrites it.
#[cfg(test)]
mod generated_typescript {
    use ts_rs::TS;

    use super::*;
    use crate::storage::ChatMessage;
    use crate::{CellId, RunId};

    const PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web/src/generated/protocol.ts"
    );

    fn generate() -> String {
        let declarations = [
            CellId::decl(),
            RunId::decl(),
            RequestKind::decl(),
            ClientRequest::decl(),
            Request::decl(),
            Status::decl(),
            Reply::decl(),
            SaveReply::decl(),
            ChatMessage::decl(),
            RefusedAction::decl(),
            ServerEvent::decl(),
            ServerMessage::decl(),
            CloseCode::decl(),
        ];
        let mut out = String::from(
            "// Generated from the Rust types of collab/src/protocol (ts-rs); do not edit.\n\
             // Regenerate: QUIRE_WRITE_GENERATED=1 cargo test -p collab --lib generated_typescript\n\
             // The messages are described in docs/protocol.md.\n",
        );
        for declaration in declarations {
            out.push_str("\nexport ");
            out.push_str(&declaration);
            out.push('\n');
        }
        out
    }

    #[test]
    fn matches_the_checked_in_file() {
        let generated = generate();
        if std::env::var_os("QUIRE_WRITE_GENERATED").is_some() {
            std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
            std::fs::write(PATH, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(PATH).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{PATH} is not what the protocol types generate: run \
             QUIRE_WRITE_GENERATED=1 cargo test -p collab --lib generated_typescript"
        );
    }
}

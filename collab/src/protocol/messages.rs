//! Quire's RAW messages: JSON text in a RAW frame (kind 2), both directions.
//!
//! A client sends a [`Request`] (a [`ClientRequest`] plus an optional `request_id`); the server
//! answers it with a [`Reply`] whose `responseTo` is that id and whose `status` is one
//! [`Status`]. The server also sends [`ServerEvent`]s unasked. JupyterLab's provider sends one
//! RAW message that is not JSON: `"save"` followed by a varUint id ([`RawText::Save`]), answered
//! by a [`SaveReply`]. `docs/protocol.md` describes every message with examples; the browser
//! app's TypeScript types are generated from these (see the `generated_typescript` test).
//!
//! Decoding never fills in a default: a message missing a field, or holding one of the wrong
//! type, is refused with a [`MalformedRequest`] naming the field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capabilities::Capability;
use crate::execution::RunId;
use crate::ids::CellId;
use crate::storage::ChatMessage;

/// The id a client gives a request; the reply carries it back as `responseTo`.
pub type RequestId = u64;

/// A request of a client, with the id its reply will carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "number"))]
    pub request_id: Option<RequestId>,
    #[serde(flatten)]
    pub body: ClientRequest,
}

/// What a client may ask of a room, by its `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientRequest {
    /// Run a code cell with the code the document holds (never code from the client).
    Execute {
        cell_id: CellId,
    },
    Interrupt,
    Restart,
    /// Stop the notebook's kernel.
    Shutdown,
    /// The answer to an `input()` prompt of one's own run.
    InputReply {
        cell_id: CellId,
        value: String,
    },
    /// Take the edit lock of a cell.
    Lock {
        cell_id: CellId,
    },
    /// Release the edit lock one holds.
    Unlock {
        cell_id: CellId,
    },
    /// Post to the notebook's chat.
    Chat {
        text: String,
    },
}

impl ClientRequest {
    /// The capability the request needs, and the refusal of someone without it.
    pub fn needs(&self) -> (Capability, &'static str) {
        const RUN: &str = "you may not run code in this notebook";
        match self {
            ClientRequest::Execute { .. }
            | ClientRequest::Interrupt
            | ClientRequest::Restart
            | ClientRequest::Shutdown
            | ClientRequest::InputReply { .. } => (Capability::Execute, RUN),
            ClientRequest::Lock { .. } | ClientRequest::Unlock { .. } => {
                (Capability::Edit, "you may not edit this notebook")
            }
            ClientRequest::Chat { .. } => {
                (Capability::Edit, "you may read the chat, not post to it")
            }
        }
    }

    pub fn kind(&self) -> RequestKind {
        match self {
            ClientRequest::Execute { .. } => RequestKind::Execute,
            ClientRequest::Interrupt => RequestKind::Interrupt,
            ClientRequest::Restart => RequestKind::Restart,
            ClientRequest::Shutdown => RequestKind::Shutdown,
            ClientRequest::InputReply { .. } => RequestKind::InputReply,
            ClientRequest::Lock { .. } => RequestKind::Lock,
            ClientRequest::Unlock { .. } => RequestKind::Unlock,
            ClientRequest::Chat { .. } => RequestKind::Chat,
        }
    }
}

/// The `type` of a request, which its reply repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Execute,
    Interrupt,
    Restart,
    Shutdown,
    InputReply,
    Lock,
    Unlock,
    Chat,
}

impl RequestKind {
    const ALL: [RequestKind; 8] = [
        RequestKind::Execute,
        RequestKind::Interrupt,
        RequestKind::Restart,
        RequestKind::Shutdown,
        RequestKind::InputReply,
        RequestKind::Lock,
        RequestKind::Unlock,
        RequestKind::Chat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Execute => "execute",
            RequestKind::Interrupt => "interrupt",
            RequestKind::Restart => "restart",
            RequestKind::Shutdown => "shutdown",
            RequestKind::InputReply => "input_reply",
            RequestKind::Lock => "lock",
            RequestKind::Unlock => "unlock",
            RequestKind::Chat => "chat",
        }
    }

    fn parse(name: &str) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Every status a reply can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Done (an interrupt sent, a lock granted or released, a message posted...).
    Ok,
    /// An execute request: the run is queued on the kernel.
    Queued,
    /// Not done; `reason` says why.
    Refused,
    /// A RAW save: the file holds the document (JupyterLab's vocabulary).
    Success,
    /// A RAW save that could not be written.
    Failed,
}

/// The answer to a [`Request`]. Fields beyond `type`, `responseTo` and `status` are present
/// only where they apply: `reason` on a refusal; `cell_id` on lock, unlock and a queued execute;
/// `run` on a queued execute; `lease_ms` on a granted lock; `id` on a posted chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Reply {
    #[serde(rename = "type")]
    pub kind: RequestKind,
    /// The request's `request_id` (`null` when it gave none).
    #[serde(rename = "responseTo")]
    #[cfg_attr(test, ts(type = "number | null"))]
    pub response_to: Option<RequestId>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub cell_id: Option<CellId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub run: Option<RunId>,
    /// How long a granted lock lasts without its holder touching the cell, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "number"))]
    pub lease_ms: Option<u64>,
    /// The id the chat gave a posted message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "number"))]
    pub id: Option<u64>,
}

impl Reply {
    /// A reply with `status` and nothing else.
    pub fn new(kind: RequestKind, response_to: Option<RequestId>, status: Status) -> Reply {
        Reply {
            kind,
            response_to,
            status,
            reason: None,
            cell_id: None,
            run: None,
            lease_ms: None,
            id: None,
        }
    }

    pub fn ok(kind: RequestKind, response_to: Option<RequestId>) -> Reply {
        Reply::new(kind, response_to, Status::Ok)
    }

    pub fn refused(
        kind: RequestKind,
        response_to: Option<RequestId>,
        reason: impl Into<String>,
    ) -> Reply {
        Reply {
            reason: Some(reason.into()),
            ..Reply::new(kind, response_to, Status::Refused)
        }
    }

    pub fn with_cell(self, cell_id: &CellId) -> Reply {
        Reply {
            cell_id: Some(cell_id.clone()),
            ..self
        }
    }
}

/// The answer to JupyterLab's RAW save. (An enum of one variant: its `type` tag is `"save"`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SaveReply {
    Save {
        #[serde(rename = "responseTo")]
        #[cfg_attr(test, ts(type = "number"))]
        response_to: u64,
        /// `success` or `failed`.
        status: Status,
    },
}

/// What the server sends unasked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// What this connection may do (on joining, and whenever its grant changes).
    Permissions { capabilities: Vec<String> },
    /// The sender's update was not applied: its copy of the document now differs from the
    /// room's, and it should drop it and sync again (`resync`).
    Refused {
        action: RefusedAction,
        reason: String,
        resync: bool,
    },
    /// A prompt of `input()` in a run this connection asked for.
    InputRequest {
        cell_id: CellId,
        run: RunId,
        prompt: String,
        password: bool,
    },
    /// The prompt of that run is no longer waiting (the run ended).
    InputClosed { cell_id: CellId, run: RunId },
    /// The latest chat messages, oldest first, sent on joining.
    ChatHistory { messages: Vec<ChatMessage> },
    /// A message just posted (to everyone, the sender included).
    ChatMessage { message: ChatMessage },
    /// The sender's update depends on history this room never had (stale or foreign
    /// document): JupyterLab offers to revert or save a copy.
    Conflict,
}

/// What a refusal event refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum RefusedAction {
    Update,
}

/// Any RAW JSON message the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum ServerMessage {
    Event(ServerEvent),
    Reply(Reply),
    Save(SaveReply),
}

impl ServerMessage {
    /// The message as the text of a RAW frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages serialize")
    }
}

impl From<ServerEvent> for ServerMessage {
    fn from(event: ServerEvent) -> Self {
        ServerMessage::Event(event)
    }
}

impl From<Reply> for ServerMessage {
    fn from(reply: Reply) -> Self {
        ServerMessage::Reply(reply)
    }
}

impl From<SaveReply> for ServerMessage {
    fn from(reply: SaveReply) -> Self {
        ServerMessage::Save(reply)
    }
}

/// The text of a RAW frame from a client, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum RawText {
    /// JupyterLab's `"save"`; its varUint id follows the string in the frame.
    Save,
    /// One of our JSON requests.
    Request(Request),
    /// A JSON request that cannot be taken as it is: answered with a refusal.
    Malformed(MalformedRequest),
    /// Something else that is not ours (ignored, as other servers do).
    Other,
}

/// A JSON request whose `type` is known but whose fields are not what that type needs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {} request: {reason}", kind.as_str())]
pub struct MalformedRequest {
    pub kind: RequestKind,
    pub request_id: Option<RequestId>,
    /// What is wrong, naming the field.
    pub reason: String,
}

impl MalformedRequest {
    /// The refusal that answers it.
    pub fn reply(&self) -> Reply {
        Reply::refused(self.kind, self.request_id, self.to_string())
    }
}

/// A RAW text that is not a message at all: the connection is closed with this reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRaw {
    #[error("malformed RAW message: {0}")]
    Json(String),
    #[error("malformed RAW message: field `type`: {0}")]
    Type(String),
}

impl RawText {
    /// Decodes the string of a RAW frame. `Err` is a message no reply can answer (not JSON,
    /// or no known `type`): the sender is closed with the reason.
    pub fn decode(text: &str) -> Result<RawText, InvalidRaw> {
        if text == "save" {
            return Ok(RawText::Save);
        }
        if !text.starts_with('{') {
            return Ok(RawText::Other);
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| InvalidRaw::Json(e.to_string()))?;
        let kind = match value.get("type") {
            None => return Err(InvalidRaw::Type("missing".into())),
            Some(Value::String(name)) => RequestKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
                InvalidRaw::Type(format!(
                    "unknown request type {name:?} (known: {})",
                    known.join(", ")
                ))
            })?,
            Some(other) => return Err(InvalidRaw::Type(format!("not a string: {other}"))),
        };
        let request_id = value.get("request_id").and_then(Value::as_u64);
        let malformed = |reason: String| {
            Ok(RawText::Malformed(MalformedRequest {
                kind,
                request_id,
                reason,
            }))
        };
        // Deserializing field by field keeps the path of the offending field, which the
        // flattened, tagged `Request` would lose.
        match serde_path_to_error::deserialize::<_, Fields>(&value) {
            Ok(fields) => match fields.into_request(kind) {
                Ok(request) => Ok(RawText::Request(request)),
                Err(field) => malformed(format!("missing field `{field}`")),
            },
            Err(e) => malformed(format!("field `{}`: {}", e.path(), e.inner())),
        }
    }
}

/// Every field a request may carry, each checked for its type; which are required depends on
/// the `type` ([`Fields::into_request`]).
#[derive(Deserialize)]
struct Fields {
    request_id: Option<RequestId>,
    cell_id: Option<CellId>,
    value: Option<String>,
    text: Option<String>,
}

impl Fields {
    /// The request of `kind`; `Err` names a required field that is missing.
    fn into_request(self, kind: RequestKind) -> Result<Request, &'static str> {
        let Fields {
            request_id,
            cell_id,
            value,
            text,
        } = self;
        let cell_id = || cell_id.clone().ok_or("cell_id");
        let body = match kind {
            RequestKind::Execute => ClientRequest::Execute {
                cell_id: cell_id()?,
            },
            RequestKind::Interrupt => ClientRequest::Interrupt,
            RequestKind::Restart => ClientRequest::Restart,
            RequestKind::Shutdown => ClientRequest::Shutdown,
            RequestKind::InputReply => ClientRequest::InputReply {
                cell_id: cell_id()?,
                value: value.ok_or("value")?,
            },
            RequestKind::Lock => ClientRequest::Lock {
                cell_id: cell_id()?,
            },
            RequestKind::Unlock => ClientRequest::Unlock {
                cell_id: cell_id()?,
            },
            RequestKind::Chat => ClientRequest::Chat {
                text: text.ok_or("text")?,
            },
        };
        Ok(Request { request_id, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(message: Value) -> RawText {
        RawText::decode(&message.to_string()).unwrap()
    }

    fn cell(id: &str) -> CellId {
        CellId::from(id)
    }

    #[test]
    fn decodes_each_request_kind() {
        let cases = [
            (
                json!({"type": "execute", "cell_id": "c1", "request_id": 1}),
                ClientRequest::Execute {
                    cell_id: cell("c1"),
                },
            ),
            (json!({"type": "interrupt"}), ClientRequest::Interrupt),
            (json!({"type": "restart"}), ClientRequest::Restart),
            (json!({"type": "shutdown"}), ClientRequest::Shutdown),
            (
                json!({"type": "input_reply", "cell_id": "c1", "value": "Ada"}),
                ClientRequest::InputReply {
                    cell_id: cell("c1"),
                    value: "Ada".into(),
                },
            ),
            (
                json!({"type": "lock", "cell_id": "c2"}),
                ClientRequest::Lock {
                    cell_id: cell("c2"),
                },
            ),
            (
                json!({"type": "unlock", "cell_id": "c2"}),
                ClientRequest::Unlock {
                    cell_id: cell("c2"),
                },
            ),
            (
                json!({"type": "chat", "text": "hello"}),
                ClientRequest::Chat {
                    text: "hello".into(),
                },
            ),
        ];
        for (message, body) in cases {
            let request_id = message["request_id"].as_u64();
            let expected = Request { request_id, body };
            // Serializing gives back the message the client sent.
            assert_eq!(serde_json::to_value(&expected).unwrap(), message);
            assert_eq!(decode(message), RawText::Request(expected));
        }
        assert_eq!(RawText::decode("save"), Ok(RawText::Save));
        assert_eq!(RawText::decode("hello"), Ok(RawText::Other));
    }

    #[test]
    fn a_malformed_request_is_refused_naming_the_field() {
        let RawText::Malformed(missing) = decode(json!({"type": "lock", "request_id": 4})) else {
            panic!("a lock without a cell is malformed");
        };
        assert_eq!(
            serde_json::to_value(missing.reply()).unwrap(),
            json!({"type": "lock", "responseTo": 4, "status": "refused",
                   "reason": "malformed lock request: missing field `cell_id`"})
        );
        let RawText::Malformed(wrong) =
            decode(json!({"type": "input_reply", "cell_id": "c", "value": 5}))
        else {
            panic!("a number is not an answer to a prompt");
        };
        assert!(wrong.reason.contains("`value`"), "{}", wrong.reason);
        assert_eq!(wrong.request_id, None);
        let RawText::Malformed(id) = decode(json!({"type": "interrupt", "request_id": "seven"}))
        else {
            panic!("a request id is a number");
        };
        assert!(id.reason.contains("`request_id`"), "{}", id.reason);
        let unknown = RawText::decode(r#"{"type": "fly"}"#).unwrap_err();
        assert!(unknown
            .to_string()
            .contains("field `type`: unknown request type \"fly\""));
        assert!(matches!(
            RawText::decode(r#"{"cell_id": "c"}"#),
            Err(InvalidRaw::Type(_))
        ));
        assert!(matches!(RawText::decode("{nope"), Err(InvalidRaw::Json(_))));
    }

    #[test]
    fn server_messages_keep_their_wire_form() {
        let chat = ChatMessage {
            id: 3,
            at: 1.5,
            username: "ada".into(),
            name: "Ada".into(),
            color: "red".into(),
            text: "hi".into(),
        };
        let granted = Reply {
            lease_ms: Some(60_000),
            ..Reply::ok(RequestKind::Lock, Some(9)).with_cell(&cell("c"))
        };
        let cases: Vec<(ServerMessage, Value)> = vec![
            (
                granted.into(),
                json!({"type": "lock", "responseTo": 9, "status": "ok", "cell_id": "c",
                       "lease_ms": 60_000}),
            ),
            (
                Reply::refused(RequestKind::Execute, None, "no").into(),
                json!({"type": "execute", "responseTo": null, "status": "refused",
                       "reason": "no"}),
            ),
            (
                SaveReply::Save {
                    response_to: 2,
                    status: Status::Success,
                }
                .into(),
                json!({"type": "save", "responseTo": 2, "status": "success"}),
            ),
            (
                ServerEvent::Permissions {
                    capabilities: vec!["view".into(), "watch".into()],
                }
                .into(),
                json!({"type": "permissions", "capabilities": ["view", "watch"]}),
            ),
            (
                ServerEvent::Refused {
                    action: RefusedAction::Update,
                    reason: "no".into(),
                    resync: true,
                }
                .into(),
                json!({"type": "refused", "action": "update", "reason": "no", "resync": true}),
            ),
            (
                ServerEvent::InputRequest {
                    cell_id: cell("c"),
                    run: "r".into(),
                    prompt: "name?".into(),
                    password: false,
                }
                .into(),
                json!({"type": "input_request", "cell_id": "c", "run": "r",
                       "prompt": "name?", "password": false}),
            ),
            (
                ServerEvent::InputClosed {
                    cell_id: cell("c"),
                    run: "r".into(),
                }
                .into(),
                json!({"type": "input_closed", "cell_id": "c", "run": "r"}),
            ),
            (
                ServerEvent::ChatMessage {
                    message: chat.clone(),
                }
                .into(),
                json!({"type": "chat_message", "message": chat}),
            ),
            (
                ServerEvent::ChatHistory {
                    messages: vec![chat.clone()],
                }
                .into(),
                json!({"type": "chat_history", "messages": [chat]}),
            ),
            (ServerEvent::Conflict.into(), json!({"type": "conflict"})),
        ];
        for (message, wire) in cases {
            assert_eq!(serde_json::to_value(&message).unwrap(), wire);
            // And a client reading it gets the same message back.
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&message.to_json()).unwrap(),
                message
            );
        }
    }
}

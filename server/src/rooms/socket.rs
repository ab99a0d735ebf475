//! The socket loop of one websocket connection: admission (see `admission`), then a reader
//! loop that decodes frames for the room (and takes the RAW requests that start or stop
//! kernels, which the server owns) and a writer task that drains the connection's queue.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use collab::protocol::{decode_frame, ClientRequest, CloseCode, Frame, RawText, Reply, Request};
use collab::{Capabilities, CloseReason, ConnectionId, DocumentKind, Outgoing, RoomInput};
use futures_util::{SinkExt, StreamExt};
use tracing::Instrument;

use super::admission::{admit, CLOSE_BAD_REQUEST};
use super::registry::{LoginGuard, PersonGuard, RoomKey, SocketGuard};
use crate::access::principal::Principal;
use crate::fs::space::Space;
use crate::AppState;

/// How long to wait for a client to answer our close frame. Clients such as y-websocket send
/// frames the moment the socket opens; dropping the socket with those unread resets the TCP
/// connection, and the client then sees 1006 instead of our close code.
pub const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long one write to a client may stay blocked (the client reads nothing) before the
/// connection is dropped. Generous: a slow link still makes progress within it.
const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn close_socket(mut socket: WebSocket, reason: CloseReason) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: reason.code,
            reason: truncate_reason(&reason.reason).into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Sends the close frame that tells the client why its connection ends.
async fn send_close(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    reason: CloseReason,
) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: reason.code,
            reason: truncate_reason(&reason.reason).into(),
        })))
        .await;
}

/// A close reason is at most 123 bytes.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Serves one websocket: admission, then a reader loop here and a writer task, until either
/// side closes.
pub async fn serve_socket(
    state: AppState,
    principal: Principal,
    space: Space,
    socket: WebSocket,
    room: String,
    session_id: Option<String>,
) {
    let mut joined = None;
    // A room that unloads between lookup and join is simply opened again.
    for _ in 0..3 {
        let admitted = match admit(&state, &principal, &space, &room, session_id.as_deref()).await {
            Ok(admitted) => admitted,
            Err(reason) => {
                tracing::info!(room = %room, code = reason.code, "refusing connection: {}", reason.reason);
                return close_socket(socket, reason).await;
            }
        };
        let access = &state.access;
        let member = match admitted.key.file() {
            Some(file) => principal.member(access, file, admitted.caps),
            // A presence room: the administrator, or a person in their space.
            None => match &principal {
                Principal::Owner => collab::Member::owner(access.identity.clone()),
                Principal::User(user) => collab::Member {
                    identity: user.identity.clone(),
                    caps: admitted.caps,
                    source: collab::GrantSource::Person(user.username.clone()),
                },
                // (Admission lets no guest into a presence room; were one let in, its rights
                // would come from its link.)
                Principal::Guest(guest) => collab::Member {
                    identity: guest.identity.clone(),
                    caps: admitted.caps,
                    source: collab::GrantSource::Link(guest.link_id.clone()),
                },
            },
        };
        if let Ok(j) = admitted.handle.join(member).await {
            joined = Some((admitted.handle, admitted.key, admitted.caps, j));
            break;
        }
    }
    let Some((handle, key, admitted_caps, joined)) = joined else {
        return close_socket(
            socket,
            CloseReason::new(CloseCode::TryAgain, "room unavailable, try again"),
        )
        .await;
    };
    let _counted = SocketGuard::new(&state.rooms);
    let file = key.file();
    let _person = match (&principal, file) {
        (Principal::User(user), Some(file)) => {
            Some(PersonGuard::new(&state.rooms, file, &user.username))
        }
        _ => None,
    };
    let _login = match &principal {
        Principal::User(user) => Some(LoginGuard::new(
            &state.rooms,
            &user.login,
            &handle,
            joined.conn,
        )),
        _ => None,
    };
    // Rights may have changed while the room loaded and the connection joined (a change from
    // now on reaches it through the registrations above): work them out once more.
    if let (Some(file), false) = (file, matches!(principal, Principal::Owner)) {
        let now = principal.current_caps_for(&state.access, file);
        if now != admitted_caps {
            let source = principal.member(&state.access, file, now).source;
            let caps = now.contains(Capabilities::WATCH).then_some(now);
            let _ = handle.send(RoomInput::Permissions { source, caps }).await;
        }
    }
    let conn = joined.conn;
    let span = tracing::info_span!("connection", %conn, room = %key);
    // (An entered span must not be held across awaits: other tasks would log inside it.)
    async move {
        tracing::debug!("joined");
        let (mut sink, mut stream) = socket.split();
        let mut outgoing = joined.outgoing;
        let mut kicked = joined.kicked;
        let (writer_done, mut writer_ended) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(async move {
            // The room drops the kick sender when it lets a connection go normally.
            let mut kick_pending = true;
            loop {
                let next = tokio::select! {
                    biased;
                    reason = &mut kicked, if kick_pending => match reason {
                        Ok(reason) => Outgoing::Close(reason),
                        Err(_) => {
                            kick_pending = false;
                            continue;
                        }
                    },
                    out = outgoing.recv() => match out {
                        Some(out) => out,
                        None => break,
                    },
                };
                let bytes = match next {
                    Outgoing::Frame(bytes) => bytes,
                    Outgoing::Close(reason) => {
                        let _ = tokio::time::timeout(
                            CLOSE_HANDSHAKE_TIMEOUT,
                            send_close(&mut sink, reason),
                        )
                        .await;
                        break;
                    }
                };
                // Everything already queued goes out in one write: an edit and the cursor move
                // that follows it, or a burst, cost one syscall, not one each.
                let write = async {
                    let mut close = None;
                    let mut ok = sink.feed(Message::Binary(bytes)).await.is_ok();
                    while ok {
                        match outgoing.try_recv() {
                            Ok(Outgoing::Frame(bytes)) => {
                                ok = sink.feed(Message::Binary(bytes)).await.is_ok();
                            }
                            Ok(Outgoing::Close(reason)) => {
                                close = Some(reason);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    (ok && sink.flush().await.is_ok(), close)
                };
                // A client that stopped reading blocks the write: the room's kick (it drops a
                // connection whose queue is full, or whose access was revoked) or a long stall
                // ends the connection anyway, instead of holding its socket and queue forever.
                let written = tokio::select! {
                    biased;
                    reason = &mut kicked, if kick_pending => Err(reason.ok()),
                    written = tokio::time::timeout(WRITE_STALL_TIMEOUT, write) => {
                        written.map_err(|_| {
                            tracing::info!("the client has not read for {WRITE_STALL_TIMEOUT:?}; closing");
                            None
                        })
                    }
                };
                match written {
                    Ok((true, None)) => {}
                    Ok((true, Some(reason))) => {
                        let _ = tokio::time::timeout(
                            CLOSE_HANDSHAKE_TIMEOUT,
                            send_close(&mut sink, reason),
                        )
                        .await;
                        break;
                    }
                    Ok((false, _)) => break,
                    Err(reason) => {
                        // Mid-write: the close frame can only follow what was half sent, and
                        // the client is not reading anyway. Drop the connection.
                        if let Some(reason) = reason {
                            tracing::info!(code = reason.code, "dropping a connection that does not read: {}", reason.reason);
                        }
                        drop(writer_done);
                        return;
                    }
                }
            }
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
            drop(writer_done);
        });
        let limit = state.config.max_frame_bytes;
        let mut client_gone = false;
        loop {
            // The writer ends when the connection is over on our side (a close sent, or a
            // client that stopped reading dropped): stop reading then too.
            let message = tokio::select! {
                message = stream.next() => message,
                _ = &mut writer_ended => break,
            };
            let Some(message) = message else {
                break;
            };
            let bytes = match message {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Close(_)) | Err(_) => {
                    client_gone = true;
                    break;
                }
                Ok(Message::Text(_)) => {
                    let reason = CloseReason::new(
                        CLOSE_BAD_REQUEST,
                        "text frames are not part of the protocol",
                    );
                    let _ = handle.send(RoomInput::Kick { conn, reason }).await;
                    break;
                }
                Ok(_) => continue,
            };
            match decode_frame(&bytes, limit) {
                Ok(Frame::Raw { text, tail }) => {
                    let input = match kernel_request(&text) {
                        Some(request) => {
                            take_kernel_request(&state, &principal, &key, conn, request).await
                        }
                        None => RoomInput::Frame {
                            conn,
                            frame: Frame::Raw { text, tail },
                        },
                    };
                    if handle.send(input).await.is_err() {
                        break;
                    }
                }
                Ok(frame) => {
                    if handle.send(RoomInput::Frame { conn, frame }).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!("closing connection: {e}");
                    let reason = CloseReason::new(e.close_code(), e.to_string());
                    let _ = handle.send(RoomInput::Kick { conn, reason }).await;
                    break;
                }
            }
            if writer.is_finished() {
                break;
            }
        }
        if !client_gone {
            // We are closing: read (and drop) until the client answers our close frame, so the
            // connection ends cleanly and the client sees our close code.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = handle.send(RoomInput::Leave { conn }).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
        tracing::debug!("left");
    }
    .instrument(span)
    .await;
}

/// Our client's RAW JSON requests that start or stop kernels (`execute`, `shutdown`): the server
/// owns kernels, so these are taken here, not in the room. Anything else (a malformed request
/// included) goes on to the room, which answers it.
fn kernel_request(text: &str) -> Option<Request> {
    match RawText::decode(text) {
        Ok(RawText::Request(
            request @ Request {
                body: ClientRequest::Execute { .. } | ClientRequest::Shutdown,
                ..
            },
        )) => Some(request),
        _ => None,
    }
}

/// Answers a kernel request: for `execute`, a run on the notebook's kernel (starting one if the
/// notebook has none); for `shutdown`, the kernel stopped; or a refusal for the requester. The
/// right to run code is checked before any kernel is started or stopped; the room checks an
/// execute again with the connection's rights as they are when it reaches it (grants change
/// live).
async fn take_kernel_request(
    state: &AppState,
    principal: &Principal,
    room: &RoomKey,
    conn: ConnectionId,
    request: Request,
) -> RoomInput {
    let Request { request_id, body } = request;
    let kind = body.kind();
    let refuse = |reason: &str| RoomInput::Reply {
        conn,
        reply: Reply::refused(kind, request_id, reason),
    };
    let file = match room {
        RoomKey::Document {
            kind: DocumentKind::Notebook,
            file,
        } => *file,
        _ => return refuse("only notebooks run code"),
    };
    let (needed, refusal) = body.needs();
    if !principal
        .current_caps_for(&state.access, file)
        .contains(Capabilities::of(needed))
    {
        return refuse(refusal);
    }
    let ClientRequest::Execute { cell_id } = body else {
        return if state.kernels.shutdown_for_file(file).await {
            RoomInput::Reply {
                conn,
                reply: Reply::ok(kind, request_id),
            }
        } else {
            refuse("no kernel is running for this notebook")
        };
    };
    match state.kernels.ensure_for_file(state, file).await {
        Ok(kernel) => RoomInput::Execute {
            cell_id,
            requester: collab::execution::Requester {
                identity: principal.identity(&state.access),
                conn: Some(conn),
            },
            kernel,
            request_id,
            done: None,
        },
        Err(e) => {
            tracing::info!("cannot start a kernel for {file}: {e:?}");
            refuse(&e.message)
        }
    }
}

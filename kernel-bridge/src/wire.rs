//! The ZeroMQ side, behind a trait of ours.
//!
//! [`ZmqWire`] connects the five sockets with the `jupyter-zmq-client` crate: shell, control and
//! stdin DEALERs (shell and stdin share one identity, or `input_request` never arrives), the
//! iopub SUB and the heartbeat REQ. One task per receiving socket verifies each message's
//! signature and forwards it, parsed only as far as routing needs, into an unbounded channel:
//! the kernel drops iopub messages when its send queue fills, so nothing here ever waits on the
//! consumer.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jupyter_protocol::{ConnectionInfo, JupyterMessage};
use jupyter_zmq_client::{Connection, RawMessage};
use serde_json::Value;
use tokio::sync::mpsc;
use zeromq::SocketRecv;

use crate::KernelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Shell,
    Control,
    Stdin,
    IoPub,
}

/// A message from the kernel, as far as routing it needs.
#[derive(Clone, Debug)]
pub struct WireMessage {
    pub channel: Channel,
    pub msg_type: String,
    /// The msg_id of the request this answers (`parent_header.msg_id`).
    pub parent_id: Option<String>,
    pub content: Value,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a kernel's actor needs from the transport.
pub trait KernelWire: Send {
    fn send(
        &mut self,
        channel: Channel,
        message: JupyterMessage,
    ) -> BoxFuture<'_, Result<(), KernelError>>;
    /// One ping; fails when the kernel does not answer in time.
    fn heartbeat(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), KernelError>>;
}

type Dealer = Connection<zeromq::DealerSendHalf>;

pub struct ZmqWire {
    shell: Dealer,
    control: Dealer,
    stdin: Dealer,
    heartbeat: Option<jupyter_zmq_client::ClientHeartbeatConnection>,
    info: ConnectionInfo,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ZmqWire {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Retries a connect until the kernel has bound its sockets (or `deadline` passes).
async fn retry<T, F, Fut>(deadline: tokio::time::Instant, mut connect: F) -> Result<T, KernelError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = jupyter_zmq_client::Result<T>>,
{
    loop {
        match connect().await {
            Ok(socket) => return Ok(socket),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(KernelError::Connect(e.to_string()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

fn forward<R: SocketRecv + Send + 'static>(
    mut conn: Connection<R>,
    channel: Channel,
    out: mpsc::UnboundedSender<WireMessage>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let multipart = match conn.socket.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(?channel, "kernel socket closed: {e}");
                    return;
                }
            };
            let raw = match RawMessage::from_multipart(multipart, &conn.mac) {
                Ok(raw) => raw,
                Err(e) => {
                    tracing::warn!(?channel, "dropping a kernel message: {e}");
                    continue;
                }
            };
            let json = |i: usize| serde_json::from_slice::<Value>(&raw.jparts[i]).ok();
            let header = json(0).unwrap_or(Value::Null);
            let Some(msg_type) = header.get("msg_type").and_then(Value::as_str) else {
                tracing::warn!(?channel, "dropping a kernel message without a msg_type");
                continue;
            };
            let parent_id =
                json(1).and_then(|p| p.get("msg_id").and_then(Value::as_str).map(String::from));
            let message = WireMessage {
                channel,
                msg_type: msg_type.to_string(),
                parent_id,
                content: json(3).unwrap_or(Value::Null),
            };
            if out.send(message).is_err() {
                return;
            }
        }
    })
}

impl ZmqWire {
    /// Connects every socket, retrying until the kernel listens or `timeout` passes. Messages
    /// arrive on the returned receiver.
    pub async fn connect(
        info: &ConnectionInfo,
        timeout: Duration,
    ) -> Result<(ZmqWire, mpsc::UnboundedReceiver<WireMessage>), KernelError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let session = uuid::Uuid::new_v4().to_string();
        let identity = jupyter_zmq_client::peer_identity_for_session(&session)
            .map_err(|e| KernelError::Connect(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let iopub = retry(deadline, || {
            jupyter_zmq_client::create_client_iopub_connection(info, "", &session)
        })
        .await?;
        let shell = retry(deadline, || {
            jupyter_zmq_client::create_client_shell_connection_with_identity(
                info,
                &session,
                identity.clone(),
            )
        })
        .await?;
        let stdin = retry(deadline, || {
            jupyter_zmq_client::create_client_stdin_connection_with_identity(
                info,
                &session,
                identity.clone(),
            )
        })
        .await?;
        let control = retry(deadline, || {
            jupyter_zmq_client::create_client_control_connection(info, &session)
        })
        .await?;
        let heartbeat = retry(deadline, || {
            jupyter_zmq_client::create_client_heartbeat_connection(info)
        })
        .await?;
        let mut readers = vec![forward(iopub, Channel::IoPub, tx.clone())];
        let mut halves = |conn: Connection<zeromq::DealerSocket>, channel: Channel| {
            let (send, recv) = conn.split();
            readers.push(forward(recv, channel, tx.clone()));
            send
        };
        let shell = halves(shell, Channel::Shell);
        let stdin = halves(stdin, Channel::Stdin);
        let control = halves(control, Channel::Control);
        Ok((
            ZmqWire {
                shell,
                control,
                stdin,
                heartbeat: Some(heartbeat),
                info: info.clone(),
                readers,
            },
            rx,
        ))
    }
}

impl KernelWire for ZmqWire {
    fn send(
        &mut self,
        channel: Channel,
        message: JupyterMessage,
    ) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            let socket = match channel {
                Channel::Shell => &mut self.shell,
                Channel::Control => &mut self.control,
                Channel::Stdin => &mut self.stdin,
                Channel::IoPub => {
                    return Err(KernelError::Protocol("iopub is receive-only".into()))
                }
            };
            socket
                .send(message)
                .await
                .map_err(|e| KernelError::Protocol(format!("cannot send to the kernel: {e}")))
        })
    }

    fn heartbeat(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), KernelError>> {
        Box::pin(async move {
            if self.heartbeat.is_none() {
                // A REQ socket that missed a reply is stuck: start a fresh one.
                self.heartbeat = Some(
                    jupyter_zmq_client::create_client_heartbeat_connection(&self.info)
                        .await
                        .map_err(|e| KernelError::Connect(e.to_string()))?,
                );
            }
            let hb = self.heartbeat.as_mut().expect("set above");
            match tokio::time::timeout(timeout, hb.single_heartbeat()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    self.heartbeat = None;
                    Err(KernelError::Protocol(format!("heartbeat failed: {e}")))
                }
                Err(_) => {
                    self.heartbeat = None;
                    Err(KernelError::Protocol("no heartbeat".into()))
                }
            }
        })
    }
}

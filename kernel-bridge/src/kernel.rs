//! One kernel: a task that owns the process, the wire, the execution queue and the routing of
//! every message by its parent msg_id to the run that caused it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use collab::execution::{
    EventSink, ExecuteJob, Kernel, KernelEvent, KernelId, KernelStatus, RunEvent, RunId, RunOutcome,
};
use jupyter_protocol::{
    ExecuteRequest, InputReply, InterruptRequest, JupyterMessage, KernelInfoRequest, ReplyStatus,
    ShutdownRequest,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::launch::{self, Account, LaunchOptions, Launched, TransportKind};
use crate::wire::{Channel, KernelWire, WireMessage, ZmqWire};
use crate::{KernelError, KernelSpec};

/// Everything needed to start (and restart) a kernel.
#[derive(Clone)]
pub struct KernelOptions {
    pub spec: KernelSpec,
    pub cwd: PathBuf,
    pub account: Option<Account>,
    pub runtime_dir: PathBuf,
    pub transport: TransportKind,
    pub env: Vec<(String, String)>,
    /// How long a starting kernel has to answer `kernel_info_request`.
    pub startup_timeout: Duration,
}

/// What the REST API shows of a kernel.
#[derive(Clone, Debug)]
pub struct KernelState {
    pub status: KernelStatus,
    pub last_activity: SystemTime,
    pub pid: i32,
}

enum Command {
    Execute(ExecuteJob),
    InputReply { run: RunId, value: String },
    Cancel { run: RunId, reason: String },
    Interrupt,
    Restart(Option<oneshot::Sender<Result<(), KernelError>>>),
    Shutdown(oneshot::Sender<()>),
    Subscribe(EventSink),
}

/// The handle rooms and the REST API hold; cheap to share.
pub struct KernelHandle {
    id: KernelId,
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    state: Arc<Mutex<KernelState>>,
}

impl KernelHandle {
    /// Starts the kernel process and waits until it answers; then its task runs on its own.
    pub async fn start(options: KernelOptions) -> Result<Arc<KernelHandle>, KernelError> {
        let id = KernelId::new_random();
        let (launched, wire, messages) = boot(&options).await?;
        let state = Arc::new(Mutex::new(KernelState {
            status: KernelStatus::Idle,
            last_activity: SystemTime::now(),
            pid: launched.pid,
        }));
        let (commands, inbox) = mpsc::unbounded_channel();
        let handle = Arc::new(KernelHandle {
            id: id.clone(),
            name: options.spec.name.clone(),
            commands,
            state: state.clone(),
        });
        let actor = Actor {
            id,
            options,
            launched: Some(launched),
            wire: Some(wire),
            messages: Some(messages),
            inbox,
            queue: VecDeque::new(),
            current: None,
            subscribers: Vec::new(),
            state,
            heartbeat_misses: 0,
        };
        tokio::spawn(actor.run());
        Ok(handle)
    }

    pub fn state(&self) -> KernelState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Restarts and waits until the new process answers.
    pub async fn restart_and_wait(&self) -> Result<(), KernelError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Restart(Some(reply)))
            .map_err(|_| KernelError::ShutDown)?;
        rx.await.map_err(|_| KernelError::ShutDown)?
    }

    /// Stops the process (politely, then by signal) and ends the kernel's task.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Kernel for KernelHandle {
    fn id(&self) -> &KernelId {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn status(&self) -> KernelStatus {
        self.state().status
    }
    fn execute(&self, job: ExecuteJob) {
        if let Err(mpsc::error::SendError(Command::Execute(job))) =
            self.commands.send(Command::Execute(job))
        {
            abort_later(job, "the kernel was shut down");
        }
    }
    fn input_reply(&self, run: &RunId, value: String) {
        let _ = self.commands.send(Command::InputReply {
            run: run.clone(),
            value,
        });
    }
    fn cancel(&self, run: &RunId, reason: &str) {
        let _ = self.commands.send(Command::Cancel {
            run: run.clone(),
            reason: reason.to_string(),
        });
    }
    fn interrupt(&self) {
        let _ = self.commands.send(Command::Interrupt);
    }
    fn restart(&self) {
        let _ = self.commands.send(Command::Restart(None));
    }
    fn subscribe(&self, events: EventSink) {
        let _ = self.commands.send(Command::Subscribe(events));
    }
}

fn abort_later(job: ExecuteJob, reason: &str) {
    let reason = reason.to_string();
    tokio::spawn(async move {
        job.events
            .send(KernelEvent::Run {
                run: job.run,
                event: RunEvent::Finished {
                    outcome: RunOutcome::Aborted(reason),
                    execution_count: None,
                },
            })
            .await;
    });
}

/// Launches the process, connects, and waits for the kernel_info handshake.
async fn boot(
    options: &KernelOptions,
) -> Result<(Launched, ZmqWire, mpsc::UnboundedReceiver<WireMessage>), KernelError> {
    let mut launched = launch::launch(LaunchOptions {
        spec: &options.spec,
        cwd: &options.cwd,
        account: options.account.as_ref(),
        runtime_dir: &options.runtime_dir,
        transport: options.transport,
        env: options.env.clone(),
    })
    .await?;
    let ready = async {
        let (mut wire, mut messages) =
            ZmqWire::connect(&launched.info, options.startup_timeout).await?;
        handshake(&mut wire, &mut messages, options.startup_timeout).await?;
        Ok::<_, KernelError>((wire, messages))
    };
    let outcome = tokio::select! {
        ready = ready => ready,
        exit = launched.child.wait() => Err(KernelError::Exited(match exit {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        })),
    };
    match outcome {
        Ok((wire, messages)) => Ok((launched, wire, messages)),
        Err(e) => {
            stop_process(&mut launched, None).await;
            Err(e)
        }
    }
}

/// Sends `kernel_info_request` until both its reply (shell) and its status messages (iopub)
/// arrive: then requests are answered and outputs are heard.
async fn handshake(
    wire: &mut ZmqWire,
    messages: &mut mpsc::UnboundedReceiver<WireMessage>,
    timeout: Duration,
) -> Result<(), KernelError> {
    let deadline = Instant::now() + timeout;
    let mut asked: Vec<String> = Vec::new();
    let (mut replied, mut heard) = (false, false);
    while Instant::now() < deadline {
        let request = JupyterMessage::new(KernelInfoRequest {}, None);
        asked.push(request.header.msg_id.clone());
        wire.send(Channel::Shell, request).await?;
        let retry_at = (Instant::now() + Duration::from_millis(500)).min(deadline);
        while let Ok(Some(message)) = tokio::time::timeout_at(retry_at, messages.recv()).await {
            let ours = message
                .parent_id
                .as_ref()
                .is_some_and(|p| asked.contains(p));
            match message.channel {
                Channel::Shell if ours && message.msg_type == "kernel_info_reply" => replied = true,
                Channel::IoPub if ours => heard = true,
                _ => {}
            }
            if replied && heard {
                return Ok(());
            }
        }
    }
    Err(KernelError::Protocol(format!(
        "no kernel_info_reply{} within {timeout:?}",
        if replied { " on iopub" } else { "" }
    )))
}

/// Stops a kernel process: `shutdown_request` if we can still talk to it, then SIGTERM, then
/// SIGKILL, each to its whole process group.
async fn stop_process(launched: &mut Launched, wire: Option<&mut ZmqWire>) {
    use nix::sys::signal::{killpg, Signal};
    let pgid = nix::unistd::Pid::from_raw(launched.pid);
    if let Some(wire) = wire {
        let request = JupyterMessage::new(ShutdownRequest { restart: false }, None);
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            wire.send(Channel::Control, request),
        )
        .await;
        if tokio::time::timeout(Duration::from_secs(2), launched.child.wait())
            .await
            .is_ok()
        {
            let _ = killpg(pgid, Signal::SIGKILL);
            return;
        }
    }
    for (signal, grace) in [(Signal::SIGTERM, 2), (Signal::SIGKILL, 5)] {
        let _ = killpg(pgid, signal);
        if tokio::time::timeout(Duration::from_secs(grace), launched.child.wait())
            .await
            .is_ok()
        {
            break;
        }
    }
    // Whatever the kernel started in its group goes with it.
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// The run being executed now.
struct Current {
    job: ExecuteJob,
    started: bool,
    idle: bool,
    reply: Option<(RunOutcome, Option<i64>)>,
    /// When the reply came without the final idle status (a dropped iopub message): finish
    /// anyway after a grace period.
    finish_by: Option<Instant>,
}

struct Actor {
    id: KernelId,
    options: KernelOptions,
    launched: Option<Launched>,
    wire: Option<ZmqWire>,
    messages: Option<mpsc::UnboundedReceiver<WireMessage>>,
    inbox: mpsc::UnboundedReceiver<Command>,
    queue: VecDeque<ExecuteJob>,
    current: Option<Current>,
    subscribers: Vec<EventSink>,
    state: Arc<Mutex<KernelState>>,
    heartbeat_misses: u32,
}

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const HEARTBEAT_MISSES: u32 = 3;

impl Actor {
    async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.send_next().await;
            let finish_by = self.current.as_ref().and_then(|c| c.finish_by);
            tokio::select! {
                command = self.inbox.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.stop("the kernel was shut down").await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.stop("the kernel was shut down").await;
                        return;
                    }
                },
                Some(message) = recv(&mut self.messages) => self.on_message(message).await,
                exit = wait_child(&mut self.launched) => {
                    tracing::warn!(kernel = %self.id, "kernel process exited: {exit}");
                    self.died("the kernel died").await;
                }
                _ = heartbeat.tick(), if self.wire.is_some() => self.check_heartbeat().await,
                _ = sleep_until(finish_by), if finish_by.is_some() => self.finish_current().await,
            }
        }
    }

    fn set_status(&self, status: KernelStatus) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.last_activity = SystemTime::now();
        let changed = state.status != status;
        state.status = status;
        changed
    }

    async fn broadcast_status(&mut self, status: KernelStatus) {
        if !self.set_status(status) {
            return;
        }
        self.subscribers.retain(|s| !s.is_closed());
        for sink in &self.subscribers {
            sink.send(KernelEvent::Status {
                kernel: self.id.clone(),
                status,
            })
            .await;
        }
    }

    async fn emit(&self, job: &ExecuteJob, event: RunEvent) {
        job.events
            .send(KernelEvent::Run {
                run: job.run.clone(),
                event,
            })
            .await;
    }

    async fn abort(&self, job: ExecuteJob, reason: &str) {
        self.emit(
            &job,
            RunEvent::Finished {
                outcome: RunOutcome::Aborted(reason.to_string()),
                execution_count: None,
            },
        )
        .await;
    }

    /// Releases the running and queued runs.
    async fn abort_all(&mut self, reason: &str) {
        if let Some(current) = self.current.take() {
            self.abort(current.job, reason).await;
        }
        self.abort_queue(reason).await;
    }

    async fn abort_queue(&mut self, reason: &str) {
        for job in std::mem::take(&mut self.queue) {
            self.abort(job, reason).await;
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Execute(job) => {
                if self.wire.is_none() {
                    self.abort(job, "the kernel is dead: restart it").await;
                } else {
                    self.queue.push_back(job);
                }
            }
            Command::InputReply { run, value } => {
                let current = self.current.as_ref().map(|c| c.job.run.as_str());
                if let (Some(wire), true) = (self.wire.as_mut(), current == Some(run.as_str())) {
                    let reply = JupyterMessage::new(
                        InputReply {
                            value,
                            status: ReplyStatus::Ok,
                            error: None,
                        },
                        None,
                    );
                    if let Err(e) = wire.send(Channel::Stdin, reply).await {
                        tracing::warn!(kernel = %self.id, "{e}");
                    }
                }
            }
            Command::Cancel { run, reason } => {
                if let Some(at) = self.queue.iter().position(|job| job.run == run) {
                    if let Some(job) = self.queue.remove(at) {
                        self.abort(job, &reason).await;
                    }
                }
            }
            Command::Interrupt => self.interrupt().await,
            Command::Restart(reply) => {
                let result = self.restart().await;
                // A failure is logged here only when nobody takes the answer (a room's restart,
                // a caller gone): whoever takes it reports it, once.
                let untaken = match reply {
                    Some(reply) => reply.send(result).err(),
                    None => Some(result),
                };
                if let Some(Err(e)) = untaken {
                    tracing::warn!(kernel = %self.id, "restart failed: {e}");
                }
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
            Command::Subscribe(sink) => {
                if !self.subscribers.iter().any(|s| s.same_room(&sink)) {
                    self.subscribers.push(sink);
                }
            }
        }
    }

    async fn interrupt(&mut self) {
        self.abort_queue("interrupted before it ran").await;
        let Some(launched) = &self.launched else {
            return;
        };
        if self.options.spec.interrupt_mode == "message" {
            if let Some(wire) = self.wire.as_mut() {
                let request = JupyterMessage::new(InterruptRequest {}, None);
                if let Err(e) = wire.send(Channel::Control, request).await {
                    tracing::warn!(kernel = %self.id, "{e}");
                }
            }
        } else {
            let pgid = nix::unistd::Pid::from_raw(launched.pid);
            if let Err(e) = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT) {
                tracing::warn!(kernel = %self.id, "cannot interrupt: {e}");
            }
        }
    }

    async fn restart(&mut self) -> Result<(), KernelError> {
        self.abort_all("the kernel restarted").await;
        self.broadcast_status(KernelStatus::Restarting).await;
        if let Some(mut launched) = self.launched.take() {
            stop_process(&mut launched, self.wire.as_mut()).await;
        }
        self.wire = None;
        self.messages = None;
        match boot(&self.options).await {
            Ok((launched, wire, messages)) => {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).pid = launched.pid;
                self.launched = Some(launched);
                self.wire = Some(wire);
                self.messages = Some(messages);
                self.heartbeat_misses = 0;
                self.broadcast_status(KernelStatus::Idle).await;
                Ok(())
            }
            Err(e) => {
                self.broadcast_status(KernelStatus::Dead).await;
                Err(e)
            }
        }
    }

    async fn stop(&mut self, reason: &str) {
        self.abort_all(reason).await;
        if let Some(mut launched) = self.launched.take() {
            stop_process(&mut launched, self.wire.as_mut()).await;
        }
        self.wire = None;
        self.messages = None;
        self.set_status(KernelStatus::Dead);
        for sink in &self.subscribers {
            sink.send(KernelEvent::Gone {
                kernel: self.id.clone(),
            })
            .await;
        }
    }

    async fn died(&mut self, reason: &str) {
        if let Some(mut launched) = self.launched.take() {
            stop_process(&mut launched, None).await;
        }
        self.wire = None;
        self.messages = None;
        self.abort_all(reason).await;
        self.broadcast_status(KernelStatus::Dead).await;
    }

    async fn check_heartbeat(&mut self) {
        let Some(wire) = self.wire.as_mut() else {
            return;
        };
        match wire.heartbeat(HEARTBEAT_EVERY).await {
            Ok(()) => self.heartbeat_misses = 0,
            Err(e) => {
                self.heartbeat_misses += 1;
                tracing::warn!(kernel = %self.id, misses = self.heartbeat_misses, "{e}");
                if self.heartbeat_misses >= HEARTBEAT_MISSES {
                    self.died("the kernel stopped answering").await;
                }
            }
        }
    }

    /// Sends the next queued run when the kernel is free.
    async fn send_next(&mut self) {
        while self.current.is_none() {
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            if job.events.is_closed() {
                continue;
            }
            let Some(wire) = self.wire.as_mut() else {
                self.abort(job, "the kernel is dead: restart it").await;
                continue;
            };
            let mut request = JupyterMessage::new(
                ExecuteRequest {
                    code: job.code.clone(),
                    silent: false,
                    store_history: true,
                    user_expressions: None,
                    allow_stdin: job.allow_stdin,
                    stop_on_error: true,
                },
                None,
            );
            request.header.msg_id = job.run.to_string();
            request.header.username = "quire".into();
            match wire.send(Channel::Shell, request).await {
                Ok(()) => {
                    self.current = Some(Current {
                        job,
                        started: false,
                        idle: false,
                        reply: None,
                        finish_by: None,
                    })
                }
                Err(e) => {
                    tracing::warn!(kernel = %self.id, "{e}");
                    self.abort(job, "the kernel could not be reached").await;
                }
            }
        }
    }

    async fn on_message(&mut self, message: WireMessage) {
        let WireMessage {
            channel,
            msg_type,
            parent_id,
            content,
        } = message;
        if channel == Channel::IoPub && msg_type == "status" {
            match content.get("execution_state").and_then(Value::as_str) {
                Some("busy") => self.broadcast_status(KernelStatus::Busy).await,
                Some("idle") => self.broadcast_status(KernelStatus::Idle).await,
                _ => {}
            }
        }
        if channel == Channel::IoPub && msg_type == "update_display_data" {
            // A display may be updated from any run, even one long finished.
            if let Some((display_id, data, metadata)) = display_update(&content) {
                self.subscribers.retain(|s| !s.is_closed());
                let mut sinks = self.subscribers.clone();
                if let Some(current) = &self.current {
                    if !sinks.iter().any(|s| s.same_room(&current.job.events)) {
                        sinks.push(current.job.events.clone());
                    }
                }
                for sink in sinks {
                    sink.send(KernelEvent::Display {
                        kernel: self.id.clone(),
                        display_id: display_id.clone(),
                        data: data.clone(),
                        metadata: metadata.clone(),
                    })
                    .await;
                }
            }
            return;
        }
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if parent_id.as_deref() != Some(current.job.run.as_str()) {
            return;
        }
        let event = match (channel, msg_type.as_str()) {
            (Channel::IoPub, "status") => {
                match content.get("execution_state").and_then(Value::as_str) {
                    Some("busy") if !current.started => {
                        current.started = true;
                        Some(RunEvent::Started)
                    }
                    Some("idle") => {
                        current.idle = true;
                        None
                    }
                    _ => None,
                }
            }
            (Channel::Shell, "execute_reply") => {
                let count = content.get("execution_count").and_then(Value::as_i64);
                let outcome = match content.get("status").and_then(Value::as_str) {
                    Some("ok") => RunOutcome::Ok,
                    Some("aborted") => RunOutcome::Aborted("the kernel aborted it".into()),
                    _ => RunOutcome::Error,
                };
                current.reply = Some((outcome, count));
                if !current.idle {
                    current.finish_by = Some(Instant::now() + Duration::from_secs(5));
                }
                None
            }
            (Channel::Stdin, "input_request") => Some(RunEvent::InputRequest {
                prompt: text(&content, "prompt"),
                password: content
                    .get("password")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }),
            (Channel::IoPub, _) => iopub_event(&msg_type, content),
            _ => None,
        };
        if let Some(event) = event {
            let job_events = current.job.events.clone();
            let run = current.job.run.clone();
            job_events.send(KernelEvent::Run { run, event }).await;
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.idle && c.reply.is_some())
        {
            self.finish_current().await;
        }
    }

    async fn finish_current(&mut self) {
        let Some(current) = self.current.take() else {
            return;
        };
        let (outcome, count) = current
            .reply
            .unwrap_or((RunOutcome::Aborted("no reply from the kernel".into()), None));
        let failed = outcome == RunOutcome::Error;
        self.emit(
            &current.job,
            RunEvent::Finished {
                outcome,
                execution_count: count,
            },
        )
        .await;
        if failed {
            // As Jupyter does with stop_on_error: what was queued behind an error does not run.
            self.abort_queue("a cell before it raised an error").await;
        }
    }
}

fn text(content: &Value, key: &str) -> String {
    content
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn display_update(content: &Value) -> Option<(String, Value, Value)> {
    let display_id = content
        .get("transient")?
        .get("display_id")?
        .as_str()?
        .to_string();
    let data = content.get("data").cloned().unwrap_or_else(|| json!({}));
    let metadata = content
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Some((display_id, data, metadata))
}

/// An iopub message of a run, as the event the room writes into the cell.
pub fn iopub_event(msg_type: &str, content: Value) -> Option<RunEvent> {
    let display_id = content
        .get("transient")
        .and_then(|t| t.get("display_id"))
        .and_then(Value::as_str)
        .map(String::from);
    let data = || content.get("data").cloned().unwrap_or_else(|| json!({}));
    let metadata = || {
        content
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({}))
    };
    Some(match msg_type {
        "execute_input" => RunEvent::ExecutionCount(content.get("execution_count")?.as_i64()?),
        "stream" => RunEvent::Stream {
            name: content
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("stdout")
                .to_string(),
            text: text(&content, "text"),
        },
        "display_data" => RunEvent::Output {
            output: json!({"output_type": "display_data", "data": data(), "metadata": metadata()}),
            display_id,
        },
        "execute_result" => RunEvent::Output {
            output: json!({
                "output_type": "execute_result",
                "data": data(),
                "metadata": metadata(),
                "execution_count": content.get("execution_count").cloned().unwrap_or(Value::Null),
            }),
            display_id,
        },
        "error" => RunEvent::Output {
            output: json!({
                "output_type": "error",
                "ename": text(&content, "ename"),
                "evalue": text(&content, "evalue"),
                "traceback": content.get("traceback").cloned().unwrap_or_else(|| json!([])),
            }),
            display_id: None,
        },
        "clear_output" => RunEvent::ClearOutput {
            wait: content
                .get("wait")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        _ => return None,
    })
}

async fn recv(messages: &mut Option<mpsc::UnboundedReceiver<WireMessage>>) -> Option<WireMessage> {
    match messages {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn wait_child(launched: &mut Option<Launched>) -> String {
    match launched {
        Some(l) => match l.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! Jupyter Server's kernel and session APIs, and execution requests.
//!
//! - `GET /api/kernelspecs`, `GET /api/kernelspecs/{name}`
//! - `GET/POST /api/kernels`, `GET/DELETE /api/kernels/{id}`, `POST .../interrupt`, `.../restart`
//! - `POST /api/kernels/{id}/execute` with `{cell_id, document_id}` (JupyterLab's
//!   serverSideExecution): runs the cell as the document holds it and answers when it finished.
//! - `GET/POST /api/sessions`, `GET/PATCH/DELETE /api/sessions/{id}`: a session binds a notebook
//!   (by file id, so it follows renames) to a kernel.
//!
//! Kernels run with the notebook's directory as working directory: as the owner of the space the
//! notebook is in (multi-user mode: the person, or the project), else as the configured account
//! when Quire runs as root. A kernel belongs to the space it was started in: people see and
//! drive only their space's kernels and sessions (the administrator sees all). A kernel's status
//! and runs show in every room it is attached to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use collab::execution::{Kernel, Requester};
use collab::{FileId, RoomInput};
use dashmap::DashMap;
use kernel_bridge::{kernelspec, Account, KernelHandle, KernelOptions, KernelSpec};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::api::sharing::Principal;
use crate::fs::space::Space;
use crate::AppState;

/// A notebook bound to a kernel.
#[derive(Clone)]
struct Session {
    id: String,
    file: FileId,
    name: String,
    kind: String,
    kernel: String,
}

/// The kernels and sessions of this server.
#[derive(Clone)]
pub struct Kernels {
    kernels: Arc<DashMap<String, Arc<KernelHandle>>>,
    sessions: Arc<DashMap<String, Session>>,
    /// Serializes session creation, so one notebook never gets two kernels by a race.
    starting: Arc<tokio::sync::Mutex<()>>,
    runtime_dir: PathBuf,
    /// The runtime directory is ours alone to remove at shutdown.
    temporary_runtime_dir: bool,
    account: Option<Account>,
    /// The space (its root directory) each kernel was started in.
    spaces: Arc<DashMap<String, PathBuf>>,
}

impl Kernels {
    pub fn new(
        state_dir: &std::path::Path,
        kernel_user: Option<&str>,
        multi_user: bool,
    ) -> anyhow::Result<Kernels> {
        let account = match kernel_user {
            Some(name) => {
                if !nix::unistd::geteuid().is_root() {
                    anyhow::bail!("kernel_user needs Quire to run as root");
                }
                Some(Account::lookup(name)?)
            }
            None => None,
        };
        // Kernels' private directories: under our state directory when kernels run as us and
        // the path leaves room for Unix socket names (108 bytes); otherwise a fresh directory
        // under /tmp that other accounts can pass through.
        let preferred = state_dir.join("run");
        let as_us = account.is_none() && !multi_user;
        let (runtime_dir, temporary) = if as_us && preferred.as_os_str().len() <= 70 {
            kernel_bridge::launch::prepare_runtime_base(&preferred)?;
            (preferred, false)
        } else {
            (kernel_bridge::launch::fresh_runtime_base()?, true)
        };
        Ok(Kernels {
            temporary_runtime_dir: temporary,
            kernels: Arc::default(),
            sessions: Arc::default(),
            starting: Arc::default(),
            runtime_dir,
            account,
            spaces: Arc::default(),
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<KernelHandle>> {
        self.kernels.get(id).map(|k| k.clone())
    }

    /// The kernel of the session bound to this notebook, if any.
    pub fn for_file(&self, file: FileId) -> Option<Arc<KernelHandle>> {
        let kernel = self
            .sessions
            .iter()
            .find(|s| s.file == file)
            .map(|s| s.kernel.clone())?;
        self.get(&kernel)
    }

    /// Starts a kernel in a space: as its owner, in `cwd`.
    async fn start(
        &self,
        state: &AppState,
        spec_name: &str,
        space: &Space,
        cwd: PathBuf,
    ) -> ApiResult<Arc<KernelHandle>> {
        let spec = find_spec(state, spec_name)?;
        let options = KernelOptions {
            spec,
            cwd,
            account: space.account().cloned().or_else(|| self.account.clone()),
            runtime_dir: self.runtime_dir.clone(),
            transport: state.config.kernel_transport,
            env: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        };
        let kernel = KernelHandle::start(options)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.kernels.insert(kernel.id().to_string(), kernel.clone());
        self.spaces
            .insert(kernel.id().to_string(), space.root().to_path_buf());
        Ok(kernel)
    }

    /// The notebook's kernel, starting a session with the default kernel if it has none.
    pub async fn ensure_for_file(
        &self,
        state: &AppState,
        file: FileId,
    ) -> ApiResult<Arc<KernelHandle>> {
        if let Some(kernel) = self.for_file(file) {
            return Ok(kernel);
        }
        let _starting = self.starting.lock().await;
        if let Some(kernel) = self.for_file(file) {
            return Ok(kernel);
        }
        let store_path = file_path(state, file)?;
        let space = state.space_of(&store_path)?;
        let api_path = space.api_path(&store_path).unwrap_or(store_path);
        let cwd = notebook_dir(&space, &api_path)?;
        let spec = kernel_named_by(state, &space, &api_path)
            .unwrap_or_else(|| state.config.default_kernel.clone());
        let kernel = self.start(state, &spec, &space, cwd).await?;
        let name = api_path.rsplit('/').next().unwrap_or_default().to_string();
        let session = Session {
            id: uuid::Uuid::new_v4().to_string(),
            file,
            name,
            kind: "notebook".into(),
            kernel: kernel.id().to_string(),
        };
        self.sessions.insert(session.id.clone(), session);
        attach(state, file, &kernel).await;
        Ok(kernel)
    }

    /// Shuts the notebook's kernel down (ending its sessions); whether it had one.
    pub async fn shutdown_for_file(&self, file: FileId) -> bool {
        match self.for_file(file) {
            Some(kernel) => self.remove_kernel(kernel.id()).await,
            None => false,
        }
    }

    /// Stops every kernel; for server shutdown.
    pub async fn shutdown_all(&self) {
        let kernels: Vec<Arc<KernelHandle>> = self.kernels.iter().map(|k| k.clone()).collect();
        for kernel in kernels {
            kernel.shutdown().await;
        }
        self.kernels.clear();
        self.sessions.clear();
        if self.temporary_runtime_dir {
            let _ = std::fs::remove_dir_all(&self.runtime_dir);
        }
    }

    async fn remove_kernel(&self, id: &str) -> bool {
        let Some((_, kernel)) = self.kernels.remove(id) else {
            return false;
        };
        self.spaces.remove(id);
        self.sessions.retain(|_, s| s.kernel != id);
        kernel.shutdown().await;
        true
    }
}

/// Every installed kernelspec: the configured directories first, then Jupyter's.
fn all_specs(state: &AppState) -> Vec<KernelSpec> {
    let mut dirs = state.config.kernel_dirs.clone();
    dirs.extend(kernelspec::data_dirs());
    kernelspec::find_all(&dirs)
}

fn find_spec(state: &AppState, name: &str) -> ApiResult<KernelSpec> {
    all_specs(state)
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no kernelspec named {name:?} is installed")))
}

/// The kernel a notebook asks for (`metadata.kernelspec.name`), when it is installed.
fn kernel_named_by(state: &AppState, space: &Space, api_path: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        metadata: Option<Value>,
    }
    let path = space.resolve(api_path).ok()?;
    let bytes = space.io(|| std::fs::read(path)).ok()?;
    let head: Head = serde_json::from_slice(&bytes).ok()?;
    let name = head
        .metadata?
        .get("kernelspec")?
        .get("name")?
        .as_str()?
        .to_string();
    all_specs(state)
        .iter()
        .any(|s| s.name == name)
        .then_some(name)
}

/// A notebook's store path.
fn file_path(state: &AppState, file: FileId) -> ApiResult<String> {
    state
        .store
        .path_for_id(state.root.path(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(|| ApiError::not_found("the notebook no longer exists"))
}

/// The directory holding a notebook: the kernel's working directory.
fn notebook_dir(space: &Space, api_path: &str) -> ApiResult<PathBuf> {
    let path = space.resolve(api_path)?;
    Ok(path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| space.root().to_path_buf()))
}

/// Who asks and in which space, and so what they may see of the kernels and sessions: their
/// space's (the administrator: all). Taken from what the auth middleware put in the request.
pub struct Seen {
    principal: Principal,
    space: Space,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Seen {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Seen, ApiError> {
        let principal = parts.extensions.get::<Principal>().cloned();
        let space = parts.extensions.get::<Space>().cloned();
        match (principal, space) {
            (Some(principal), Some(space)) => Ok(Seen { principal, space }),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "authentication required",
            )),
        }
    }
}

impl Seen {
    fn kernel(&self, state: &AppState, id: &str) -> bool {
        matches!(self.principal, Principal::Owner)
            || state
                .kernels
                .spaces
                .get(id)
                .is_some_and(|root| root.as_path() == self.space.root())
    }

    fn session(&self, state: &AppState, session: &Session) -> bool {
        matches!(self.principal, Principal::Owner)
            || file_path(state, session.file)
                .ok()
                .is_some_and(|path| self.space.api_path(&path).is_some())
    }
}

/// Shows the kernel in the notebook's room, if the room is open.
pub async fn attach(state: &AppState, file: FileId, kernel: &Arc<KernelHandle>) {
    for room in state.rooms.of_file(file) {
        let kernel: Arc<dyn Kernel> = kernel.clone();
        let _ = room.send(RoomInput::AttachKernel { kernel }).await;
    }
}

fn iso(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn kernel_model(kernel: &KernelHandle) -> Value {
    let state = kernel.state();
    json!({
        "id": kernel.id(),
        "name": kernel.name(),
        "last_activity": iso(state.last_activity),
        "execution_state": state.status.as_str(),
        "connections": 0,
    })
}

fn session_model(state: &AppState, space: &Space, session: &Session) -> Value {
    let path = file_path(state, session.file).unwrap_or_default();
    let path = space.api_path(&path).unwrap_or(path);
    let kernel = state
        .kernels
        .get(&session.kernel)
        .map(|k| kernel_model(&k))
        .unwrap_or(Value::Null);
    json!({
        "id": session.id,
        "path": path,
        "name": session.name,
        "type": session.kind,
        "kernel": kernel,
        "notebook": {"path": path, "name": session.name},
    })
}

pub async fn list_kernelspecs(State(state): State<AppState>) -> Json<Value> {
    let specs = all_specs(&state);
    let default = if specs.iter().any(|s| s.name == state.config.default_kernel) {
        state.config.default_kernel.clone()
    } else {
        specs.first().map(|s| s.name.clone()).unwrap_or_default()
    };
    let all: serde_json::Map<String, Value> =
        specs.iter().map(|s| (s.name.clone(), s.to_api())).collect();
    Json(json!({"default": default, "kernelspecs": all}))
}

pub async fn get_kernelspec(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(find_spec(&state, &name)?.to_api()))
}

pub async fn list_kernels(State(state): State<AppState>, seen: Seen) -> Json<Value> {
    let models: Vec<Value> = state
        .kernels
        .kernels
        .iter()
        .filter(|k| seen.kernel(&state, k.key()))
        .map(|k| kernel_model(&k))
        .collect();
    Json(Value::Array(models))
}

#[derive(Deserialize, Default)]
pub struct StartKernel {
    name: Option<String>,
    path: Option<String>,
}

pub async fn start_kernel(
    State(state): State<AppState>,
    Extension(space): Extension<Space>,
    JsonBody(body): JsonBody<Option<StartKernel>>,
) -> ApiResult<Response> {
    let body = body.unwrap_or_default();
    let name = body
        .name
        .unwrap_or_else(|| state.config.default_kernel.clone());
    let cwd = match body.path.as_deref() {
        Some(path) => {
            let dir = space.resolve(&crate::fs::paths::Root::normalize(path)?)?;
            if space.io(|| dir.is_dir()) {
                dir
            } else {
                dir.parent().map(PathBuf::from).unwrap_or(dir)
            }
        }
        None => space.root().to_path_buf(),
    };
    let kernel = state.kernels.start(&state, &name, &space, cwd).await?;
    Ok((StatusCode::CREATED, Json(kernel_model(&kernel))).into_response())
}

fn kernel_or_404(state: &AppState, seen: &Seen, id: &str) -> ApiResult<Arc<KernelHandle>> {
    state
        .kernels
        .get(id)
        .filter(|_| seen.kernel(state, id))
        .ok_or_else(|| ApiError::not_found(format!("no kernel with id {id}")))
}

pub async fn get_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let kernel = kernel_or_404(&state, &seen, &id)?;
    Ok(Json(kernel_model(&kernel)))
}

pub async fn delete_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    if seen.kernel(&state, &id) && state.kernels.remove_kernel(&id).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no kernel with id {id}")))
    }
}

pub async fn interrupt_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    kernel_or_404(&state, &seen, &id)?.interrupt();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn restart_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let kernel = kernel_or_404(&state, &seen, &id)?;
    kernel
        .restart_and_wait()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(kernel_model(&kernel)))
}

#[derive(Deserialize)]
pub struct ExecuteBody {
    cell_id: Option<String>,
    document_id: Option<String>,
}

/// Runs one cell of a notebook on this kernel and answers once it finished.
pub async fn execute(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
    JsonBody(body): JsonBody<ExecuteBody>,
) -> ApiResult<Json<Value>> {
    let kernel = kernel_or_404(&state, &seen, &id)?;
    let cell_id = body
        .cell_id
        .ok_or_else(|| ApiError::bad_request("missing \"cell_id\""))?;
    let document_id = body
        .document_id
        .ok_or_else(|| ApiError::bad_request("missing \"document_id\""))?;
    let file = document_id
        .rsplit(':')
        .next()
        .and_then(FileId::parse)
        .ok_or_else(|| ApiError::bad_request("malformed \"document_id\""))?;
    if !seen
        .principal
        .current_caps_for(&state, file)
        .contains(collab::Capabilities::EXECUTE)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "you may not run code in this notebook",
        ));
    }
    // The kernel must be the notebook's own, or one of its space's: a kernel of someone else's
    // space attached to this notebook would hand its controls to this notebook's runners.
    let notebook_space = state.space_of(&file_path(&state, file)?)?;
    let own = match state.kernels.for_file(file) {
        Some(current) => current.id() == kernel.id(),
        None => state
            .kernels
            .spaces
            .get(kernel.id())
            .is_some_and(|root| root.as_path() == notebook_space.root()),
    };
    if !own {
        return Err(ApiError::bad_request(
            "this kernel is not the notebook's: start the notebook's session first",
        ));
    }
    let room = crate::rooms::socket::open_document(&state, &document_id)
        .await
        .map_err(|reason| ApiError::not_found(reason.reason))?;
    let (done, outcome) = tokio::sync::oneshot::channel();
    let kernel: Arc<dyn Kernel> = kernel;
    room.send(RoomInput::Execute {
        cell_id,
        requester: Requester {
            identity: seen.principal.identity(&state),
            conn: None,
        },
        kernel,
        request_id: None,
        done: Some(done),
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the notebook closed; try again",
        )
    })?;
    match outcome.await {
        Ok(Ok(summary)) => Ok(Json(json!({
            "status": summary.outcome.as_str(),
            "execution_count": summary.execution_count,
            "reason": match &summary.outcome {
                collab::execution::RunOutcome::Aborted(reason) => Value::from(reason.as_str()),
                _ => Value::Null,
            },
        }))),
        Ok(Err(reason)) => Err(ApiError::bad_request(reason)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the notebook closed during the run",
        )),
    }
}

pub async fn list_sessions(State(state): State<AppState>, seen: Seen) -> Json<Value> {
    let sessions: Vec<Session> = state.kernels.sessions.iter().map(|s| s.clone()).collect();
    Json(Value::Array(
        sessions
            .iter()
            .filter(|s| seen.session(&state, s))
            .map(|s| session_model(&state, &seen.space, s))
            .collect(),
    ))
}

#[derive(Deserialize, Default)]
pub struct SessionBody {
    path: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    kernel: Option<KernelChoice>,
}

#[derive(Deserialize, Default)]
pub struct KernelChoice {
    id: Option<String>,
    name: Option<String>,
}

/// Creates a session for a notebook, or returns the one it has (as Jupyter Server does).
pub async fn create_session(
    State(state): State<AppState>,
    seen: Seen,
    JsonBody(body): JsonBody<SessionBody>,
) -> ApiResult<Response> {
    let api_path = crate::fs::paths::Root::normalize(
        body.path
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("missing \"path\""))?,
    )?;
    let (file, _) = crate::rooms::socket::file_id_of(&state, &seen.space, &api_path)?;
    let _starting = state.kernels.starting.lock().await;
    if let Some(existing) = state
        .kernels
        .sessions
        .iter()
        .find(|s| s.file == file)
        .map(|s| s.clone())
    {
        if state.kernels.get(&existing.kernel).is_some() {
            let model = session_model(&state, &seen.space, &existing);
            return Ok((StatusCode::CREATED, Json(model)).into_response());
        }
        state.kernels.sessions.remove(&existing.id);
    }
    let choice = body.kernel.unwrap_or_default();
    let kernel = match choice.id {
        Some(id) => kernel_or_404(&state, &seen, &id)?,
        None => {
            let name = choice
                .name
                .unwrap_or_else(|| state.config.default_kernel.clone());
            let cwd = notebook_dir(&seen.space, &api_path)?;
            state.kernels.start(&state, &name, &seen.space, cwd).await?
        }
    };
    let session = Session {
        id: uuid::Uuid::new_v4().to_string(),
        file,
        name: body
            .name
            .unwrap_or_else(|| api_path.rsplit('/').next().unwrap_or_default().to_string()),
        kind: body.kind.unwrap_or_else(|| "notebook".into()),
        kernel: kernel.id().to_string(),
    };
    state
        .kernels
        .sessions
        .insert(session.id.clone(), session.clone());
    drop(_starting);
    attach(&state, file, &kernel).await;
    let model = session_model(&state, &seen.space, &session);
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

fn session_or_404(state: &AppState, seen: &Seen, id: &str) -> ApiResult<Session> {
    state
        .kernels
        .sessions
        .get(id)
        .map(|s| s.clone())
        .filter(|s| seen.session(state, s))
        .ok_or_else(|| ApiError::not_found(format!("no session with id {id}")))
}

pub async fn get_session(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let session = session_or_404(&state, &seen, &id)?;
    Ok(Json(session_model(&state, &seen.space, &session)))
}

/// Changes a session's kernel (by id or by starting one of a name) or its name.
pub async fn patch_session(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
    JsonBody(body): JsonBody<SessionBody>,
) -> ApiResult<Json<Value>> {
    let mut session = session_or_404(&state, &seen, &id)?;
    if let Some(name) = body.name {
        session.name = name;
    }
    if let Some(choice) = body.kernel {
        let kernel = match (choice.id, choice.name) {
            (Some(id), _) => kernel_or_404(&state, &seen, &id)?,
            (None, Some(name)) => {
                let store_path = file_path(&state, session.file)?;
                let home = state.space_of(&store_path)?;
                let api_path = home.api_path(&store_path).unwrap_or(store_path);
                let cwd = notebook_dir(&home, &api_path)?;
                state.kernels.start(&state, &name, &home, cwd).await?
            }
            (None, None) => return Err(ApiError::bad_request("\"kernel\" needs an id or a name")),
        };
        if kernel.id() != session.kernel {
            let old = std::mem::replace(&mut session.kernel, kernel.id().to_string());
            state
                .kernels
                .sessions
                .insert(session.id.clone(), session.clone());
            let still_used = state.kernels.sessions.iter().any(|s| s.kernel == old);
            if !still_used {
                state.kernels.remove_kernel(&old).await;
            }
            attach(&state, session.file, &kernel).await;
        }
    }
    state
        .kernels
        .sessions
        .insert(session.id.clone(), session.clone());
    Ok(Json(session_model(&state, &seen.space, &session)))
}

pub async fn delete_session(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    session_or_404(&state, &seen, &id)?;
    let (_, session) = state
        .kernels
        .sessions
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(format!("no session with id {id}")))?;
    let still_used = state
        .kernels
        .sessions
        .iter()
        .any(|s| s.kernel == session.kernel);
    if !still_used {
        state.kernels.remove_kernel(&session.kernel).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

//! Jupyter Server's kernel and session APIs, and execution requests.
//!
//! - `GET /api/kernelspecs`, `GET /api/kernelspecs/{name}`
//! - `GET/POST /api/kernels`, `GET/DELETE /api/kernels/{id}`, `POST .../interrupt`, `.../restart`
//! - `POST /api/kernels/{id}/execute` with `{cell_id, document_id}` (JupyterLab's
//!   serverSideExecution): runs the cell as the document holds it and answers when it finished.
//! - `GET/POST /api/sessions`, `GET/PATCH/DELETE /api/sessions/{id}`: a session binds a notebook
//!   (by file id, so it follows renames) to a kernel.
//!
//! A kernel belongs to the space it was started in: people see and drive only their space's
//! kernels and sessions (the administrator sees all). A kernel's status and runs show in every
//! room it is attached to. The registry is `rooms::kernels`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use collab::execution::{Kernel, Requester};
use collab::{FileId, KernelId, RoomInput};
use kernel_bridge::KernelHandle;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::principal::Principal;
use crate::fs::paths::Root;
use crate::fs::space::Space;
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::rooms::admission::open_document;
use crate::rooms::kernels::{
    all_specs, attach, detach, file_path, find_spec, notebook_dir, Session,
};
use crate::AppState;

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
    fn kernel(&self, state: &AppState, id: &KernelId) -> bool {
        matches!(self.principal, Principal::Owner)
            || state.kernels.started_in(id, self.space.root())
    }

    fn session(&self, state: &AppState, session: &Session) -> bool {
        matches!(self.principal, Principal::Owner)
            || file_path(state, session.file)
                .ok()
                .is_some_and(|path| self.space.api_path(&path).is_some())
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
        .all()
        .iter()
        .filter(|k| seen.kernel(&state, k.id()))
        .map(|k| kernel_model(k))
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
            let dir = space.resolve(&Root::normalize(path)?)?;
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

fn kernel_or_404(state: &AppState, seen: &Seen, id: &KernelId) -> ApiResult<Arc<KernelHandle>> {
    state
        .kernels
        .get(id)
        .filter(|_| seen.kernel(state, id))
        .ok_or_else(|| ApiError::not_found(format!("no kernel with id {id}")))
}

pub async fn get_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<KernelId>,
) -> ApiResult<Json<Value>> {
    let kernel = kernel_or_404(&state, &seen, &id)?;
    Ok(Json(kernel_model(&kernel)))
}

pub async fn delete_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<KernelId>,
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
    UrlPath(id): UrlPath<KernelId>,
) -> ApiResult<StatusCode> {
    kernel_or_404(&state, &seen, &id)?.interrupt();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn restart_kernel(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<KernelId>,
) -> ApiResult<Json<Value>> {
    let kernel = kernel_or_404(&state, &seen, &id)?;
    kernel
        .restart_and_wait()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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
    UrlPath(id): UrlPath<KernelId>,
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
        .current_caps_for(&state.access, file)
        .contains(collab::Capabilities::EXECUTE)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "you may not run code in this notebook",
        ));
    }
    // The kernel must be the notebook's own, or one of its space's: a kernel of someone else's
    // space attached to this notebook would hand its controls to this notebook's runners.
    let notebook_space = state.spaces.space_of(&file_path(&state, file)?)?;
    let own = match state.kernels.for_file(file) {
        Some(current) => current.id() == kernel.id(),
        None => state.kernels.started_in(kernel.id(), notebook_space.root()),
    };
    if !own {
        return Err(ApiError::bad_request(
            "this kernel is not the notebook's: start the notebook's session first",
        ));
    }
    let room = open_document(&state, &document_id)
        .await
        .map_err(|reason| ApiError::not_found(reason.reason))?;
    let (done, outcome) = tokio::sync::oneshot::channel();
    let kernel: Arc<dyn Kernel> = kernel;
    room.send(RoomInput::Execute {
        cell_id: cell_id.into(),
        requester: Requester {
            identity: seen.principal.identity(&state.access),
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
        Ok(Err(refused)) => Err(ApiError::bad_request(refused.to_string())),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the notebook closed during the run",
        )),
    }
}

pub async fn list_sessions(State(state): State<AppState>, seen: Seen) -> Json<Value> {
    let sessions = state.kernels.sessions();
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
    id: Option<KernelId>,
    name: Option<String>,
}

/// Creates a session for a notebook, or returns the one it has (as Jupyter Server does).
pub async fn create_session(
    State(state): State<AppState>,
    seen: Seen,
    JsonBody(body): JsonBody<SessionBody>,
) -> ApiResult<Response> {
    let api_path = Root::normalize(
        body.path
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("missing \"path\""))?,
    )?;
    let (file, _) = super::collaboration::file_id_of(&state, &seen.space, &api_path)?;
    let starting = state.kernels.starting(file).await;
    if let Some(existing) = state.kernels.session_of(file) {
        if state.kernels.get(&existing.kernel).is_some() {
            let model = session_model(&state, &seen.space, &existing);
            return Ok((StatusCode::CREATED, Json(model)).into_response());
        }
        state.kernels.forget_session(&existing.id);
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
        kernel: kernel.id().clone(),
    };
    state.kernels.put_session(session.clone());
    drop(starting);
    attach(&state, file, &kernel).await;
    let model = session_model(&state, &seen.space, &session);
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

fn session_or_404(state: &AppState, seen: &Seen, id: &str) -> ApiResult<Session> {
    state
        .kernels
        .session(id)
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
                let home = state.spaces.space_of(&store_path)?;
                let api_path = home.api_path(&store_path).unwrap_or(store_path);
                let cwd = notebook_dir(&home, &api_path)?;
                state.kernels.start(&state, &name, &home, cwd).await?
            }
            (None, None) => return Err(ApiError::bad_request("\"kernel\" needs an id or a name")),
        };
        if *kernel.id() != session.kernel {
            let old = std::mem::replace(&mut session.kernel, kernel.id().clone());
            state.kernels.put_session(session.clone());
            state.kernels.stop_if_unused(&old).await;
            attach(&state, session.file, &kernel).await;
        }
    }
    state.kernels.put_session(session.clone());
    Ok(Json(session_model(&state, &seen.space, &session)))
}

pub async fn delete_session(
    State(state): State<AppState>,
    seen: Seen,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    session_or_404(&state, &seen, &id)?;
    let session = state
        .kernels
        .end_session(&id)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no session with id {id}")))?;
    detach(&state, session.file, &session.kernel).await;
    Ok(StatusCode::NO_CONTENT)
}

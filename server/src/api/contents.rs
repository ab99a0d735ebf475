//! Jupyter Server's contents API: `GET/POST/PUT/PATCH/DELETE /api/contents/{path}`.
//!
//! Models have Jupyter's shape (`name`, `path`, `type`, `format`, `mimetype`, `content`,
//! `created`, `last_modified`, `size`, `writable`, and `hash`/`hash_algorithm` when asked).
//! Hidden files are neither listed nor served.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use collab::{content_hash, Notebook, RoomInput};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::principal::Principal;
use crate::fs::files::write_atomically;
use crate::fs::paths::Root;
use crate::fs::space::Space;
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::rooms::rights::{announce_link, recheck};
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct ContentsQuery {
    content: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    format: Option<String>,
    hash: Option<String>,
}

fn flag(value: &Option<String>, default: bool) -> bool {
    match value.as_deref() {
        None => default,
        Some(v) => !matches!(v, "0" | "false" | "False"),
    }
}

fn is_hidden(api_path: &str) -> bool {
    api_path.split('/').any(|p| p.starts_with('.'))
}

/// ISO 8601 in UTC, as Jupyter prints it.
pub fn iso8601(time: SystemTime) -> String {
    let d = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn kind_of(path: &Path, meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "directory"
    } else if path.extension().is_some_and(|e| e == "ipynb") {
        "notebook"
    } else {
        "file"
    }
}

fn mimetype(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "txt" | "py" | "md" | "csv" | "toml" | "cfg" | "ini" | "sh" | "rs" | "r" | "jl" => {
            "text/plain"
        }
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// A model without content.
fn base_model(api_path: &str, path: &Path, meta: &std::fs::Metadata) -> Value {
    let name = api_path.rsplit('/').next().unwrap_or("");
    let writable = meta.mode() & 0o200 != 0;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let created = meta.created().unwrap_or(modified);
    let kind = kind_of(path, meta);
    json!({
        "name": name,
        "path": api_path,
        "type": kind,
        "format": null,
        "mimetype": if kind == "file" { Value::from(mimetype(path)) } else { Value::Null },
        "content": null,
        "created": iso8601(created),
        "last_modified": iso8601(modified),
        "size": if meta.is_dir() { Value::Null } else { Value::from(meta.len()) },
        "writable": writable,
    })
}

pub fn model(
    api_path: &str,
    path: &Path,
    with_content: bool,
    with_hash: bool,
    format: Option<&str>,
) -> ApiResult<Value> {
    let meta = std::fs::metadata(path)
        .map_err(|_| ApiError::not_found(format!("no such file or directory: {api_path}")))?;
    let mut model = base_model(api_path, path, &meta);
    let kind = kind_of(path, &meta);
    if kind == "directory" {
        if with_content {
            let mut children = Vec::new();
            let entries =
                std::fs::read_dir(path).map_err(|e| io_error("cannot list directory", e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let child_api = if api_path.is_empty() {
                    name.clone()
                } else {
                    format!("{api_path}/{name}")
                };
                if let Ok(child_meta) = std::fs::metadata(entry.path()) {
                    children.push(base_model(&child_api, &entry.path(), &child_meta));
                }
            }
            children.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            model["content"] = Value::Array(children);
            model["format"] = "json".into();
        }
        return Ok(model);
    }
    if !with_content && !with_hash {
        return Ok(model);
    }
    let bytes = std::fs::read(path).map_err(|e| io_error("cannot read file", e))?;
    if with_hash {
        model["hash"] = content_hash(&bytes).into();
        model["hash_algorithm"] = "sha256".into();
    }
    if with_content {
        if kind == "notebook" && format != Some("text") && format != Some("base64") {
            let notebook = Notebook::from_ipynb(&bytes)
                .map_err(|e| ApiError::bad_request(format!("{api_path}: {e}")))?;
            model["content"] = notebook.to_file_json();
            model["format"] = "json".into();
        } else {
            match (format, String::from_utf8(bytes)) {
                (Some("base64"), Ok(text)) => {
                    model["content"] = base64::engine::general_purpose::STANDARD
                        .encode(text)
                        .into();
                    model["format"] = "base64".into();
                }
                (_, Ok(text)) => {
                    model["content"] = text.into();
                    model["format"] = "text".into();
                }
                (Some("text"), Err(_)) => {
                    return Err(ApiError::bad_request(format!(
                        "{api_path} is not UTF-8 text"
                    )));
                }
                (_, Err(e)) => {
                    model["content"] = base64::engine::general_purpose::STANDARD
                        .encode(e.into_bytes())
                        .into();
                    model["format"] = "base64".into();
                }
            }
        }
    }
    Ok(model)
}

fn resolve(space: &Space, api_path: &str) -> ApiResult<(String, std::path::PathBuf)> {
    let normalized = Root::normalize(api_path)?;
    if is_hidden(&normalized) {
        return Err(ApiError::not_found(format!(
            "no such file or directory: {api_path}"
        )));
    }
    let path = space.resolve(&normalized)?;
    Ok((normalized, path))
}

/// A file system failure as the client should see it: refusals as such, the rest as errors.
fn io_error(context: &str, e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{context}: permission denied"),
        )
    } else {
        ApiError::internal(context, e)
    }
}

pub async fn get_root(
    state: State<AppState>,
    principal: Extension<Principal>,
    space: Extension<Space>,
    query: Query<ContentsQuery>,
) -> ApiResult<Json<Value>> {
    get(state, principal, space, UrlPath(String::new()), query).await
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(space): Extension<Space>,
    UrlPath(api_path): UrlPath<String>,
    Query(query): Query<ContentsQuery>,
) -> ApiResult<Json<Value>> {
    if let Principal::Guest(guest) = &principal {
        // A guest reads their own notebook's saved content (with `view`), nothing else.
        let theirs = state
            .store
            .path_for_id(state.spaces.store_root(), guest.file)
            .ok()
            .flatten()
            .and_then(|path| space.api_path(&path));
        let asked = Root::normalize(api_path.trim_end_matches("/checkpoints")).ok();
        if theirs.is_none()
            || theirs != asked
            || !principal
                .current_caps_for(&state.access, guest.file)
                .contains(collab::Capabilities::VIEW)
        {
            return Err(ApiError::not_found(format!("no such file: {api_path}")));
        }
    }
    // JupyterLab lists a file's checkpoints when it opens it.
    if let Some(file) = api_path.strip_suffix("/checkpoints") {
        let (_, path) = resolve(&space, file)?;
        if space.io(|| path.is_file()) {
            let listed = space.io(|| checkpoint_model(&path));
            return Ok(Json(Value::Array(listed.into_iter().collect())));
        }
    }
    let (api_path, path) = resolve(&space, &api_path)?;
    let with_content = flag(&query.content, true);
    let with_hash = flag(&query.hash, false);
    let format = query.format.clone();
    let model = tokio::task::spawn_blocking(move || {
        space.io(|| model(&api_path, &path, with_content, with_hash, format.as_deref()))
    })
    .await
    .map_err(|e| ApiError::internal("contents task failed", e))??;
    if let Some(kind) = &query.kind {
        if model["type"] != kind.as_str() {
            return Err(ApiError::bad_request(format!(
                "{} is not a {kind}",
                model["path"]
            )));
        }
    }
    Ok(Json(model))
}

/// Checkpoints, as Jupyter keeps them: one copy per file, `.ipynb_checkpoints/{stem}-checkpoint{ext}`
/// beside it, with the id `checkpoint`. Creating one copies the saved file; restoring one writes
/// it back over the file (an open room takes that in as an edit made outside Quire).
const CHECKPOINT_ID: &str = "checkpoint";

/// `{file}/checkpoints/{id}` → (file, id).
fn checkpoint_of(api_path: &str) -> Option<(&str, &str)> {
    let (rest, id) = api_path.rsplit_once('/')?;
    let file = rest.strip_suffix("/checkpoints")?;
    Some((file, id))
}

fn checkpoint_path(path: &Path) -> Option<std::path::PathBuf> {
    let dir = path.parent()?;
    let stem = path.file_stem()?.to_string_lossy();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    Some(
        dir.join(".ipynb_checkpoints")
            .join(format!("{stem}-checkpoint{ext}")),
    )
}

fn checkpoint_model(path: &Path) -> Option<Value> {
    let meta = std::fs::metadata(checkpoint_path(path)?).ok()?;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Some(json!({"id": CHECKPOINT_ID, "last_modified": iso8601(modified)}))
}

/// The file (which must exist) and its checkpoint's path.
fn checkpointed(space: &Space, file: &str) -> ApiResult<(std::path::PathBuf, std::path::PathBuf)> {
    let (api_path, path) = resolve(space, file)?;
    if !path.is_file() {
        return Err(ApiError::not_found(format!("no such file: {api_path}")));
    }
    let checkpoint = checkpoint_path(&path)
        .ok_or_else(|| ApiError::bad_request("this file has no checkpoint place"))?;
    Ok((path, checkpoint))
}

/// Runs with the space owner's file rights.
fn create_checkpoint(space: &Space, file: &str) -> ApiResult<Response> {
    let (path, checkpoint) = checkpointed(space, file)?;
    let bytes = std::fs::read(&path).map_err(|e| io_error("cannot read the file", e))?;
    if let Some(dir) = checkpoint.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error("cannot make the checkpoint folder", e))?;
    }
    write_atomically(&checkpoint, &bytes)
        .map_err(|e| io_error("cannot write the checkpoint", e))?;
    let model = checkpoint_model(&path).unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

/// Runs with the space owner's file rights.
fn restore_checkpoint(space: &Space, file: &str, id: &str) -> ApiResult<Response> {
    let (path, checkpoint) = checkpointed(space, file)?;
    if id != CHECKPOINT_ID || !checkpoint.is_file() {
        return Err(ApiError::not_found(format!(
            "no checkpoint {id:?} of {file}"
        )));
    }
    let bytes =
        std::fs::read(&checkpoint).map_err(|e| io_error("cannot read the checkpoint", e))?;
    write_atomically(&path, &bytes).map_err(|e| io_error("cannot restore", e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs with the space owner's file rights.
fn delete_checkpoint(space: &Space, file: &str, id: &str) -> ApiResult<StatusCode> {
    let (_, checkpoint) = checkpointed(space, file)?;
    if id != CHECKPOINT_ID || !checkpoint.is_file() {
        return Err(ApiError::not_found(format!(
            "no checkpoint {id:?} of {file}"
        )));
    }
    std::fs::remove_file(&checkpoint).map_err(|e| io_error("cannot delete the checkpoint", e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct CreateBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    ext: Option<String>,
    copy_from: Option<String>,
}

/// `POST` on a directory: a new untitled notebook, file or folder, or a copy.
/// Runs file work on a blocking thread, with the space owner's rights.
async fn in_space<T: Send + 'static>(
    space: Space,
    work: impl FnOnce(&Space) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || space.io(|| work(&space)))
        .await
        .map_err(|e| ApiError::internal("contents task failed", e))?
}

pub async fn post(
    Extension(space): Extension<Space>,
    UrlPath(dir): UrlPath<String>,
    JsonBody(body): JsonBody<Option<CreateBody>>,
) -> ApiResult<Response> {
    if let Some(file) = dir.strip_suffix("/checkpoints") {
        let file = file.to_string();
        return in_space(space, move |space| create_checkpoint(space, &file)).await;
    }
    if let Some((file, id)) = checkpoint_of(&dir) {
        let (file, id) = (file.to_string(), id.to_string());
        return in_space(space, move |space| restore_checkpoint(space, &file, &id)).await;
    }
    in_space(space, move |space| {
        create_in(space, dir, body.unwrap_or_default())
    })
    .await
}

pub async fn post_root(
    Extension(space): Extension<Space>,
    JsonBody(body): JsonBody<Option<CreateBody>>,
) -> ApiResult<Response> {
    in_space(space, move |space| {
        create_in(space, String::new(), body.unwrap_or_default())
    })
    .await
}

/// Runs with the space owner's file rights.
fn create_in(space: &Space, dir: String, body: CreateBody) -> ApiResult<Response> {
    let (dir_api, dir_path) = resolve(space, &dir)?;
    if !dir_path.is_dir() {
        return Err(ApiError::not_found(format!("no such directory: {dir}")));
    }
    let (stem, ext, kind) = match (&body.copy_from, body.kind.as_deref()) {
        (Some(from), _) => {
            let name = from.rsplit('/').next().unwrap_or(from);
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e)) => (format!("{s}-Copy"), format!(".{e}")),
                None => (format!("{name}-Copy"), String::new()),
            };
            (stem, ext, "copy")
        }
        (None, Some("directory")) => ("Untitled Folder".to_string(), String::new(), "directory"),
        (None, Some("file")) => (
            "untitled".to_string(),
            body.ext.clone().unwrap_or(".txt".into()),
            "file",
        ),
        (None, Some("notebook") | None) => {
            ("Untitled".to_string(), ".ipynb".to_string(), "notebook")
        }
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!("unknown type {other:?}")))
        }
    };
    // Untitled.ipynb, Untitled1.ipynb, …; folders get a space before the number, like Jupyter.
    let separator = if kind == "directory" { " " } else { "" };
    let mut n = 0;
    let name = loop {
        let candidate = if n == 0 {
            format!("{stem}{ext}")
        } else {
            format!("{stem}{separator}{n}{ext}")
        };
        if !dir_path.join(&candidate).exists() {
            break candidate;
        }
        n += 1;
    };
    let target = dir_path.join(&name);
    let result = match kind {
        "directory" => std::fs::create_dir(&target),
        "file" => std::fs::write(&target, b""),
        "notebook" => {
            let mut notebook = Notebook::new_empty();
            notebook.metadata = serde_json::Map::new();
            std::fs::write(&target, notebook.to_ipynb())
        }
        _ => {
            let from = body.copy_from.as_deref().unwrap_or_default();
            let (_, from_path) = resolve(space, from)?;
            if !from_path.is_file() {
                return Err(ApiError::not_found(format!("no such file: {from}")));
            }
            std::fs::copy(&from_path, &target).map(|_| ())
        }
    };
    result.map_err(|e| io_error("cannot create", e))?;
    let api_path = if dir_api.is_empty() {
        name
    } else {
        format!("{dir_api}/{name}")
    };
    let model = model(&api_path, &target, false, false, None)?;
    let location = format!("/api/contents/{}", api_path);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(model),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct SaveBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    format: Option<String>,
    content: Option<Value>,
}

/// `PUT`: write a whole notebook, file or directory (the non-collaborative save).
pub async fn put(
    Extension(space): Extension<Space>,
    UrlPath(api_path): UrlPath<String>,
    JsonBody(body): JsonBody<SaveBody>,
) -> ApiResult<Response> {
    in_space(space, move |space| put_in(space, api_path, body)).await
}

/// Runs with the space owner's file rights.
fn put_in(space: &Space, api_path: String, body: SaveBody) -> ApiResult<Response> {
    let (api_path, path) = resolve(space, &api_path)?;
    let existed = path.exists();
    let bytes = match (body.kind.as_deref(), body.content) {
        (Some("directory"), _) => {
            std::fs::create_dir_all(&path).map_err(|e| io_error("cannot create directory", e))?;
            None
        }
        (Some("notebook"), Some(content)) => {
            let notebook =
                Notebook::from_json(content).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some(notebook.to_ipynb())
        }
        (_, Some(Value::String(text))) => Some(if body.format.as_deref() == Some("base64") {
            base64::engine::general_purpose::STANDARD
                .decode(text.replace('\n', ""))
                .map_err(|e| ApiError::bad_request(format!("invalid base64: {e}")))?
        } else {
            text.into_bytes()
        }),
        _ => {
            return Err(ApiError::bad_request(
                "a model with type and content is required",
            ))
        }
    };
    if let Some(bytes) = bytes {
        write_atomically(&path, &bytes).map_err(|e| io_error("cannot save", e))?;
    }
    let model = model(&api_path, &path, false, false, None)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(model)).into_response())
}

#[derive(Deserialize)]
pub struct RenameBody {
    path: String,
}

/// `PATCH` with `{"path": new}`: rename or move; the file keeps its id and open rooms follow.
pub async fn patch(
    State(state): State<AppState>,
    Extension(space): Extension<Space>,
    UrlPath(api_path): UrlPath<String>,
    JsonBody(body): JsonBody<RenameBody>,
) -> ApiResult<Json<Value>> {
    let (from_api, from) = resolve(&space, &api_path)?;
    let (to_api, to) = resolve(&space, &body.path)?;
    if from_api.is_empty() || to_api.is_empty() {
        return Err(ApiError::bad_request("cannot rename the root"));
    }
    space.io(|| {
        if !from.exists() {
            return Err(ApiError::not_found(format!(
                "no such file or directory: {from_api}"
            )));
        }
        if to.exists() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{to_api} already exists"),
            ));
        }
        std::fs::rename(&from, &to).map_err(|e| io_error("cannot rename", e))
    })?;
    let moved = state
        .store
        .renamed(&space.store_path(&from_api), &space.store_path(&to_api))
        .map_err(|e| ApiError::internal("cannot record the rename", e))?;
    for (file_id, new_path) in moved {
        for room in state.rooms.of_file(file_id) {
            let api_path = space
                .api_path(&new_path)
                .unwrap_or_else(|| new_path.clone());
            let _ = room.send(RoomInput::Moved { api_path }).await;
        }
    }
    Ok(Json(space.io(|| model(&to_api, &to, false, false, None))?))
}

/// Deletes a file or an empty folder. What was shared of it is forgotten: its id, the grants
/// and links on it (a new file at the same path starts unshared).
pub async fn delete(
    State(state): State<AppState>,
    Extension(space): Extension<Space>,
    UrlPath(api_path): UrlPath<String>,
) -> ApiResult<StatusCode> {
    if let Some((file, id)) = checkpoint_of(&api_path) {
        let (file, id) = (file.to_string(), id.to_string());
        return in_space(space, move |space| delete_checkpoint(space, &file, &id)).await;
    }
    let store_path = space.store_path(&Root::normalize(&api_path)?);
    let status = in_space(space, move |space| delete_in(space, api_path)).await?;
    let forgotten = state
        .store
        .forget(&store_path)
        .map_err(|e| ApiError::internal("cannot forget the deleted file", e))?;
    for (file, links) in forgotten {
        for link in links {
            announce_link(&state, file, &link, None).await;
        }
        recheck(&state, Some(file), None).await;
    }
    Ok(status)
}

/// Runs with the space owner's file rights.
fn delete_in(space: &Space, api_path: String) -> ApiResult<StatusCode> {
    let (api_path, path) = resolve(space, &api_path)?;
    if api_path.is_empty() {
        return Err(ApiError::bad_request("cannot delete the root"));
    }
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|_| ApiError::not_found(format!("no such file or directory: {api_path}")))?;
    if meta.is_dir() {
        let visible = std::fs::read_dir(&path)
            .map_err(|e| io_error("cannot list directory", e))?
            .flatten()
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
        if visible {
            return Err(ApiError::bad_request(format!(
                "directory {api_path} is not empty"
            )));
        }
        std::fs::remove_dir_all(&path).map_err(|e| io_error("cannot delete", e))?;
    } else {
        std::fs::remove_file(&path).map_err(|e| io_error("cannot delete", e))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

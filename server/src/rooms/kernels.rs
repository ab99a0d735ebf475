//! The kernels and sessions of this server: starting a notebook's kernel (one per notebook,
//! only the same notebook's start waited for), finding it, attaching it to the notebook's
//! rooms, stopping it.
//!
//! Kernels run with the notebook's directory as working directory: as the owner of the space the
//! notebook is in (multi-user mode: the person, or the project), else as the configured account
//! when Quire runs as root. A kernel belongs to the space it was started in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use collab::execution::Kernel;
use collab::{FileId, KernelId, RoomInput};
use dashmap::DashMap;
use kernel_bridge::{kernelspec, Account, KernelHandle, KernelOptions, KernelSpec};
use serde::Deserialize;
use serde_json::Value;

use super::keyed::{KeyGuard, KeyedLocks};
use crate::fs::space::Space;
use crate::http::error::{ApiError, ApiResult};
use crate::AppState;

/// A notebook bound to a kernel.
#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub file: FileId,
    pub name: String,
    pub kind: String,
    pub kernel: KernelId,
}

/// The kernels and sessions of this server.
#[derive(Clone)]
pub struct Kernels {
    kernels: Arc<DashMap<KernelId, Arc<KernelHandle>>>,
    sessions: Arc<DashMap<String, Session>>,
    /// Serializes session creation per notebook, so one notebook never gets two kernels by a
    /// race, while other notebooks' kernels start meanwhile (a kernel takes seconds to start).
    starting: Arc<KeyedLocks<FileId>>,
    runtime_dir: PathBuf,
    /// The runtime directory is ours alone to remove at shutdown.
    temporary_runtime_dir: bool,
    account: Option<Account>,
    /// The space (its root directory) each kernel was started in.
    spaces: Arc<DashMap<KernelId, PathBuf>>,
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

    pub fn get(&self, id: &KernelId) -> Option<Arc<KernelHandle>> {
        self.kernels.get(id).map(|k| k.clone())
    }

    /// Every kernel.
    pub fn all(&self) -> Vec<Arc<KernelHandle>> {
        self.kernels.iter().map(|k| k.clone()).collect()
    }

    /// Whether a kernel was started in the space whose root is `root`.
    pub fn started_in(&self, id: &KernelId, root: &Path) -> bool {
        self.spaces
            .get(id)
            .is_some_and(|started| started.as_path() == root)
    }

    /// The kernel of the session bound to this notebook, if any.
    pub fn for_file(&self, file: FileId) -> Option<Arc<KernelHandle>> {
        self.get(&self.session_of(file)?.kernel)
    }

    /// Every session.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.iter().map(|s| s.clone()).collect()
    }

    pub fn session(&self, id: &str) -> Option<Session> {
        self.sessions.get(id).map(|s| s.clone())
    }

    /// The session bound to this notebook, if any.
    pub fn session_of(&self, file: FileId) -> Option<Session> {
        self.sessions
            .iter()
            .find(|s| s.file == file)
            .map(|s| s.clone())
    }

    /// Adds a session, or changes it.
    pub fn put_session(&self, session: Session) {
        self.sessions.insert(session.id.clone(), session);
    }

    /// Forgets a session (its kernel is left alone).
    pub fn forget_session(&self, id: &str) -> Option<Session> {
        self.sessions.remove(id).map(|(_, session)| session)
    }

    /// Ends a session, and its kernel if no other session uses it.
    pub async fn end_session(&self, id: &str) -> Option<Session> {
        let session = self.forget_session(id)?;
        self.stop_if_unused(&session.kernel).await;
        Some(session)
    }

    /// Stops a kernel no session uses any more.
    pub async fn stop_if_unused(&self, id: &KernelId) {
        if !self.sessions.iter().any(|s| s.kernel == *id) {
            self.remove_kernel(id).await;
        }
    }

    /// Holds the start of this notebook's kernel (and its session's creation): one notebook
    /// never gets two kernels by a race, and other notebooks' kernels start meanwhile.
    pub async fn starting(&self, file: FileId) -> KeyGuard<'_, FileId> {
        self.starting.lock(file).await
    }

    /// Starts a kernel in a space: as its owner, in `cwd`.
    pub async fn start(
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
        self.kernels.insert(kernel.id().clone(), kernel.clone());
        self.spaces
            .insert(kernel.id().clone(), space.root().to_path_buf());
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
        let _starting = self.starting(file).await;
        if let Some(kernel) = self.for_file(file) {
            return Ok(kernel);
        }
        let store_path = file_path(state, file)?;
        let space = state.spaces.space_of(&store_path)?;
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
            kernel: kernel.id().clone(),
        };
        self.put_session(session);
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

    pub async fn remove_kernel(&self, id: &KernelId) -> bool {
        let Some((_, kernel)) = self.kernels.remove(id) else {
            return false;
        };
        self.spaces.remove(id);
        self.sessions.retain(|_, s| s.kernel != *id);
        kernel.shutdown().await;
        true
    }
}

/// Every installed kernelspec: the configured directories first, then Jupyter's.
pub fn all_specs(state: &AppState) -> Vec<KernelSpec> {
    let mut dirs = state.config.kernel_dirs.clone();
    dirs.extend(kernelspec::data_dirs());
    kernelspec::find_all(&dirs)
}

pub fn find_spec(state: &AppState, name: &str) -> ApiResult<KernelSpec> {
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
pub fn file_path(state: &AppState, file: FileId) -> ApiResult<String> {
    state
        .store
        .path_for_id(state.spaces.store_root(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(|| ApiError::not_found("the notebook no longer exists"))
}

/// The directory holding a notebook: the kernel's working directory.
pub fn notebook_dir(space: &Space, api_path: &str) -> ApiResult<PathBuf> {
    let path = space.resolve(api_path)?;
    Ok(path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| space.root().to_path_buf()))
}

/// Shows the kernel in the notebook's room, if the room is open.
pub async fn detach(state: &AppState, file: FileId, kernel: &KernelId) {
    for room in state.rooms.of_file(file) {
        let kernel = kernel.clone();
        let _ = room.send(RoomInput::DetachKernel { kernel }).await;
    }
}

pub async fn attach(state: &AppState, file: FileId, kernel: &Arc<KernelHandle>) {
    for room in state.rooms.of_file(file) {
        let kernel: Arc<dyn Kernel> = kernel.clone();
        let _ = room.send(RoomInput::AttachKernel { kernel }).await;
    }
}

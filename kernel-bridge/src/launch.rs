//! Starting a kernel process: its connection file, its account, its environment.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use jupyter_protocol::connection_info::Transport;
use jupyter_protocol::ConnectionInfo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::kernelspec::KernelSpec;
use crate::KernelError;

/// The local account a kernel runs as (when the server runs as root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    /// Looks a local account up by name, with its supplementary groups.
    pub fn lookup(name: &str) -> Result<Account, KernelError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| KernelError::Launch(format!("cannot look up account {name}: {e}")))?
            .ok_or_else(|| KernelError::Launch(format!("no local account named {name}")))?;
        let cname = std::ffi::CString::new(name)
            .map_err(|_| KernelError::Launch("account name with a NUL byte".into()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| KernelError::Launch(format!("cannot list the groups of {name}: {e}")))?;
        Ok(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
            home: user.dir,
            shell: user.shell,
        })
    }
}

/// How the kernel and the server talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Unix sockets in the kernel's private directory: nobody else can listen in.
    Ipc,
    /// Loopback TCP: any local user could connect (messages are still signed).
    Tcp,
}

pub struct LaunchOptions<'a> {
    pub spec: &'a KernelSpec,
    /// The kernel's working directory: the notebook's directory.
    pub cwd: &'a Path,
    /// Run as this account instead of the server's own.
    pub account: Option<&'a Account>,
    /// Where the kernel's private directory is made (must be traversable by `account`).
    pub runtime_dir: &'a Path,
    pub transport: TransportKind,
    /// Extra environment (for example `JPY_SESSION_NAME`).
    pub env: Vec<(String, String)>,
}

/// A started kernel process and how to reach it.
pub struct Launched {
    pub child: Child,
    pub pid: i32,
    pub info: ConnectionInfo,
    /// The kernel's private directory (connection file, ipc sockets); removed on drop.
    pub dir: PrivateDir,
}

/// A directory removed when dropped.
pub struct PrivateDir(pub PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `base` (0711: others may pass through to their own kernel's directory, not list it).
pub fn prepare_runtime_base(base: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(base)?;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711))
}

/// A new runtime base under the system's temporary directory, for kernels running as other
/// accounts (which cannot pass through the server's private state directory). Its name is
/// random and it is created, never reused, so nobody can prepare it in advance.
pub fn fresh_runtime_base() -> std::io::Result<PathBuf> {
    let name = format!("quire-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let base = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new().mode(0o711).create(&base)?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711))?;
    Ok(base)
}

fn random_key() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    hex::encode(key)
}

pub async fn launch(opts: LaunchOptions<'_>) -> Result<Launched, KernelError> {
    let io = |what: &str, e: std::io::Error| KernelError::Launch(format!("{what}: {e}"));
    let short = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let dir_path = opts.runtime_dir.join(format!("k-{short}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir_path)
        .map_err(|e| io(&format!("cannot create {}", dir_path.display()), e))?;
    let dir = PrivateDir(dir_path.clone());
    let chown = |path: &Path| -> Result<(), KernelError> {
        if let Some(account) = opts.account {
            std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid)).map_err(|e| {
                io(
                    &format!("cannot hand {} to {}", path.display(), account.name),
                    e,
                )
            })?;
        }
        Ok(())
    };
    chown(&dir_path)?;
    let ip = "127.0.0.1".parse().expect("an address");
    let (info, listeners) = match opts.transport {
        TransportKind::Ipc => (
            ConnectionInfo {
                transport: Transport::IPC,
                ip: dir_path.join("s").to_string_lossy().into_owned(),
                stdin_port: 1,
                control_port: 2,
                hb_port: 3,
                shell_port: 4,
                iopub_port: 5,
                signature_scheme: "hmac-sha256".into(),
                key: random_key(),
                kernel_name: Some(opts.spec.name.clone()),
            },
            Vec::new(),
        ),
        TransportKind::Tcp => {
            let (ports, listeners) = jupyter_zmq_client::peek_ports_with_listeners(ip, 5)
                .await
                .map_err(|e| KernelError::Launch(format!("cannot reserve ports: {e}")))?;
            (
                ConnectionInfo {
                    transport: Transport::TCP,
                    ip: ip.to_string(),
                    stdin_port: ports[0],
                    control_port: ports[1],
                    hb_port: ports[2],
                    shell_port: ports[3],
                    iopub_port: ports[4],
                    signature_scheme: "hmac-sha256".into(),
                    key: random_key(),
                    kernel_name: Some(opts.spec.name.clone()),
                },
                listeners,
            )
        }
    };
    let connection_file = dir_path.join("connection.json");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&connection_file)
            .map_err(|e| io("cannot create the connection file", e))?;
        let text = serde_json::to_vec_pretty(&info).expect("connection info serializes");
        file.write_all(&text)
            .and_then(|_| file.sync_all())
            .map_err(|e| io("cannot write the connection file", e))?;
    }
    chown(&connection_file)?;

    let argv = opts.spec.command_line(&connection_file);
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(opts.cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in environment(&opts) {
        command.env(key, value);
    }
    if let Some(account) = opts.account {
        let (uid, gid) = (account.uid, account.gid);
        let groups: Vec<libc::gid_t> = account.groups.clone();
        // SAFETY: between fork and exec only async-signal-safe calls are made (setgroups,
        // setgid, setuid), on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| io(&format!("cannot start {}", argv[0]), e))?;
    drop(listeners);
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let name = opts.spec.name.clone();
    for (label, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        let name = name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(kernel = %name, pid, "{label}: {line}");
            }
        });
    }
    tracing::info!(kernel = %opts.spec.name, pid, cwd = %opts.cwd.display(), "kernel started");
    Ok(Launched {
        child,
        pid,
        info,
        dir,
    })
}

/// A clean environment: the essentials of a login, the kernelspec's own variables, and ours.
fn environment(opts: &LaunchOptions<'_>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let inherit = |k: &str| std::env::var(k).ok();
    match opts.account {
        Some(account) => {
            env.push(("HOME".into(), account.home.to_string_lossy().into_owned()));
            env.push(("USER".into(), account.name.clone()));
            env.push(("LOGNAME".into(), account.name.clone()));
            env.push(("SHELL".into(), account.shell.to_string_lossy().into_owned()));
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        None => {
            for key in ["HOME", "USER", "LOGNAME", "SHELL"] {
                if let Some(v) = inherit(key) {
                    env.push((key.into(), v));
                }
            }
            env.push((
                "PATH".into(),
                inherit("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            ));
        }
    }
    env.push((
        "LANG".into(),
        inherit("LANG").unwrap_or_else(|| "C.UTF-8".into()),
    ));
    for key in ["TZ", "LC_ALL"] {
        if let Some(v) = inherit(key) {
            env.push((key.into(), v));
        }
    }
    // ipykernel (and other kernels following jupyter_client) exit when this process is gone,
    // even if it was killed without a chance to stop them.
    env.push(("JPY_PARENT_PID".into(), std::process::id().to_string()));
    for (k, v) in &opts.spec.env {
        env.push((k.clone(), v.clone()));
    }
    env.extend(opts.env.iter().cloned());
    env
}

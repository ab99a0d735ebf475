//! Configuration: one struct, filled from the command line, `QUIRE_*` environment variables and
//! an optional TOML file, in that order of precedence.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use collab::RoomConfig;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "quire",
    version,
    about = "Real-time collaboration server for Jupyter notebooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Serve the notebooks under DIR (default: the current directory).
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// The folder whose notebooks to serve.
    #[arg(env = "QUIRE_ROOT")]
    pub dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "QUIRE_BIND")]
    pub bind: Option<String>,
    /// The access token; a random one is made and printed when absent. On the command line
    /// every local account can read it (ps, /proc): prefer QUIRE_TOKEN or the config file.
    #[arg(long, env = "QUIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The token came from `--token` (not from QUIRE_TOKEN): set by `main` from clap's matches.
    #[arg(skip)]
    pub token_on_command_line: bool,
    /// Where Quire keeps its database (file ids, edit history).
    #[arg(long, env = "QUIRE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not open a browser.
    #[arg(long, env = "QUIRE_NO_BROWSER")]
    pub no_browser: bool,
    /// Multi-user mode (as root): people log in with their local account through PAM.
    #[arg(long, env = "QUIRE_MULTI_USER")]
    pub multi_user: bool,
    /// A TOML file with any of: root, bind, token, state_dir, no_browser, room_linger_secs,
    /// autosave_delay_ms, autosave_max_delay_ms, compact_min_bytes, max_frame_bytes,
    /// max_output_bytes, default_kernel, kernel_user, kernel_transport, kernel_dirs, multi_user,
    /// pam_service, header_read_timeout_secs, max_connections_per_address.
    #[arg(long, env = "QUIRE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    root: Option<PathBuf>,
    bind: Option<String>,
    token: Option<String>,
    state_dir: Option<PathBuf>,
    no_browser: Option<bool>,
    room_linger_secs: Option<u64>,
    autosave_delay_ms: Option<u64>,
    autosave_max_delay_ms: Option<u64>,
    compact_min_bytes: Option<u64>,
    max_frame_bytes: Option<usize>,
    max_output_bytes: Option<usize>,
    default_kernel: Option<String>,
    kernel_user: Option<String>,
    kernel_transport: Option<String>,
    kernel_dirs: Option<Vec<PathBuf>>,
    multi_user: Option<bool>,
    pam_service: Option<String>,
    header_read_timeout_secs: Option<u64>,
    max_connections_per_address: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    pub bind: String,
    pub token: Option<String>,
    pub state_dir: PathBuf,
    pub open_browser: bool,
    pub room: RoomConfig,
    /// The largest websocket frame accepted; a 12 MB notebook's full sync must fit.
    pub max_frame_bytes: usize,
    /// The kernelspec started for a notebook that asks for none (`python3`).
    pub default_kernel: String,
    /// When Quire runs as root: the local account kernels run as.
    pub kernel_user: Option<String>,
    pub kernel_transport: kernel_bridge::TransportKind,
    /// Searched for kernelspecs before Jupyter's own directories (each holds `kernels/NAME`).
    pub kernel_dirs: Vec<PathBuf>,
    /// People log in with their local accounts (PAM service `pam_service`).
    pub multi_user: bool,
    pub pam_service: String,
    /// A connection must send a whole request head within this time (idle kept-alive
    /// connections are closed after it too).
    pub header_read_timeout: Duration,
    /// Open connections (websockets included) one address may hold; 0: no limit.
    pub max_connections_per_address: usize,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8888";
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("quire");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/quire"),
        None => PathBuf::from(".quire-state"),
    }
}

/// Tokens shorter than this are warned about.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A config file is refused when another account owns it or every account may change it
/// (they would choose how Quire runs: as root in multi-user mode) or, if it holds the token,
/// when group or others may read it: as ssh does with keys, a careful administrator would
/// rather be stopped than run with a token others can read.
fn check_config_file_is_private(path: &std::path::Path, file: &FileConfig) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mode = meta.mode() & 0o7777;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        anyhow::bail!(
            "the config file {} belongs to uid {}, who could change how Quire runs: it must \
             belong to you (uid {me}) or to root",
            path.display(),
            meta.uid()
        );
    }
    // (Group-writable is left alone: with a umask of 002 the group is often one's own.)
    if mode & 0o002 != 0 {
        anyhow::bail!(
            "every account can change the config file {} (mode {mode:o}), and with it how \
             Quire runs: make it writable by its owner only (chmod go-w {})",
            path.display(),
            path.display()
        );
    }
    if file.token.as_deref().is_some_and(|t| !t.is_empty()) && mode & 0o044 != 0 {
        anyhow::bail!(
            "the config file {} holds the token, and other accounts can read it (mode {mode:o}): \
             make it private (chmod 600 {}), or pass the token in QUIRE_TOKEN",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

impl Config {
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                let file = toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                check_config_file_is_private(path, &file)?;
                file
            }
            None => FileConfig::default(),
        };
        let multi_user = args.multi_user || file.multi_user.unwrap_or(false);
        if args.token_on_command_line {
            let who = if multi_user {
                "is this server's administrator"
            } else {
                "can open your notebooks and run code as you"
            };
            tracing::warn!(
                "the token given with --token can be read by every local account (ps, \
                 /proc/PID/cmdline), and whoever reads it {who}: pass it in the QUIRE_TOKEN \
                 environment variable instead, or as `token` in a config file only you can read \
                 (chmod 600)"
            );
        }
        if let Some(token) = args.token.as_deref().or(file.token.as_deref()) {
            if !token.is_empty() && token.chars().count() < MIN_TOKEN_CHARS {
                tracing::warn!(
                    "the token is only {} characters long: a short token can be guessed (wrong \
                     tokens are throttled, but the right one is never refused); use at least \
                     {MIN_TOKEN_CHARS} random characters, or leave it out and Quire makes one",
                    token.chars().count()
                );
            }
        }
        let mut room = RoomConfig::default();
        if let Some(secs) = file.room_linger_secs {
            room.linger = Duration::from_secs(secs);
        }
        if let Some(ms) = file.autosave_delay_ms {
            room.autosave_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = file.autosave_max_delay_ms {
            room.autosave_max_delay = Duration::from_millis(ms);
        }
        if let Some(bytes) = file.compact_min_bytes {
            room.compact_min_bytes = bytes;
        }
        if let Some(bytes) = file.max_output_bytes {
            room.max_output_bytes = bytes;
        }
        let kernel_transport = match file.kernel_transport.as_deref() {
            None | Some("ipc") => kernel_bridge::TransportKind::Ipc,
            Some("tcp") => kernel_bridge::TransportKind::Tcp,
            Some(other) => {
                anyhow::bail!("kernel_transport must be \"ipc\" or \"tcp\", not {other:?}")
            }
        };
        let header_read_timeout_secs = file
            .header_read_timeout_secs
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_SECS);
        if header_read_timeout_secs == 0 {
            anyhow::bail!("header_read_timeout_secs must be at least 1 (seconds a client has to send a request's headers)");
        }
        Ok(Config {
            root: args.dir.or(file.root).unwrap_or_else(|| PathBuf::from(".")),
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or_else(|| DEFAULT_BIND.to_string()),
            token: args.token.or(file.token).filter(|t| !t.is_empty()),
            state_dir: args
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(default_state_dir),
            open_browser: !(args.no_browser || file.no_browser.unwrap_or(false)),
            room,
            max_frame_bytes: file.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES),
            default_kernel: file.default_kernel.unwrap_or_else(|| "python3".into()),
            kernel_user: file.kernel_user.filter(|u| !u.is_empty()),
            kernel_transport,
            kernel_dirs: file.kernel_dirs.unwrap_or_default(),
            multi_user,
            pam_service: file.pam_service.unwrap_or_else(|| "quire".into()),
            header_read_timeout: Duration::from_secs(header_read_timeout_secs),
            max_connections_per_address: file
                .max_connections_per_address
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
        })
    }
}

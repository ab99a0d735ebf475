//! Jupyter kernels for Quire: finding them, starting them (as a given local account), talking
//! ZeroMQ to them, and turning what they publish into output events tagged with the run — and so
//! the cell — that asked for them.
//!
//! - [`kernelspec`]: kernelspec discovery, the Jupyter way.
//! - [`launch`]: the process: private runtime directory, connection file (0600, created
//!   exclusively), ipc transport, its own process group, the notebook's directory as working
//!   directory, a clean environment, and uid/gid/groups when the server runs as root.
//! - [`wire`]: the ZeroMQ client behind our [`wire::KernelWire`] trait.
//! - [`kernel`]: one task per kernel owning its queue and msg_id → run routing; it implements
//!   [`collab::execution::Kernel`], the interface rooms use.

pub mod kernel;
pub mod kernelspec;
pub mod launch;
pub mod wire;

pub use kernel::{KernelHandle, KernelOptions};
pub use kernelspec::KernelSpec;
pub use launch::{Account, TransportKind};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot start the kernel: {0}")]
    Launch(String),
    #[error("cannot connect to the kernel: {0}")]
    Connect(String),
    #[error("the kernel did not answer: {0}")]
    Protocol(String),
    #[error("the kernel exited during startup ({0})")]
    Exited(String),
    #[error("the kernel was shut down")]
    ShutDown,
}

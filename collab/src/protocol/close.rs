//! Why the server closes a room's websocket: the close codes clients act on.
//!
//! JupyterLab's provider gives the document up on 4400, 4404 and 4500, shows a dialog on 1003,
//! and reconnects on anything else; the browser app does the same and says why on a 44xx.

// ts-rs's derive reads the discriminants below with `i64::from_str_radix(_, 10)`.
#![cfg_attr(test, allow(clippy::from_str_radix_10))]

/// A websocket close code the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(repr(enum)))]
#[repr(u16)]
pub enum CloseCode {
    /// The room unloaded, or the server is shutting down: reconnect.
    GoingAway = 1001,
    /// The client's session cannot continue (a stale `sessionId`); the reason is JSON
    /// `{"reason", "sessionId", "reloadable"}`.
    Session = 1003,
    /// A frame above the size limit.
    TooLarge = 1009,
    /// The server cannot store edits right now: reconnect and resync.
    ServerError = 1011,
    /// The client fell behind (its queue filled), or the room is not available yet: reconnect.
    TryAgain = 1013,
    /// A malformed frame or message: the reason names what is wrong.
    BadRequest = 4400,
    /// Access to this notebook was revoked (or the person logged out).
    Revoked = 4403,
    /// No such file.
    NotFound = 4404,
    /// Too many refused updates: reload to get the notebook as it is.
    TooManyRefusals = 4429,
    /// The notebook cannot be loaded (not a notebook, unreadable history...).
    LoadFailure = 4500,
}

impl CloseCode {
    pub const fn code(self) -> u16 {
        self as u16
    }
}

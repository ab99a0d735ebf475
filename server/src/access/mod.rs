//! Who is asking, and what they may do: the token (the administrator), people's logins with
//! their accounts (PAM), live-share guests, throttling of guesses, and the access policy
//! ([`policy::rights`], a pure function of what is stored).
//!
//! Uses `storage`, `fs` and `http`; never `rooms` or `api`.

pub mod accounts;
pub mod auth;
pub mod login;
pub mod pam;
pub mod policy;
pub mod principal;
pub mod throttle;

use std::sync::Arc;

use collab::Identity;

use crate::fs::space::Spaces;
use crate::storage::Store;

/// What deciding who asks needs: the token, the store of logins, links and grants, the spaces,
/// PAM, and the throttles.
#[derive(Clone)]
pub struct Access {
    pub store: Store,
    pub spaces: Spaces,
    pub token: Arc<str>,
    /// The administrator's identity (the token holder's).
    pub identity: Identity,
    /// Multi-user mode: PAM.
    pub pam: Option<pam::Pam>,
    /// Failed logins, by account and by address.
    pub throttle: Arc<throttle::Throttle>,
    /// Wrong tokens per address.
    pub token_failures: Arc<throttle::FailureBucket>,
}

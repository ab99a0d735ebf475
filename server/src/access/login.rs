//! Multi-user mode: people log in with their local account (PAM); failures are throttled per
//! account and per address; a login is a cookie, stored hashed, that lasts while the account's
//! password entry stays as it was.
//!
//! A logged-in person works in their home directory with their own rights (see `fs::space`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use collab::{Identity, UserName};

use super::accounts::identity_of;
use super::pam::LoginError;
use super::principal::Guest;
use super::Access;
use crate::http::cookies::{cookie, session_cookie};
use crate::http::error::ApiError;
use crate::http::headers::too_many_because;
use crate::storage::{random_secret, SESSION_LIFETIME_SECS};

/// The cookie of a person's login.
pub const USER_COOKIE: &str = "quire-user";

/// A person logged in with their local account.
#[derive(Clone, Debug)]
pub struct User {
    pub username: UserName,
    pub uid: u32,
    pub identity: Identity,
    /// Which login this is (the hash of its cookie): logging out closes its sockets.
    pub login: String,
    /// A live-share link they opened while logged in: it adds to what they may do with its
    /// notebook, under their own name.
    pub link: Option<Guest>,
}

/// The logged-in person behind a request, in multi-user mode.
pub fn user_of(access: &Access, headers: &HeaderMap) -> Option<User> {
    access.pam.as_ref()?;
    let value = cookie(headers, USER_COOKIE)?;
    let login = collab::content_hash(value.as_bytes());
    let username = live_login(access, &login)?;
    let account = nix::unistd::User::from_name(username.as_str()).ok()??;
    Some(User {
        username,
        uid: account.uid.as_raw(),
        identity: identity_of(&account),
        login,
        link: None,
    })
}

/// Whose a login is, while it lasts: not expired, not ended, and made with the account's
/// password as it is now.
pub fn live_login(access: &Access, login: &str) -> Option<UserName> {
    let (username, mark) = access.store.user_session(login).ok()??;
    // (Accounts with no shadow entry we can read, LDAP ones for instance, have no mark.)
    (super::pam::password_mark(username.as_str()).unwrap_or_default() == mark).then_some(username)
}

/// The answer to an attempt made too soon after failures.
pub fn too_many(wait: Duration) -> Response {
    too_many_because(wait, "too many failed attempts")
}

/// Checks an account's password (throttled, through PAM) and makes a login; its cookie. A
/// refusal is the whole answer to send.
pub async fn password_login(
    access: &Access,
    address: &str,
    username: &str,
    password: &str,
) -> Result<(nix::unistd::User, HeaderValue), Response> {
    let Some(pam) = access.pam.clone() else {
        return Err(
            ApiError::not_found("this server has no accounts: use its token").into_response(),
        );
    };
    let account = username.trim().to_string();
    if let Some(wait) = access.throttle.check(&account, address) {
        return Err(too_many(wait));
    }
    access.throttle.failed(&account, address);
    match pam.check(&account, password).await {
        Ok(user) => {
            access.throttle.succeeded(&account, address);
            let value = random_secret();
            let mark = super::pam::password_mark(&user.name).unwrap_or_default();
            access
                .store
                .add_user_session(&value, &user.name, &mark)
                .map_err(|e| ApiError::internal("cannot store the login", e).into_response())?;
            access
                .store
                .audit(&user.name, "login", "server", &format!("from {address}"));
            let cookie =
                session_cookie(USER_COOKIE, &value, SESSION_LIFETIME_SECS).ok_or_else(|| {
                    ApiError::internal("cannot make the login cookie", "not a header value")
                        .into_response()
                })?;
            Ok((user, cookie))
        }
        Err(LoginError::Unavailable(why)) => {
            tracing::error!("PAM is unavailable: {why}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "login is unavailable right now",
            )
            .into_response())
        }
        Err(e) => {
            access.store.audit(
                &account,
                "login_failed",
                "server",
                &format!("from {address}: {e}"),
            );
            Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string()).into_response())
        }
    }
}

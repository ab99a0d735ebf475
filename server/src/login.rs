//! Multi-user mode: people log in with their local account (PAM); failures are throttled per
//! account and per address; a login is a cookie, stored hashed.
//!
//! In this release a logged-in person is known to the server (`/api/me`) and nothing more:
//! their notebooks (home directories, file access with their rights) and kernels arrive in the
//! next step of multi-user mode.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use collab::Identity;
use dashmap::DashMap;
use rand::RngCore;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::json;

use crate::auth::cookie;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::pam::LoginError;
use crate::store::{now_secs, Store};
use crate::AppState;

pub const USER_COOKIE: &str = "quire-user";
const SESSION_LIFETIME_SECS: i64 = 7 * 24 * 3600;

/// A person logged in with their local account.
#[derive(Clone, Debug)]
pub struct User {
    pub username: String,
    pub uid: u32,
    pub identity: Identity,
}

/// Failed logins, by account and by address: after a few, each further attempt must wait
/// longer (doubling, at most a minute). An account's failures do not slow other accounts down.
#[derive(Default)]
pub struct Throttle {
    failures: DashMap<String, (u32, Instant)>,
}

const FREE_FAILURES_PER_ACCOUNT: u32 = 3;
const FREE_FAILURES_PER_ADDRESS: u32 = 20;

impl Throttle {
    fn wait(&self, key: &str, free: u32) -> Option<Duration> {
        let entry = self.failures.get(key)?;
        let (count, last) = *entry;
        if count < free {
            return None;
        }
        let delay = Duration::from_secs((1u64 << (count - free).min(6)).min(60));
        let ready = last + delay;
        let now = Instant::now();
        (ready > now).then(|| ready - now)
    }

    /// How long this attempt must wait, if at all.
    pub fn check(&self, account: &str, address: &str) -> Option<Duration> {
        let by_account = self.wait(&format!("user:{account}"), FREE_FAILURES_PER_ACCOUNT);
        let by_address = self.wait(&format!("addr:{address}"), FREE_FAILURES_PER_ADDRESS);
        by_account.max(by_address)
    }

    pub fn failed(&self, account: &str, address: &str) {
        for key in [format!("user:{account}"), format!("addr:{address}")] {
            let mut entry = self.failures.entry(key).or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, account: &str) {
        self.failures.remove(&format!("user:{account}"));
    }
}

impl Store {
    pub fn add_user_session(&self, cookie: &str, username: &str) -> rusqlite::Result<()> {
        let db = self.db();
        db.execute(
            "DELETE FROM user_sessions WHERE created_at < ?1",
            [now_secs() - SESSION_LIFETIME_SECS],
        )?;
        db.execute(
            "INSERT INTO user_sessions (cookie_hash, username, created_at) VALUES (?1, ?2, ?3)",
            params![
                collab::content_hash(cookie.as_bytes()),
                username,
                now_secs()
            ],
        )?;
        Ok(())
    }

    pub fn user_session(&self, cookie: &str) -> rusqlite::Result<Option<String>> {
        self.db()
            .query_row(
                "SELECT username FROM user_sessions WHERE cookie_hash = ?1 AND created_at >= ?2",
                params![
                    collab::content_hash(cookie.as_bytes()),
                    now_secs() - SESSION_LIFETIME_SECS
                ],
                |row| row.get(0),
            )
            .optional()
    }

    pub fn end_user_session(&self, cookie: &str) -> rusqlite::Result<()> {
        self.db().execute(
            "DELETE FROM user_sessions WHERE cookie_hash = ?1",
            [collab::content_hash(cookie.as_bytes())],
        )?;
        Ok(())
    }
}

fn identity_of(account: &nix::unistd::User) -> Identity {
    let mut identity = Identity::from_username(&account.name);
    let gecos = account.gecos.to_string_lossy();
    if let Some(full) = gecos.split(',').next().filter(|n| !n.trim().is_empty()) {
        identity.display_name = full.trim().to_string();
    }
    identity
}

/// The logged-in person behind a request, in multi-user mode.
pub fn user_of(state: &AppState, headers: &HeaderMap) -> Option<User> {
    state.pam.as_ref()?;
    let username = state
        .store
        .user_session(&cookie(headers, USER_COOKIE)?)
        .ok()??;
    let account = nix::unistd::User::from_name(&username).ok()??;
    Some(User {
        username,
        uid: account.uid.as_raw(),
        identity: identity_of(&account),
    })
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Credentials>,
) -> ApiResult<Response> {
    let Some(pam) = state.pam.clone() else {
        return Err(ApiError::not_found(
            "this server has no accounts: use its token",
        ));
    };
    if !crate::auth::same_site(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused",
        ));
    }
    let address = peer.ip().to_string();
    let account = body.username.trim().to_string();
    if let Some(wait) = state.throttle.check(&account, &address) {
        let secs = wait.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins: try again in {secs} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(response);
    }
    match pam.check(&account, &body.password).await {
        Ok(user) => {
            state.throttle.succeeded(&account);
            let mut secret = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            let value = hex::encode(secret);
            state
                .store
                .add_user_session(&value, &user.name)
                .map_err(|e| ApiError::internal("cannot store the login", e))?;
            state
                .store
                .audit(&user.name, "login", "server", &format!("from {address}"));
            let identity = identity_of(&user);
            let mut response = Json(json!({"identity": identity})).into_response();
            let cookie = format!("{USER_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_LIFETIME_SECS}");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            Ok(response)
        }
        Err(LoginError::Unavailable(why)) => {
            tracing::error!("PAM is unavailable: {why}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "login is unavailable right now",
            ))
        }
        Err(e) => {
            state.throttle.failed(&account, &address);
            state.store.audit(
                &account,
                "login_failed",
                "server",
                &format!("from {address}: {e}"),
            );
            Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string()))
        }
    }
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !crate::auth::same_site(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused",
        ));
    }
    if let Some(value) = cookie(&headers, USER_COOKIE) {
        state
            .store
            .end_user_session(&value)
            .map_err(|e| ApiError::internal("cannot end the login", e))?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("quire-user=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

//! Multi-user mode: people log in with their local account (PAM); failures are throttled per
//! account and per address; a login is a cookie, stored hashed.
//!
//! A logged-in person works in their home directory with their own rights (see `space`). Both
//! the JSON API (`POST /api/login`) and a plain form (`GET/POST /login?next=…`, which also takes
//! the token in single-user mode) log in; `next` only ever leads to a path on this server.

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

use crate::access::auth::cookie;
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::access::pam::LoginError;
use crate::storage::{now_secs, Store};
use crate::AppState;

pub const USER_COOKIE: &str = "quire-user";
const SESSION_LIFETIME_SECS: i64 = 7 * 24 * 3600;

/// A person logged in with their local account.
#[derive(Clone, Debug)]
pub struct User {
    pub username: String,
    pub uid: u32,
    pub identity: Identity,
    /// Which login this is (the hash of its cookie): logging out closes its sockets.
    pub login: String,
    /// A live-share link they opened while logged in: it adds to what they may do with its
    /// notebook, under their own name.
    pub link: Option<crate::api::sharing::Guest>,
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

    /// Counts an attempt against an account and an address. Password attempts are counted when
    /// they start (and forgiven if they succeed), so a burst of parallel guesses cannot all slip
    /// through before the first failure is known.
    pub fn failed(&self, account: &str, address: &str) {
        self.count(format!("user:{account}"));
        self.count(format!("addr:{address}"));
    }

    fn count(&self, key: String) {
        // Forget old failures now and then: the map is keyed by whatever names are sent.
        if self.failures.len() > 10_000 {
            let hour_ago = Instant::now() - Duration::from_secs(3600);
            self.failures.retain(|_, (_, last)| *last > hour_ago);
        }
        let mut entry = self.failures.entry(key).or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now();
    }

    /// A password attempt succeeded: the account starts afresh, and the address is forgiven
    /// the attempt counted when it started.
    pub fn succeeded(&self, account: &str, address: &str) {
        self.failures.remove(&format!("user:{account}"));
        if let Some(mut entry) = self.failures.get_mut(&format!("addr:{address}")) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

impl Store {
    /// Remembers a login: its cookie (hashed), whose it is, and the mark of their password
    /// entry as it was (a changed password ends the login).
    pub fn add_user_session(
        &self,
        cookie: &str,
        username: &str,
        mark: &str,
    ) -> rusqlite::Result<()> {
        let db = self.db();
        db.execute(
            "DELETE FROM user_sessions WHERE created_at < ?1",
            [now_secs() - SESSION_LIFETIME_SECS],
        )?;
        db.execute(
            "INSERT INTO user_sessions (cookie_hash, username, created_at, password_mark)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                collab::content_hash(cookie.as_bytes()),
                username,
                now_secs(),
                mark
            ],
        )?;
        Ok(())
    }

    /// The account and password mark of a live login, by the hash of its cookie.
    pub fn user_session(&self, cookie_hash: &str) -> rusqlite::Result<Option<(String, String)>> {
        self.db()
            .query_row(
                "SELECT username, password_mark FROM user_sessions
                 WHERE cookie_hash = ?1 AND created_at >= ?2",
                params![cookie_hash, now_secs() - SESSION_LIFETIME_SECS],
                |row| Ok((row.get(0)?, row.get(1)?)),
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
    let value = cookie(headers, USER_COOKIE)?;
    let login = collab::content_hash(value.as_bytes());
    let username = live_login(state, &login)?;
    let account = nix::unistd::User::from_name(&username).ok()??;
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
fn live_login(state: &AppState, login: &str) -> Option<String> {
    let (username, mark) = state.store.user_session(login).ok()??;
    // (Accounts with no shadow entry we can read, LDAP ones for instance, have no mark.)
    (crate::access::pam::password_mark(&username).unwrap_or_default() == mark).then_some(username)
}

/// Closes the sockets of logins that ended since they were opened (their password changed,
/// their account was locked or removed, they expired); checked every second.
pub async fn end_stale_logins(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for login in state.rooms.logins() {
            if live_login(&state, &login).is_none() {
                state.rooms.close_login(&login).await;
            }
        }
    }
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

/// The answer to an attempt made too soon after failures.
pub fn too_many(wait: Duration) -> Response {
    too_many_because(wait, "too many failed attempts")
}

/// A 429 saying `why`, and when to try again (also as `Retry-After`).
pub fn too_many_because(wait: Duration, why: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("{why}: try again in {secs} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// Checks an account's password (throttled, through PAM) and makes a login; its cookie. A
/// refusal is the whole answer to send.
async fn password_login(
    state: &AppState,
    address: &str,
    username: &str,
    password: &str,
) -> Result<(nix::unistd::User, HeaderValue), Response> {
    let Some(pam) = state.pam.clone() else {
        return Err(
            ApiError::not_found("this server has no accounts: use its token").into_response(),
        );
    };
    let account = username.trim().to_string();
    if let Some(wait) = state.throttle.check(&account, address) {
        return Err(too_many(wait));
    }
    state.throttle.failed(&account, address);
    match pam.check(&account, password).await {
        Ok(user) => {
            state.throttle.succeeded(&account, address);
            let mut secret = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            let value = hex::encode(secret);
            let mark = crate::access::pam::password_mark(&user.name).unwrap_or_default();
            state
                .store
                .add_user_session(&value, &user.name, &mark)
                .map_err(|e| ApiError::internal("cannot store the login", e).into_response())?;
            state
                .store
                .audit(&user.name, "login", "server", &format!("from {address}"));
            let cookie = format!("{USER_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_LIFETIME_SECS}");
            let cookie = HeaderValue::from_str(&cookie).map_err(|e| {
                ApiError::internal("cannot make the login cookie", e).into_response()
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
            state.store.audit(
                &account,
                "login_failed",
                "server",
                &format!("from {address}: {e}"),
            );
            Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string()).into_response())
        }
    }
}

/// `POST /api/login` with `{"username", "password"}`: a login cookie and who this is.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Credentials>,
) -> Response {
    if !crate::access::auth::same_site(&headers) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let address = peer.ip().to_string();
    match password_login(&state, &address, &body.username, &body.password).await {
        Ok((user, cookie)) => {
            let mut response = Json(json!({"identity": identity_of(&user)})).into_response();
            response.headers_mut().append(header::SET_COOKIE, cookie);
            response
        }
        Err(refusal) => refusal,
    }
}

/// Where a `next=` parameter may send someone after logging in: a path on this server, never
/// another site (`//evil`, `https://evil`, `/\evil`, and their percent-encoded forms go to `/`).
pub fn safe_next(next: Option<&str>) -> String {
    fn local_path(s: &str) -> bool {
        s.starts_with('/')
            && !s.starts_with("//")
            && !s.contains('\\')
            && !s.chars().any(char::is_control)
    }
    let Some(next) = next else {
        return "/".to_string();
    };
    // Checked as sent (where a space has no business) and decoded (where `%2F%2F` is `//`).
    let decoded = percent_encoding::percent_decode_str(next).decode_utf8_lossy();
    if local_path(next) && !next.contains(char::is_whitespace) && local_path(&decoded) {
        next.to_string()
    } else {
        "/".to_string()
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /login?next=…`: the login form (an account and password in multi-user mode, the token
/// otherwise); someone already logged in goes straight on to `next`.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    // (A token in a header is not looked at here: this page is no oracle for guessing it.)
    let mut cookies_only = headers.clone();
    cookies_only.remove(header::AUTHORIZATION);
    let logged_in = user_of(&state, &headers).is_some()
        || matches!(
            crate::access::auth::check(&state, &cookies_only, None),
            crate::access::auth::Authenticated::Yes
        );
    if logged_in {
        return see_other(&next, None);
    }
    login_form(&state, &next, None)
}

fn login_form(state: &AppState, next: &str, error: Option<&str>) -> Response {
    let fields = if state.pam.is_some() {
        r#"<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>"#
    } else {
        r#"<label>Token <input name="token" type="password" autocomplete="off" required autofocus></label>"#
    };
    let error = error
        .map(|e| format!("<p role=\"alert\">{}</p>", crate::api::view::escape(e)))
        .unwrap_or_default();
    let page = format!(
        r#"<!doctype html><meta charset="utf-8"><title>Log in — Quire</title>
<form method="post" action="/login">{error}{fields}
<input type="hidden" name="next" value="{}"><button>Log in</button></form>"#,
        crate::api::view::escape(next)
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    (status, axum::response::Html(page)).into_response()
}

fn see_other(next: &str, cookie: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(next) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    next: Option<String>,
}

/// `POST /login` from the form: logs in and goes on to `next` (only ever on this server).
pub async fn login_form_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<LoginForm>,
) -> Response {
    if !crate::access::auth::same_site(&headers) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let next = safe_next(form.next.as_deref());
    if state.pam.is_none() {
        // The right token is never refused; wrong ones are throttled per address.
        let token = form.token.unwrap_or_default();
        if !crate::access::auth::constant_time_eq(token.trim().as_bytes(), state.token.as_bytes()) {
            let now = Instant::now();
            if let Some(wait) = state.token_failures.wait(peer.ip(), now) {
                return crate::access::auth::too_many_wrong_tokens(wait);
            }
            state.token_failures.failed(peer.ip(), now);
            return login_form(&state, &next, Some("that is not this server's token"));
        }
        state.store.audit(
            &state.identity.username,
            "login",
            "server",
            "with the token",
        );
        return see_other(&next, crate::access::auth::login_cookie(&state));
    }
    let address = peer.ip().to_string();
    let username = form.username.unwrap_or_default();
    let password = form.password.unwrap_or_default();
    match password_login(&state, &address, &username, &password).await {
        Ok((_, cookie)) => see_other(&next, Some(cookie)),
        Err(refusal) if refusal.status() == StatusCode::FORBIDDEN => {
            login_form(&state, &next, Some("invalid user name or password"))
        }
        Err(refusal) => refusal,
    }
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !crate::access::auth::same_site(&headers) {
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
        state
            .rooms
            .close_login(&collab::content_hash(value.as_bytes()))
            .await;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("quire-user=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_guesses_is_held_back_before_any_fails() {
        let throttle = Throttle::default();
        // Three attempts in flight at once (counted as they start): the fourth waits.
        for _ in 0..FREE_FAILURES_PER_ACCOUNT {
            assert_eq!(throttle.check("ada", "10.0.0.1"), None);
            throttle.failed("ada", "10.0.0.1");
        }
        assert!(throttle.check("ada", "10.0.0.1").is_some());
        // Other accounts are not slowed down.
        assert_eq!(throttle.check("bob", "10.0.0.2"), None);
        // A success starts the account afresh.
        throttle.succeeded("ada", "10.0.0.1");
        assert_eq!(throttle.check("ada", "10.0.0.1"), None);
    }

    #[test]
    fn next_stays_on_this_server() {
        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "%2F%2Fevil.example",
            "/%2F/evil.example",
            "/\tx",
            "",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?}");
        }
        assert_eq!(safe_next(Some("/notebooks/a b.ipynb")), "/");
        assert_eq!(
            safe_next(Some("/notebooks/a%20b.ipynb")),
            "/notebooks/a%20b.ipynb"
        );
        assert_eq!(safe_next(None), "/");
    }
}

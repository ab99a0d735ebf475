//! Logging in and out: `POST /api/login` (JSON), the `/login?next=…` form (which also takes the
//! token in single-user mode; `next` only ever leads to a path on this server), and
//! `POST /api/logout`, which also closes the sockets opened with the login.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::access::accounts::identity_of;
use crate::access::auth::{
    check, constant_time_eq, token_login, too_many_wrong_tokens, Authenticated,
};
use crate::access::login::{password_login, user_of, USER_COOKIE};
use crate::http::cookies::{cleared_cookie, cookie};
use crate::http::error::{ApiError, ApiResult, JsonBody};
use crate::http::html::escape;
use crate::http::origin::require_same_site;
use crate::AppState;

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

/// `POST /api/login` with `{"username", "password"}`: a login cookie and who this is.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Credentials>,
) -> Response {
    if let Err(refusal) = require_same_site(&headers) {
        return refusal.into_response();
    }
    let address = peer.ip().to_string();
    match password_login(&state.access, &address, &body.username, &body.password).await {
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
    let logged_in = user_of(&state.access, &headers).is_some()
        || matches!(
            check(&state.access, &cookies_only, None),
            Authenticated::Yes
        );
    if logged_in {
        return see_other(&next, None);
    }
    login_form(&state, &next, None)
}

fn login_form(state: &AppState, next: &str, error: Option<&str>) -> Response {
    let fields = if state.access.pam.is_some() {
        r#"<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>"#
    } else {
        r#"<label>Token <input name="token" type="password" autocomplete="off" required autofocus></label>"#
    };
    let error = error
        .map(|e| format!("<p role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let page = format!(
        r#"<!doctype html><meta charset="utf-8"><title>Log in — Quire</title>
<form method="post" action="/login">{error}{fields}
<input type="hidden" name="next" value="{}"><button>Log in</button></form>"#,
        escape(next)
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
    if let Err(refusal) = require_same_site(&headers) {
        return refusal.into_response();
    }
    let next = safe_next(form.next.as_deref());
    let access = &state.access;
    if access.pam.is_none() {
        // The right token is never refused; wrong ones are throttled per address.
        let token = form.token.unwrap_or_default();
        if !constant_time_eq(token.trim().as_bytes(), access.token.as_bytes()) {
            let now = Instant::now();
            if let Some(wait) = access.token_failures.wait(peer.ip(), now) {
                return too_many_wrong_tokens(wait);
            }
            access.token_failures.failed(peer.ip(), now);
            return login_form(&state, &next, Some("that is not this server's token"));
        }
        return see_other(&next, token_login(access));
    }
    let address = peer.ip().to_string();
    let username = form.username.unwrap_or_default();
    let password = form.password.unwrap_or_default();
    match password_login(access, &address, &username, &password).await {
        Ok((_, cookie)) => see_other(&next, Some(cookie)),
        Err(refusal) if refusal.status() == StatusCode::FORBIDDEN => {
            login_form(&state, &next, Some("invalid user name or password"))
        }
        Err(refusal) => refusal,
    }
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    require_same_site(&headers)?;
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
    if let Some(cleared) = cleared_cookie(USER_COOKIE) {
        response.headers_mut().append(header::SET_COOKIE, cleared);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

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

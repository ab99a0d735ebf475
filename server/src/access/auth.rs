//! Jupyter-style token authentication.
//!
//! A request is authenticated by `Authorization: token …`, by `?token=…` (which also sets a login
//! cookie, so the token need appear in a URL only once), or by that cookie. Websockets are checked
//! the same way before the upgrade completes, and must come from our own origin.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use crate::http::error::ApiError;
use crate::api::sharing::Principal;
use crate::fs::space::Space;
use crate::AppState;

pub const COOKIE_NAME: &str = "quire-session";

/// Compares secrets in time independent of where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "token").then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| token.trim().to_string())
}

/// The value of the cookie `name` in a request, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then(|| value.to_string())
        })
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE_NAME)
}

pub enum Authenticated {
    /// By header or cookie.
    Yes,
    /// By `?token=`: answer with a login cookie.
    ByQueryToken,
    No,
}

pub fn check(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Authenticated {
    let token = state.token.as_bytes();
    if header_token(headers).is_some_and(|t| constant_time_eq(t.as_bytes(), token)) {
        return Authenticated::Yes;
    }
    if let Some(cookie) = cookie_value(headers) {
        if state
            .store
            .has_login(
                &collab::content_hash(cookie.as_bytes()),
                &token_fingerprint(state),
            )
            .unwrap_or(false)
        {
            return Authenticated::Yes;
        }
    }
    if query_token(query).is_some_and(|t| constant_time_eq(t.as_bytes(), token)) {
        return Authenticated::ByQueryToken;
    }
    Authenticated::No
}

/// What ties a login to the token it was made with (never the token itself).
fn token_fingerprint(state: &AppState) -> String {
    collab::content_hash(format!("quire-login:{}", state.token).as_bytes())
}

/// A fresh login cookie, remembered (hashed) in the store, valid for 30 days.
pub fn login_cookie(state: &AppState) -> Option<HeaderValue> {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let value = hex::encode(secret);
    state
        .store
        .add_login(
            &collab::content_hash(value.as_bytes()),
            &token_fingerprint(state),
        )
        .map_err(|e| tracing::error!("cannot store a login: {e}"))
        .ok()?;
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000"
    ))
    .ok()
}

/// What a live-share guest may reach: their notebook's session, room and saved content, and
/// who they are. Each handler then checks the notebook is theirs.
fn guest_route(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let readable = path == "/api/me"
        || path.starts_with("/api/contents/")
        || path.starts_with("/api/collaboration/room/")
        || path.starts_with("/view/")
        || path.starts_with("/api/notebooks/");
    (method == Method::GET && readable)
        || (method == Method::PUT && path.starts_with("/api/collaboration/session/"))
}

/// A request made under `/projects/{name}/…`: it works in that project's home.
#[derive(Clone, Debug)]
pub struct ProjectScope(pub String);

/// Middleware for every authenticated route: the token holder is the administrator (every
/// notebook); a person logged in with their account works in their home directory (or a
/// project's, under `/projects/{name}/`); a live-share guest cookie admits its holder to the
/// guest routes of one notebook. The `Principal` and the `Space` go into the request.
pub async fn require_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes_state && !same_site(request.headers()) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let presented =
        header_token(request.headers()).is_some() || query_token(request.uri().query()).is_some();
    let verdict = check(&state, request.headers(), request.uri().query());
    let principal = match verdict {
        Authenticated::Yes | Authenticated::ByQueryToken => Principal::Owner,
        Authenticated::No => {
            let other = who_else(&state, &request);
            if presented {
                // A wrong token. Whoever it may be, a request that is let in by something
                // else (a person's or a guest's cookie) is not refused for it; the rest wait
                // once their address has sent too many (see `limits::FailureBucket`).
                if let Some(ip) = peer_ip(&request) {
                    let now = std::time::Instant::now();
                    if other.is_err() {
                        if let Some(wait) = state.token_failures.wait(ip, now) {
                            return too_many_wrong_tokens(wait);
                        }
                    }
                    state.token_failures.failed(ip, now);
                }
            }
            match other {
                Ok(principal) => principal,
                Err(refusal) => return refusal.into_response(),
            }
        }
    };
    let project = request.extensions().get::<ProjectScope>().cloned();
    let space = match space_for(&state, &principal, project.as_ref()) {
        Ok(space) => space,
        Err(refusal) => return refusal.into_response(),
    };
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(space);
    match verdict {
        Authenticated::ByQueryToken => {
            state.store.audit(
                &state.identity.username,
                "login",
                "server",
                "with the token",
            );
            let mut response = next.run(request).await;
            if let Some(cookie) = login_cookie(&state) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        _ => next.run(request).await,
    }
}

/// The address a request came from.
fn peer_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The answer to a wrong token from an address that sent too many.
pub fn too_many_wrong_tokens(wait: std::time::Duration) -> Response {
    crate::access::login::too_many_because(
        wait,
        "too many wrong tokens from your address (the right token is still accepted)",
    )
}

/// A logged-in person (with the link they opened, if any: opening a link never changes who
/// someone is), or a live-share guest (on the guest routes only).
fn who_else(state: &AppState, request: &Request) -> Result<Principal, ApiError> {
    let guest = crate::api::sharing::guest_cookie(request.headers())
        .and_then(|cookie| state.store.guest(&cookie).ok().flatten());
    if let Some(mut user) = crate::access::login::user_of(state, request.headers()) {
        user.link = guest;
        return Ok(Principal::User(user));
    }
    match guest {
        Some(guest) if guest_route(request.method(), request.uri().path()) => {
            Ok(Principal::Guest(guest))
        }
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a live-share guest may only open the notebook shared with them",
        )),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "authentication required: pass the token, or log in",
        )),
    }
}

/// The files a request works on.
fn space_for(
    state: &AppState,
    principal: &Principal,
    project: Option<&ProjectScope>,
) -> Result<Space, ApiError> {
    if let Some(ProjectScope(name)) = project {
        let member = match principal {
            Principal::Owner => true,
            Principal::User(user) => state.store.is_member(name, &user.username).unwrap_or(false),
            Principal::Guest(_) => false,
        };
        if !member || !state.store.is_project(name).unwrap_or(false) {
            return Err(ApiError::not_found(format!(
                "no project named {name:?} that you are a member of"
            )));
        }
        return home_space(state, name);
    }
    match principal {
        Principal::Owner => Ok(state.admin_space.clone()),
        Principal::User(user) => home_space(state, &user.username),
        Principal::Guest(guest) => {
            let path = state
                .store
                .path_for_id(state.root.path(), guest.file)
                .ok()
                .flatten()
                .ok_or_else(|| ApiError::not_found("the shared notebook no longer exists"))?;
            state.space_of(&path)
        }
    }
}

fn home_space(state: &AppState, name: &str) -> Result<Space, ApiError> {
    let account =
        kernel_bridge::Account::lookup(name).map_err(|e| ApiError::not_found(e.to_string()))?;
    Space::home_of(&state.root, account)
        .map_err(|e| ApiError::internal("cannot open the home directory", e))
}

/// A state-changing request must not come from another site riding on our cookie: browsers
/// say where a request comes from in `Sec-Fetch-Site` and `Origin`. (Clients that are not
/// browsers send neither and authenticate with the token.)
pub fn same_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site") | Some("same-site")) {
        return false;
    }
    origin_allowed(headers)
}

/// A browser's cross-site websocket must not ride on our cookie: the Origin, when sent, must
/// name the host the request was sent to.
pub fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tokens_from_each_place() {
        assert_eq!(query_token(Some("a=1&token=abc%20d")), Some("abc d".into()));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("token s3cret"),
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; quire-session=v"),
        );
        assert_eq!(header_token(&headers), Some("s3cret".into()));
        assert_eq!(cookie_value(&headers), Some("v".into()));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8888"));
        assert!(same_site(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_site(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_site(&headers));
        headers.remove("sec-fetch-site");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_site(&headers));
    }

    #[test]
    fn foreign_origins_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8888"));
        assert!(origin_allowed(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8888"),
        );
        assert!(origin_allowed(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&headers));
    }
}

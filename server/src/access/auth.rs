//! Jupyter-style token authentication.
//!
//! A request is authenticated by `Authorization: token …`, by `?token=…` (which also sets a login
//! cookie, so the token need appear in a URL only once), or by that cookie. Websockets are checked
//! the same way before the upgrade completes, and must come from our own origin.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::login::user_of;
use super::principal::{guest_cookie, Guest, Principal};
use super::Access;
use crate::fs::space::Space;
use crate::http::cookies::{cookie, session_cookie};
use crate::http::error::ApiError;
use crate::http::headers::too_many_because;
use crate::http::origin::same_site;
use crate::storage::{random_secret, LOGIN_LIFETIME_SECS};

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

pub fn check(access: &Access, headers: &HeaderMap, query: Option<&str>) -> Authenticated {
    let token = access.token.as_bytes();
    if header_token(headers).is_some_and(|t| constant_time_eq(t.as_bytes(), token)) {
        return Authenticated::Yes;
    }
    if let Some(cookie) = cookie_value(headers) {
        if access
            .store
            .has_login(
                &collab::content_hash(cookie.as_bytes()),
                &token_fingerprint(access),
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
fn token_fingerprint(access: &Access) -> String {
    collab::content_hash(format!("quire-login:{}", access.token).as_bytes())
}

/// A fresh login cookie, remembered (hashed) in the store, valid for 30 days.
pub fn login_cookie(access: &Access) -> Option<HeaderValue> {
    let value = random_secret();
    access
        .store
        .add_login(
            &collab::content_hash(value.as_bytes()),
            &token_fingerprint(access),
        )
        .map_err(|e| tracing::error!("cannot store a login: {e}"))
        .ok()?;
    session_cookie(COOKIE_NAME, &value, LOGIN_LIFETIME_SECS)
}

/// A login with the token (by `?token=` or the login form): remembered in the audit log, and
/// its cookie.
pub fn token_login(access: &Access) -> Option<HeaderValue> {
    access.store.audit(
        &access.identity.username,
        "login",
        "server",
        "with the token",
    );
    login_cookie(access)
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
    State(access): State<Access>,
    mut request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes_state && !same_site(request.headers()) {
        return ApiError::forbidden("cross-site request refused").into_response();
    }
    let presented =
        header_token(request.headers()).is_some() || query_token(request.uri().query()).is_some();
    let verdict = check(&access, request.headers(), request.uri().query());
    let principal = match verdict {
        Authenticated::Yes | Authenticated::ByQueryToken => Principal::Owner,
        Authenticated::No => {
            let other = who_else(&access, &request);
            if presented {
                // A wrong token. Whoever it may be, a request that is let in by something
                // else (a person's or a guest's cookie) is not refused for it; the rest wait
                // once their address has sent too many (see `throttle::FailureBucket`).
                if let Some(ip) = peer_ip(&request) {
                    let now = std::time::Instant::now();
                    if other.is_err() {
                        if let Some(wait) = access.token_failures.wait(ip, now) {
                            return too_many_wrong_tokens(wait);
                        }
                    }
                    access.token_failures.failed(ip, now);
                }
            }
            match other {
                Ok(principal) => principal,
                Err(refusal) => return refusal.into_response(),
            }
        }
    };
    let project = request.extensions().get::<ProjectScope>().cloned();
    let space = match space_for(&access, &principal, project.as_ref()) {
        Ok(space) => space,
        Err(refusal) => return refusal.into_response(),
    };
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(space);
    match verdict {
        Authenticated::ByQueryToken => {
            let cookie = token_login(&access);
            let mut response = next.run(request).await;
            if let Some(cookie) = cookie {
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
    too_many_because(
        wait,
        "too many wrong tokens from your address (the right token is still accepted)",
    )
}

/// A logged-in person (with the link they opened, if any: opening a link never changes who
/// someone is), or a live-share guest (on the guest routes only).
fn who_else(access: &Access, request: &Request) -> Result<Principal, ApiError> {
    let guest = guest_cookie(request.headers())
        .and_then(|cookie| access.store.guest(&cookie).ok().flatten())
        .map(Guest::from_session);
    if let Some(mut user) = user_of(access, request.headers()) {
        user.link = guest;
        return Ok(Principal::User(user));
    }
    match guest {
        Some(guest) if guest_route(request.method(), request.uri().path()) => {
            Ok(Principal::Guest(guest))
        }
        Some(_) => Err(ApiError::forbidden(
            "a live-share guest may only open the notebook shared with them",
        )),
        None => Err(ApiError::forbidden(
            "authentication required: pass the token, or log in",
        )),
    }
}

/// The files a request works on.
fn space_for(
    access: &Access,
    principal: &Principal,
    project: Option<&ProjectScope>,
) -> Result<Space, ApiError> {
    if let Some(ProjectScope(name)) = project {
        let member = match principal {
            Principal::Owner => true,
            Principal::User(user) => access
                .store
                .is_member(name, &user.username)
                .unwrap_or(false),
            Principal::Guest(_) => false,
        };
        if !member || !access.store.is_project(name).unwrap_or(false) {
            return Err(ApiError::not_found(format!(
                "no project named {name:?} that you are a member of"
            )));
        }
        return home_space(access, name);
    }
    match principal {
        Principal::Owner => Ok(access.spaces.admin().clone()),
        Principal::User(user) => home_space(access, user.username.as_str()),
        Principal::Guest(guest) => {
            let path = access
                .store
                .path_for_id(access.spaces.store_root(), guest.file)
                .ok()
                .flatten()
                .ok_or_else(|| ApiError::not_found("the shared notebook no longer exists"))?;
            Ok(access.spaces.space_of(&path)?)
        }
    }
}

fn home_space(access: &Access, name: &str) -> Result<Space, ApiError> {
    let account =
        kernel_bridge::Account::lookup(name).map_err(|e| ApiError::not_found(e.to_string()))?;
    access
        .spaces
        .home_of(account)
        .map_err(|e| ApiError::internal("cannot open the home directory", e))
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
}

//! The router answered without a port (`tower::ServiceExt::oneshot`): the answers that are pure
//! request → response (refusals, unknown pages, security headers, the login cookie of a
//! `?token=`). What needs a kernel, a websocket or accounts is tested end to end in `tests/`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, Response, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::config::{Config, ServeArgs};
use crate::{app, AppState};

const TOKEN: &str = "a-token-long-enough-for-this-test-0123456789";

/// A server over an empty folder, with its state in a temporary directory.
struct TestApp {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl TestApp {
    fn new() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("notebooks");
        std::fs::create_dir(&root).unwrap();
        let config = Config::from_args(ServeArgs {
            dir: Some(root),
            state_dir: Some(dir.path().join("state")),
            no_browser: true,
            ..ServeArgs::default()
        })
        .unwrap();
        let state = AppState::new(config, TOKEN.to_string()).unwrap();
        TestApp {
            router: app(state),
            _dir: dir,
        }
    }

    /// The answer to a bodiless request from a browser on this machine, with these headers.
    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
        self.send_body(method, uri, headers, "").await
    }

    async fn send_body(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Body> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "127.0.0.1:8888");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::from(body.to_string())).unwrap();
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        self.router.clone().oneshot(request).await.unwrap()
    }
}

async fn message(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    body["message"].as_str().unwrap().to_string()
}

fn header_of(response: &Response<Body>, name: header::HeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

const AUTHORIZED: (&str, &str) = (
    "authorization",
    "token a-token-long-enough-for-this-test-0123456789",
);

#[tokio::test]
async fn an_unknown_page_is_not_found_and_carries_the_security_headers() {
    let app = TestApp::new();
    let response = app.send("GET", "/no/such/page", &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
    assert_eq!(
        header_of(&response, header::REFERRER_POLICY),
        Some("no-referrer")
    );
    // JSON, not a page: no page policy.
    assert_eq!(header_of(&response, header::CONTENT_SECURITY_POLICY), None);
    assert_eq!(message(response).await, "no such page");
}

#[tokio::test]
async fn a_page_without_its_own_policy_gets_a_strict_one() {
    let app = TestApp::new();
    let response = app.send("GET", "/login", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CONTENT_SECURITY_POLICY),
        Some("default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
    );
    assert_eq!(header_of(&response, header::X_FRAME_OPTIONS), Some("DENY"));
}

#[tokio::test]
async fn the_api_wants_the_token_and_refuses_a_wrong_one() {
    let app = TestApp::new();
    let response = app.send("GET", "/api/contents", &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        message(response).await,
        "authentication required: pass the token, or log in"
    );
    let wrong = app
        .send("GET", "/api/contents", &[("authorization", "token wrong")])
        .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let right = app.send("GET", "/api/contents", &[AUTHORIZED]).await;
    assert_eq!(right.status(), StatusCode::OK);
}

#[tokio::test]
async fn cross_site_writes_are_refused_even_with_the_token() {
    let app = TestApp::new();
    for (method, uri, body) in [
        ("POST", "/api/contents", ""),
        ("DELETE", "/api/contents/x.ipynb", ""),
        (
            "POST",
            "/api/login",
            r#"{"username": "ada", "password": "x"}"#,
        ),
        ("POST", "/api/logout", ""),
        ("POST", "/api/share/some-token", r#"{"name": "Ada"}"#),
    ] {
        for from_elsewhere in [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ] {
            let headers = [AUTHORIZED, from_elsewhere];
            let response = app.send_body(method, uri, &headers, body).await;
            let status = response.status();
            assert_eq!(
                (status, message(response).await.as_str()),
                (StatusCode::FORBIDDEN, "cross-site request refused"),
                "{method} {uri} with {from_elsewhere:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_token_in_the_address_logs_in_with_a_cookie() {
    let app = TestApp::new();
    let response = app.send("GET", &format!("/?token={TOKEN}"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = header_of(&response, header::SET_COOKIE)
        .unwrap()
        .to_string();
    let (pair, attributes) = cookie.split_once("; ").unwrap();
    assert!(pair.starts_with("quire-session="));
    assert_eq!(
        attributes,
        "Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000"
    );
    // The cookie is a login.
    let response = app.send("GET", "/api/contents", &[("cookie", pair)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // No token, no cookie.
    let response = app.send("GET", "/", &[]).await;
    assert_eq!(header_of(&response, header::SET_COOKIE), None);
}

#[tokio::test]
async fn a_project_nobody_made_is_not_found() {
    let app = TestApp::new();
    let response = app
        .send("GET", "/projects/lab/api/contents", &[AUTHORIZED])
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        message(response).await,
        "no project named \"lab\" that you are a member of"
    );
}

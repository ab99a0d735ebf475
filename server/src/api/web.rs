//! The browser app: its pages (one HTML shell for the file browser and the notebook page) and
//! its bundle, built from `web/` into `web/dist/` and embedded here, so running Quire needs no
//! Node. The shell is public; the app asks `/api/me` and sends a stranger to `/login`.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::access::auth::{check, token_login, Authenticated};
use crate::AppState;

static APP_JS: &[u8] = include_bytes!("../../../web/dist/app.js");
static APP_CSS: &[u8] = include_bytes!("../../../web/dist/app.css");

/// Each asset's entity tag: the hash of its bytes.
static TAGS: LazyLock<[String; 2]> = LazyLock::new(|| {
    [APP_JS, APP_CSS].map(|bytes| format!("\"{}\"", &collab::content_hash(bytes)[..16]))
});

/// The policy of the app's pages: only our own script; styles inline too (the editor injects
/// its own); images from us or inline data; HTML outputs in sandboxed frames of their own.
const APP_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const SHELL: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Quire</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
<body><div id=\"app\"></div><script type=\"module\" src=\"/static/app.js\"></script></body></html>";

/// `/`, `/tree/…`, `/notebooks/…`: the app's page. A `?token=` in its address logs in, as in
/// Jupyter (the page then takes it out of the address bar).
pub async fn page(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let mut response = axum::response::Html(SHELL).into_response();
    if matches!(
        check(&state.access, &headers, uri.query()),
        Authenticated::ByQueryToken
    ) {
        if let Some(cookie) = token_login(&state.access) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(APP_POLICY),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn asset(bytes: &'static [u8], tag: &str, kind: &'static str, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        bytes.into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(tag) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, tag);
    }
    response
}

pub async fn app_js(headers: HeaderMap) -> Response {
    asset(APP_JS, &TAGS[0], "text/javascript; charset=utf-8", &headers)
}

pub async fn app_css(headers: HeaderMap) -> Response {
    asset(APP_CSS, &TAGS[1], "text/css; charset=utf-8", &headers)
}

/// The frame HTML and JavaScript outputs run in. The app loads it with
/// `sandbox="allow-scripts"` (an opaque origin: nothing in it can reach the app, its cookies or
/// its storage) and posts it the output's HTML; the frame reports its height back.
const SANDBOX: &str = r#"<!doctype html><meta charset="utf-8"><style>body{margin:0;font:14px system-ui,sans-serif}</style><script>
addEventListener('message', function (event) {
  if (event.source !== parent || typeof event.data !== 'string') return;
  document.open();
  document.write('<!doctype html><meta charset="utf-8"><style>body{margin:0;font:14px system-ui,sans-serif}</style>' + event.data);
  document.close();
  var report = function () { parent.postMessage({ quireHeight: document.documentElement.scrollHeight }, '*'); };
  addEventListener('load', report);
  new ResizeObserver(report).observe(document.documentElement);
  report();
}, { once: true });
</script>"#;

/// The policy of the output frame: its own inline script and the output's, anything the output
/// loads, no network back to us beyond that, and a sandbox even if opened on its own.
const SANDBOX_POLICY: &str = "sandbox allow-scripts; default-src * data: blob: 'unsafe-inline' 'unsafe-eval'; frame-ancestors 'self'";

/// `/sandbox`: the frame outputs render in.
pub async fn sandbox() -> Response {
    let mut response = axum::response::Html(SANDBOX).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX_POLICY),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    response
}

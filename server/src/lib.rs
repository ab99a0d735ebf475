//! The `quire` server: HTTP and websockets around the `collab` rooms.
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a listener the caller
//! bound, until a shutdown signal, then saves every open room before returning.

mod access;
mod api;
pub mod config;
mod fs;
mod http;
mod rooms;
mod storage;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod layering;

use std::future::Future;
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Router;

pub use config::Config;
pub use rooms::kernels::Kernels;
pub use rooms::registry::Rooms;

/// The server's state: every layer's handles, wired together. The route handlers and the
/// rooms take it; the layers below (`access`, `storage`, `fs`, `http`) take only their part.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Whose files are where.
    pub spaces: fs::space::Spaces,
    pub store: storage::Store,
    /// Who is asking.
    pub access: access::Access,
    pub rooms: Rooms,
    pub kernels: Kernels,
}

impl AppState {
    pub fn new(config: Config, token: String) -> anyhow::Result<AppState> {
        use anyhow::Context;
        let spaces = fs::space::Spaces::new(&config.root, config.multi_user)
            .with_context(|| format!("cannot serve {}", config.root.display()))?;
        let homes = config
            .multi_user
            .then_some(fs::space::home_dir_of as storage::HomeOf);
        let store = storage::Store::open(&config.state_dir)?.with_homes(homes);
        let kernels = Kernels::new(
            &config.state_dir,
            config.kernel_user.as_deref(),
            config.multi_user,
        )
        .context("cannot prepare for kernels")?;
        let pam = if config.multi_user {
            if !nix::unistd::geteuid().is_root() {
                anyhow::bail!("multi-user mode needs Quire to run as root (to check passwords and run kernels as their owners)");
            }
            Some(access::pam::Pam::new(&config.pam_service, 4)?)
        } else {
            None
        };
        let access = access::Access {
            store: store.clone(),
            spaces: spaces.clone(),
            token: token.into(),
            identity: access::accounts::owner_identity(),
            pam,
            throttle: Arc::default(),
            token_failures: Arc::default(),
        };
        Ok(AppState {
            config: Arc::new(config),
            spaces,
            store,
            access,
            rooms: Rooms::default(),
            kernels,
        })
    }
}

pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/api/contents",
            get(api::contents::get_root).post(api::contents::post_root),
        )
        .route(
            "/api/contents/",
            get(api::contents::get_root).post(api::contents::post_root),
        )
        .route(
            "/api/contents/{*path}",
            get(api::contents::get)
                .post(api::contents::post)
                .put(api::contents::put)
                .patch(api::contents::patch)
                .delete(api::contents::delete),
        )
        .route("/api/me", get(api::collaboration::me))
        .route(
            "/api/collaboration/session/{*path}",
            put(api::collaboration::put_session),
        )
        .route(
            "/api/collaboration/room/{room}",
            get(api::collaboration::room_socket),
        )
        .route("/api/kernelspecs", get(api::kernels::list_kernelspecs))
        .route("/api/kernelspecs/{name}", get(api::kernels::get_kernelspec))
        .route(
            "/api/kernels",
            get(api::kernels::list_kernels).post(api::kernels::start_kernel),
        )
        .route(
            "/api/kernels/{id}",
            get(api::kernels::get_kernel).delete(api::kernels::delete_kernel),
        )
        .route(
            "/api/kernels/{id}/interrupt",
            post(api::kernels::interrupt_kernel),
        )
        .route(
            "/api/kernels/{id}/restart",
            post(api::kernels::restart_kernel),
        )
        .route("/api/kernels/{id}/execute", post(api::kernels::execute))
        .route(
            "/api/sessions",
            get(api::kernels::list_sessions).post(api::kernels::create_session),
        )
        .route(
            "/api/sessions/{id}",
            get(api::kernels::get_session)
                .patch(api::kernels::patch_session)
                .delete(api::kernels::delete_session),
        )
        .route("/api/audit", get(api::sharing::audit_log))
        .route("/api/notebooks/{file_id}", get(api::people::notebook))
        .route(
            "/api/notebooks/{file_id}/download",
            get(api::view::download),
        )
        .route("/api/shared", get(api::people::shared_with_me))
        .route("/view/{file_id}", get(api::view::page))
        .route(
            "/api/sharing/{file_id}/links",
            get(api::sharing::list_links).post(api::sharing::create_link),
        )
        .route(
            "/api/sharing/{file_id}/links/{link_id}",
            axum::routing::patch(api::sharing::change_link).delete(api::sharing::revoke_link),
        )
        .route(
            "/api/sharing/{file_id}/people",
            get(api::people::list_people),
        )
        .route(
            "/api/sharing/{file_id}/people/{kind}/{name}",
            put(api::people::set_person).delete(api::people::revoke_person),
        )
        .route(
            "/api/projects",
            get(api::people::list_projects).post(api::people::create_project),
        )
        .route(
            "/api/projects/{name}",
            axum::routing::delete(api::people::delete_project),
        )
        .route(
            "/api/projects/{name}/members/{username}",
            put(api::people::add_member).delete(api::people::remove_member),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            access::auth::require_auth,
        ));
    let routes = Router::new()
        .route("/", get(api::web::page))
        .route("/tree", get(api::web::page))
        .route("/tree/{*path}", get(api::web::page))
        .route("/notebooks/{*path}", get(api::web::page))
        .route("/shared/{file_id}", get(api::web::page))
        .route("/sandbox", get(api::web::sandbox))
        .route("/static/app.js", get(api::web::app_js))
        .route("/static/app.css", get(api::web::app_css))
        .route("/api", get(api_version))
        // Opening a live-share link needs no login: the link is the credential.
        .route("/share/{token}", get(api::sharing::share_page))
        .route("/api/share/{token}", post(api::sharing::redeem))
        .route(
            "/login",
            get(api::login::login_page).post(api::login::login_form_post),
        )
        .route("/api/login", post(api::login::login))
        .route("/api/logout", post(api::login::logout))
        .merge(api)
        .with_state(state);
    // `/projects/{name}/…` is the whole API again, working in the project's home: JupyterLab
    // pointed at it as its base URL works on the project's notebooks.
    // (A fallback rather than a route with captures: the inner routes' own path parameters
    // must not be preceded by ours.)
    let scoped = routes.clone();
    routes
        .fallback(move |request| in_project(scoped.clone(), request))
        .layer(axum::middleware::map_response(
            http::headers::security_headers,
        ))
}

/// Serves `/projects/{name}/{rest}` as `/{rest}` in the project's space; anything else that
/// no route matched is not found.
async fn in_project(
    routes: Router,
    mut request: axum::extract::Request,
) -> axum::response::Response {
    use tower::ServiceExt;
    let path = request.uri().path();
    let Some((name, rest)) = path
        .strip_prefix("/projects/")
        .and_then(|p| p.split_once('/'))
    else {
        return http::error::ApiError::not_found("no such page").into_response();
    };
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .into_owned();
    let rest = match request.uri().query() {
        Some(query) => format!("/{rest}?{query}"),
        None => format!("/{rest}"),
    };
    let Ok(uri) = rest.parse() else {
        return http::error::ApiError::bad_request("malformed address").into_response();
    };
    *request.uri_mut() = uri;
    request
        .extensions_mut()
        .insert(access::auth::ProjectScope(name));
    match routes.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn api_version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION")}))
}

/// Serves until `shutdown` resolves, then saves and closes every room.
///
/// Each connection must send a whole request head within `header_read_timeout` (a kept-alive
/// connection waiting for its next request too), and each address may hold at most
/// `max_connections_per_address` connections at once, websockets included: a slowloris
/// (thousands of half-sent requests) neither uses up our file descriptors nor starves others.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt;
    let rooms = state.rooms.clone();
    let kernels = state.kernels.clone();
    let header_read_timeout = state.config.header_read_timeout;
    let limits = http::limits::ConnectionLimits::new(state.config.max_connections_per_address);
    let expiry = tokio::spawn(rooms::rights::expire_links(state.clone()));
    let stale_logins = tokio::spawn(rooms::rights::end_stale_logins(state.clone()));
    let app = app(state);
    // Dropped to ask every connection to finish; each holds a receiver while it runs.
    let (stop, stopping) = tokio::sync::watch::channel(());
    let (running, _) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = limits.admit(peer.ip()) else {
            http::limits::refuse(tcp, limits.per_address());
            continue;
        };
        // Edits are small frames: without TCP_NODELAY, Nagle's algorithm meeting the peer's
        // delayed ACK holds some of them back ~40 ms (measured as a 33 ms p99 with 20 clients
        // in a room).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let io = hyper_util::rt::TokioIo::new(http::limits::CountedStream::new(tcp, slot));
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(request)
            },
        );
        let mut stopping = stopping.clone();
        let running = running.subscribe();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let mut asked_to_stop = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection from {peer} ended: {e}");
                        }
                        break;
                    }
                    _ = stopping.changed(), if !asked_to_stop => {
                        asked_to_stop = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(running);
        });
    }
    drop(listener);
    tracing::info!("shutting down: stopping kernels, saving open notebooks");
    expiry.abort();
    stale_logins.abort();
    kernels.shutdown_all().await;
    rooms.shutdown_all().await;
    drop(stop);
    // Requests under way get a moment to finish; idle connections close at once.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), running.closed()).await;
    Ok(())
}

/// An `accept` that failed: a connection that gave up before we took it is nothing; running
/// out of file descriptors is waited out (connections closing free some).
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!("cannot accept a connection: {e}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

//! The admin HTTP API: health, metrics, status and events for everyone; reload and server
//! state changes for holders of the bearer token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tandem_cluster::agent::RequestError;
use tandem_cluster::AgentHandle;
use tandem_core::{EventBus, Shutdown};
use tandem_proxy::{AdminState, Proxy, ProxyError};

use crate::daemon::Reloader;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminCtx {
    pub proxy: Arc<Proxy>,
    pub cluster: Option<AgentHandle>,
    pub registry: Arc<Registry>,
    pub events: EventBus,
    pub reloader: Arc<Reloader>,
    /// Mutating calls are refused on a non-loopback address without a token.
    pub loopback: bool,
    /// `[admin] allow_faults`: drills may inject faults through `POST /faults`.
    pub allow_faults: bool,
    pub started: tandem_core::clock::Instant,
}

pub fn router(ctx: AdminCtx) -> Router {
    Router::new()
        .route("/health", get(health))
        .route(
            "/read-only",
            get(read_only).options(read_only).head(read_only),
        )
        .route("/sync", get(sync).options(sync).head(sync))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/events", get(events))
        .route("/events/stream", get(event_stream))
        .route("/", get(dashboard))
        .route("/reload", post(reload))
        .route("/servers/{backend}/{server}/state", post(set_state))
        .route("/primary", get(primary).options(primary).head(primary))
        .route("/replica", get(replica).options(replica).head(replica))
        .route("/cluster", get(cluster))
        .route("/switchover", post(switchover))
        .route("/pause", post(pause))
        .route("/faults", post(crate::faults::inject))
        .route("/resume", post(resume))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ctx)
}

/// Serve the API on `listener` until `stop` is triggered.
pub async fn serve(listener: tokio::net::TcpListener, ctx: AdminCtx, stop: Shutdown) {
    let app = router(ctx);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.wait().await })
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin API stopped");
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// 200 while tandem runs; with a PostgreSQL service, only while PostgreSQL runs too.
async fn health(State(ctx): State<AdminCtx>) -> Response {
    match pg_status(&ctx) {
        Some(pg) if !pg.running => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "postgres down", "postgres": pg })),
        )
            .into_response(),
        Some(pg) => Json(json!({ "status": "ok", "postgres": pg })).into_response(),
        None => Json(json!({ "status": "ok" })).into_response(),
    }
}

fn pg_status(ctx: &AdminCtx) -> Option<tandem_cluster::postgres::PgStatus> {
    ctx.cluster
        .as_ref()
        .and_then(|c| c.postgres())
        .map(|p| p.status())
}

fn no_postgres() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node has no [service] kind = \"postgres\"",
    )
}

/// 200 on a running PostgreSQL that answers reads (primary or replica).
async fn read_only(State(ctx): State<AdminCtx>) -> Response {
    match pg_status(&ctx) {
        None => no_postgres(),
        Some(pg) if pg.running => {
            Json(json!({ "role": if pg.primary { "primary" } else { "replica" }, "postgres": pg }))
                .into_response()
        }
        Some(pg) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "postgres": pg })),
        )
            .into_response(),
    }
}

/// 200 on the synchronous standby while it streams.
async fn sync(State(ctx): State<AdminCtx>) -> Response {
    match pg_status(&ctx) {
        None => no_postgres(),
        Some(pg) if pg.running && !pg.primary && pg.streaming && pg.sync_standby => {
            Json(json!({ "role": "sync_standby", "postgres": pg })).into_response()
        }
        Some(pg) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "postgres": pg })),
        )
            .into_response(),
    }
}

async fn metrics(State(ctx): State<AdminCtx>) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &ctx.registry) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn status(State(ctx): State<AdminCtx>) -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": tandem_core::clock::since(ctx.started).as_secs(),
        "config": ctx.reloader.path().display().to_string(),
        "proxy": ctx.proxy.status(),
        "cluster": ctx.cluster.as_ref().and_then(|c| c.status()),
        "postgres": pg_status(&ctx),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    since: Option<u64>,
    /// Comma-separated event kinds.
    kind: Option<String>,
}

/// The dashboard: one self-contained page (no external assets) fed by the event stream.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// Server-sent events: every event as it happens (`id` is its sequence number).
async fn event_stream(State(ctx): State<AdminCtx>) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let rx = ctx.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    let ev = SseEvent::default()
                        .id(e.seq.to_string())
                        .event("event")
                        .data(data);
                    return Some((Ok::<_, std::convert::Infallible>(ev), rx));
                }
                // A slow reader missed some: it can fetch them from /events?since=.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn events(
    State(ctx): State<AdminCtx>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => {
            let kinds: Vec<&str> = q
                .kind
                .as_deref()
                .map(|k| {
                    k.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            Json(ctx.events.filtered(q.since.unwrap_or(0), &kinds)).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.body_text()),
    }
}

/// Check the bearer token of a mutating call.
pub(crate) fn authorize(ctx: &AdminCtx, headers: &HeaderMap) -> Result<(), Denied> {
    let token = ctx.reloader.token();
    let Some(token) = token.as_deref() else {
        return if ctx.loopback {
            Ok(())
        } else {
            Err(Denied(
                StatusCode::FORBIDDEN,
                "mutating calls are disabled on a non-loopback admin address without [admin] token_file",
            ))
        };
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Denied(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

/// Why a mutating call was refused.
pub(crate) struct Denied(StatusCode, &'static str);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload(State(ctx): State<AdminCtx>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&ctx, &headers) {
        return denied.into_response();
    }
    match ctx.reloader.reload("admin API").await {
        Ok(()) => Json(json!({ "result": "reloaded" })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: AdminState,
}

async fn set_state(
    State(ctx): State<AdminCtx>,
    headers: HeaderMap,
    Path((backend, server)): Path<(String, String)>,
    body: Result<Json<StateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(denied) = authorize(&ctx, &headers) {
        return denied.into_response();
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; expected {{\"state\": \"ready\" | \"drain\" | \"maint\"}}",
                    e.body_text()
                ),
            )
        }
    };
    match ctx.proxy.set_server_state(&backend, &server, body.state) {
        Ok(()) => Json(json!({ "backend": backend, "server": server, "state": body.state }))
            .into_response(),
        Err(e @ ProxyError::NotFound { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

// ===== cluster endpoints =====

fn no_cluster() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node has no [cluster] section",
    )
}

/// 200 only on the holder of a valid lease whose service is healthy (for load balancers).
async fn primary(State(ctx): State<AdminCtx>) -> Response {
    let Some(c) = &ctx.cluster else {
        return no_cluster();
    };
    match c.primary() {
        Some(token) => Json(json!({ "role": "primary", "fencing_token": token })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "role": "replica" })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ReplicaQuery {
    /// Maximum lag (`1MB`, `16kB`, bytes).
    lag: Option<String>,
}

/// 200 on a healthy member that is not the primary; with PostgreSQL, on a replica that
/// streams, within `?lag=` of the primary when given.
async fn replica(State(ctx): State<AdminCtx>, Query(q): Query<ReplicaQuery>) -> Response {
    let Some(c) = &ctx.cluster else {
        return no_cluster();
    };
    if let Some(pg) = c.postgres().map(|p| p.status()) {
        let max = match q.lag.as_deref().map(tandem_cluster::postgres::parse_size) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("lag: {e}")),
        };
        let within = match (max, pg.lag_bytes) {
            (None, _) => true,
            (Some(m), Some(l)) => l <= m,
            (Some(_), None) => false,
        };
        let ok = pg.running && !pg.primary && pg.streaming && within;
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (
            code,
            Json(json!({ "role": if pg.primary { "primary" } else { "replica" }, "postgres": pg })),
        )
            .into_response();
    }
    let healthy = c.status().is_some_and(|s| s.healthy);
    match c.primary() {
        None if healthy => Json(json!({ "role": "replica" })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "role": "replica", "healthy": false })),
        )
            .into_response(),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "role": "primary" })),
        )
            .into_response(),
    }
}

async fn cluster(State(ctx): State<AdminCtx>) -> Response {
    let Some(c) = &ctx.cluster else {
        return no_cluster();
    };
    match c.status() {
        Some(st) => Json(st).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster record has not been read yet",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    to: String,
}

fn request_error(e: RequestError) -> Response {
    match e {
        RequestError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        RequestError::Dcs(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        RequestError::Timeout(m) => error(StatusCode::GATEWAY_TIMEOUT, m),
    }
}

async fn switchover(
    State(ctx): State<AdminCtx>,
    headers: HeaderMap,
    body: Result<Json<SwitchoverBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(denied) = authorize(&ctx, &headers) {
        return denied.into_response();
    }
    let Some(c) = &ctx.cluster else {
        return no_cluster();
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{}; expected {{\"to\": \"NODE\"}}", e.body_text()),
            )
        }
    };
    let started = tandem_core::clock::now();
    let st = match c.switchover(&body.to).await {
        Ok(st) => st,
        Err(e) => return request_error(e),
    };
    // The lease has moved; the target serves once its service (PostgreSQL: its promotion) is
    // ready. Until then writes were refused: report how long at most.
    let api = st
        .members
        .iter()
        .find(|m| m.name == body.to)
        .map(|m| m.api.clone())
        .unwrap_or_default();
    let ep = crate::ctl::Endpoint {
        addr: api,
        token: None,
    };
    let deadline = started + std::time::Duration::from_secs(30);
    let mut ready = None;
    while tandem_core::clock::now() < deadline && !ep.addr.is_empty() {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            crate::ctl::request(&ep, "GET", "/primary", None),
        )
        .await;
        if matches!(r, Ok(Ok((code, _))) if code.is_success()) {
            ready = Some(tandem_core::clock::since(started));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut v = serde_json::to_value(&st).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "downtime_ms".into(),
            json!(ready.map(|d| d.as_millis() as u64)),
        );
    }
    Json(v).into_response()
}

async fn set_paused(ctx: AdminCtx, headers: HeaderMap, paused: bool) -> Response {
    if let Err(denied) = authorize(&ctx, &headers) {
        return denied.into_response();
    }
    let Some(c) = &ctx.cluster else {
        return no_cluster();
    };
    match c.set_paused(paused).await {
        Ok(()) => Json(json!({ "paused": paused })).into_response(),
        Err(e) => request_error(e),
    }
}

async fn pause(State(ctx): State<AdminCtx>, headers: HeaderMap) -> Response {
    set_paused(ctx, headers, true).await
}

async fn resume(State(ctx): State<AdminCtx>, headers: HeaderMap) -> Response {
    set_paused(ctx, headers, false).await
}

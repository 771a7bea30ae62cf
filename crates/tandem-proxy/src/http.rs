//! The HTTP path: one client request in, tries on servers chosen by the backend's policy until
//! one answers or retrying is no longer safe, and the answer streamed back.
//!
//! Retry rule: a request is sent again, to another server when there is one, only while no
//! byte of the answer has reached the client, and only when the server cannot have acted on
//! it (connecting failed, or the pooled connection was closed before the request was written)
//! or the method is idempotent and the body can be sent again (none, or buffered).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tandem_core::clock;
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::balance::PickContext;
use crate::body::{Lease, ReqBody, RespBody};
use crate::metrics::{class_index, ErrorKind, FrontendMetrics};
use crate::server::Server;

/// Bodies of idempotent requests up to this size are buffered so that a retry can resend them.
const RETRY_BUFFER: u64 = 64 * 1024;
/// A non-idempotent request reuses a pooled connection only if it was idle for less than this,
/// far below servers' keep-alive timeouts, so the server is not closing it as we write.
const SAFE_REUSE_IDLE: Duration = Duration::from_secs(2);

/// What a frontend's connections need, swapped as a whole on reload.
pub(crate) struct FrontendRuntime {
    pub(crate) name: String,
    pub(crate) backend: Arc<Backend>,
    pub(crate) access_log: bool,
    pub(crate) metrics: FrontendMetrics,
    /// Connection settings (timeouts, header size) for new client connections.
    pub(crate) builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
    headers.remove(header::TRAILER);
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Serve one client request.
pub(crate) async fn handle(
    req: Request<Incoming>,
    client: SocketAddr,
    rt: Arc<FrontendRuntime>,
) -> Result<Response<RespBody>, Infallible> {
    let start = clock::now();
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let mut headers = parts.headers;
    let uri = upstream_uri(&parts.uri);
    prepare_headers(&mut headers, &parts.uri, client);
    let backend = &rt.backend;
    let hash_key = backend
        .hash_header
        .as_ref()
        .and_then(|h| headers.get(h))
        .map(|v| Bytes::copy_from_slice(v.as_bytes()));

    let idempotent = is_idempotent(&method);
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else if idempotent && body.size_hint().upper().is_some_and(|n| n <= RETRY_BUFFER) {
        match body.collect().await {
            Ok(b) => ReqBody::Full(Some(b.to_bytes())),
            Err(_) => {
                backend.metrics.error(ErrorKind::ClientAborted);
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    "request body could not be read\n",
                ));
            }
        }
    } else {
        ReqBody::Stream(body)
    };

    let mut ctx = Try {
        backend,
        method: &method,
        uri: &uri,
        headers: &headers,
        body: Some(body),
        idempotent,
    };
    let outcome = ctx.run(client, hash_key.as_deref()).await;
    let (resp, server, retries) = match outcome {
        Ok(done) => (done.response, Some(done.server), done.retries),
        Err(fail) => (fail.response(backend), fail.server, fail.retries),
    };
    let status = resp.status().as_u16();
    rt.metrics.requests[class_index(status)].inc();
    let elapsed = clock::since(start);
    backend.metrics.duration.observe(elapsed.as_secs_f64());
    if rt.access_log {
        tracing::info!(
            target: "tandem::access",
            frontend = %rt.name,
            backend = %backend.name,
            server = server.as_ref().map_or("-", |s| s.name.as_str()),
            client = %client.ip(),
            method = %method,
            path = %uri,
            status,
            retries,
            ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
    Ok(resp)
}

/// Origin-form target for the upstream request.
fn upstream_uri(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

fn prepare_headers(headers: &mut HeaderMap, uri: &Uri, client: SocketAddr) {
    strip_hop_by_hop(headers);
    // The proxy answers `Expect: 100-continue` itself when it reads the body.
    headers.remove(header::EXPECT);
    if !headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in :authority.
        if let Some(v) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, v);
        }
    }
    let ip = client.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

fn answer(status: StatusCode, text: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The tries of one request.
struct Try<'a> {
    backend: &'a Backend,
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    /// The body to send; `None` once a streamed body has been consumed by a try.
    body: Option<ReqBody>,
    idempotent: bool,
}

struct Done {
    response: Response<RespBody>,
    server: Arc<Server>,
    retries: u32,
}

struct Failed {
    kind: ErrorKind,
    server: Option<Arc<Server>>,
    retries: u32,
}

impl Failed {
    fn response(&self, backend: &Backend) -> Response<RespBody> {
        // Failed tries were counted as they happened; only "no server at all" is new here.
        if self.kind == ErrorKind::NoServer {
            backend.metrics.error(self.kind);
        }
        match self.kind {
            ErrorKind::NoServer => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no server is available to answer this request\n",
            ),
            ErrorKind::Connect | ErrorKind::ConnectTimeout => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no server accepted the connection\n",
            ),
            ErrorKind::TryTimeout => answer(
                StatusCode::GATEWAY_TIMEOUT,
                "the server did not answer in time\n",
            ),
            ErrorKind::Reset | ErrorKind::BadResponse | ErrorKind::ClientAborted => {
                answer(StatusCode::BAD_GATEWAY, "the server failed to answer\n")
            }
        }
    }
}

impl Try<'_> {
    async fn run(&mut self, client: SocketAddr, hash_key: Option<&[u8]>) -> Result<Done, Failed> {
        let cfg = &self.backend.cfg;
        let fall = cfg.health.fall;
        let idle_limit = if self.idempotent {
            cfg.server_idle_timeout.get()
        } else {
            cfg.server_idle_timeout.get().min(SAFE_REUSE_IDLE)
        };
        let mut tried: Vec<Arc<Server>> = Vec::new();
        let mut last = ErrorKind::NoServer;
        let mut attempts = 0u32;
        // Writes refused by a stale pooled connection do not use up an attempt, but are bounded.
        let mut stale = 0u32;
        while attempts <= cfg.retries {
            let picked = {
                let sel = self.backend.selection();
                let ctx = PickContext {
                    client: client.ip(),
                    hash_key,
                    tried: &tried,
                };
                self.backend.picker.pick(&sel, &ctx)
            };
            let Some(server) = picked else {
                return Err(Failed {
                    kind: last_or(last, ErrorKind::NoServer),
                    server: tried.pop(),
                    retries: attempts.saturating_sub(1),
                });
            };
            if attempts > 0 {
                self.backend.metrics.retries.inc();
            }
            attempts += 1;
            if !tried.iter().any(|t| Arc::ptr_eq(t, &server)) {
                tried.push(server.clone());
            }
            let guard = server.inflight_guard();
            let try_start = clock::now();
            let mut sender = match server.checkout(idle_limit).await {
                Some(s) => s,
                None => match connect(server.addr, cfg.connect_timeout.get()).await {
                    Ok(s) => s,
                    Err(kind) => {
                        server.passive_failure(fall, kind.as_str());
                        self.backend.metrics.error(kind);
                        last = kind;
                        continue;
                    }
                },
            };
            let Some(body) = self.next_body() else {
                return Err(Failed {
                    kind: last,
                    server: Some(server),
                    retries: attempts - 1,
                });
            };
            let req = self.build(body);
            let sent =
                tokio::time::timeout(cfg.try_timeout.get(), sender.try_send_request(req)).await;
            let err = match sent {
                Ok(Ok(resp)) => {
                    server.observe_latency(clock::since(try_start));
                    let response = finish(
                        resp,
                        Lease {
                            guard,
                            sender: Some(sender),
                            fall,
                        },
                    );
                    return Ok(Done {
                        response,
                        server,
                        retries: attempts - 1,
                    });
                }
                Ok(Err(mut e)) => {
                    if let Some(req) = e.take_message() {
                        // Never written: the server cannot have seen it.
                        self.body = Some(req.into_body());
                        if stale < 8 {
                            stale += 1;
                            attempts -= 1;
                        }
                        continue;
                    }
                    classify(&e.into_error())
                }
                Err(_) => ErrorKind::TryTimeout,
            };
            server.passive_failure(fall, err.as_str());
            self.backend.metrics.error(err);
            last = err;
            if !(self.idempotent && self.body.is_some()) {
                return Err(Failed {
                    kind: err,
                    server: Some(server),
                    retries: attempts - 1,
                });
            }
        }
        Err(Failed {
            kind: last,
            server: tried.pop(),
            retries: attempts.saturating_sub(1),
        })
    }

    /// The body for the next try: a copy when it can be replayed, the stream once.
    fn next_body(&mut self) -> Option<ReqBody> {
        match self.body.take()? {
            ReqBody::Empty => {
                self.body = Some(ReqBody::Empty);
                Some(ReqBody::Empty)
            }
            ReqBody::Full(b) => {
                self.body = Some(ReqBody::Full(b.clone()));
                Some(ReqBody::Full(b))
            }
            stream @ ReqBody::Stream(_) => Some(stream),
        }
    }

    fn build(&self, body: ReqBody) -> Request<ReqBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

fn last_or(last: ErrorKind, none: ErrorKind) -> ErrorKind {
    if last == ErrorKind::NoServer {
        none
    } else {
        last
    }
}

fn classify(e: &hyper::Error) -> ErrorKind {
    if e.is_parse() || e.is_parse_status() {
        ErrorKind::BadResponse
    } else {
        ErrorKind::Reset
    }
}

/// Count the answer for the server and wrap its body so the connection returns to the pool.
fn finish(resp: Response<Incoming>, mut lease: Lease) -> Response<RespBody> {
    let server = lease.guard.server().clone();
    let status = resp.status();
    server.metrics.requests[class_index(status.as_u16())].inc();
    if status.is_server_error() {
        server.passive_failure(lease.fall, "5xx answer");
    } else {
        server.passive_ok();
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = if body.is_end_stream() {
        if let Some(sender) = lease.sender.take() {
            server.checkin(sender);
        }
        RespBody::empty()
    } else {
        RespBody::upstream(body, lease)
    };
    Response::from_parts(parts, body)
}

/// A new HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<ReqBody>, ErrorKind> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(_)) => return Err(ErrorKind::Connect),
        Err(_) => return Err(ErrorKind::ConnectTimeout),
    };
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|_| ErrorKind::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

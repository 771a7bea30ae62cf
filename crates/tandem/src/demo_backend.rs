//! `tandem demo-backend`: a small HTTP service for the demo, tutorials and tests. It names
//! itself in every answer and can be made unhealthy, slow or streaming on request.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Body = Either<Full<Bytes>, Either<Incoming, Ticks>>;

struct State {
    name: String,
    healthy: AtomicBool,
    /// Connections accepted so far (to check that proxies reuse them).
    connections: std::sync::atomic::AtomicU64,
}

/// Serve on `listen` until the process ends. Prints `listening on ADDR` first.
pub async fn run(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let state = Arc::new(State {
        name,
        healthy: AtomicBool::new(true),
        connections: Default::default(),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, state.clone()));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().half_close(true);
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(s))));
    *r.status_mut() = status;
    r
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match (req.method().clone(), path.as_str()) {
        (_, "/healthz") => {
            if st.healthy.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n".into())
            }
        }
        (Method::POST, "/control/healthy") => {
            st.healthy.store(true, Ordering::Relaxed);
            text(StatusCode::OK, "healthy\n".into())
        }
        (Method::POST, "/control/unhealthy") => {
            st.healthy.store(false, Ordering::Relaxed);
            text(StatusCode::OK, "unhealthy\n".into())
        }
        (_, "/slow") => {
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
            text(StatusCode::OK, format!("{}\n", st.name))
        }
        (_, "/stream") => {
            let n = query(&req, "n").unwrap_or(5);
            let ms = query(&req, "ms").unwrap_or(100);
            let body = Ticks::new(st.name.clone(), n, ms);
            let mut r = Response::new(Either::Right(Either::Right(body)));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        (Method::POST | Method::PUT, "/echo") => {
            let mut r = Response::new(Either::Right(Either::Left(req.into_body())));
            r.headers_mut().insert(
                "x-served-by",
                http::HeaderValue::from_str(&st.name)
                    .unwrap_or(http::HeaderValue::from_static("?")),
            );
            return Ok(r);
        }
        (_, "/connections") => text(
            StatusCode::OK,
            format!("{}\n", st.connections.load(Ordering::Relaxed)),
        ),
        (_, "/headers") => {
            let mut s = String::new();
            for (k, v) in req.headers() {
                s.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text(StatusCode::OK, s)
        }
        (_, p) if p.starts_with("/status/") => {
            let code = p["/status/".len()..]
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            match code {
                Some(c) => text(c, format!("{} {}\n", st.name, c.as_u16())),
                None => text(StatusCode::BAD_REQUEST, "bad status\n".into()),
            }
        }
        (Method::GET | Method::HEAD, "/") => text(StatusCode::OK, format!("{}\n", st.name)),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    // Drain what is left of the request body so the connection can be reused.
    let mut resp = resp;
    resp.headers_mut().insert(
        "x-served-by",
        http::HeaderValue::from_str(&st.name).unwrap_or(http::HeaderValue::from_static("?")),
    );
    let _ = req.into_body().collect().await;
    Ok(resp)
}

/// A timed stream of server-sent events, like a model streaming tokens.
struct Ticks {
    name: String,
    left: u64,
    sent: u64,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Ticks {
    fn new(name: String, n: u64, ms: u64) -> Self {
        let every = Duration::from_millis(ms);
        Self {
            name,
            left: n,
            sent: 0,
            every,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl http_body::Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let every = self.every;
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + every);
        self.left -= 1;
        self.sent += 1;
        let chunk = format!("data: {} {}\n\n", self.name, self.sent);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

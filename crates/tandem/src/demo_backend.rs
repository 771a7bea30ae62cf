//! `tandem demo-backend`: a small HTTP service for the demo, tutorials and tests. It names
//! itself in every answer (`x-served-by`) and can be made unhealthy, slow or streaming on
//! request. It also keeps sequenced writes for drills: `POST /writes/N` stores N (in memory,
//! and in `--store FILE` if given, answering 507 when that disk is full), after copying it to
//! every `--replicate-to` peer (`POST /replica/writes/N`; 503 if a peer does not take it), and
//! `GET /writes?from=N` lists the stored numbers from N on, one per line.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
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
    writes: std::sync::Mutex<Writes>,
    peers: Vec<(String, tokio::sync::Mutex<tandem_drill::client::Conn>)>,
}

/// The write store.
struct Writes {
    seqs: BTreeSet<u64>,
    file: Option<std::fs::File>,
}

/// How `tandem demo-backend` runs.
pub struct Options {
    pub listen: SocketAddr,
    pub name: String,
    pub store: Option<PathBuf>,
    pub replicate_to: Vec<String>,
}

/// Serve until the process ends. Prints `listening on ADDR` first.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let Options {
        listen,
        name,
        store,
        replicate_to,
    } = opts;
    let mut seqs = BTreeSet::new();
    let file = match &store {
        Some(path) => {
            // Earlier writes survive a restart; a torn last line is ignored.
            if let Ok(text) = std::fs::read_to_string(path) {
                seqs.extend(text.lines().filter_map(|l| l.trim().parse::<u64>().ok()));
            }
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
        None => None,
    };
    let mut peers = Vec::new();
    for p in replicate_to {
        let addr: SocketAddr = p
            .parse()
            .map_err(|_| anyhow::anyhow!("--replicate-to {p:?}: expected IP:PORT"))?;
        peers.push((
            p.clone(),
            tokio::sync::Mutex::new(tandem_drill::client::Conn::new(&addr.to_string())),
        ));
    }
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
        writes: std::sync::Mutex::new(Writes { seqs, file }),
        peers,
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
        (Method::GET, "/writes") => {
            let from = query(&req, "from").unwrap_or(0);
            let list = match st.writes.lock() {
                Ok(w) => w.seqs.range(from..).map(|n| format!("{n}\n")).collect(),
                Err(_) => String::new(),
            };
            text(StatusCode::OK, list)
        }
        (Method::POST, p) if p.starts_with("/writes/") || p.starts_with("/replica/writes/") => {
            let replica = p.starts_with("/replica/");
            match p.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => write(&st, n, replica).await,
                None => text(StatusCode::BAD_REQUEST, "not a sequence number\n".into()),
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

/// Store write `n`, then copy it to every peer (unless it is itself a copy); acknowledged
/// only when every copy is stored.
async fn write(st: &State, n: u64, replica: bool) -> Response<Body> {
    let stored = match st.writes.lock() {
        Ok(mut w) => {
            let r = match w.file.as_mut() {
                Some(f) => f.write_all(format!("{n}\n").as_bytes()),
                None => Ok(()),
            };
            if r.is_ok() {
                w.seqs.insert(n);
            }
            r
        }
        Err(_) => Err(std::io::Error::other("store poisoned")),
    };
    if let Err(e) = stored {
        let status = if e.raw_os_error() == Some(libc::ENOSPC) {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return text(status, format!("{} could not store {n}: {e}\n", st.name));
    }
    if !replica {
        for (addr, conn) in &st.peers {
            let path = format!("/replica/writes/{n}");
            let r = conn
                .lock()
                .await
                .request("POST", &path, Some(("", "")), Duration::from_secs(1))
                .await;
            if !matches!(r, tandem_drill::client::Outcome::Status(200, _)) {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{} stored {n} but could not copy it to {addr}: {r:?}\n",
                        st.name
                    ),
                );
            }
        }
    }
    text(StatusCode::OK, format!("{} stored {n}\n", st.name))
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

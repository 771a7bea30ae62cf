//! The client workload: `concurrency` clients with kept connections sending requests at a
//! fixed total rate, every request recorded with its start time, latency and outcome. Reads are
//! `GET`s or `SELECT 1`; writes carry sequence numbers, and every acknowledged one is kept for
//! the read-back after the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::clock::{self, Instant};

use crate::client::{Conn, Outcome};
use crate::pg::PgClient;
use crate::scenario::{RequestKind, TargetKind, Workload};

/// One request as the client saw it.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Start, in ms since the workload began.
    pub start_ms: f64,
    pub latency_ms: f64,
    pub ok: bool,
    /// Status or error, for failures.
    pub what: Failure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    None,
    Status(u16),
    Error(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::None => write!(f, "ok"),
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::Error(e) => write!(f, "{e}"),
        }
    }
}

/// A write the target acknowledged.
#[derive(Clone, Debug)]
pub struct Ack {
    pub seq: u64,
    /// Start and end of the request, in ms since the workload began.
    pub start_ms: f64,
    pub end_ms: f64,
    /// Who acknowledged it: the answer's `x-served-by` header (HTTP), or the server's
    /// `IP:PORT` (PostgreSQL).
    pub served_by: Option<String>,
}

/// Everything the clients did.
#[derive(Debug, Default)]
pub struct Output {
    pub requests: Vec<Request>,
    pub acks: Vec<Ack>,
    /// Sequence numbers used: `[seq_from, seq_to)`.
    pub seq_from: u64,
    pub seq_to: u64,
}

/// The path writes go to under the target's path: `/base/` -> `/base/writes`.
pub fn writes_path(path: &str) -> String {
    let base = path.split('?').next().unwrap_or("/");
    format!("{}/writes", base.trim_end_matches('/'))
}

/// One client's connection.
enum Driver {
    Http { conn: Conn, path: String },
    Tcp(String),
    Pg(Box<PgClient>),
}

impl Driver {
    async fn send(
        &mut self,
        kind: RequestKind,
        seq: u64,
        timeout: Duration,
    ) -> (Failure, Option<String>) {
        match self {
            Driver::Http { conn, path } => {
                let outcome = match kind {
                    RequestKind::Reads => conn.request("GET", path, None, timeout).await,
                    RequestKind::Writes => {
                        let p = format!("{}/{seq}", writes_path(path));
                        conn.request("POST", &p, Some(("", "")), timeout).await
                    }
                };
                let what = match outcome {
                    Outcome::Status(s, _) if (200..300).contains(&s) => Failure::None,
                    Outcome::Status(s, _) => Failure::Status(s),
                    Outcome::Error(e) => Failure::Error(e),
                };
                (what, conn.served_by.take())
            }
            Driver::Tcp(addr) => {
                let connect = tokio::net::TcpStream::connect(addr.as_str());
                let what = match tokio::time::timeout(timeout, connect).await {
                    Ok(Ok(_)) => Failure::None,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Failure::Error("refused")
                    }
                    Ok(Err(_)) => Failure::Error("connect"),
                    Err(_) => Failure::Error("timeout"),
                };
                (what, None)
            }
            Driver::Pg(c) => match c.request(kind, seq, timeout).await {
                Ok(by) => (Failure::None, by),
                Err(e) => (Failure::Error(e), None),
            },
        }
    }
}

/// Live counters for the progress line.
#[derive(Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Run the workload until its duration passes or `stop` is set. Sequence numbers start at
/// `seq_from`, unique to the run, so a read-back never confuses two runs.
pub async fn run(
    target: TargetKind,
    w: Workload,
    start: Instant,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    seq_from: u64,
) -> Output {
    let out = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let next_seq = Arc::new(AtomicU64::new(seq_from));
    let every = Duration::from_secs_f64(w.concurrency as f64 / f64::from(w.rate));
    let end = start + w.duration.get();
    let mut tasks = Vec::new();
    for i in 0..w.concurrency {
        let (out, progress, stop, next_seq) = (
            out.clone(),
            progress.clone(),
            stop.clone(),
            next_seq.clone(),
        );
        let mut driver = match &target {
            TargetKind::Http(addr, path) => Driver::Http {
                conn: Conn::new(addr),
                path: path.clone(),
            },
            TargetKind::Tcp(addr) => Driver::Tcp(addr.clone()),
            TargetKind::Postgres(cfg) => Driver::Pg(Box::new(PgClient::new((**cfg).clone()))),
        };
        let (timeout, kind) = (w.timeout.get(), w.kind);
        tasks.push(tokio::spawn(async move {
            // Spread the clients over one interval so the load is even.
            let mut next = start + every.mul_f64(i as f64 / w.concurrency as f64);
            let (mut mine, mut acks) = (Vec::new(), Vec::new());
            while next < end && !stop.load(Ordering::Relaxed) {
                clock::sleep_until(next).await;
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let t0 = clock::now();
                let (what, served_by) = driver.send(kind, seq, timeout).await;
                let latency = clock::since(t0);
                let ok = what == Failure::None;
                let counter = if ok { &progress.ok } else { &progress.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                let start_ms = t0.duration_since(start).as_secs_f64() * 1000.0;
                let latency_ms = latency.as_secs_f64() * 1000.0;
                if ok && kind == RequestKind::Writes {
                    acks.push(Ack {
                        seq,
                        start_ms,
                        end_ms: start_ms + latency_ms,
                        served_by,
                    });
                }
                mine.push(Request {
                    start_ms,
                    latency_ms,
                    ok,
                    what,
                });
                next += every;
                // A slow request does not cause a burst afterwards.
                let now = clock::now();
                if next < now {
                    next = now;
                }
            }
            if let Ok(mut o) = out.lock() {
                o.0.extend(mine);
                o.1.extend(acks);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (mut requests, mut acks) = out.lock().map(|o| o.clone()).unwrap_or_default();
    requests.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    acks.sort_by_key(|a| a.seq);
    Output {
        requests,
        acks,
        seq_from,
        seq_to: next_seq.load(Ordering::Relaxed),
    }
}

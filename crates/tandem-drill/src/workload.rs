//! The client workload: `concurrency` clients with keep-alive connections sending GETs at a
//! fixed total rate, every request recorded with its start time, latency and outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::clock::{self, Instant};

use crate::client::{Conn, Outcome};
use crate::scenario::Workload;

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

/// Live counters for the progress line.
#[derive(Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Run the workload until its duration passes or `stop` is set; returns every request.
pub async fn run(
    addr: String,
    path: String,
    w: Workload,
    start: Instant,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Vec<Request> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let every = Duration::from_secs_f64(w.concurrency as f64 / f64::from(w.rate));
    let end = start + w.duration.get();
    let mut tasks = Vec::new();
    for i in 0..w.concurrency {
        let (addr, path, out, progress, stop) = (
            addr.clone(),
            path.clone(),
            out.clone(),
            progress.clone(),
            stop.clone(),
        );
        let timeout = w.timeout.get();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&addr);
            // Spread the clients over one interval so the load is even.
            let mut next = start + every.mul_f64(i as f64 / w.concurrency as f64);
            let mut mine = Vec::new();
            while next < end && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next).await;
                let t0 = clock::now();
                let outcome = conn.request("GET", &path, None, timeout).await;
                let latency = t0.elapsed();
                let what = match outcome {
                    Outcome::Status(s, _) if (200..300).contains(&s) => Failure::None,
                    Outcome::Status(s, _) => Failure::Status(s),
                    Outcome::Error(e) => Failure::Error(e),
                };
                let ok = what == Failure::None;
                let counter = if ok { &progress.ok } else { &progress.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                mine.push(Request {
                    start_ms: t0.duration_since(start).as_secs_f64() * 1000.0,
                    latency_ms: latency.as_secs_f64() * 1000.0,
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
                o.extend(mine);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut all = out.lock().map(|o| o.clone()).unwrap_or_default();
    all.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    all
}

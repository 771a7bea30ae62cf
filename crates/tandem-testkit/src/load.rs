//! A bounded keep-alive load: N client threads sending requests until stopped or a time limit,
//! counting answers by status, transport errors, and reconnects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::Conn;

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ok: u64,
    /// Non-2xx answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors (connect, reset, timeout, malformed), by message.
    pub errors: BTreeMap<String, u64>,
    /// Connections opened after the first one of each client (server-side closes).
    pub reconnects: u64,
    /// Slowest request.
    pub max_latency: Duration,
    /// Bodies seen, for spread checks (first line of each answer).
    pub served_by: BTreeMap<String, u64>,
}

impl Report {
    pub fn failed(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

/// A running load; `stop` ends it and returns the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    report: Arc<Mutex<Report>>,
}

impl Load {
    /// Start `clients` keep-alive clients sending `GET path` to `addr`, for at most `limit`.
    pub fn start(addr: SocketAddr, path: &str, clients: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let end = Instant::now() + limit;
        let threads = (0..clients)
            .map(|_| {
                let (stop, report, path) = (stop.clone(), report.clone(), path.to_string());
                std::thread::spawn(move || client(addr, &path, &stop, end, &report))
            })
            .collect();
        Load {
            stop,
            threads,
            report,
        }
    }

    /// Requests answered so far (any status).
    pub fn progress(&self) -> u64 {
        self.report.lock().map(|r| r.ok + r.failed()).unwrap_or(0)
    }

    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn client(addr: SocketAddr, path: &str, stop: &AtomicBool, end: Instant, report: &Mutex<Report>) {
    let mut conn: Option<Conn> = None;
    let mut opened = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let start = Instant::now();
        let c = match conn.as_mut() {
            Some(c) if !c.closed => c,
            _ => match Conn::open(addr, Duration::from_secs(15)) {
                Ok(c) => {
                    opened += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    record(report, |r| {
                        *r.errors.entry(format!("connect: {e}")).or_default() += 1
                    });
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let result = c.request("GET", path, &[], b"");
        let took = start.elapsed();
        match result {
            Ok(resp) => record(report, |r| {
                r.max_latency = r.max_latency.max(took);
                if (200..300).contains(&resp.status) {
                    r.ok += 1;
                    let who = resp.text().lines().next().unwrap_or("").to_string();
                    *r.served_by.entry(who).or_default() += 1;
                } else {
                    *r.statuses.entry(resp.status).or_default() += 1;
                }
            }),
            Err(e) => {
                record(report, |r| *r.errors.entry(e.to_string()).or_default() += 1);
                conn = None;
            }
        }
    }
    record(report, |r| r.reconnects += opened.saturating_sub(1));
}

fn record(report: &Mutex<Report>, f: impl FnOnce(&mut Report)) {
    if let Ok(mut r) = report.lock() {
        f(&mut r);
    }
}

//! A watch on every node's `GET /primary` for tests, sampled by one thread per node; the
//! analysis (at most one primary, growing fencing tokens) is `tandem_drill::invariants`, the
//! same code `tandem drill` uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use tandem_drill::invariants::WatchReport;
use tandem_drill::invariants::{analyse, Sample};

/// Samples `/primary` on every node until stopped.
pub struct PrimaryWatch {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    samples: Arc<Mutex<BTreeMap<String, Vec<Sample>>>>,
    targets: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    count: Arc<Mutex<u64>>,
}

impl PrimaryWatch {
    pub fn start(nodes: &[(String, SocketAddr)], every: Duration) -> PrimaryWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(BTreeMap::new()));
        let targets = Arc::new(Mutex::new(
            nodes.iter().cloned().collect::<BTreeMap<_, _>>(),
        ));
        let count = Arc::new(Mutex::new(0));
        let threads = nodes
            .iter()
            .map(|(name, _)| {
                let (stop, samples, targets, count, name) = (
                    stop.clone(),
                    samples.clone(),
                    targets.clone(),
                    count.clone(),
                    name.clone(),
                );
                std::thread::spawn(move || {
                    // Bounded: at most ten minutes of sampling.
                    let end = Instant::now() + Duration::from_secs(600);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let addr = targets.lock().ok().and_then(|t| t.get(&name).copied());
                        if let Some(addr) = addr {
                            let sent = Instant::now();
                            let r = crate::http::request_timeout(
                                addr,
                                "GET",
                                "/primary",
                                Duration::from_millis(500),
                            );
                            let answered = Instant::now();
                            if let Ok(c) = count.lock().as_deref_mut() {
                                *c += 1;
                            }
                            if let Ok(resp) = r {
                                if resp.status == 200 {
                                    let token =
                                        serde_json::from_slice::<serde_json::Value>(&resp.body)
                                            .ok()
                                            .and_then(|v| v["fencing_token"].as_u64())
                                            .unwrap_or(0);
                                    if let Ok(mut s) = samples.lock() {
                                        s.entry(name.clone()).or_insert_with(Vec::new).push(
                                            Sample {
                                                sent,
                                                answered,
                                                token,
                                            },
                                        );
                                    }
                                }
                            }
                        }
                        std::thread::sleep(every);
                    }
                })
            })
            .collect();
        PrimaryWatch {
            stop,
            threads,
            samples,
            targets,
            count,
        }
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.count.lock().map(|c| *c).unwrap_or(0)
    }

    /// Wait until every node has been sampled a few times (so the watch knows the start).
    pub fn settle(&self) {
        let want = self
            .targets
            .lock()
            .map(|t| t.len() as u64 * 5)
            .unwrap_or(15);
        crate::wait_until(Duration::from_secs(10), || self.samples() >= want);
    }

    /// A node's admin address changed (it was restarted).
    pub fn retarget(&self, name: &str, addr: SocketAddr) {
        if let Ok(mut t) = self.targets.lock() {
            t.insert(name.to_string(), addr);
        }
    }

    pub fn stop(self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let mut report = analyse(&samples);
        report.samples = self.count.lock().map(|c| *c).unwrap_or(0);
        report
    }
}

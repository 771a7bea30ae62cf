//! Invariant checkers shared by tests and drills: at most one primary at any time, and fencing
//! tokens that only grow.
//!
//! Every node's `GET /primary` is sampled by its own thread every few milliseconds. A sample
//! is the interval [sent, answered]; an answer 200 means the node was primary at some instant
//! of it. Two answers 200 from one node with the same token bracket a stretch in which it was
//! certainly primary. A violation is a 200 from one node inside another's certain stretch, or
//! two certain stretches that overlap: proof, never a guess from timing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One answer 200.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent: Instant,
    answered: Instant,
    token: u64,
}

/// What the watch saw.
#[derive(Debug, Default)]
pub struct WatchReport {
    pub samples: u64,
    /// Proven moments with two primaries, described.
    pub violations: Vec<String>,
    /// Fencing tokens in the order primaries appeared, with their node.
    pub primaries: Vec<(String, u64)>,
}

impl WatchReport {
    /// Tokens must grow from one primary to the next.
    pub fn tokens_increase(&self) -> bool {
        self.primaries.windows(2).all(|w| w[0].1 < w[1].1)
    }
}

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

fn analyse(samples: &BTreeMap<String, Vec<Sample>>) -> WatchReport {
    let mut report = WatchReport::default();
    // Certain stretches: between consecutive same-token answers of one node.
    let mut certain: Vec<(String, Instant, Instant, u64)> = Vec::new();
    let mut firsts: Vec<(Instant, String, u64)> = Vec::new();
    for (node, list) in samples {
        let mut last_token = None;
        for w in list.windows(2) {
            if w[0].token == w[1].token && w[0].answered < w[1].sent {
                certain.push((node.clone(), w[0].answered, w[1].sent, w[0].token));
            }
        }
        for s in list {
            if last_token != Some(s.token) {
                firsts.push((s.sent, node.clone(), s.token));
                last_token = Some(s.token);
            }
        }
    }
    for (node, from, to, token) in &certain {
        for (other, list) in samples {
            if other == node {
                continue;
            }
            for s in list {
                if s.sent > *from && s.answered < *to {
                    report.violations.push(format!(
                        "{other} answered 200 (token {}) while {node} was primary (token {token})",
                        s.token
                    ));
                }
            }
        }
    }
    firsts.sort_by_key(|f| f.0);
    report.primaries = firsts.into_iter().map(|(_, n, t)| (n, t)).collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, from_ms: u64, to_ms: u64, token: u64) -> Sample {
        Sample {
            sent: base + Duration::from_millis(from_ms),
            answered: base + Duration::from_millis(to_ms),
            token,
        }
    }

    #[test]
    fn a_200_inside_another_nodes_certain_stretch_is_a_violation() {
        let b = Instant::now();
        let mut s = BTreeMap::new();
        s.insert("n1".to_string(), vec![at(b, 0, 1, 1), at(b, 10, 11, 1)]);
        s.insert("n2".to_string(), vec![at(b, 5, 6, 2)]);
        assert_eq!(analyse(&s).violations.len(), 1);
    }

    #[test]
    fn a_clean_handover_is_not_a_violation() {
        let b = Instant::now();
        let mut s = BTreeMap::new();
        s.insert("n1".to_string(), vec![at(b, 0, 1, 1), at(b, 10, 11, 1)]);
        // n2's first answer may even overlap n1's last sample: not proof of two primaries.
        s.insert("n2".to_string(), vec![at(b, 10, 12, 2), at(b, 20, 21, 2)]);
        let r = analyse(&s);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.tokens_increase());
        assert_eq!(
            r.primaries,
            vec![("n1".to_string(), 1), ("n2".to_string(), 2)]
        );
    }
}

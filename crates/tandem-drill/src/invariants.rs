//! Invariant checkers shared by the project's tests and `tandem drill`.
//!
//! At most one primary: every node's `GET /primary` is sampled often. A sample is the interval
//! [sent, answered]; an answer 200 means the node was primary at some instant of it. Two
//! answers 200 from one node with the same fencing token bracket a stretch in which it was
//! certainly primary. A violation is a 200 from one node inside another's certain stretch:
//! proof of two primaries, never a guess from timing. Fencing tokens must grow from one primary
//! to the next.

use std::collections::BTreeMap;
use std::time::Instant;

/// One answer 200.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub sent: Instant,
    pub answered: Instant,
    pub token: u64,
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

/// A proof of two primaries: `other` answered (token `other_token`) within a stretch in which
/// `node` was certainly primary (token `token`); `at` is when that answer's request was sent.
#[derive(Clone, Debug)]
pub struct Overlap {
    pub at: Instant,
    pub node: String,
    pub token: u64,
    pub other: String,
    pub other_token: u64,
}

/// Every proven overlap among `samples` (each node's answers that showed it in the role).
pub fn overlaps(samples: &BTreeMap<String, Vec<Sample>>) -> Vec<Overlap> {
    // Certain stretches: between consecutive same-token answers of one node.
    let mut certain: Vec<(&String, Instant, Instant, u64)> = Vec::new();
    for (node, list) in samples {
        for w in list.windows(2) {
            if w[0].token == w[1].token && w[0].answered < w[1].sent {
                certain.push((node, w[0].answered, w[1].sent, w[0].token));
            }
        }
    }
    let mut out = Vec::new();
    for (node, from, to, token) in certain {
        for (other, list) in samples {
            if other == node {
                continue;
            }
            for s in list {
                if s.sent > from && s.answered < to {
                    out.push(Overlap {
                        at: s.sent,
                        node: node.clone(),
                        token,
                        other: other.clone(),
                        other_token: s.token,
                    });
                }
            }
        }
    }
    out
}

pub fn analyse(samples: &BTreeMap<String, Vec<Sample>>) -> WatchReport {
    let mut report = WatchReport {
        violations: overlaps(samples)
            .into_iter()
            .map(|o| {
                format!(
                    "{} answered 200 (token {}) while {} was primary (token {})",
                    o.other, o.other_token, o.node, o.token
                )
            })
            .collect(),
        ..WatchReport::default()
    };
    report.primaries = firsts(samples)
        .into_iter()
        .map(|(_, n, t)| (n, t))
        .collect();
    report
}

/// Each node's first answer with each token, by when it was sent.
pub fn firsts(samples: &BTreeMap<String, Vec<Sample>>) -> Vec<(Instant, String, u64)> {
    let mut firsts = Vec::new();
    for (node, list) in samples {
        let mut last_token = None;
        for s in list {
            if last_token != Some(s.token) {
                firsts.push((s.sent, node.clone(), s.token));
                last_token = Some(s.token);
            }
        }
    }
    firsts.sort_by_key(|f| f.0);
    firsts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

//! Sequenced writes, checked after the run: every acknowledged sequence number must be read
//! back (no acknowledged write lost, RPO = 0), and no write may have been acknowledged by a
//! node after the lease had moved away from it. Shared by `tandem drill` and the tests.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::workload::Ack;

/// What the read-back showed.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WriteReport {
    /// Writes the target acknowledged.
    pub acked: usize,
    /// Acknowledged writes found when read back.
    pub found: usize,
    /// Acknowledged writes missing when read back.
    pub lost: usize,
    /// The first few lost sequence numbers.
    pub lost_seqs: Vec<u64>,
    /// When lost writes were acknowledged (ms since start; at most 1000), for the chart.
    pub lost_at_ms: Vec<f64>,
    /// Writes that failed for the client but were stored anyway (not an error: a timeout or a
    /// lost answer leaves a write's fate unknown to the client).
    pub unacked_found: usize,
    /// From the acknowledgement of the earliest lost write to the fault (or to the latest lost
    /// write, if later): the span of acknowledged data lost. None when nothing was lost.
    pub rpo_ms: Option<f64>,
    /// Acknowledged writes by who acknowledged them (`x-served-by`, or a PostgreSQL server's
    /// `IP:PORT`).
    pub acked_by: BTreeMap<String, usize>,
    /// Writes acknowledged by a node after another node had been seen holding a newer lease.
    pub old_primary_acks: usize,
    /// A few of them, described.
    pub old_primary_examples: Vec<String>,
    /// Why the read-back failed (then `found` and `lost` are not known).
    pub read_back_error: Option<String>,
}

/// A node first seen primary with a fencing token: (ms since start it answered, node, token).
pub type Holder = (f64, String, u64);

/// Compare the acknowledged writes with what was read back.
///
/// `holders` are the first answers 200 of each node with each token; `served_by` maps an
/// `x-served-by` value to a node name (a value that is a node name maps to itself).
pub fn analyse(
    acks: &[Ack],
    read_back: Result<&[u64], String>,
    all_seqs: (u64, u64),
    fault_ms: Option<f64>,
    holders: &[Holder],
    served_by: &BTreeMap<String, String>,
) -> WriteReport {
    let mut r = WriteReport {
        acked: acks.len(),
        ..WriteReport::default()
    };
    match read_back {
        Ok(seen) => {
            let seen: BTreeSet<u64> = seen
                .iter()
                .copied()
                .filter(|s| (all_seqs.0..all_seqs.1).contains(s))
                .collect();
            let acked: BTreeSet<u64> = acks.iter().map(|a| a.seq).collect();
            let lost: Vec<&Ack> = acks.iter().filter(|a| !seen.contains(&a.seq)).collect();
            r.found = acks.len() - lost.len();
            r.lost = lost.len();
            r.lost_seqs = lost.iter().take(10).map(|a| a.seq).collect();
            r.lost_at_ms = lost.iter().take(1000).map(|a| a.end_ms).collect();
            r.unacked_found = seen.difference(&acked).count();
            let first = lost.iter().map(|a| a.end_ms).reduce(f64::min);
            let last = lost.iter().map(|a| a.end_ms).reduce(f64::max);
            if let (Some(first), Some(last)) = (first, last) {
                let until = fault_ms.map_or(last, |f| f.max(last));
                r.rpo_ms = Some(until - first);
            }
        }
        Err(e) => r.read_back_error = Some(e),
    }
    let nodes: BTreeSet<&str> = holders.iter().map(|h| h.1.as_str()).collect();
    for a in acks {
        let Some(by) = a.served_by.as_deref() else {
            continue;
        };
        *r.acked_by.entry(by.to_string()).or_insert(0) += 1;
        let node = match served_by.get(by) {
            Some(n) => n.as_str(),
            None if nodes.contains(by) => by,
            None => continue,
        };
        if let Some(e) = superseded(node, a.start_ms, holders) {
            r.old_primary_acks += 1;
            if r.old_primary_examples.len() < 5 {
                r.old_primary_examples.push(format!(
                    "write {} acknowledged by {node} at {:.0}ms, after {e}",
                    a.seq, a.end_ms
                ));
            }
        }
    }
    r
}

/// Whether `node` had certainly lost the lease at `at`: it had been seen primary before, another
/// node had since been seen with a newer token, and the next lease after that one is not
/// `node`'s (the sampler may see a new primary a little after clients do).
fn superseded(node: &str, at: f64, holders: &[Holder]) -> Option<String> {
    let seen = |h: &&Holder| h.0 <= at;
    let mine = holders
        .iter()
        .filter(seen)
        .filter(|h| h.1 == node)
        .map(|h| h.2)
        .max()?;
    let (when, newer, token) = holders
        .iter()
        .filter(seen)
        .filter(|h| h.2 > mine)
        .max_by_key(|h| h.2)?;
    if newer == node {
        return None;
    }
    let next = holders.iter().filter(|h| h.2 > *token).min_by_key(|h| h.2);
    if next.is_some_and(|n| n.1 == node) {
        return None;
    }
    Some(format!(
        "{newer} became primary (token {token}) at {when:.0}ms"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, at: f64, by: &str) -> Ack {
        Ack {
            seq,
            start_ms: at,
            end_ms: at + 1.0,
            served_by: Some(by.to_string()),
        }
    }

    #[test]
    fn lost_writes_and_their_span() {
        let acks = vec![
            ack(10, 100.0, "a"),
            ack(11, 200.0, "a"),
            ack(12, 300.0, "a"),
        ];
        let r = analyse(
            &acks,
            Ok(&[10, 13, 99]),
            (10, 20),
            Some(1000.0),
            &[],
            &BTreeMap::new(),
        );
        assert_eq!((r.acked, r.found, r.lost), (3, 1, 2));
        assert_eq!(r.lost_seqs, vec![11, 12]);
        // 13 failed for the client but was stored; 99 belongs to another run.
        assert_eq!(r.unacked_found, 1);
        assert_eq!(r.rpo_ms, Some(1000.0 - 201.0));
        let clean = analyse(
            &acks,
            Ok(&[10, 11, 12]),
            (10, 20),
            Some(1000.0),
            &[],
            &BTreeMap::new(),
        );
        assert_eq!((clean.lost, clean.rpo_ms), (0, None));
        let failed = analyse(
            &acks,
            Err("down".into()),
            (10, 20),
            None,
            &[],
            &BTreeMap::new(),
        );
        assert_eq!(failed.read_back_error.as_deref(), Some("down"));
    }

    #[test]
    fn acks_by_a_node_after_the_lease_moved_are_counted() {
        let holders = vec![(0.0, "n1".to_string(), 1), (1500.0, "n2".to_string(), 2)];
        let map: BTreeMap<String, String> = [
            ("svc1".to_string(), "n1".to_string()),
            ("svc2".to_string(), "n2".to_string()),
        ]
        .into_iter()
        .collect();
        let acks = vec![
            ack(1, 1000.0, "svc1"),  // n1 still holds the lease
            ack(2, 1600.0, "svc2"),  // the new primary
            ack(3, 1700.0, "svc1"),  // the old primary, after n2 took over
            ack(4, 1800.0, "n1"),    // a node name needs no mapping
            ack(5, 1900.0, "other"), // unknown: not judged
        ];
        let r = analyse(
            &acks,
            Ok(&[1, 2, 3, 4, 5]),
            (1, 6),
            Some(1200.0),
            &holders,
            &map,
        );
        assert_eq!(r.old_primary_acks, 2, "{:?}", r.old_primary_examples);
        assert_eq!(r.acked_by.get("svc1"), Some(&2));
        assert_eq!(r.acked_by.values().sum::<usize>(), 5);
        assert!(r.old_primary_examples[0].contains("write 3 acknowledged by n1"));
        // A node that takes the lease answers clients a little before the sampler sees it:
        // not an old primary (n3 never held the lease before).
        let r = analyse(
            &[ack(7, 1700.0, "n3")],
            Ok(&[7]),
            (7, 8),
            None,
            &holders,
            &map,
        );
        assert_eq!(r.old_primary_acks, 0);
        // Nor is a former primary that is the very next holder.
        let next = vec![
            holders[0].clone(),
            holders[1].clone(),
            (1750.0, "n1".to_string(), 3),
        ];
        let r = analyse(&[ack(8, 1700.0, "n1")], Ok(&[8]), (8, 9), None, &next, &map);
        assert_eq!(r.old_primary_acks, 0);
        // The old primary regaining a newer lease is primary again.
        let back = vec![
            holders[0].clone(),
            holders[1].clone(),
            (2000.0, "n1".to_string(), 3),
        ];
        let r = analyse(
            &[ack(6, 2100.0, "svc1")],
            Ok(&[6]),
            (6, 7),
            None,
            &back,
            &map,
        );
        assert_eq!(r.old_primary_acks, 0);
    }
}

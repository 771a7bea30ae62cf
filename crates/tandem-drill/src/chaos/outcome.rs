//! What a chaos run checks before it starts (schedule, restart programs, disks, the
//! PostgreSQL probes' table) and its invariants over the whole run, from what was recorded.

use std::collections::BTreeMap;

use tandem_core::clock::Instant;

use super::{Chaos, ChaosReport, PgWatch, Planned};
use crate::invariants::Sample;
use crate::scenario::Scenario;
use crate::{fault, writes, DrillError};

/// Before a chaos run: the schedule, the restart programs, the disks, the PostgreSQL probes'
/// table. Anything wrong is refused before any fault.
pub(crate) async fn prepare(s: &Scenario, c: &Chaos) -> Result<(u64, Vec<Planned>), DrillError> {
    let seed = c.seed.unwrap_or_else(super::draw_seed);
    let names: Vec<String> = s.watch.nodes.keys().cloned().collect();
    let plan = super::schedule(c, &names, seed).map_err(DrillError::Refused)?;
    super::check_programs(c).map_err(DrillError::Refused)?;
    for (node, path) in &c.disks {
        fault::tmpfs_size(std::path::Path::new(path))
            .map_err(|e| DrillError::Refused(format!("chaos.disks.{node}: {e}")))?;
    }
    if !s.watch.postgres.is_empty() {
        PgWatch::prepare(&s.watch.postgres)
            .await
            .map_err(DrillError::Refused)?;
    }
    Ok((seed, plan))
}

/// The invariants of a chaos run, checked over all of it.
pub(crate) fn report(
    seed: u64,
    schedule: Vec<super::ChaosFault>,
    convergence: super::Convergence,
    samples: &BTreeMap<String, Vec<Sample>>,
    start: Instant,
    pg: Option<super::Invariant>,
    writes: Option<&writes::WriteReport>,
) -> ChaosReport {
    use crate::invariants::{firsts, overlaps};
    let std_start = start.into_std();
    let ms = |t: std::time::Instant| t.saturating_duration_since(std_start).as_secs_f64() * 1000.0;
    let checks = samples.values().map(|v| v.len() as u64).sum();
    let mut invariants = vec![super::Invariant {
        name: "single_primary".into(),
        checks,
        violations: overlaps(samples)
            .into_iter()
            .map(|o| super::Violation {
                at_ms: ms(o.at),
                what: format!(
                    "{} answered 200 on /primary (token {}) while {} was primary (token {})",
                    o.other, o.other_token, o.node, o.token
                ),
            })
            .collect(),
    }];
    let holders = firsts(samples);
    invariants.push(super::Invariant {
        name: "fencing_tokens_grow".into(),
        checks: holders.len() as u64,
        violations: holders
            .windows(2)
            .filter(|w| w[1].2 <= w[0].2)
            .map(|w| super::Violation {
                at_ms: ms(w[1].0),
                what: format!(
                    "{} became primary with token {} after {} had token {}",
                    w[1].1, w[1].2, w[0].1, w[0].2
                ),
            })
            .collect(),
    });
    invariants.extend(pg);
    if let Some(w) = writes {
        let mut violations: Vec<super::Violation> = w
            .lost_seqs
            .iter()
            .zip(&w.lost_at_ms)
            .map(|(seq, at)| super::Violation {
                at_ms: *at,
                what: format!("acknowledged write {seq} not read back"),
            })
            .collect();
        if w.lost > violations.len() {
            violations.push(super::Violation {
                at_ms: w.lost_at_ms.last().copied().unwrap_or_default(),
                what: format!("{} acknowledged writes lost in all", w.lost),
            });
        }
        if let Some(e) = &w.read_back_error {
            violations.push(super::Violation {
                at_ms: 0.0,
                what: format!("read-back failed: {e}"),
            });
        }
        invariants.push(super::Invariant {
            name: "no_acknowledged_write_lost".into(),
            checks: w.acked as u64,
            violations,
        });
    }
    ChaosReport {
        seed,
        injected: schedule.iter().filter(|f| f.injected_ms.is_some()).count(),
        schedule,
        invariants,
        convergence,
    }
}

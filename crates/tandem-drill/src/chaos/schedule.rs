//! The chaos schedule, drawn up front from a seed: when each fault starts, its kind and its
//! target. No I/O and no clock: the same seed and settings give the same list.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Chaos, ChaosKind, Targets};

/// Whom a planned fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Pick {
    /// A watched node by name.
    Node(String),
    /// Whichever node is primary at the fault's time.
    Primary,
    /// The K-th (modulo their count) of the nodes that are not primary at the fault's time.
    Replica(u32),
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pick::Node(n) => f.write_str(n),
            Pick::Primary => f.write_str("primary"),
            Pick::Replica(k) => write!(f, "replica#{k}"),
        }
    }
}

impl From<Pick> for String {
    fn from(p: Pick) -> String {
        p.to_string()
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// Start, ms after the run's start.
    pub at_ms: u64,
    pub kind: ChaosKind,
    pub target: Pick,
    /// How long it lasts before it is undone.
    pub duration_ms: u64,
}

impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {:>8.3}s  {:<10} {:<10} until {:.3}s",
            self.at_ms as f64 / 1000.0,
            self.kind.name(),
            self.target.to_string(),
            (self.at_ms + self.duration_ms) as f64 / 1000.0
        )
    }
}

/// A number in `[lo, hi]` (the modulo bias is negligible for spans far below 2^64).
fn between(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    lo + rng.next_u64() % (hi - lo + 1)
}

/// The schedule of a checked `[chaos]` section over `nodes` (the watched names, sorted).
///
/// One fault at a time: each lasts `fault_duration`, then at least `settle` passes before the
/// next. Gaps between starts are uniform in `[fault_duration + settle, 2 * interval -
/// (fault_duration + settle)]`, so their mean is `interval`. The first fault starts after
/// `settle` plus a draw in `[0, interval - fault_duration - settle]`; the last one is undone at
/// least `settle` before `duration` ends.
pub fn schedule(c: &Chaos, nodes: &[String], seed: u64) -> Result<Vec<Planned>, String> {
    let kinds = c.kinds()?;
    let interval = c.interval_ms()?;
    let fault = c.fault_duration.get().as_millis() as u64;
    let settle = c.settle.get().as_millis() as u64;
    let total = c.duration.get().as_millis() as u64;
    let min_gap = fault + settle;
    if kinds.is_empty() || nodes.is_empty() || interval < min_gap {
        return Err("nothing to schedule".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut at = settle + between(&mut rng, 0, interval - min_gap);
    // Bounded: every gap is at least `min_gap` (> 0 once checked), and the count is capped.
    while at + fault + settle <= total && out.len() < 100_000 {
        let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
        let target = match c.nodes {
            Targets::Any => {
                Pick::Node(nodes[(rng.next_u64() % nodes.len() as u64) as usize].clone())
            }
            Targets::Primary => Pick::Primary,
            Targets::Replicas => Pick::Replica((rng.next_u64() % 1000) as u32),
        };
        out.push(Planned {
            at_ms: at,
            kind,
            target,
            duration_ms: fault,
        });
        at += between(&mut rng, min_gap, 2 * interval - min_gap);
    }
    Ok(out)
}

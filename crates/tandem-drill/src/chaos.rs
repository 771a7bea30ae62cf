//! Chaos mode: many faults in a row on a running cluster, drawn up front from a seed (the same
//! seed gives the same schedule), each undone after `fault_duration`, while invariants are
//! checked from outside the agents: at most one primary (the nodes' `/primary`), fencing tokens
//! that only grow, at most one writable PostgreSQL server (each server asked itself), no
//! acknowledged write lost, and convergence after the last fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tandem_core::HumanDuration;

use crate::scenario::FaultKind;

pub mod converge;
mod outcome;
mod pgwatch;
mod runner;
mod schedule;
#[cfg(test)]
mod tests;

pub use converge::Convergence;
pub(crate) use outcome::{prepare, report};
pub use pgwatch::PgWatch;
pub use runner::{check_programs, run as run_faults, Restarts};
pub use schedule::{schedule, Pick, Planned};

/// `[chaos]`: what to inject, how often, for how long, on which nodes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    /// The schedule's seed; drawn (and printed) when absent.
    pub seed: Option<u64>,
    /// How long the run lasts, workload included.
    pub duration: HumanDuration,
    /// Mean time from one fault's start to the next one's.
    pub interval: Option<HumanDuration>,
    /// Faults per minute, instead of `interval`.
    pub rate: Option<f64>,
    /// Kinds to draw from: `kill`, `stop`, `restart`, `partition`, `loss`, `link-down`,
    /// `disk-full`.
    pub faults: Vec<String>,
    /// How long each fault lasts before it is undone.
    #[serde(default = "default_fault_duration")]
    pub fault_duration: HumanDuration,
    /// Quiet time after a fault is undone before the next one (and before the first one).
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// Which nodes faults hit: `"any"`, `"primary"` or `"replicas"`.
    #[serde(default)]
    pub nodes: Targets,
    /// Node name -> argv that starts that node again after `kill` or `restart` (never a shell
    /// string).
    #[serde(default)]
    pub restart: BTreeMap<String, Vec<String>>,
    /// File the restarted processes' output is appended to (by default it is discarded).
    pub restart_log: Option<String>,
    /// With `loss`: the share of packets dropped on the node's link.
    #[serde(default = "default_loss")]
    pub loss: String,
    /// With `disk-full`: node name -> mount point of the tmpfs that node writes to.
    #[serde(default)]
    pub disks: BTreeMap<String, String>,
    /// After the last fault is undone, how long the cluster has to be whole again.
    #[serde(default = "default_converge")]
    pub converge_timeout: HumanDuration,
}

fn default_fault_duration() -> HumanDuration {
    HumanDuration::from_secs(3)
}
fn default_settle() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_converge() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_loss() -> String {
    "30%".into()
}

/// Which nodes chaos faults hit.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Targets {
    /// A watched node drawn by the schedule.
    #[default]
    Any,
    /// Whichever node is primary at the fault's time.
    Primary,
    /// A node that is not primary at the fault's time (drawn by the schedule among them).
    Replicas,
}

/// A kind of chaos fault, each made by one of the drill's injectors.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ChaosKind {
    /// SIGKILL of the node's tandem process; undone by its `restart` argv.
    Kill,
    /// SIGSTOP, SIGCONT when undone.
    Stop,
    /// SIGTERM (a graceful stop), then its `restart` argv once it has exited.
    Restart,
    /// The node's namespace cut off from the others' (`watch.hosts`).
    Partition,
    /// Packet loss on the node's link (`watch.links`), `loss` of them.
    Loss,
    /// The node's link (`watch.links`) down.
    LinkDown,
    /// The node's tmpfs (`disks`) filled up.
    DiskFull,
}

impl ChaosKind {
    pub const ALL: [ChaosKind; 7] = [
        ChaosKind::Kill,
        ChaosKind::Stop,
        ChaosKind::Restart,
        ChaosKind::Partition,
        ChaosKind::Loss,
        ChaosKind::LinkDown,
        ChaosKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChaosKind::Kill => "kill",
            ChaosKind::Stop => "stop",
            ChaosKind::Restart => "restart",
            ChaosKind::Partition => "partition",
            ChaosKind::Loss => "loss",
            ChaosKind::LinkDown => "link-down",
            ChaosKind::DiskFull => "disk-full",
        }
    }

    pub fn parse(s: &str) -> Option<ChaosKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The single-fault injector that makes it.
    pub fn fault_kind(self) -> FaultKind {
        match self {
            ChaosKind::Kill => FaultKind::Sigkill,
            ChaosKind::Stop => FaultKind::Sigstop,
            ChaosKind::Restart => FaultKind::Graceful,
            ChaosKind::Partition => FaultKind::Partition,
            ChaosKind::Loss => FaultKind::Netem,
            ChaosKind::LinkDown => FaultKind::LinkDown,
            ChaosKind::DiskFull => FaultKind::DiskFull,
        }
    }

    /// Undone by starting the node again.
    pub fn needs_restart(self) -> bool {
        matches!(self, ChaosKind::Kill | ChaosKind::Restart)
    }
}

impl Chaos {
    /// The fault kinds, parsed (checked before anything runs).
    pub fn kinds(&self) -> Result<Vec<ChaosKind>, String> {
        self.faults
            .iter()
            .map(|f| {
                ChaosKind::parse(f).ok_or_else(|| {
                    let known: Vec<&str> = ChaosKind::ALL.iter().map(|k| k.name()).collect();
                    format!(
                        "chaos.faults: unknown fault kind {f:?} (known: {})",
                        known.join(", ")
                    )
                })
            })
            .collect()
    }

    /// Mean time between fault starts, in ms.
    pub fn interval_ms(&self) -> Result<u64, String> {
        match (self.interval, self.rate) {
            (Some(i), None) => Ok(i.get().as_millis() as u64),
            (None, Some(r)) if r.is_finite() && r > 0.0 && r <= 6000.0 => {
                Ok((60_000.0 / r).round() as u64)
            }
            (None, Some(r)) => Err(format!(
                "chaos.rate: {r} must be more than 0 and at most 6000 faults per minute"
            )),
            _ => Err("[chaos] needs exactly one of interval and rate".into()),
        }
    }
}

/// A fault of the run as it happened: planned, injected, undone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosFault {
    /// Planned start, ms after the workload started.
    pub at_ms: u64,
    pub kind: String,
    /// The schedule's target: a node name, `primary` or `replica#K`.
    pub target: String,
    /// The node it hit.
    pub node: Option<String>,
    /// When it was injected and undone (ms since start).
    pub injected_ms: Option<f64>,
    pub undone_ms: Option<f64>,
    /// Why it could not be injected or undone.
    pub error: Option<String>,
}

/// One invariant over the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Invariant {
    pub name: String,
    /// How many observations it was checked on.
    pub checks: u64,
    pub violations: Vec<Violation>,
}

/// A moment an invariant did not hold.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub at_ms: f64,
    pub what: String,
}

/// What a chaos run did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub schedule: Vec<ChaosFault>,
    /// Faults injected (planned ones that could not be are in `schedule` with an `error`).
    pub injected: usize,
    pub invariants: Vec<Invariant>,
    pub convergence: Convergence,
}

impl ChaosReport {
    pub fn violations(&self) -> usize {
        self.invariants.iter().map(|i| i.violations.len()).sum()
    }

    pub fn passed(&self) -> bool {
        self.violations() == 0 && self.convergence.converged
    }
}

/// A seed for a scenario without one: different on every call.
pub fn draw_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

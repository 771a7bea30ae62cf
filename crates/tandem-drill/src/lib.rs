//! Failover drills: a workload against a target, a fault injected into a cluster at a chosen
//! moment, watchers of every node's role, and a report of what clients saw: time without
//! service (RTO), failed requests, detection and failover times, and whether two nodes were
//! ever primary at once. The invariant checkers here are the same code the tests use.

pub mod chaos;
pub mod client;
pub mod fault;
pub mod invariants;
mod measure;
pub mod pg;
pub mod report;
pub mod run;
pub mod scenario;
mod target;
pub mod workload;
pub mod writes;

pub use report::{RunReport, Summary};
pub use run::run_scenario;
pub use scenario::Scenario;

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{file}: {message}")]
    Scenario { file: String, message: String },
    #[error("refused before any fault: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

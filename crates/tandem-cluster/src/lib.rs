//! tandem's control plane: a quorum leader lease kept in a consensus store (embedded Raft or
//! etcd), member heartbeats, fencing tokens, and the hooks that make a managed service follow
//! the lease.
//!
//! The lease engine (`lease`) decides; the agent (`agent`) does the I/O around it.

pub mod agent;
pub mod config;
pub mod dcs;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod failsafe;
pub mod hooks;
pub mod lease;
pub mod metrics;
pub mod postgres;
pub mod raft;
pub mod state;
pub mod timing;

pub use agent::{Agent, AgentHandle, ClusterStatus};
pub use config::{ClusterConfig, NodeConfig, ServiceConfig};
pub use dcs::{Dcs, DcsError};

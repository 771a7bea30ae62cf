//! tandem's load balancer: HTTP (HTTP/1.1 and h2c) and TCP frontends, backends with
//! round-robin, least-conn, power-of-two-choices and consistent-hash selection, active and
//! passive health checks, backups, retries that never replay an unsafe request, operator
//! drain/maintenance, and zero-downtime reload.
//!
//! The data plane runs alone: this crate knows nothing of the cluster.

pub mod backend;
mod balance;
mod body;
pub mod check;
pub mod config;
mod http;
pub mod metrics;
mod proxy;
pub mod server;
mod tcp;

pub use config::{BackendConfig, FrontendConfig};
pub use metrics::ProxyMetrics;
pub use proxy::{FrontendStatus, Proxy, ProxyStatus};
pub use server::AdminState;

use tandem_core::validate::Issue;

/// Errors of the proxy's control operations (the request path answers with HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Issue>),
    #[error("{path}: {message}")]
    InvalidConfig { path: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    NeedsRestart(String),
}

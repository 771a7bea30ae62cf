//! Convergence after the last chaos fault: within a deadline, every watched node answers
//! `GET /health`, exactly one answers 200 on `/primary`, and with `[watch] postgres` exactly
//! that node's server is out of recovery and every other server streams from it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tandem_core::clock::{self, Instant};

use crate::client;
use crate::fault;

/// Whether the cluster was whole again in time.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    pub converged: bool,
    /// From the last fault's undo to the cluster whole.
    pub after_ms: Option<f64>,
    pub timeout_ms: f64,
    /// What was still missing at the deadline.
    pub missing: Option<String>,
}

/// Poll until converged or `timeout` after `from`.
pub async fn wait(
    nodes: &BTreeMap<String, String>,
    postgres: &BTreeMap<String, String>,
    from: Instant,
    timeout: Duration,
) -> Convergence {
    let deadline = from + timeout;
    let mut out = Convergence {
        timeout_ms: timeout.as_secs_f64() * 1000.0,
        ..Convergence::default()
    };
    loop {
        match whole(nodes, postgres).await {
            Ok(()) => {
                out.converged = true;
                out.after_ms = Some(clock::since(from).as_secs_f64() * 1000.0);
                return out;
            }
            Err(e) if clock::now() >= deadline => {
                out.missing = Some(e);
                return out;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `Ok` when the cluster is whole, else what is missing.
async fn whole(
    nodes: &BTreeMap<String, String>,
    postgres: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (name, addr) in nodes {
        if client::get_json(addr, "/health", Duration::from_millis(500))
            .await
            .is_none()
        {
            return Err(format!("{name} does not answer GET /health"));
        }
    }
    let primary = fault::current_primary(nodes)
        .await
        .ok_or("not exactly one node answers 200 on /primary")?;
    if postgres.is_empty() {
        return Ok(());
    }
    let mut writable = Vec::new();
    let mut streaming = 0;
    for (name, dsn) in postgres {
        let (recovery, n) = super::pgwatch::state(dsn)
            .await
            .map_err(|e| format!("{name}'s PostgreSQL: {e}"))?;
        if !recovery {
            writable.push(name.clone());
            streaming = n;
        }
    }
    if writable != [primary.clone()] {
        return Err(format!(
            "PostgreSQL out of recovery on {writable:?}, lease holder {primary}"
        ));
    }
    if streaming + 1 < postgres.len() as i64 {
        return Err(format!(
            "{streaming} of {} replicas stream from {primary}",
            postgres.len() - 1
        ));
    }
    Ok(())
}

//! The drill's own requests to the target outside the workload: checking it before the run,
//! and reading sequenced writes back after it.

use std::time::Duration;

use tandem_core::clock;

use crate::client::{Conn, Outcome};
use crate::scenario::{RequestKind, TargetKind};
use crate::workload;
use crate::DrillError;

/// Check the target before anything runs: PostgreSQL gets its table; an HTTP target taking
/// writes must list them.
pub(crate) async fn prepare_target(t: &TargetKind, kind: RequestKind) -> Result<(), DrillError> {
    match (t, kind) {
        (TargetKind::Postgres(cfg), _) => {
            crate::pg::prepare(cfg).await.map_err(DrillError::Refused)
        }
        (TargetKind::Http(addr, path), RequestKind::Writes) => {
            let p = format!("{}?from={}", workload::writes_path(path), u64::MAX);
            match Conn::new(addr)
                .request("GET", &p, None, Duration::from_secs(2))
                .await
            {
                Outcome::Status(200, _) => Ok(()),
                other => Err(DrillError::Refused(format!(
                    "target.http: GET {p} on {addr} answered {other:?}; sequenced writes need a target that stores POST {}/N and lists them",
                    workload::writes_path(path)
                ))),
            }
        }
        (TargetKind::Http(..) | TargetKind::Tcp(_), _) => Ok(()),
    }
}

/// The sequence numbers in `[from, to)` the target holds, retrying for up to `wait` (the
/// target may still be failing over).
pub(crate) async fn read_back(
    t: &TargetKind,
    from: u64,
    to: u64,
    wait: Duration,
) -> Result<Vec<u64>, String> {
    match t {
        TargetKind::Postgres(cfg) => crate::pg::read_back(cfg, from, to, wait).await,
        TargetKind::Tcp(_) => Err("a TCP target has no writes to read back".into()),
        TargetKind::Http(addr, path) => {
            let p = format!("{}?from={from}", workload::writes_path(path));
            let deadline = clock::now() + wait;
            let mut conn = Conn::new(addr);
            loop {
                let last = match conn.request("GET", &p, None, Duration::from_secs(5)).await {
                    Outcome::Status(200, body) => {
                        return String::from_utf8_lossy(&body)
                            .lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(|l| {
                                l.trim()
                                    .parse::<u64>()
                                    .map_err(|_| format!("GET {p}: {l:?} is not a sequence number"))
                            })
                            .collect();
                    }
                    other => format!("GET {p} on {addr}: {other:?}"),
                };
                if clock::now() >= deadline {
                    return Err(last);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

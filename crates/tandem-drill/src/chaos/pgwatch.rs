//! Every PostgreSQL server asked from outside, every 150 ms: `SELECT pg_is_in_recovery()`, and
//! when it says no, a real write (an upsert into `tandem_drill_probe`, committed with
//! `synchronous_commit = local` so that a primary without its synchronous standby still shows
//! it takes writes) that also returns the server's WAL timeline. Two servers both taking writes
//! at one instant is a violation, proven the way two primaries are: two writes on one server
//! and one timeline bracket a stretch in which it certainly took writes (a server leaves and
//! regains the primary role only through a promotion, which starts a new timeline).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::clock::{self, Instant};
use tokio_postgres::Client;

use super::{Invariant, Violation};
use crate::invariants::{overlaps, Sample};

const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS tandem_drill_probe(node text primary key, at timestamptz)";
const EVERY: Duration = Duration::from_millis(150);
const TIMEOUT: Duration = Duration::from_secs(1);

type Writes = Arc<Mutex<BTreeMap<String, Vec<Sample>>>>;

/// The probes of a run; stop them with [`PgWatch::finish`].
pub struct PgWatch {
    stop: Arc<AtomicBool>,
    probes: Arc<AtomicU64>,
    writes: Writes,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Connect with the drill's checks (no TLS, 2 s connect timeout).
async fn connect(dsn: &str) -> Result<Client, String> {
    let cfg = crate::pg::parse(dsn)?;
    tokio::time::timeout(TIMEOUT * 2, crate::pg::connect(&cfg))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("cannot connect ({e})"))
}

/// Whether the server is in recovery, and how many standbys stream from it.
pub(super) async fn state(dsn: &str) -> Result<(bool, i64), String> {
    let c = connect(dsn).await?;
    let q = "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')";
    let row = tokio::time::timeout(TIMEOUT, c.query_one(q, &[]))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let recovery: bool = row.try_get(0).map_err(|e| e.to_string())?;
    let streaming: i64 = row.try_get(1).map_err(|e| e.to_string())?;
    Ok((recovery, streaming))
}

impl PgWatch {
    /// Before the run: every server's connection string is checked and the probe table exists
    /// (created on a server that takes writes).
    pub async fn prepare(dsns: &BTreeMap<String, String>) -> Result<(), String> {
        let mut created = false;
        for (name, dsn) in dsns {
            crate::pg::parse(dsn).map_err(|e| format!("watch.postgres.{name}: {e}"))?;
            if created {
                continue;
            }
            if let Ok(c) = connect(dsn).await {
                created = tokio::time::timeout(TIMEOUT * 5, c.batch_execute(CREATE))
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
        }
        if created {
            Ok(())
        } else {
            Err("watch.postgres: no server took the CREATE TABLE of tandem_drill_probe (none is primary?)".into())
        }
    }

    pub fn start(dsns: &BTreeMap<String, String>) -> PgWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicU64::new(0));
        let writes: Writes = Arc::default();
        let tasks = dsns
            .iter()
            .map(|(n, d)| {
                tokio::spawn(probe(
                    n.clone(),
                    d.clone(),
                    stop.clone(),
                    probes.clone(),
                    writes.clone(),
                ))
            })
            .collect();
        PgWatch {
            stop,
            probes,
            writes,
            tasks,
        }
    }

    /// Stop probing; the invariant "at most one writable PostgreSQL server".
    pub async fn finish(self, start: Instant) -> Invariant {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "a PostgreSQL probe task failed");
            }
        }
        let writes = self.writes.lock().map(|w| w.clone()).unwrap_or_default();
        let std_start = start.into_std();
        Invariant {
            name: "one_writable_postgres".into(),
            checks: self.probes.load(Ordering::Relaxed),
            violations: overlaps(&writes)
                .into_iter()
                .map(|o| Violation {
                    at_ms: o.at.saturating_duration_since(std_start).as_secs_f64() * 1000.0,
                    what: format!(
                        "{} took a write (timeline {}) while {} was writable (timeline {})",
                        o.other, o.other_token, o.node, o.token
                    ),
                })
                .collect(),
        }
    }
}

/// One server's probe loop.
async fn probe(
    node: String,
    dsn: String,
    stop: Arc<AtomicBool>,
    probes: Arc<AtomicU64>,
    writes: Writes,
) {
    let mut client: Option<Client> = None;
    let mut next = clock::now();
    while !stop.load(Ordering::Relaxed) {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connect(&dsn).await.ok();
        }
        if let Some(c) = &client {
            let sent = clock::now();
            match tokio::time::timeout(TIMEOUT, write(c, &node)).await {
                Ok(Ok(Some(timeline))) => {
                    let answered = clock::now();
                    if let Ok(mut w) = writes.lock() {
                        w.entry(node.clone()).or_default().push(Sample {
                            sent: sent.into_std(),
                            answered: answered.into_std(),
                            token: timeline,
                        });
                    }
                }
                Ok(Ok(None)) => {}
                // A failed write leaves the session in an aborted transaction, a timeout a
                // request in flight: start again on a new connection.
                Ok(Err(_)) | Err(_) => client = None,
            }
            probes.fetch_add(1, Ordering::Relaxed);
        }
        next += EVERY;
        clock::sleep_until(next.max(clock::now())).await;
    }
}

/// `Some(timeline)` when the server took the write, `None` when it is in recovery.
async fn write(c: &Client, node: &str) -> Result<Option<u64>, tokio_postgres::Error> {
    let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await?;
    if row.try_get::<_, bool>(0)? {
        return Ok(None);
    }
    c.batch_execute("BEGIN; SET LOCAL synchronous_commit = local")
        .await?;
    c.execute(
        "INSERT INTO tandem_drill_probe(node, at) VALUES ($1, now()) \
         ON CONFLICT (node) DO UPDATE SET at = excluded.at",
        &[&node],
    )
    .await?;
    let wal: String = c
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await?
        .try_get(0)?;
    c.batch_execute("COMMIT").await?;
    Ok(wal.get(..8).and_then(|t| u64::from_str_radix(t, 16).ok()))
}

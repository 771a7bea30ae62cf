//! PostgreSQL high availability (`[service] kind = "postgres"`): the agent bootstraps the first
//! primary with initdb, clones replicas with pg_basebackup, promotes the safest replica when the
//! lease moves, keeps `synchronous_standby_names` and the cluster record's synchronous set in
//! step, fences an old primary even when the agent itself dies or hangs, and brings old
//! primaries back as replicas with pg_rewind. See docs/design/postgres.md for the argument.
//!
//! `candidacy` (who may be promoted) is pure and tested here; `manager` does the I/O.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, PgMember};

pub mod manager;
pub mod metrics;
pub(crate) mod pg;
pub mod repair;
pub(crate) mod supervise;
pub mod sys;
pub mod watchdog;

pub use manager::{PgHandle, PgStatus};

static WATCHDOG_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The program that runs `watchdog --grace-ms N` (the tandem binary sets itself at start).
pub fn set_watchdog_exe(path: PathBuf) {
    let _ = WATCHDOG_EXE.set(path);
}

pub(crate) fn watchdog_exe() -> Option<PathBuf> {
    WATCHDOG_EXE.get().cloned()
}

/// `synchronous`: how commits are acknowledged.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Asynchronous replication: failover picks the replica with the most WAL, within
    /// `maximum_lag_on_failover`.
    #[default]
    Off,
    /// One synchronous standby when one streams; only it may be promoted.
    On,
    /// As `on`, and no commit is acknowledged while no standby is in sync.
    Strict,
}

/// The resolved `[service]` settings of `kind = "postgres"`.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub os_user: String,
    pub replication_user: String,
    pub synchronous: SyncMode,
    /// Bytes.
    pub maximum_lag_on_failover: u64,
    pub use_rewind: bool,
    /// Failed starts of a replica in a row before its data directory is set aside and cloned.
    pub max_start_failures: u32,
    pub parameters: BTreeMap<String, String>,
    /// Addresses of the other cluster members' hosts (for pg_hba.conf).
    pub peer_ips: Vec<std::net::IpAddr>,
    /// Where PostgreSQL's own log goes.
    pub log_file: PathBuf,
}

/// `[service] max_start_failures` when not set.
pub const DEFAULT_MAX_START_FAILURES: u32 = 3;

/// Settings tandem writes itself: `parameters` may not set them.
pub const MANAGED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "hot_standby",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "synchronous_commit",
    "recovery_target_timeline",
    "wal_level",
    "wal_log_hints",
    "data_directory",
    "hba_file",
    "ident_file",
    "config_file",
    "include",
    "include_if_exists",
    "include_dir",
];

/// Programs that must be in `bin_dir`.
pub const PROGRAMS: &[&str] = &[
    "postgres",
    "initdb",
    "pg_basebackup",
    "pg_rewind",
    "pg_controldata",
];

/// Parse a size as PostgreSQL writes them: `1MB`, `512kB`, `2GB`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like \"1MB\", \"512kB\" or bytes)"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" | "k" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use B, kB, MB, GB or TB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The cluster as the manager sees it: the record and which members are alive.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub state: ClusterState,
    pub alive: BTreeSet<String>,
}

impl View {
    /// The lease holder's PostgreSQL, when it runs as a primary and its heartbeats arrive.
    /// Replicas follow only such a primary: a standby stops streaming from (and acknowledging)
    /// a primary whose agent went silent, even before its lease has run out.
    pub fn primary(&self, me: &str) -> Option<(&str, &PgMember)> {
        let holder = self.state.lease.as_ref()?.holder.as_str();
        if holder == me || !self.alive.contains(holder) {
            return None;
        }
        let m = self.state.members.get(holder)?.info.pg.as_ref()?;
        (m.running && m.primary).then_some((holder, m))
    }
}

/// Whether this node's PostgreSQL may be promoted, judged from the record: `Ok` or why not.
///
/// - Before the cluster is bootstrapped any node may take the lease (it runs initdb, or adopts
///   the database already in its data dir).
/// - Afterwards only a running replica of that database; with `synchronous` on or strict only a
///   member of the record's synchronous set or the primary that wrote it, and never one with
///   less WAL than another of those; with it off, only one within `maximum_lag_on_failover` of the last primary's
///   position, and never one with less WAL than another live replica (when the primary is gone).
pub fn candidacy(
    me: &str,
    mine: Option<&PgMember>,
    has_data: bool,
    view: &View,
    mode: SyncMode,
    max_lag: u64,
) -> Result<(), String> {
    let state = &view.state;
    let Some(sysid) = &state.initialized else {
        return Ok(());
    };
    if !has_data {
        return Err("no data directory yet (waiting to clone the primary)".into());
    }
    let Some(mine) = mine.filter(|m| m.running) else {
        return Err("PostgreSQL is not running".into());
    };
    if &mine.sysid != sysid {
        return Err(format!(
            "the data directory holds database {} but the cluster runs {sysid}",
            mine.sysid
        ));
    }
    let others = || {
        state.members.iter().filter_map(move |(name, m)| {
            let pg = m.info.pg.as_ref()?;
            (name != me && pg.sysid == *sysid).then_some((name.as_str(), pg))
        })
    };
    match mode {
        SyncMode::On | SyncMode::Strict => {
            // The synchronous set, and the primary that wrote it: between them they hold
            // every acknowledged commit.
            let allowed = |n: &str| {
                state.sync.iter().any(|s| s == n) || state.sync_leader.as_deref() == Some(n)
            };
            if !allowed(me) {
                return Err("not a synchronous standby".into());
            }
            for (name, pg) in others().filter(|(n, _)| allowed(n)) {
                // The set's members count with their last report, alive or not; the old
                // primary only once it runs as a replica again (its last report as a primary
                // includes WAL nobody acknowledged).
                let in_set = state.sync.iter().any(|s| s == name);
                let competing = in_set || (view.alive.contains(name) && pg.running && !pg.primary);
                if competing && (pg.timeline, pg.lsn) > (mine.timeline, mine.lsn) {
                    return Err(format!("{name} (also synchronous) has more WAL"));
                }
            }
        }
        SyncMode::Off => {
            // The last primary's last reported position.
            let last_primary = others()
                .filter(|(_, pg)| pg.primary)
                .map(|(_, pg)| pg.lsn)
                .max();
            if let Some(p) = last_primary {
                let lag = p.saturating_sub(mine.lsn);
                if lag > max_lag {
                    return Err(format!(
                        "{lag} bytes behind the last primary (maximum_lag_on_failover {max_lag})"
                    ));
                }
            }
            let primary_alive = state
                .lease
                .as_ref()
                .is_some_and(|l| l.holder != me && view.alive.contains(&l.holder));
            if !primary_alive {
                for (name, pg) in others() {
                    // A newer timeline wins over more WAL on an older one (a diverged old
                    // primary's tail).
                    if view.alive.contains(name)
                        && pg.running
                        && !pg.primary
                        && (pg.timeline, pg.lsn) > (mine.timeline, mine.lsn)
                    {
                        return Err(format!("{name} has more WAL"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A PostgreSQL position (`16/B374D848`) as bytes.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A replication slot name for a member: lower case letters, digits and underscores.
pub fn slot_name(member: &str) -> String {
    member
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;

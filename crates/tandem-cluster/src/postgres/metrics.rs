//! `tandem_postgres_*` metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    pub replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Every PostgreSQL metric (all zero on nodes without a PostgreSQL service).
#[derive(Clone, Default)]
pub struct PgMetrics {
    pub up: Gauge,
    pub primary: Gauge,
    pub timeline: Gauge,
    pub lsn: Gauge<u64, AtomicU64>,
    pub lag_bytes: Family<ReplicaLabel, Gauge<f64, AtomicU64>>,
    pub lag_seconds: Family<ReplicaLabel, Gauge<f64, AtomicU64>>,
    pub sync_standby: Family<ReplicaLabel, Gauge>,
    pub promotions: Counter,
    pub failovers: Counter,
    pub switchovers: Counter,
    pub rewinds: Family<ResultLabel, Counter>,
    pub basebackups: Family<ResultLabel, Counter>,
    pub fenced: Counter,
    pub manager_failures: Counter,
    pub start_failures: Counter,
    pub set_aside: Counter,
}

impl PgMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        for r in ["ok", "failed"] {
            let l = ResultLabel { result: r.into() };
            let _ = m.rewinds.get_or_create(&l);
            let _ = m.basebackups.get_or_create(&l);
        }
        let r = registry.sub_registry_with_prefix("postgres");
        r.register(
            "up",
            "1 while the managed PostgreSQL runs and answers",
            m.up.clone(),
        );
        r.register(
            "primary",
            "1 while the managed PostgreSQL runs as the writable primary",
            m.primary.clone(),
        );
        r.register(
            "timeline",
            "PostgreSQL's current timeline",
            m.timeline.clone(),
        );
        r.register_with_unit(
            "wal_position",
            "WAL position: current on a primary, received or replayed on a replica",
            Unit::Bytes,
            m.lsn.clone(),
        );
        r.register_with_unit(
            "replication_lag",
            "(primary) WAL each replica has not flushed yet",
            Unit::Bytes,
            m.lag_bytes.clone(),
        );
        r.register_with_unit(
            "replication_replay_lag",
            "(primary) replay lag each replica reports",
            Unit::Seconds,
            m.lag_seconds.clone(),
        );
        r.register(
            "sync_standby",
            "(primary) 1 for the replica in synchronous_standby_names",
            m.sync_standby.clone(),
        );
        r.register(
            "promotions",
            "Times this node's PostgreSQL was promoted or bootstrapped as primary",
            m.promotions.clone(),
        );
        r.register(
            "failovers",
            "Promotions after the previous primary failed",
            m.failovers.clone(),
        );
        r.register(
            "switchovers",
            "Promotions in a planned switchover",
            m.switchovers.clone(),
        );
        r.register("rewinds", "pg_rewind runs by result", m.rewinds.clone());
        r.register(
            "basebackups",
            "pg_basebackup clones by result",
            m.basebackups.clone(),
        );
        r.register(
            "fenced",
            "Times a PostgreSQL running as primary without the lease was stopped",
            m.fenced.clone(),
        );
        r.register(
            "manager_failures",
            "Times the PostgreSQL manager task panicked or failed (PostgreSQL was fenced, then the manager restarted or given up)",
            m.manager_failures.clone(),
        );
        r.register(
            "start_failures",
            "Starts of PostgreSQL that failed (it exited before answering, or its data directory could not be read)",
            m.start_failures.clone(),
        );
        r.register(
            "data_set_aside",
            "Times a replica's data directory was moved aside after repeated failed starts and cloned afresh",
            m.set_aside.clone(),
        );
        m
    }
}

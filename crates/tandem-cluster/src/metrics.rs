//! `tandem_cluster_*` metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Every cluster metric.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub is_primary: Gauge,
    pub renewals: Family<ResultLabel, Counter>,
    pub renewal_latency: Histogram,
    pub fencing_token: Gauge,
    pub failovers: Counter,
    pub switchovers: Counter,
    pub demotions: Family<ReasonLabel, Counter>,
    pub healthy_members: Gauge,
    pub has_quorum: Gauge,
    pub peer_rejected: Family<ReasonLabel, Counter>,
    pub hook_failures: Family<ReasonLabel, Counter>,
    /// (Embedded Raft) requests of this lease holder to take the Raft leadership, by result.
    pub raft_handoffs: Family<ResultLabel, Counter>,
    pub pg: crate::postgres::metrics::PgMetrics,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            is_primary: Gauge::default(),
            renewals: Family::default(),
            renewal_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            fencing_token: Gauge::default(),
            failovers: Counter::default(),
            switchovers: Counter::default(),
            demotions: Family::default(),
            healthy_members: Gauge::default(),
            has_quorum: Gauge::default(),
            peer_rejected: Family::default(),
            hook_failures: Family::default(),
            raft_handoffs: Family::default(),
            pg: crate::postgres::metrics::PgMetrics::register(registry),
        };
        // Every label value exists from the start at 0, so `increase()` sees the first count.
        for result in ["ok", "refused", "error", "timeout", "failsafe"] {
            let _ = m.renewals.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        for reason in [
            "lease_expired",
            "unhealthy",
            "switchover",
            "shutdown",
            "lease_lost",
        ] {
            let _ = m.demotions.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for reason in [
            "unsigned",
            "malformed_signature",
            "stale_signature",
            "bad_signature",
            "malformed",
        ] {
            let _ = m.peer_rejected.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for result in ["ok", "refused", "error", "lost", "overtaken"] {
            let _ = m.raft_handoffs.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        for hook in ["start", "stop", "promote", "demote"] {
            let _ = m.hook_failures.get_or_create(&ReasonLabel {
                reason: hook.into(),
            });
        }
        let r = registry.sub_registry_with_prefix("cluster");
        r.register(
            "is_primary",
            "1 while this node holds a valid lease",
            m.is_primary.clone(),
        );
        r.register(
            "lease_renewals",
            "Lease renewal attempts by result",
            m.renewals.clone(),
        );
        r.register_with_unit(
            "lease_renewal_duration",
            "Time for a lease renewal to be confirmed by the store",
            Unit::Seconds,
            m.renewal_latency.clone(),
        );
        r.register(
            "fencing_token",
            "Fencing token of the lease this node holds or last saw",
            m.fencing_token.clone(),
        );
        r.register(
            "failovers",
            "Times this node took the lease from an expired or released holder",
            m.failovers.clone(),
        );
        r.register(
            "switchovers",
            "Planned switchovers this node took the lease in",
            m.switchovers.clone(),
        );
        r.register(
            "demotions",
            "Times this node stopped being primary, by reason",
            m.demotions.clone(),
        );
        r.register(
            "healthy_members",
            "Members seen alive and healthy",
            m.healthy_members.clone(),
        );
        r.register(
            "has_quorum",
            "1 while this node reaches a quorum of the store",
            m.has_quorum.clone(),
        );
        r.register(
            "peer_rejected",
            "Peer messages refused, by reason",
            m.peer_rejected.clone(),
        );
        r.register(
            "raft_handoffs",
            "Requests of this lease holder to take over the Raft leadership, by result",
            m.raft_handoffs.clone(),
        );
        r.register(
            "hook_failures",
            "Service hooks that failed or timed out, by hook",
            m.hook_failures.clone(),
        );
        m
    }
}

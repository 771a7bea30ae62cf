//! `tandem_vrrp_*` metrics, registered once per node; every VIP instance labels its series with
//! `vip` (its name).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::fsm::State;
use crate::packet::DropReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabel {
    pub vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipState {
    pub vip: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipTransition {
    pub vip: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipReason {
    pub vip: String,
    pub reason: String,
}

/// Every VRRP/VIP metric.
#[derive(Clone, Default)]
pub struct VrrpMetrics {
    pub state: Family<VipState, Gauge>,
    pub transitions: Family<VipTransition, Counter>,
    pub adverts_sent: Family<VipLabel, Counter>,
    pub adverts_received: Family<VipLabel, Counter>,
    pub dropped: Family<VipReason, Counter>,
    pub priority: Family<VipLabel, Gauge>,
    pub garps: Family<VipLabel, Counter>,
    pub address_errors: Family<VipLabel, Counter>,
}

/// The metric label of a state (`initialize` also stands for out of service).
pub fn state_label(s: State) -> &'static str {
    match s {
        State::Initialize => "initialize",
        State::Backup => "backup",
        State::Master => "master",
    }
}

impl VrrpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("vrrp");
        r.register(
            "state",
            "1 for the state each VIP instance is in (initialize, backup, master), else 0",
            m.state.clone(),
        );
        r.register(
            "transitions",
            "State changes of each VIP instance, by from and to state",
            m.transitions.clone(),
        );
        r.register(
            "adverts_sent",
            "VRRP advertisements sent",
            m.adverts_sent.clone(),
        );
        r.register(
            "adverts_received",
            "Valid VRRP advertisements received for the instance's VRID",
            m.adverts_received.clone(),
        );
        r.register(
            "packets_dropped",
            "VRRP packets dropped, by reason",
            m.dropped.clone(),
        );
        r.register(
            "priority",
            "Effective VRRP priority after tracking",
            m.priority.clone(),
        );
        r.register(
            "garp_sent",
            "Gratuitous ARP packets sent for the virtual addresses",
            m.garps.clone(),
        );
        r.register(
            "address_errors",
            "Failed attempts to add or remove a virtual address",
            m.address_errors.clone(),
        );
        m
    }

    /// Create the instance's series at their initial values.
    pub fn init(&self, vip: &str) {
        let l = VipLabel { vip: vip.into() };
        for s in [State::Initialize, State::Backup, State::Master] {
            self.state
                .get_or_create(&VipState {
                    vip: vip.into(),
                    state: state_label(s).into(),
                })
                .set(i64::from(s == State::Initialize));
        }
        let _ = self.adverts_sent.get_or_create(&l);
        let _ = self.adverts_received.get_or_create(&l);
        let _ = self.garps.get_or_create(&l);
        let _ = self.address_errors.get_or_create(&l);
    }

    pub fn set_state(&self, vip: &str, from: State, to: State) {
        for s in [State::Initialize, State::Backup, State::Master] {
            self.state
                .get_or_create(&VipState {
                    vip: vip.into(),
                    state: state_label(s).into(),
                })
                .set(i64::from(s == to));
        }
        self.transitions
            .get_or_create(&VipTransition {
                vip: vip.into(),
                from: state_label(from).into(),
                to: state_label(to).into(),
            })
            .inc();
    }

    pub fn drop(&self, vip: &str, why: DropReason) {
        self.dropped
            .get_or_create(&VipReason {
                vip: vip.into(),
                reason: why.label().into(),
            })
            .inc();
    }

    pub fn sent(&self, vip: &str) {
        self.adverts_sent
            .get_or_create(&VipLabel { vip: vip.into() })
            .inc();
    }

    pub fn received(&self, vip: &str) {
        self.adverts_received
            .get_or_create(&VipLabel { vip: vip.into() })
            .inc();
    }

    pub fn garp(&self, vip: &str) {
        self.garps
            .get_or_create(&VipLabel { vip: vip.into() })
            .inc();
    }

    pub fn address_error(&self, vip: &str) {
        self.address_errors
            .get_or_create(&VipLabel { vip: vip.into() })
            .inc();
    }

    pub fn set_priority(&self, vip: &str, p: u8) {
        self.priority
            .get_or_create(&VipLabel { vip: vip.into() })
            .set(i64::from(p));
    }
}

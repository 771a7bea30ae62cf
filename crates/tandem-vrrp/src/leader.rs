//! `mode = "leader"`: the VIP follows the cluster lease. The address is added (with gratuitous
//! ARPs) while this node is the primary, and removed at the latest when its lease may run out
//! (`Lease::deadline`, which the agent already shortens by its safety margin), so no other node
//! can be granted the lease while this one still holds the address.

use std::time::Duration;

use tandem_core::clock::{self, Instant};
use tandem_core::Shutdown;

use crate::config::VipConfig;
use crate::fsm::State;
use crate::outputs::{prepare, Outputs, VipContext, VipError};

/// What the VIP needs to know of the cluster agent.
pub trait Lease: Send + Sync + 'static {
    /// Until when this node may act as primary; `None` when it may not.
    fn deadline(&self) -> Option<Instant>;
    /// Whether this node is the primary (valid lease, service promoted and healthy).
    fn is_primary(&self) -> bool;
}

/// How often the lease is looked at while nothing is due.
const POLL: Duration = Duration::from_millis(5);
/// Wake this much before the deadline: timers can fire a little late.
const EARLY: Duration = Duration::from_millis(3);

/// What the loop should do now, from the lease facts (pure, for tests).
pub fn want_address(now: Instant, primary: bool, deadline: Option<Instant>) -> bool {
    primary && deadline.is_some_and(|d| now + EARLY < d)
}

/// A prepared `leader` instance.
pub struct LeaderInstance {
    out: Outputs,
}

impl LeaderInstance {
    pub async fn prepare(
        name: String,
        cfg: VipConfig,
        ctx: VipContext,
    ) -> Result<LeaderInstance, VipError> {
        let iface = prepare(&name, &cfg, &ctx.netlink).await?;
        ctx.metrics.init(&name);
        let out = Outputs::new(name, cfg, ctx, &iface)?;
        Ok(LeaderInstance { out })
    }

    /// Follow `lease` until `stop`; a holder removes the address on the way out.
    pub async fn run(self, lease: impl Lease, stop: Shutdown) {
        let mut out = self.out;
        out.changed(
            State::Initialize,
            State::Backup,
            "started: waiting for the lease",
        );
        let mut holding = false;
        let mut renew_at = clock::now();
        loop {
            let now = clock::now();
            let deadline = lease.deadline();
            let want = want_address(now, lease.is_primary(), deadline);
            if want && holding && now >= renew_at {
                // Keep the kernel-side lifetime ahead (see `outputs::lifetime`).
                out.add_addresses().await;
                renew_at = now + out.lifetime / 4;
            } else if want && !holding {
                out.add_addresses().await;
                out.garp_burst(out.cfg.garp_repeat);
                holding = true;
                renew_at = now + out.lifetime / 4;
                out.changed(
                    State::Backup,
                    State::Master,
                    "this node holds the cluster lease",
                );
            } else if !want && holding {
                out.stop_garp();
                out.remove_addresses().await;
                holding = false;
                let why = if deadline.is_some_and(|d| now + EARLY < d) {
                    "this node's service is not primary"
                } else {
                    "the lease expired or passed on"
                };
                out.changed(State::Master, State::Backup, why);
            }
            let mut wake = clock::now() + POLL;
            if let (true, Some(d)) = (holding, deadline) {
                wake = wake.min(d.checked_sub(EARLY).unwrap_or(d));
            }
            tokio::select! {
                _ = stop.wait() => break,
                _ = clock::sleep_until(wake) => {}
            }
        }
        if holding {
            out.stop_garp();
            out.remove_addresses().await;
            out.changed(State::Master, State::Initialize, "stopping");
        } else {
            out.changed(State::Backup, State::Initialize, "stopping");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_goes_before_the_deadline() {
        let t = clock::now();
        let d = t + Duration::from_millis(100);
        assert!(want_address(t, true, Some(d)));
        assert!(!want_address(t, false, Some(d)), "not primary");
        assert!(!want_address(t, true, None), "no lease");
        assert!(!want_address(d - Duration::from_millis(2), true, Some(d)));
        assert!(!want_address(d, true, Some(d)));
    }
}

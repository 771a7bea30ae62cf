//! Wiring of the `[[vip]]` instances: each runs as its own task; `vrrp` ones elect with their
//! peers, `leader` ones follow this node's cluster lease.

use std::time::Duration;

use tandem_cluster::AgentHandle;
use tandem_core::clock::Instant;
use tandem_core::{EventBus, Shutdown, TaskHandle};
use tandem_vrrp::netlink::Netlink;
use tandem_vrrp::{
    LeaderInstance, Lease, VipConfig, VipContext, VipMode, VrrpInstance, VrrpMetrics,
};

/// The agent as the VIP sees it.
struct AgentLease(AgentHandle);

impl Lease for AgentLease {
    fn deadline(&self) -> Option<Instant> {
        self.0.lease_deadline()
    }

    fn is_primary(&self) -> bool {
        self.0.primary().is_some()
    }
}

/// The running VIP instances.
pub struct VipRuntime {
    shutdown: Shutdown,
    tasks: Vec<TaskHandle>,
}

impl VipRuntime {
    /// Prepare every instance (interface, cleanup, sockets) before starting any: a bad
    /// interface stops `tandem run` with the reason.
    pub async fn start(
        vips: &[VipConfig],
        agent: Option<AgentHandle>,
        events: &EventBus,
        metrics: &VrrpMetrics,
    ) -> anyhow::Result<VipRuntime> {
        let shutdown = Shutdown::new();
        let mut rt = VipRuntime {
            shutdown: shutdown.clone(),
            tasks: Vec::new(),
        };
        if vips.is_empty() {
            return Ok(rt);
        }
        let ctx = VipContext {
            events: events.clone(),
            metrics: metrics.clone(),
            netlink: Netlink::new()
                .map_err(|e| anyhow::anyhow!("opening a netlink socket for [[vip]]: {e}"))?,
        };
        enum Prepared {
            Vrrp(VrrpInstance),
            Leader(LeaderInstance, AgentHandle),
        }
        let mut prepared = Vec::new();
        for (i, v) in vips.iter().enumerate() {
            let name = v.display_name(i);
            match v.mode {
                VipMode::Vrrp => prepared.push(Prepared::Vrrp(
                    VrrpInstance::prepare(name, v.clone(), ctx.clone()).await?,
                )),
                VipMode::Leader => {
                    let Some(agent) = agent.clone() else {
                        anyhow::bail!("vip[{i}]: mode = \"leader\" needs [node] and [cluster]");
                    };
                    prepared.push(Prepared::Leader(
                        LeaderInstance::prepare(name, v.clone(), ctx.clone()).await?,
                        agent,
                    ));
                }
            }
        }
        for p in prepared {
            let stop = shutdown.child();
            rt.tasks.push(match p {
                Prepared::Vrrp(inst) => TaskHandle::spawn(inst.run(stop)),
                Prepared::Leader(inst, agent) => {
                    TaskHandle::spawn(inst.run(AgentLease(agent), stop))
                }
            });
        }
        Ok(rt)
    }

    /// Stop every instance: masters advertise priority 0 and remove their addresses.
    pub async fn stop(self) {
        self.shutdown.trigger();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t.join()).await;
        }
    }
}

//! Wiring of the cluster agent: the chosen DCS backend, the agent, and their shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tandem_cluster::agent::{Agent, AgentParts};
use tandem_cluster::config::{read_secret, DcsKind};
use tandem_cluster::metrics::ClusterMetrics;
use tandem_cluster::raft::{RaftDcs, RaftParts};
use tandem_cluster::AgentHandle;
use tandem_core::{EventBus, Shutdown};

use crate::config::Config;

/// A running cluster member.
pub struct ClusterRuntime {
    pub handle: AgentHandle,
    shutdown: Shutdown,
    raft: Option<Arc<RaftDcs>>,
    _peer_server: Option<tandem_core::TaskHandle>,
}

impl ClusterRuntime {
    /// Start the DCS and the agent for `config` (which has `[node]` and `[cluster]`).
    pub async fn start(
        config: &Config,
        api: Option<SocketAddr>,
        events: &EventBus,
        registry: &mut Registry,
    ) -> anyhow::Result<Option<ClusterRuntime>> {
        let (Some(node), Some(cluster)) = (&config.node, &config.cluster) else {
            return Ok(None);
        };
        if cluster.peers.len() % 2 == 0 {
            tracing::warn!(
                members = cluster.peers.len(),
                "an even number of members tolerates no more failures than one member less"
            );
        }
        let metrics = ClusterMetrics::register(registry);
        let shutdown = Shutdown::new();
        let secret: Arc<str> =
            Arc::from(read_secret(&cluster.secret_file).map_err(anyhow::Error::msg)?);
        match cluster.dcs {
            DcsKind::Raft => {
                let listen: SocketAddr = cluster.listen.parse().context("cluster.listen")?;
                let board = Arc::new(tandem_cluster::failsafe::Board::default());
                let dcs = RaftDcs::start(RaftParts {
                    node: node.name.clone(),
                    data_dir: node.data_dir.clone(),
                    listen,
                    peers: cluster.peers.clone(),
                    lease_ttl: cluster.lease_ttl.get(),
                    secret: secret.to_string(),
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                    extra: tandem_cluster::failsafe::router(
                        board.clone(),
                        secret.clone(),
                        metrics.clone(),
                    ),
                })
                .await
                .map_err(anyhow::Error::msg)?;
                let handle = Agent::start(AgentParts {
                    node: node.clone(),
                    cluster: cluster.clone(),
                    service: config.service.clone(),
                    dcs: dcs.clone(),
                    api,
                    events: events.clone(),
                    metrics,
                    shutdown: shutdown.clone(),
                    board,
                    secret,
                });
                Ok(Some(ClusterRuntime {
                    handle,
                    shutdown,
                    raft: Some(dcs),
                    _peer_server: None,
                }))
            }
            DcsKind::Etcd => {
                let (handle, server) = tandem_cluster::agent::start_on_etcd(
                    node.clone(),
                    cluster.clone(),
                    config.service.clone(),
                    api,
                    events.clone(),
                    metrics,
                    shutdown.clone(),
                    secret,
                )
                .await
                .map_err(anyhow::Error::msg)?;
                Ok(Some(ClusterRuntime {
                    handle,
                    shutdown,
                    raft: None,
                    _peer_server: Some(server),
                }))
            }
        }
    }

    /// Demote and release the lease if held, run the stop hook, then stop the store.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.handle.stopped().await;
        if let Some(r) = self.raft {
            r.stop().await;
        }
    }
}

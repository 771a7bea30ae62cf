//! The embedded Raft DCS: openraft (pinned 0.9) with its log in redb and peer traffic signed
//! with the cluster secret. Every member is a voter; the cluster is formed from the configured
//! peer list on first start.
//!
//! Timings follow the lease ttl (docs/design/lease.md has the argument and the numbers): a
//! heartbeat every `ttl/40` (10 to 100 ms), openraft's leader lease (a member that heard from a
//! leader refuses votes for it) 6 heartbeats, and a random election timeout of 3 to 6 heartbeats
//! on top, so a lost Raft leader is replaced within about 12 heartbeats (0.3 x ttl). The lease
//! holder also takes the Raft leadership (handoff.rs): then losing any other member needs no
//! election at all.

mod handoff;
pub mod peer;
mod prevote;
mod rejoin;
mod store;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::{BasicNode, Raft, ServerState};
use serde::de::DeserializeOwned;
use tandem_core::{Shutdown, TaskHandle};

use crate::dcs::{Dcs, DcsError};
use crate::metrics::{ClusterMetrics, ReasonLabel};
use crate::state::{ClusterState, Command, Outcome};
use peer::{PeerClient, AUTH_HEADER};
use store::SmData;

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Types of tandem's Raft group.
    pub TypeConfig:
        D = Command,
        R = Outcome,
);

/// What it takes to start the Raft DCS on one node.
pub struct RaftParts {
    pub node: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub peers: BTreeMap<String, String>,
    pub lease_ttl: Duration,
    pub secret: String,
    pub metrics: ClusterMetrics,
    pub shutdown: Shutdown,
    /// More peer endpoints served on the same address (failsafe confirmations).
    pub extra: Router,
}

/// The embedded Raft store.
pub struct RaftDcs {
    raft: Raft<TypeConfig>,
    sm: Arc<RwLock<SmData>>,
    me: NodeId,
    election_max: Duration,
    /// Bound on one write: a leader that lost its quorum would otherwise wait forever.
    write_timeout: Duration,
    _server: TaskHandle,
    _elector: TaskHandle,
    contact: Arc<prevote::Contact>,
    names: BTreeMap<NodeId, String>,
    peers: BTreeMap<NodeId, Arc<PeerClient>>,
    handoff: Arc<handoff::Handoff>,
}

/// openraft's timings for a lease ttl: a heartbeat every ttl/40 (10 to 100 ms), elections
/// after 3 to 6 heartbeats, and a leader lease of 6 heartbeats (openraft takes
/// `election_timeout_max` as the leader lease).
pub fn raft_timings(ttl: Duration) -> (u64, u64, u64) {
    let heartbeat = (ttl.as_millis() as u64 / 40).clamp(10, 100);
    (heartbeat, heartbeat * 3, heartbeat * 6)
}

/// Node ids follow the sorted peer names, so every member derives the same ones.
pub fn node_ids(peers: &BTreeMap<String, String>) -> BTreeMap<String, NodeId> {
    peers
        .keys()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as NodeId + 1))
        .collect()
}

impl RaftDcs {
    /// Open the store, start serving peers on `listen`, and form the cluster if it is new.
    pub async fn start(parts: RaftParts) -> Result<Arc<RaftDcs>, String> {
        let ids = node_ids(&parts.peers);
        let me = *ids
            .get(&parts.node)
            .ok_or("this node is not among the peers")?;
        // A new Raft leader well inside what is left of the primary's lease when the Raft
        // leader it renews through is lost (docs/design/lease.md).
        let (heartbeat, election_min, election_max) = raft_timings(parts.lease_ttl);
        let config = openraft::Config {
            cluster_name: "tandem".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
            // Elections start only after a pre-vote (see prevote.rs).
            enable_elect: false,
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("raft settings: {e}"))?;
        let db = store::open(&parts.data_dir.join("raft"))?;
        let log = store::LogStore::new(db.clone());
        let sm = store::StateMachine::load(db)?;
        let sm_data = sm.data.clone();
        let secret: Arc<str> = Arc::from(parts.secret.as_str());
        let network = peer::Network {
            secret: secret.clone(),
            retry: Duration::from_millis(heartbeat),
            // handoff.rs counts on a request running at most 3 heartbeats.
            linger: Duration::from_millis(heartbeat * 3),
        };
        let raft = Raft::new(me, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| format!("starting raft: {e}"))?;

        let names: BTreeMap<NodeId, String> = ids.iter().map(|(n, id)| (*id, n.clone())).collect();
        let others: BTreeMap<NodeId, Arc<PeerClient>> = parts
            .peers
            .iter()
            .filter(|(n, _)| **n != parts.node)
            .filter_map(|(n, a)| {
                Some((
                    *ids.get(n)?,
                    Arc::new(PeerClient::new(a.clone(), secret.clone())),
                ))
            })
            .collect();
        // Before this node serves any vote: with no Raft state, it must not be a member that
        // lost its data (rejoin.rs).
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            let limit = Duration::from_millis(election_max * 4).max(Duration::from_secs(1));
            rejoin::check(&parts.node, &others, &names, limit).await?;
        }

        let listener = tokio::net::TcpListener::bind(parts.listen)
            .await
            .map_err(|e| format!("cannot listen on {} for peers: {e}", parts.listen))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(component = "cluster", addr = %bound, "listening");
        // Bound on one write: a leader that lost its quorum would otherwise wait forever.
        let write_timeout = parts.lease_ttl;
        let contact = prevote::Contact::new();
        let timing = prevote::Timing::new(raft.config().clone());
        let handoff = handoff::Handoff::new(
            raft.clone(),
            sm_data.clone(),
            names.clone(),
            me,
            timing.clone(),
            parts.lease_ttl,
            parts.metrics.clone(),
        );
        let app = router(ServerCtx {
            raft: raft.clone(),
            secret: secret.clone(),
            metrics: parts.metrics.clone(),
            write_timeout,
            contact: contact.clone(),
            lease: timing.election_max(),
            handoff: handoff.clone(),
            sm: sm_data.clone(),
        })
        .merge(parts.extra);
        let stop = parts.shutdown.clone();
        let server = TaskHandle::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "peer server stopped");
            }
        });

        // A Raft core that stopped on a fatal error leaves the node unable to renew or take a
        // lease forever: exit, so the service manager restarts the node from its data dir.
        let mut watch = raft.metrics();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let state = watch.borrow().running_state.clone();
                match state {
                    // `Stopped` is our own shutdown.
                    Ok(()) | Err(openraft::error::Fatal::Stopped) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "the raft core stopped: exiting so that the node is restarted");
                        std::process::exit(70);
                    }
                }
            }
        });
        let election_max = timing.election_max();
        let elector = TaskHandle::spawn(prevote::drive(
            raft.clone(),
            me,
            others.clone(),
            contact.clone(),
            timing,
            handoff.clone(),
            parts.shutdown.clone(),
        ));
        let members: BTreeMap<NodeId, BasicNode> = parts
            .peers
            .iter()
            .filter_map(|(n, a)| Some((*ids.get(n)?, BasicNode::new(a))))
            .collect();
        if raft.is_initialized().await.map_err(|e| e.to_string())? {
            // Node ids follow the sorted peer names: a changed peer list would give a member
            // another one's identity. Refuse to run rather than corrupt the group.
            let formed = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect::<BTreeMap<_, _>>();
            let wanted = members
                .iter()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect::<BTreeMap<_, _>>();
            // A node that has only been asked for its vote counts as initialized with no
            // members yet: nothing to compare.
            if !formed.is_empty() && formed != wanted {
                return Err(format!(
                    "[cluster] peers differ from the members this cluster was formed with ({formed:?}); \
                     changing members is not supported: restore the original peers, or start every node with an empty data dir"
                ));
            }
        } else if ids.values().min() == Some(&me) {
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "raft already initialized");
            }
        } else {
            // The first member forms the cluster and the others learn it from its first
            // messages. One that formed it on its own too (each starts an election in the
            // same term) would unseat that first leader as soon as it starts; so the others
            // form it only if the first member has not done so after a few election timeouts
            // (it may be down). Forming is a no-op once formed.
            let raft = raft.clone();
            let wait = election_max * 3;
            tokio::spawn(async move {
                let until = tokio::time::Instant::now() + wait;
                while tokio::time::Instant::now() < until {
                    if raft.is_initialized().await.unwrap_or(true) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(heartbeat)).await;
                }
                if let Err(e) = raft.initialize(members).await {
                    tracing::debug!(error = %e, "raft already initialized");
                }
            });
        }
        Ok(Arc::new(RaftDcs {
            raft,
            sm: sm_data,
            me,
            election_max,
            write_timeout,
            _server: server,
            _elector: elector,
            contact,
            names,
            peers: others,
            handoff,
        }))
    }

    /// Stop the Raft core (the peer server stops with the shutdown signal).
    pub async fn stop(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// A follower heard from its leader within three Raft leader leases (a busy machine's late
    /// heartbeats do not count as a loss).
    fn hears_leader(&self) -> bool {
        self.contact.since() < self.election_max * 3
    }

    /// Wait until the known leader is another than `from` (or a heartbeat passes, so that a
    /// refused write is not retried in a busy loop), bounded by `deadline`.
    async fn leader_change(&self, from: Option<NodeId>, deadline: tandem_core::clock::Instant) {
        let mut rx = self.raft.metrics();
        let step = deadline.min(tandem_core::clock::now() + self.election_max);
        let changed = rx.wait_for(|m| m.current_leader.is_some() && m.current_leader != from);
        let _ = tandem_core::clock::timeout_at(step, changed).await;
    }

    /// Send a write to the leader `id`; `None` when the leader changed before it answered.
    async fn forward(
        &self,
        id: NodeId,
        cmd: &Command,
        deadline: tandem_core::clock::Instant,
    ) -> Option<Result<Outcome, String>> {
        let left = deadline.saturating_duration_since(tandem_core::clock::now());
        // Members are fixed when the cluster forms: every leader is one of the peers.
        let Some(client) = self.peers.get(&id) else {
            return Some(Err(format!("leader {id} is not among the peers")));
        };
        let mut rx = self.raft.metrics();
        let call = client.call::<_, Result<Outcome, String>>("/raft/write", cmd, left);
        tokio::select! {
            r = call => Some(r.unwrap_or_else(|e| Err(e.to_string()))),
            _ = rx.wait_for(|m| m.current_leader != Some(id)) => None,
        }
    }

    /// Current Raft term and leader, for status displays.
    pub fn raft_leader(&self) -> (u64, Option<NodeId>) {
        let m = self.raft.metrics().borrow().clone();
        (m.current_term, m.current_leader)
    }
}

impl Dcs for RaftDcs {
    async fn read(&self) -> Result<ClusterState, DcsError> {
        self.sm
            .read()
            .map(|d| d.state.clone())
            .map_err(|_| DcsError::Other("state machine lock poisoned".into()))
    }

    async fn write(&self, cmd: Command) -> Result<Outcome, DcsError> {
        let deadline = tandem_core::clock::now() + self.write_timeout;
        // Sent to whoever leads, again after a leader change, until the deadline: a write
        // under way when its leader is lost goes to the next one as soon as it is elected.
        loop {
            let left = deadline.saturating_duration_since(tandem_core::clock::now());
            if left.is_zero() {
                return Err(DcsError::Timeout);
            }
            let written = {
                let _in = self.handoff.enter().await;
                tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await
            };
            let Ok(written) = written else {
                return Err(DcsError::Timeout);
            };
            let leader = match written {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    f.leader_id.filter(|id| *id != self.me)
                }
                Err(e) => return Err(DcsError::Other(e.to_string())),
            };
            let Some(id) = leader else {
                // No leader known yet: wait for one (or for the deadline).
                self.leader_change(None, deadline).await;
                continue;
            };
            match self.forward(id, &cmd, deadline).await {
                Some(Ok(o)) => return Ok(o),
                Some(Err(e)) if tandem_core::clock::now() >= deadline => {
                    return Err(DcsError::NoQuorum(e))
                }
                // The leader changed, or refused as a follower: wait for news, then try again.
                Some(Err(_)) | None => self.leader_change(Some(id), deadline).await,
            }
        }
    }

    fn store_leader(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        if leader != self.me && !self.hears_leader() {
            return None;
        }
        self.names.get(&leader).cloned()
    }

    fn store_term(&self) -> Option<u64> {
        Some(self.raft.metrics().borrow().current_term)
    }

    fn has_quorum(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        match m.state {
            ServerState::Leader => m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < (self.election_max * 3).as_millis() as u64),
            // A candidate (briefly, in a handoff or an election) keeps it while it heard a
            // leader lately.
            ServerState::Candidate => self.hears_leader(),
            // A follower keeps the last leader's id until an election: it has a quorum only
            // while it hears from that leader.
            _ => m.current_leader.is_some_and(|l| l != self.me) && self.hears_leader(),
        }
    }
}

// ===== peer server =====

#[derive(Clone)]
struct ServerCtx {
    raft: Raft<TypeConfig>,
    secret: Arc<str>,
    metrics: ClusterMetrics,
    write_timeout: Duration,
    contact: Arc<prevote::Contact>,
    /// How long a member that heard from a leader refuses a pre-vote.
    lease: Duration,
    handoff: Arc<handoff::Handoff>,
    sm: Arc<RwLock<SmData>>,
}

fn router(ctx: ServerCtx) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/prevote", post(prevote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(forwarded_write))
        .route("/raft/handoff", post(handoff_request))
        .route("/raft/formed", post(formed))
        .with_state(ctx)
}

/// Verify and decode a peer message; refusals are counted by reason.
fn accept<T: DeserializeOwned>(
    ctx: &ServerCtx,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Box<Response>> {
    let auth = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    if let Err(why) = peer::verify(&ctx.secret, auth, path, body) {
        ctx.metrics
            .peer_rejected
            .get_or_create(&ReasonLabel {
                reason: why.replace(' ', "_"),
            })
            .inc();
        tracing::warn!(path, reason = why, "peer message refused");
        return Err(Box::new((StatusCode::UNAUTHORIZED, why).into_response()));
    }
    serde_json::from_slice(body).map_err(|e| {
        ctx.metrics
            .peer_rejected
            .get_or_create(&ReasonLabel {
                reason: "malformed".into(),
            })
            .inc();
        Box::new((StatusCode::BAD_REQUEST, format!("malformed message: {e}")).into_response())
    })
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => ([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(ctx): State<ServerCtx>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&ctx, "/raft/append", &headers, &body) {
        Ok(req) => {
            let r = ctx.raft.append_entries(req).await;
            // Anything but "your term is old" comes from the current leader.
            if matches!(
                r,
                Ok(AppendEntriesResponse::Success
                    | AppendEntriesResponse::PartialSuccess(_)
                    | AppendEntriesResponse::Conflict)
            ) {
                ctx.contact.touch();
            }
            json(&r)
        }
        Err(r) => *r,
    }
}

async fn vote(State(ctx): State<ServerCtx>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&ctx, "/raft/vote", &headers, &body) {
        Ok(req) => {
            let r = ctx.raft.vote(req).await;
            if r.as_ref().is_ok_and(|v| v.vote_granted) {
                ctx.contact.touch();
            }
            json(&r)
        }
        Err(r) => *r,
    }
}

async fn prevote(State(ctx): State<ServerCtx>, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<prevote::PreVoteRequest>(&ctx, "/raft/prevote", &headers, &body) {
        Ok(req) => json(&prevote::answer(&ctx.raft, &ctx.contact, ctx.lease, &req)),
        Err(r) => *r,
    }
}

async fn snapshot(State(ctx): State<ServerCtx>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&ctx, "/raft/snapshot", &headers, &body) {
        Ok(req) => {
            let r = ctx.raft.install_snapshot(req).await;
            if r.is_ok() {
                ctx.contact.touch();
            }
            json(&r)
        }
        Err(r) => *r,
    }
}

async fn forwarded_write(
    State(ctx): State<ServerCtx>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cmd: Command = match accept(&ctx, "/raft/write", &headers, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let _in = ctx.handoff.enter().await;
    let r: Result<Outcome, String> =
        match tokio::time::timeout(ctx.write_timeout, ctx.raft.client_write(cmd)).await {
            Ok(r) => r.map(|r| r.data).map_err(|e| e.to_string()),
            Err(_) => Err("write timed out (no quorum?)".to_string()),
        };
    json(&r)
}

async fn handoff_request(
    State(ctx): State<ServerCtx>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match accept::<handoff::HandoffRequest>(&ctx, "/raft/handoff", &headers, &body) {
        Ok(req) => json(&ctx.handoff.offer(&req).await),
        Err(r) => *r,
    }
}

async fn formed(State(ctx): State<ServerCtx>, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<rejoin::FormedRequest>(&ctx, "/raft/formed", &headers, &body) {
        Ok(req) => json(&rejoin::answer(&ctx.raft, &ctx.sm, &req)),
        Err(r) => *r,
    }
}

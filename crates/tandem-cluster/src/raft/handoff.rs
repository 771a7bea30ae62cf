//! Raft leadership follows the lease: the lease holder asks the Raft leader to hand over.
//!
//! A primary renews its lease through the Raft leader. When that leader is another member and
//! it dies, pauses or is cut off, no renewal commits until a new Raft leader is elected: the
//! loss of a member that is *not* the primary would then cost the primary time it may not have
//! (docs/design/lease.md). When the lease holder is also the Raft leader, losing any other member
//! needs no election at all: the leader keeps its quorum and its renewals go on.
//!
//! So a holder that follows another leader asks it, at most once per `cooldown`, to hand over
//! (`/raft/handoff`). openraft 0.9 has no leadership transfer; this one is built from its own
//! rules, without touching how elections, votes or commits work:
//! 1. The leader holds new writes (the gate below), lets the ones under way finish, and waits
//!    until the holder has every entry of its log (so the holder's vote request is up to date
//!    for every member: nobody has more log than the leader).
//! 2. It stops sending heartbeats and answers "go after one leader lease". Once the members
//!    have not heard from the leader for openraft's leader lease, they grant votes again.
//! 3. The holder then starts an election (`trigger().elect()`), which it wins with the old
//!    leader's vote and the others'. The old leader sees the higher term and follows.
//!
//! The hold ends when this node no longer leads or after a bound, whichever comes first; the
//! elector's tick ends it (`Handoff::tick`), so nothing depends on a task that could be lost.
//! The cost is one pause of the writes of about 10 heartbeats (a quarter of the ttl).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::{LogId, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tandem_core::clock::{self, Instant};
use tokio::sync::watch;

use super::peer::PeerClient;
use super::prevote::{Contact, Timing};
use super::store::SmData;
use super::{NodeId, TypeConfig};
use crate::metrics::{ClusterMetrics, ResultLabel};

#[derive(Debug, Serialize, Deserialize)]
pub struct HandoffRequest {
    pub from: NodeId,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HandoffResponse {
    /// The leader is quiet: start an election after `after_ms`.
    pub go: bool,
    pub after_ms: u64,
    pub reason: Option<String>,
    /// The leader's last log entry: the holder elects itself only if it has it.
    #[serde(default)]
    pub last_log: Option<LogId<NodeId>>,
}

/// Leadership handoff, both sides: the leader that hands over, the holder that asks.
pub struct Handoff {
    raft: Raft<TypeConfig>,
    sm: Arc<RwLock<SmData>>,
    names: BTreeMap<NodeId, String>,
    me: NodeId,
    timing: Timing,
    /// Writes are held until this instant (None: open).
    gate: watch::Sender<Option<Instant>>,
    inflight: AtomicUsize,
    /// The hold this node, as leader, is in (heartbeats off until it ends), with a number of
    /// its own so that a request whose hold already ended cannot turn heartbeats off.
    hold: Mutex<Option<(u64, Instant)>>,
    holds: std::sync::atomic::AtomicU64,
    /// When this node last asked its leader to hand over.
    last_ask: Mutex<Option<Instant>>,
    cooldown: Duration,
    metrics: ClusterMetrics,
}

/// A write that passed the gate; counted until dropped.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Handoff {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raft: Raft<TypeConfig>,
        sm: Arc<RwLock<SmData>>,
        names: BTreeMap<NodeId, String>,
        me: NodeId,
        timing: Timing,
        cooldown: Duration,
        metrics: ClusterMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            raft,
            sm,
            names,
            me,
            timing,
            gate: watch::channel(None).0,
            inflight: AtomicUsize::new(0),
            hold: Mutex::new(None),
            holds: std::sync::atomic::AtomicU64::new(0),
            last_ask: Mutex::new(None),
            cooldown,
            metrics,
        })
    }

    /// Wait while writes are held (never past the hold's deadline), then count this write.
    /// Counted first and checked second, so a write is either seen by the leader's drain or
    /// sees the closed gate.
    pub async fn enter(&self) -> InFlight<'_> {
        let mut rx = self.gate.subscribe();
        loop {
            self.inflight.fetch_add(1, Ordering::SeqCst);
            let until = *rx.borrow_and_update();
            match until {
                Some(u) if clock::now() < u => {
                    self.inflight.fetch_sub(1, Ordering::SeqCst);
                    tokio::select! {
                        _ = rx.changed() => {}
                        _ = clock::sleep_until(u) => {}
                    }
                }
                _ => return InFlight(&self.inflight),
            }
        }
    }

    fn holder(&self) -> Option<String> {
        let sm = self.sm.read().ok()?;
        sm.state.lease.as_ref().map(|l| l.holder.clone())
    }

    /// How long the leader stays quiet before the holder elects itself: openraft's leader lease
    /// (6 heartbeats), plus how late a heartbeat sent just before may still arrive (a request
    /// may run 3 heartbeats, peer.rs), plus one heartbeat.
    fn quiet(&self) -> Duration {
        self.timing.election_max() + self.timing.tick() * 4
    }

    /// How long a hold may last at most: the drain and the wait for the holder's log (an
    /// election timeout each at most), the quiet time and one more election timeout for the
    /// vote. A holder that renewed within its renewal interval keeps its lease through it.
    fn hold_bound(&self) -> Duration {
        self.timing.election_min() * 3 + self.quiet()
    }

    // ===== the leader's side =====

    /// Answer a holder's request to take over the Raft leadership.
    pub async fn offer(&self, req: &HandoffRequest) -> HandoffResponse {
        let refuse = |why: &str| HandoffResponse {
            go: false,
            after_ms: 0,
            reason: Some(why.to_string()),
            last_log: None,
        };
        let (state, voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == req.from);
            (m.state, voter)
        };
        if state != ServerState::Leader {
            return refuse("this node does not lead");
        }
        if !voter || req.from == self.me {
            return refuse("the requester is not another voter");
        }
        let from_name = self.names.get(&req.from);
        if from_name.is_none() || self.holder().as_ref() != from_name {
            return refuse("the requester does not hold the lease");
        }
        let until = clock::now() + self.hold_bound();
        let gen = self.holds.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let Ok(mut hold) = self.hold.lock() else {
                return refuse("internal lock poisoned");
            };
            if hold.is_some() {
                return refuse("a handoff is under way");
            }
            *hold = Some((gen, until));
        }
        self.gate.send_replace(Some(until));
        let step = self.timing.election_min();
        // Writes already past the gate finish (or fail) first.
        let drained = wait_until(step, || self.inflight.load(Ordering::SeqCst) == 0).await;
        let last = self.raft.data_metrics().borrow().last_log;
        let caught_up = drained
            && wait_until(step, || {
                let m = self.raft.metrics();
                let m = m.borrow();
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&req.from).cloned())
                    .is_some_and(|matched| matched >= last)
            })
            .await;
        if !caught_up {
            self.end_hold("the holder's log did not catch up", Some(gen));
            return refuse("the requester's log is behind");
        }
        // Heartbeats off only while this hold is still the current one (the tick may have
        // ended it if this node lost the leadership meanwhile).
        {
            let Ok(hold) = self.hold.lock() else {
                return refuse("internal lock poisoned");
            };
            if !matches!(*hold, Some((g, _)) if g == gen) {
                return refuse("this node does not lead");
            }
            self.raft.runtime_config().heartbeat(false);
        }
        tracing::info!(
            component = "cluster",
            to = from_name.map(String::as_str).unwrap_or(""),
            "handing the raft leadership to the lease holder"
        );
        HandoffResponse {
            go: true,
            after_ms: self.quiet().as_millis() as u64,
            reason: None,
            last_log: last,
        }
    }

    /// End the hold (only hold `gen`, when given: an older request must not end a newer one).
    fn end_hold(&self, why: &str, gen: Option<u64>) {
        if let Ok(mut hold) = self.hold.lock() {
            let ours = hold.is_some_and(|(g, _)| gen.is_none_or(|want| want == g));
            if ours && hold.take().is_some() {
                self.raft.runtime_config().heartbeat(true);
                self.gate.send_replace(None);
                tracing::debug!(component = "cluster", why, "raft handoff hold ended");
            }
        }
    }

    /// Called every elector tick: end a hold once this node no longer leads or its time is up;
    /// with no hold, heartbeats are on (setting the flag again costs an atomic store).
    pub fn tick(&self) {
        let until = self.hold.lock().ok().and_then(|h| *h).map(|(_, u)| u);
        let Some(until) = until else {
            self.raft.runtime_config().heartbeat(true);
            return;
        };
        let leads = self.raft.metrics().borrow().state == ServerState::Leader;
        if !leads {
            self.end_hold("leadership handed over", None);
        } else if clock::now() >= until {
            tracing::warn!(
                component = "cluster",
                "the lease holder did not take the raft leadership in time: leading on"
            );
            self.end_hold("timed out", None);
        }
    }

    // ===== the holder's side =====

    /// If this node holds the lease and follows another leader it hears from, ask that leader to
    /// hand over, then start the election it agreed to.
    pub async fn maybe_ask(&self, peers: &BTreeMap<NodeId, Arc<PeerClient>>, contact: &Contact) {
        let (state, leader) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_leader)
        };
        let Some(leader) = leader.filter(|l| *l != self.me) else {
            return;
        };
        if state != ServerState::Follower
            || contact.since() >= self.timing.election_min()
            || self.holder().as_ref() != self.names.get(&self.me)
        {
            return;
        }
        let now = clock::now();
        {
            let Ok(mut last) = self.last_ask.lock() else {
                return;
            };
            if last.is_some_and(|t| now.duration_since(t) < self.cooldown) {
                return;
            }
            *last = Some(now);
        }
        let Some(client) = peers.get(&leader) else {
            return;
        };
        let req = HandoffRequest { from: self.me };
        // The leader answers after its drain and the wait for this node's log.
        let limit = self.timing.election_min() * 2 + self.timing.election_max();
        let result = match client
            .call::<_, HandoffResponse>("/raft/handoff", &req, limit)
            .await
        {
            Ok(r) if r.go => self.elect_after(leader, r.after_ms, r.last_log).await,
            Ok(r) => {
                tracing::debug!(component = "cluster", reason = ?r.reason, "raft handoff refused");
                "refused"
            }
            Err(e) => {
                tracing::debug!(component = "cluster", error = %e, "raft handoff request failed");
                "error"
            }
        };
        self.metrics
            .raft_handoffs
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    async fn elect_after(
        &self,
        leader: NodeId,
        after_ms: u64,
        last_log: Option<LogId<NodeId>>,
    ) -> &'static str {
        // Never wait longer than the leader stays quiet.
        let wait = Duration::from_millis(after_ms).min(self.quiet());
        tokio::time::sleep(wait).await;
        // A vote request with less log than the leader's would be refused and would leave the
        // cluster without a leader for an election timeout: elect only with all of it.
        if self.raft.data_metrics().borrow().last_log < last_log {
            return "refused";
        }
        let still = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.state == ServerState::Follower && m.current_leader == Some(leader)
        };
        if !still || self.holder().as_ref() != self.names.get(&self.me) {
            return "overtaken";
        }
        tracing::info!(
            component = "cluster",
            "this node holds the lease: taking the raft leadership"
        );
        if self.raft.trigger().elect().await.is_err() {
            return "error";
        }
        let won = wait_until(self.timing.election_max(), || {
            self.raft.metrics().borrow().state == ServerState::Leader
        })
        .await;
        if won {
            "ok"
        } else {
            "lost"
        }
    }
}

/// Poll `cond` every few milliseconds until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = clock::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if clock::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

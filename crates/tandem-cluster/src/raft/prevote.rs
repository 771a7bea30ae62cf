//! When to start a Raft election: only after a pre-vote (Raft thesis, section 9.6).
//!
//! openraft 0.9 starts an election as soon as a follower's timer runs out. A node that comes
//! back from a pause (SIGSTOP, a VM freeze) or from the minority side of a partition has a
//! stale timer: it raises the term at once, the healthy leader sees the higher term in the
//! answers to its heartbeats and steps down, and the primary's lease renewals stall while a new
//! leader is elected, sometimes long enough to move the lease. A returning node must not cost
//! the cluster its primary.
//!
//! So openraft's own election timer is off (`enable_elect = false`) and this driver decides:
//! when no leader has been heard from for the election timeout, it asks the other members
//! whether they would vote, and triggers openraft's election only if a majority (itself
//! included) would. A member says no while it is a leader with a recent quorum or has heard
//! from one within the leader lease, which is the test openraft applies to real vote requests.
//! This decides only *when* an election starts; who wins, terms, logs and commits stay
//! openraft's, so safety does not depend on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{LogId, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tandem_core::clock::{self, Instant};
use tandem_core::Shutdown;

use super::handoff::Handoff;
use super::peer::PeerClient;
use super::{NodeId, TypeConfig};

/// The last moment a leader was heard from (an accepted append or snapshot, or a vote granted
/// to a candidate, which restarts the wait as Raft's timer does).
pub struct Contact {
    base: Instant,
    last_ms: AtomicU64,
}

impl Contact {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: clock::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub fn touch(&self) {
        let ms = clock::since(self.base).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn since(&self) -> Duration {
        let now = clock::since(self.base).as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub from: NodeId,
    /// The candidate's last log entry: a member with more log would not vote for it.
    pub last_log: Option<LogId<NodeId>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, for the log.
    pub reason: Option<String>,
}

/// Timings, from the openraft config (its own election timer is off, its settings are not).
#[derive(Clone, Debug)]
pub struct Timing {
    config: Arc<openraft::Config>,
}

impl Timing {
    pub fn new(config: Arc<openraft::Config>) -> Self {
        Self { config }
    }

    /// How often the driver looks: a heartbeat.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_interval)
    }

    pub fn election_min(&self) -> Duration {
        Duration::from_millis(self.config.election_timeout_min)
    }

    /// Also openraft's leader lease: how long a member that heard from a leader refuses votes.
    pub fn election_max(&self) -> Duration {
        Duration::from_millis(self.config.election_timeout_max)
    }

    /// A random election timeout (openraft's own draw), anew for each attempt.
    fn jitter(&self) -> Duration {
        Duration::from_millis(
            self.config
                .new_rand_election_timeout::<openraft::TokioRuntime>(),
        )
    }

    /// A follower that knew a leader waits the leader lease plus the random timeout (as
    /// openraft's own timer does); a candidate or a new member only the random part.
    fn timeout(&self, jitter: Duration, committed: bool) -> Duration {
        if committed {
            jitter + self.election_max()
        } else {
            jitter
        }
    }
}

/// The answer to a pre-vote request, from this node's view.
pub fn answer(
    raft: &Raft<TypeConfig>,
    contact: &Contact,
    lease: Duration,
    req: &PreVoteRequest,
) -> PreVoteResponse {
    let refuse = |why: &str| PreVoteResponse {
        granted: false,
        reason: Some(why.into()),
    };
    if req.last_log < raft.data_metrics().borrow().last_log {
        return refuse("the candidate's log is behind");
    }
    let (state, quorum_ack_ms) = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.state, m.millis_since_quorum_ack)
    };
    let lease_ms = lease.as_millis() as u64;
    if state == ServerState::Leader {
        if quorum_ack_ms.is_some_and(|ms| ms < lease_ms) {
            return refuse("this node leads with a quorum");
        }
    } else if contact.since() < lease {
        return refuse("this node hears from a leader");
    }
    PreVoteResponse {
        granted: true,
        reason: None,
    }
}

/// Run until shutdown: trigger an election when a leader has been missing for the timeout and
/// a majority agrees; on the lease holder, take the Raft leadership over (handoff.rs).
pub async fn drive(
    raft: Raft<TypeConfig>,
    me: NodeId,
    peers: BTreeMap<NodeId, Arc<PeerClient>>,
    contact: Arc<Contact>,
    timing: Timing,
    handoff: Arc<Handoff>,
    shutdown: Shutdown,
) {
    let voters = peers.len() + 1;
    let mut jitter = timing.jitter();
    // The wait runs from the last word of a leader or from this node's last attempt.
    let mut last_try = clock::now();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(timing.tick()) => {}
        }
        let (state, committed, voter) = {
            let m = raft.metrics();
            let m = m.borrow();
            (
                m.state,
                m.vote.is_committed(),
                m.membership_config
                    .membership()
                    .voter_ids()
                    .any(|id| id == me),
            )
        };
        handoff.tick();
        if state == ServerState::Leader || state == ServerState::Shutdown {
            last_try = clock::now();
            continue;
        }
        if state == ServerState::Follower {
            handoff.maybe_ask(&peers, &contact).await;
        }
        let timeout = timing.timeout(jitter, committed);
        // Not yet part of the formed cluster (only asked for a vote so far): nothing to lead.
        if contact.since() < timeout || clock::since(last_try) < timeout || !voter {
            continue;
        }
        let last_log = raft.data_metrics().borrow().last_log;
        let mut asks = tokio::task::JoinSet::new();
        let limit = timing.election_min();
        for p in peers.values() {
            let p = p.clone();
            asks.spawn(async move {
                let req = PreVoteRequest { from: me, last_log };
                p.call::<_, PreVoteResponse>("/raft/prevote", &req, limit)
                    .await
                    .is_ok_and(|r| r.granted)
            });
        }
        // A majority either way decides: a stopped member's silence is not waited for.
        let (mut granted, mut refused) = (1, 0);
        while let Some(r) = asks.join_next().await {
            if r.unwrap_or(false) {
                granted += 1;
            } else {
                refused += 1;
            }
            if granted * 2 > voters || refused * 2 >= voters {
                break;
            }
        }
        asks.abort_all();
        // A leader may have spoken while the answers came in.
        let elect = granted * 2 > voters && contact.since() >= timeout;
        if elect {
            tracing::info!(
                component = "cluster",
                granted,
                voters,
                "no raft leader heard from: starting an election"
            );
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
        // Either way, wait a full (new, random) timeout before asking again.
        last_try = clock::now();
        jitter = timing.jitter();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_stay_in_range_and_vary() {
        let config = openraft::Config {
            heartbeat_interval: 40,
            election_timeout_min: 160,
            election_timeout_max: 320,
            ..Default::default()
        };
        let t = Timing::new(Arc::new(config));
        let (min, max) = (t.election_min(), t.election_max());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let j = t.jitter();
            let c = t.timeout(j, false);
            assert!(c >= min && c < max, "{c:?}");
            let f = t.timeout(j, true);
            assert!(f >= min + max, "{f:?}");
            assert!(f < max * 2, "{f:?}");
            seen.insert(c.as_millis());
        }
        assert!(seen.len() > 10, "no jitter: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn contact_measures_from_the_last_touch() {
        let c = Contact::new();
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(c.since() >= Duration::from_millis(500));
        c.touch();
        assert!(c.since() < Duration::from_millis(5));
    }
}

use std::time::Duration;

use super::*;
use crate::dcs::MemDcs;

const TTL: Duration = Duration::from_secs(2);

/// A handle on a node that holds lease 7 until `valid_for` from now, promoted and healthy.
fn primary_handle(valid_for: Duration) -> AgentHandle {
    let status = ClusterStatus {
        cluster: "c".into(),
        node: "n1".into(),
        role: "replica",
        healthy: true,
        has_quorum: true,
        store_leader: None,
        store_term: None,
        lease_holder: Some("n1".into()),
        fencing_token: Some(7),
        lease_version: 1,
        paused: false,
        switchover: None,
        sync: Vec::new(),
        members: Vec::new(),
    };
    let shared = Shared {
        role: Role::Primary {
            token: 7,
            valid_until: clock::now() + valid_for,
        },
        promoted: Some(7),
        healthy: true,
        quorum: true,
        status: Some(status),
    };
    AgentHandle {
        shared: Arc::new(Mutex::new(shared)),
        pg: None,
        dcs: Arc::new(MemDcs::default()),
        me: "n1".into(),
        ttl: TTL,
        task: Arc::new(Mutex::new(None)),
    }
}

fn role(h: &AgentHandle) -> Option<&'static str> {
    h.status().map(|s| s.role)
}

/// The agent loop does not run here at all: every answer reads the clock when asked, so a host
/// that resumes from a suspend longer than the lease had left stops answering as primary at
/// once, before any tick.
#[tokio::test(start_paused = true)]
async fn a_suspend_past_the_lease_ends_every_primary_answer_at_once() {
    let h = primary_handle(TTL);
    tokio::time::advance(TTL / 2).await;
    assert_eq!(h.primary(), Some(7));
    assert!(h.lease_deadline().is_some());
    assert_eq!(role(&h), Some("primary"));
    // Tokio's timers (CLOCK_MONOTONIC) do not move during the suspend; the clock does.
    clock::simulate_suspend(TTL);
    assert_eq!(h.primary(), None);
    assert_eq!(h.lease_deadline(), None);
    assert_eq!(role(&h), Some("replica"));
}

#[tokio::test(start_paused = true)]
async fn a_suspend_shorter_than_what_is_left_keeps_the_lease() {
    let h = primary_handle(TTL);
    clock::simulate_suspend(TTL / 4);
    assert_eq!(h.primary(), Some(7));
    tokio::time::advance(TTL / 2).await;
    assert_eq!(h.primary(), Some(7));
    // The rest runs out a quarter of the ttl earlier than tokio's clock alone would say.
    tokio::time::advance(TTL / 4).await;
    assert_eq!(h.primary(), None);
}

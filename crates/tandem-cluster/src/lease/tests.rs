use std::time::Duration;

use super::*;
use crate::state::{Command, LeaseRecord, MemberInfo};

const TTL: Duration = Duration::from_millis(2000);
const MARGIN: Duration = Duration::from_millis(500);

fn engine(me: &str, priority: u32) -> LeaseEngine {
    LeaseEngine::new(LeaseSettings {
        me: me.into(),
        ttl: TTL,
        margin: MARGIN,
        renew_every: TTL / 4,
        priority,
        nofailover: false,
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn held(holder: &str, token: u64, version: u64) -> ClusterState {
    ClusterState {
        lease: Some(LeaseRecord {
            holder: holder.into(),
            token,
        }),
        version,
        last_token: token,
        ..Default::default()
    }
}

fn with_member(mut s: ClusterState, name: &str, priority: u32, seq: u64) -> ClusterState {
    let info = MemberInfo {
        healthy: true,
        priority,
        nofailover: false,
        api: String::new(),
        pg: None,
    };
    s.members
        .insert(name.into(), crate::state::MemberRecord { info, seq });
    s
}

#[test]
fn a_free_lease_is_taken_and_promotes() {
    let t0 = Instant::now();
    let mut e = engine("n1", 100);
    let a = e.handle(t0, Event::Observed(ClusterState::default()));
    assert_eq!(
        a,
        vec![Action::Acquire {
            expected_version: 0
        }]
    );
    let a = e.handle(
        t0 + ms(5),
        Event::Acquired {
            token: 1,
            sent_at: t0,
        },
    );
    assert!(matches!(a[0], Action::Promote { token: 1, .. }));
    assert_eq!(e.primary_token(t0 + ms(10)), Some(1));
    // Valid until the send time plus ttl - margin, not a moment longer.
    assert_eq!(e.primary_token(t0 + TTL - MARGIN - ms(1)), Some(1));
    assert_eq!(e.primary_token(t0 + TTL - MARGIN), None);
}

#[test]
fn the_primary_renews_and_demotes_when_renewals_stop() {
    let t0 = Instant::now();
    let mut e = engine("n1", 100);
    e.handle(t0, Event::Observed(ClusterState::default()));
    e.handle(
        t0,
        Event::Acquired {
            token: 1,
            sent_at: t0,
        },
    );
    let a = e.handle(t0 + TTL / 4, Event::Tick);
    assert_eq!(a, vec![Action::Renew { token: 1 }]);
    let renew_sent = t0 + TTL / 4;
    e.handle(
        renew_sent + ms(3),
        Event::Renewed {
            sent_at: renew_sent,
        },
    );
    // The next renewal fails; the lease runs out from the last confirmed send time.
    let a = e.handle(t0 + TTL / 2, Event::Tick);
    assert_eq!(a, vec![Action::Renew { token: 1 }]);
    e.handle(
        t0 + TTL / 2 + ms(100),
        Event::RenewFailed("no quorum".into()),
    );
    let deadline = renew_sent + TTL - MARGIN;
    // Woken no later than the end of the lease (sooner: a retry is due).
    assert!(e.next_deadline(deadline - ms(1)) <= deadline);
    assert!(e
        .handle(deadline - ms(1), Event::Tick)
        .iter()
        .all(|a| !matches!(a, Action::Demote { .. })));
    let a = e.handle(deadline, Event::Tick);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Demote { token: 1, .. })),
        "{a:?}"
    );
    assert_eq!(e.role(), Role::Replica);
}

#[test]
fn a_replica_waits_a_full_ttl_of_unchanged_version() {
    let t0 = Instant::now();
    let mut e = engine("n2", 100);
    assert!(e.handle(t0, Event::Observed(held("n1", 1, 5))).is_empty());
    assert!(e
        .handle(t0 + TTL - ms(1), Event::Observed(held("n1", 1, 5)))
        .is_empty());
    let a = e.handle(t0 + TTL, Event::Tick);
    assert_eq!(
        a,
        vec![Action::Acquire {
            expected_version: 5
        }]
    );
}

#[test]
fn a_renewal_seen_restarts_the_wait() {
    let t0 = Instant::now();
    let mut e = engine("n2", 100);
    e.handle(t0, Event::Observed(held("n1", 1, 5)));
    e.handle(t0 + ms(1500), Event::Observed(held("n1", 1, 6)));
    assert!(e.handle(t0 + TTL + ms(100), Event::Tick).is_empty());
    assert_eq!(
        e.handle(t0 + ms(1500) + TTL, Event::Tick),
        vec![Action::Acquire {
            expected_version: 6
        }]
    );
}

/// The core safety property: for any delays, the old primary's lease ends (by its clock)
/// before any other node can decide to take it (by its clock), given clock rates within the
/// margin's allowance.
#[test]
fn the_old_primary_always_stops_before_a_new_one_can_start() {
    for commit_delay in [0u64, 1, 50, 400, 1200] {
        for observe_delay in [0u64, 10, 300, 1999] {
            let t0 = Instant::now();
            let mut p = engine("n1", 100);
            p.handle(t0, Event::Observed(ClusterState::default()));
            p.handle(
                t0 + ms(commit_delay),
                Event::Acquired {
                    token: 1,
                    sent_at: t0,
                },
            );
            // The write committed at t0 + commit_delay; n2 sees it at least that late.
            let mut r = engine("n2", 100);
            let seen_at = t0 + ms(commit_delay + observe_delay);
            r.handle(seen_at, Event::Observed(held("n1", 1, 1)));
            // Find the first moment n2 would try to take the lease.
            let mut t = seen_at;
            let takeover = loop {
                if !r.handle(t, Event::Tick).is_empty() {
                    break t;
                }
                t += ms(1);
            };
            // Last moment n1 acts as primary, stretched by 0.1 % clock drift each way.
            let last_primary = p.last_valid_for_tests().unwrap_or(t0);
            let stretched = t0 + (last_primary - t0).mul_f64(1.001);
            let shrunk = seen_at + (takeover - seen_at).mul_f64(0.999);
            assert!(
                stretched < shrunk,
                "commit {commit_delay} observe {observe_delay}"
            );
        }
    }
}

#[test]
fn an_unhealthy_primary_gives_the_lease_up() {
    let t0 = Instant::now();
    let mut e = engine("n1", 100);
    e.handle(t0, Event::Observed(ClusterState::default()));
    e.handle(
        t0,
        Event::Acquired {
            token: 3,
            sent_at: t0,
        },
    );
    let a = e.handle(t0 + ms(10), Event::Health(false));
    assert!(matches!(&a[0], Action::Demote { token: 3, reason } if reason.contains("health")));
    assert!(matches!(&a[1], Action::Release { token: 3, .. }));
    // Unhealthy: it does not take the lease back.
    e.handle(t0 + ms(20), Event::ReleaseDone);
    assert!(e
        .handle(
            t0 + ms(30),
            Event::Observed(ClusterState {
                version: 2,
                ..Default::default()
            })
        )
        .is_empty());
}

#[test]
fn nofailover_and_pause_never_acquire() {
    let t0 = Instant::now();
    let mut e = LeaseEngine::new(LeaseSettings {
        nofailover: true,
        ..engine("n1", 100).settings().clone()
    });
    assert!(e
        .handle(t0, Event::Observed(ClusterState::default()))
        .is_empty());
    let mut e = engine("n1", 100);
    let paused = ClusterState {
        paused: true,
        ..Default::default()
    };
    assert!(e.handle(t0, Event::Observed(paused)).is_empty());
    assert!(e.handle(t0 + TTL * 3, Event::Tick).is_empty());
}

#[test]
fn a_lower_priority_node_lets_a_live_better_one_go_first() {
    let t0 = Instant::now();
    let mut low = engine("n2", 50);
    let s = with_member(held("n1", 1, 4), "n3", 100, 1);
    low.handle(t0, Event::Observed(s.clone()));
    let s2 = with_member(held("n1", 1, 4), "n3", 100, 2);
    low.handle(t0 + ms(1900), Event::Observed(s2));
    // Free at t0 + ttl; n3 is alive and better: n2 waits half a ttl more.
    assert!(low.handle(t0 + TTL + ms(10), Event::Tick).is_empty());
    assert_eq!(
        low.handle(t0 + TTL + TTL / 2, Event::Tick),
        vec![Action::Acquire {
            expected_version: 4
        }]
    );
}

#[test]
fn switchover_hands_the_lease_to_the_target_only() {
    let t0 = Instant::now();
    let mut p = engine("n1", 100);
    p.handle(t0, Event::Observed(ClusterState::default()));
    p.handle(
        t0,
        Event::Acquired {
            token: 1,
            sent_at: t0,
        },
    );
    let mut s = held("n1", 1, 1);
    s.apply(&Command::SetSwitchover {
        target: Some("n2".into()),
    });
    let a = p.handle(t0 + ms(50), Event::Observed(s.clone()));
    assert!(matches!(&a[0], Action::Demote { reason, .. } if reason.contains("switchover to n2")));
    assert!(matches!(&a[1], Action::Release { token: 1, .. }));
    s.apply(&Command::Release {
        node: "n1".into(),
        token: 1,
    });
    // The target is alive (it heartbeats).
    let s = with_member(s, "n2", 1, 1);
    let mut other = engine("n3", 200);
    assert!(other
        .handle(t0 + ms(60), Event::Observed(s.clone()))
        .is_empty());
    let mut target = engine("n2", 1);
    assert_eq!(
        target.handle(t0 + ms(60), Event::Observed(s.clone())),
        vec![Action::Acquire {
            expected_version: s.version
        }]
    );
}

#[test]
fn a_lease_left_in_our_name_after_a_restart_is_released() {
    let t0 = Instant::now();
    let mut e = engine("n1", 100);
    let a = e.handle(t0, Event::Observed(held("n1", 9, 30)));
    assert!(matches!(a[0], Action::Release { token: 9, .. }));
    assert_eq!(e.primary_token(t0), None);
}

#[test]
fn a_switchover_to_a_dead_member_is_ignored() {
    let t0 = Instant::now();
    let mut e = engine("n3", 100);
    let mut s = ClusterState::default();
    s.apply(&Command::SetSwitchover {
        target: Some("n2".into()),
    });
    // n2 never heartbeats: n3 goes ahead once the lease is free.
    assert_eq!(
        e.handle(t0, Event::Observed(s.clone())),
        vec![Action::Acquire {
            expected_version: 0
        }]
    );
}

#[test]
fn a_lost_compare_and_set_waits_for_a_fresh_read() {
    let t0 = Instant::now();
    let mut e = engine("n2", 100);
    assert_eq!(
        e.handle(t0, Event::Observed(ClusterState::default())),
        vec![Action::Acquire {
            expected_version: 0
        }]
    );
    // Someone else won; until the next read, no new attempt (no busy loop of failing writes).
    assert!(e
        .handle(t0 + ms(1), Event::AcquireFailed("lost".into()))
        .is_empty());
    assert!(e.handle(t0 + ms(2), Event::Tick).is_empty());
    assert!(e
        .handle(t0 + ms(3), Event::Observed(held("n1", 1, 1)))
        .is_empty());
}

#[test]
fn a_failsafe_confirmation_counts_as_a_renewal_seen() {
    let t0 = Instant::now();
    let mut e = engine("n2", 100);
    e.handle(t0, Event::Observed(held("n1", 1, 5)));
    // The store is out; n1 asked, n2 confirmed at t0 + 900ms.
    e.handle(t0 + ms(900), Event::FailsafeConfirmed(t0 + ms(900)));
    assert!(e.handle(t0 + TTL + ms(100), Event::Tick).is_empty());
    assert_eq!(
        e.handle(t0 + ms(900) + TTL, Event::Tick),
        vec![Action::Acquire {
            expected_version: 5
        }]
    );
}

#[test]
fn a_failed_renewal_is_retried_soon_not_a_full_interval_later() {
    let t0 = Instant::now();
    let mut e = engine("n1", 100);
    e.handle(t0, Event::Observed(ClusterState::default()));
    e.handle(
        t0,
        Event::Acquired {
            token: 1,
            sent_at: t0,
        },
    );
    assert_eq!(
        e.handle(t0 + TTL / 4, Event::Tick),
        vec![Action::Renew { token: 1 }]
    );
    // Failing at once (no store leader): no busy loop, but a retry after ttl/20.
    assert!(e
        .handle(t0 + TTL / 4 + ms(1), Event::RenewFailed("no leader".into()))
        .is_empty());
    assert!(e.handle(t0 + TTL / 4 + ms(50), Event::Tick).is_empty());
    assert_eq!(
        e.handle(t0 + TTL / 4 + ms(101), Event::Tick),
        vec![Action::Renew { token: 1 }]
    );
}

/// The agent asks with `clock::now()`, which counts a host suspend: a lease that was valid
/// before a suspend longer than what was left of it is invalid at the first look after the
/// resume, with no tick in between; the next tick demotes.
#[test]
fn a_suspend_longer_than_the_validity_left_ends_the_lease_at_once() {
    use tandem_core::clock;
    let t0 = clock::now();
    let mut e = engine("n1", 100);
    e.handle(t0, Event::Observed(ClusterState::default()));
    e.handle(
        t0,
        Event::Acquired {
            token: 1,
            sent_at: t0,
        },
    );
    assert_eq!(e.primary_token(clock::now()), Some(1));
    clock::simulate_suspend(TTL - MARGIN);
    let after = clock::now();
    assert_eq!(e.primary_token(after), None);
    let a = e.handle(after, Event::Tick);
    assert!(matches!(a[..], [Action::Demote { token: 1, .. }]), "{a:?}");
}

/// A primary is woken when its next renewal is due, not at the next tick after it: renewals go
/// out every `renew_every`, as the timing argument counts on.
#[test]
fn the_next_renewal_is_sent_when_due() {
    let t0 = Instant::now();
    let mut e = engine("n1", 100);
    let a = e.handle(t0, Event::Observed(ClusterState::default()));
    assert!(matches!(a.as_slice(), [Action::Acquire { .. }]), "{a:?}");
    e.handle(
        t0 + ms(2),
        Event::Acquired {
            token: 1,
            sent_at: t0,
        },
    );
    let every = e.settings().renew_every;
    // Woken when the renewal is due, sooner than a tick (ttl/10) would.
    let due = t0 + every;
    assert!(every < TTL / 10 * 3);
    let woken = e.next_deadline(due - TTL / 10 + ms(1));
    assert_eq!(woken, due);
    assert!(e.handle(due - ms(1), Event::Tick).is_empty());
    assert_eq!(e.handle(due, Event::Tick), vec![Action::Renew { token: 1 }]);
    // While it is under way, no busy wake-ups.
    assert!(e.next_deadline(due + ms(1)) > due + ms(1));
    e.handle(due + ms(5), Event::Renewed { sent_at: due });
    assert_eq!(
        e.next_deadline(due + ms(6)),
        (due + every).min(due + ms(6) + TTL / 10)
    );
}

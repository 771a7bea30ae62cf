use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::*;
use crate::postgres::pg::Postmaster;

/// A process standing in for the postmaster (SIGINT ends it).
fn stand_in() -> Postmaster {
    let mut c = std::process::Command::new("sleep");
    c.arg("30");
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sleep: {e}"));
    Postmaster::watch(child, 0).unwrap_or_else(|e| panic!("{e}"))
}

struct Lab {
    ctx: Ctx,
    handle: PgHandle,
    eligible: mpsc::UnboundedReceiver<bool>,
    events: EventBus,
    metrics: PgMetrics,
    pm: Postmaster,
}

fn lab(lease_left: Duration) -> Lab {
    let handle = PgHandle::new("127.0.0.1:5432".into());
    let pm = stand_in();
    *locked(&handle.pm) = Some(pm.clone());
    let (tx, eligible) = mpsc::unbounded_channel();
    let events = EventBus::new();
    let metrics = PgMetrics::default();
    let until = clock::now() + lease_left;
    let ctx = Ctx {
        me: "n1".into(),
        handle: handle.clone(),
        eligible: tx,
        events: events.clone(),
        metrics: metrics.clone(),
        lease: Arc::new(move || Some(until)),
    };
    Lab {
        ctx,
        handle,
        eligible,
        events,
        metrics,
        pm,
    }
}

const FAST: Policy = Policy {
    max_restarts: 2,
    backoff: Duration::from_millis(10),
    backoff_max: Duration::from_millis(40),
    healthy_after: Duration::from_secs(600),
};

#[tokio::test]
async fn a_panicking_manager_is_fenced_within_the_lease_reported_and_restarted() {
    let mut l = lab(Duration::from_secs(3));
    let calls = Arc::new(AtomicU32::new(0));
    let alive_at_restart = Arc::new(AtomicBool::new(true));
    let (c, a, pm) = (calls.clone(), alive_at_restart.clone(), l.pm.clone());
    let spawn = move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        if n == 1 {
            a.store(pm.running(), Ordering::SeqCst);
        }
        Ok(tokio::spawn(async move {
            if n == 0 {
                panic!("injected fault");
            }
            Ok(())
        }))
    };
    let started = clock::now();
    supervise(l.ctx, FAST, spawn).await;
    assert!(
        clock::since(started) < Duration::from_secs(3),
        "not fenced within the lease"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "restarted once");
    assert!(
        !alive_at_restart.load(Ordering::SeqCst),
        "restarted before the fence"
    );
    assert!(!l.pm.running(), "PostgreSQL still runs");
    assert_eq!(l.eligible.try_recv().ok(), Some(false));
    assert_eq!(l.metrics.manager_failures.get(), 1);
    let ev = l.events.filtered(0, &["postgres_manager_failed"]);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(ev[0].reason.contains("panicked: injected fault"), "{ev:?}");
    assert!(ev[0].reason.contains("restarting"), "{ev:?}");
    let member = l.handle.member().unwrap_or_default();
    assert!(!member.running && member.addr == "127.0.0.1:5432");
}

#[tokio::test]
async fn a_manager_that_keeps_failing_is_given_up_with_a_clear_status() {
    let l = lab(Duration::from_secs(3));
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let spawn = move || {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(tokio::spawn(async { Err("broken".to_string()) }))
    };
    supervise(l.ctx, FAST, spawn).await;
    assert_eq!(calls.load(Ordering::SeqCst), FAST.max_restarts + 1);
    assert_eq!(
        l.metrics.manager_failures.get(),
        u64::from(FAST.max_restarts + 1)
    );
    let st = l.handle.status();
    assert!(!st.running);
    let err = st.error.unwrap_or_default();
    assert!(
        err.contains("failed: broken") && err.contains("not restarted"),
        "{err}"
    );
    assert!(st.not_candidate.is_some());
    // Requests find no manager: a promotion is refused, a demotion still returns.
    assert!(l.handle.promote(9, false).await.is_err());
    l.handle.demote(false).await;
}

#[tokio::test]
async fn a_demote_without_a_manager_fences_postgres_before_returning() {
    let l = lab(Duration::from_secs(3));
    l.handle.demote(false).await;
    assert!(!l.pm.running());
}

#[tokio::test]
async fn no_restart_once_the_node_stops() {
    let l = lab(Duration::from_secs(3));
    l.handle.stop().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let spawn = move || {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(tokio::spawn(async { Err("broken".to_string()) }))
    };
    supervise(l.ctx, FAST, spawn).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn fence_steps_fit_the_lease_and_backoff_is_bounded() {
    assert_eq!(
        fence_step(Some(Duration::from_millis(900))),
        Duration::from_millis(300)
    );
    assert_eq!(fence_step(Some(Duration::ZERO)), Duration::from_millis(20));
    assert_eq!(fence_step(None), Duration::from_secs(5));
    assert_eq!(backoff(&POLICY, 1), Duration::from_secs(1));
    assert_eq!(backoff(&POLICY, 3), Duration::from_secs(4));
    assert_eq!(backoff(&POLICY, 40), Duration::from_secs(30));
}

//! No failover without a failure: losing, pausing or cutting off a member that does not hold
//! the lease (the Raft leader included) never moves the lease or bumps the fencing token.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);
/// How long a fault lasts: twice the lease ttl, so a lease that could lapse would.
const FAULT: Duration = Duration::from_millis(2 * TTL_MS);

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Wait until every node in `among` names `holder` as both the lease holder and the Raft
/// leader.
fn wait_leads(c: &TestCluster, among: &[usize], holder: usize) -> bool {
    wait_until(T, || {
        among.iter().all(|&i| {
            let st = c.nodes[i].get_json("/cluster");
            st["lease_holder"] == name(holder).as_str()
                && st["store_leader"] == name(holder).as_str()
        })
    })
}

/// Wait for one primary, a formed cluster, and the primary leading Raft too; the primary.
fn settled(c: &TestCluster) -> usize {
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    assert!(
        wait_leads(c, &[0, 1, 2], p),
        "the holder does not lead raft"
    );
    p
}

/// A switchover from primary `p` to `q`, through `p`'s admin API.
fn switchover(c: &TestCluster, p: usize, q: usize) {
    let r = c.nodes[p].post("/switchover", &format!(r#"{{"to":"{}"}}"#, name(q)));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The primary `p` stays primary with fencing token `token` for `d`, checked every 20 ms.
fn holds_for(c: &TestCluster, p: usize, token: &Value, d: Duration) -> Result<(), String> {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        let r = c.nodes[p].get_json("/primary");
        if r["fencing_token"] != *token {
            return Err(format!("the primary lost its lease (token {token}): {r}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Events on `p` that show a disturbed primary.
fn disturbances(c: &TestCluster, p: usize) -> Vec<Value> {
    let events = c.nodes[p].get_json("/events?kind=quorum_lost,demoted,promoted");
    events.as_array().cloned().unwrap_or_default()
}

/// After a switchover the Raft leadership follows the lease to its new holder; then SIGKILL
/// and SIGSTOP of each other member, one at a time, cost the primary nothing.
#[test]
fn the_lease_holder_takes_the_raft_leadership_and_losing_any_other_member_moves_nothing() {
    let mut c = cluster(3, |_| String::new());
    // The first holder leads Raft as well (it formed the group or took the leadership over).
    let p = settled(&c);
    // A switchover leaves the Raft leadership with the old primary: the new one takes it.
    let q = c.others(p)[0];
    switchover(&c, p, q);
    assert!(
        wait_leads(&c, &[0, 1, 2], q),
        "the raft leadership did not follow the lease: {:?}",
        (0..3)
            .map(|i| c.nodes[i].get_json("/cluster"))
            .collect::<Vec<_>>()
    );
    let m = c.nodes[q].metrics();
    assert!(
        m.lines().any(
            |l| l.starts_with("tandem_cluster_raft_handoffs_total{result=\"ok\"}")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );
    let token = c.nodes[q].get_json("/primary")["fencing_token"].clone();
    assert!(token.as_u64().is_some(), "{token}");
    let before = disturbances(&c, q).len();
    let watch = c.watch();
    for r in c.others(q) {
        c.nodes[r].proc.kill();
        holds_for(&c, q, &token, FAULT).unwrap_or_else(|e| panic!("{} killed: {e}", name(r)));
        c.nodes[r].restart(bin());
        watch.retarget(&name(r), c.nodes[r].admin());
        c.wait_formed();
        c.nodes[r].proc.stop();
        holds_for(&c, q, &token, FAULT).unwrap_or_else(|e| panic!("{} stopped: {e}", name(r)));
        c.nodes[r].proc.cont();
        c.wait_formed();
        holds_for(&c, q, &token, Duration::from_millis(TTL_MS))
            .unwrap_or_else(|e| panic!("{} resumed: {e}", name(r)));
    }
    let after = disturbances(&c, q);
    assert_eq!(after.len(), before, "the primary was disturbed: {after:?}");
    let report = watch.stop();
    assert_safe(&report);
    assert_eq!(report.primaries.len(), 1, "{:?}", report.primaries);
}

/// The Raft leader that does not hold the lease dies right after a switchover, before or
/// while it hands the leadership over: a new Raft leader is elected well inside what is left
/// of the primary's lease.
#[test]
fn killing_the_raft_leader_right_after_a_switchover_moves_nothing() {
    let mut c = cluster(3, |_| String::new());
    let p = settled(&c);
    let before = c.nodes[p].get_json("/primary")["fencing_token"].as_u64();
    let token = Value::from(before.map(|t| t + 1));
    let q = c.others(p)[0];
    switchover(&c, p, q);
    // At once: the handoff of the Raft leadership is under way or has barely ended.
    c.nodes[p].proc.kill();
    let watch = c.watch();
    holds_for(&c, q, &token, FAULT).unwrap_or_else(|e| panic!("{e}"));
    let rest: Vec<usize> = c.others(p);
    assert!(wait_leads(&c, &rest, q), "no raft leader after the kill");
    c.nodes[p].restart(bin());
    watch.retarget(&name(p), c.nodes[p].admin());
    c.wait_formed();
    holds_for(&c, q, &token, Duration::from_millis(TTL_MS)).unwrap_or_else(|e| panic!("{e}"));
    let report = watch.stop();
    assert_safe(&report);
    assert_eq!(report.primaries.len(), 1, "{:?}", report.primaries);
}

/// A real partition of a member that is not primary (three hosts in network namespaces):
/// the primary keeps its lease while the member is cut off and after it returns.
#[test]
fn cutting_off_a_member_that_is_not_primary_moves_nothing() {
    let lab = tandem_testkit::netns::Lab::new(3);
    let c = lab_cluster(&lab);
    let p = settled(&c);
    let token = c.nodes[p].get_json("/primary")["fencing_token"].clone();
    let before = disturbances(&c, p).len();
    let watch = c.watch();
    for r in c.others(p) {
        lab.cut(r);
        holds_for(&c, p, &token, FAULT).unwrap_or_else(|e| panic!("{} cut: {e}", name(r)));
        lab.heal(r);
        c.wait_formed();
        holds_for(&c, p, &token, Duration::from_millis(TTL_MS))
            .unwrap_or_else(|e| panic!("{} back: {e}", name(r)));
    }
    let after = disturbances(&c, p);
    assert_eq!(after.len(), before, "the primary was disturbed: {after:?}");
    let report = watch.stop();
    assert_safe(&report);
    assert_eq!(report.primaries.len(), 1, "{:?}", report.primaries);
}

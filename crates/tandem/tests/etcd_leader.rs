//! Losing the etcd leader is not a failure of the primary: with the smallest `lease_ttl` that
//! validation accepts for the stated election timeout, the primary keeps its lease and its
//! fencing token while etcd elects a new leader (architecture invariant 2).
#![cfg(feature = "etcd")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tandem_testkit::etcd::EtcdCluster;

const HEARTBEAT: Duration = Duration::from_millis(20);
const ELECTION: Duration = Duration::from_millis(200);
/// How many times the etcd leader is killed (and restarted in between).
const ROUNDS: usize = 3;

/// `/primary` of every node: `Some(status)`, or `None` when the request failed.
fn primary_statuses(c: &TestCluster) -> Vec<Option<u16>> {
    c.nodes
        .iter()
        .map(|n| {
            tandem_testkit::http::request_timeout(
                n.admin(),
                "GET",
                "/primary",
                Duration::from_millis(500),
            )
            .ok()
            .map(|r| r.status)
        })
        .collect()
}

#[test]
fn killing_the_etcd_leader_moves_neither_the_lease_nor_the_token() {
    let mut etcd = EtcdCluster::start(HEARTBEAT, ELECTION);
    let ttl = tandem_cluster::timing::min_safe_ttl_etcd(ELECTION, None);
    let extra = format!(
        "dcs = \"etcd\"\netcd_endpoints = {}\netcd_election_timeout = \"{}ms\"",
        etcd.endpoints_toml(),
        ELECTION.as_millis()
    );
    let c = cluster_ttl(3, ttl, "", |_| extra.clone());
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let before = c.nodes[p].get_json("/cluster");
    let watch = c.watch();
    for round in 1..=ROUNDS {
        let leader = etcd.wait_leader(Duration::from_secs(10));
        let killed_at = Instant::now();
        etcd.kill(leader);
        // Watch /primary from the kill until a new etcd leader has been in place for two ttls
        // (by then a lapse would have shown): the primary answers 200 every time, nobody else.
        let mut elected_at = None;
        let mut last_leader_check = Instant::now();
        let mut samples = 0;
        loop {
            let statuses = primary_statuses(&c);
            samples += 1;
            assert_eq!(
                statuses[p],
                Some(200),
                "round {round}: n{} stopped answering as primary {:?} after the etcd leader \
                 was killed: {:?}",
                p + 1,
                killed_at.elapsed(),
                c.nodes[p].get_json("/cluster")
            );
            for (i, s) in statuses.iter().enumerate() {
                assert!(
                    i == p || *s != Some(200),
                    "round {round}: n{} answers 200 beside n{}",
                    i + 1,
                    p + 1
                );
            }
            if elected_at.is_none() && last_leader_check.elapsed() >= Duration::from_millis(50) {
                last_leader_check = Instant::now();
                if etcd.leader().is_some_and(|l| l != leader) {
                    elected_at = Some(Instant::now());
                }
            }
            if elected_at.is_some_and(|t| t.elapsed() >= ttl * 2) {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(15),
                "round {round}: etcd elected no new leader"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(samples > 10, "round {round}: only {samples} samples");
        etcd.restart(leader);
    }
    let report = watch.stop();
    assert_safe(&report);
    assert_eq!(
        report.primaries.len(),
        1,
        "the lease moved: {:?}",
        report.primaries
    );
    let after = c.nodes[p].get_json("/cluster");
    assert_eq!(
        (&after["lease_holder"], &after["fencing_token"]),
        (&before["lease_holder"], &before["fencing_token"]),
        "before: {before}\nafter: {after}"
    );
}

use super::*;
use crate::state::{LeaseRecord, MemberInfo, MemberRecord};

fn pg(lsn: u64, primary: bool) -> PgMember {
    PgMember {
        addr: "127.0.0.1:5432".into(),
        running: true,
        primary,
        lsn,
        timeline: 1,
        streaming: !primary,
        sysid: "7".into(),
    }
}

fn view(members: &[(&str, PgMember)], holder: Option<&str>, alive: &[&str]) -> View {
    let mut state = ClusterState {
        initialized: Some("7".into()),
        lease: holder.map(|h| LeaseRecord {
            holder: h.into(),
            token: 3,
        }),
        ..Default::default()
    };
    for (name, p) in members {
        state.members.insert(
            name.to_string(),
            MemberRecord {
                info: MemberInfo {
                    healthy: true,
                    pg: Some(p.clone()),
                    ..Default::default()
                },
                seq: 1,
            },
        );
    }
    View {
        state,
        alive: alive.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn sizes_and_positions_parse() {
    assert_eq!(parse_size("1MB"), Ok(1 << 20));
    assert_eq!(parse_size("512kB"), Ok(512 << 10));
    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("2GB"), Ok(2 << 30));
    for bad in ["", "MB", "1 XB", "-1MB", "1.5MB", "99999999999999999999TB"] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
    assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
    assert_eq!(parse_lsn("nope"), None);
    assert_eq!(slot_name("Node-1.a"), "node_1_a");
}

#[test]
fn anyone_may_bootstrap_an_uninitialised_cluster() {
    let mut v = view(&[], None, &[]);
    v.state.initialized = None;
    assert!(candidacy("n1", None, false, &v, SyncMode::On, 0).is_ok());
}

#[test]
fn after_bootstrap_only_a_running_replica_of_that_database() {
    let v = view(&[("n1", pg(100, true))], Some("n1"), &["n1"]);
    assert!(candidacy("n2", None, false, &v, SyncMode::Off, 1 << 20).is_err());
    let mut stopped = pg(100, false);
    stopped.running = false;
    assert!(candidacy("n2", Some(&stopped), true, &v, SyncMode::Off, 1 << 20).is_err());
    let mut other = pg(100, false);
    other.sysid = "8".into();
    let e = candidacy("n2", Some(&other), true, &v, SyncMode::Off, 1 << 20);
    assert!(e.is_err_and(|e| e.contains("database 8")));
    assert!(candidacy(
        "n2",
        Some(&pg(100, false)),
        true,
        &v,
        SyncMode::Off,
        1 << 20
    )
    .is_ok());
}

#[test]
fn synchronous_mode_promotes_only_the_synchronous_set_with_the_most_wal() {
    let mut v = view(
        &[
            ("n1", pg(500, true)),
            ("n2", pg(500, false)),
            ("n3", pg(400, false)),
        ],
        None,
        &["n2", "n3"],
    );
    v.state.sync = vec!["n2".into()];
    assert!(candidacy("n2", Some(&pg(500, false)), true, &v, SyncMode::On, 0).is_ok());
    // n3 has less lag than any limit would forbid, but is not synchronous.
    assert!(candidacy(
        "n3",
        Some(&pg(400, false)),
        true,
        &v,
        SyncMode::On,
        u64::MAX
    )
    .is_err());
    // While the set changes hands both are in it: the one with more WAL wins.
    v.state.sync = vec!["n2".into(), "n3".into()];
    assert!(candidacy("n3", Some(&pg(400, false)), true, &v, SyncMode::Strict, 0).is_err());
    assert!(candidacy("n2", Some(&pg(500, false)), true, &v, SyncMode::Strict, 0).is_ok());
    // An empty set (no standby was in sync): nobody but the primary that emptied it.
    v.state.sync.clear();
    assert!(candidacy("n2", Some(&pg(500, false)), true, &v, SyncMode::On, 0).is_err());
    v.state.sync_leader = Some("n1".into());
    assert!(candidacy("n1", Some(&pg(500, false)), true, &v, SyncMode::On, 0).is_ok());
    // The old primary's last report as a primary holds no one back...
    v.state.sync = vec!["n2".into()];
    if let Some(m) = v.state.members.get_mut("n1") {
        m.info.pg = Some(pg(900, true));
    }
    assert!(candidacy("n2", Some(&pg(500, false)), true, &v, SyncMode::On, 0).is_ok());
    // ...but back as a live replica it competes with the set on WAL.
    if let Some(m) = v.state.members.get_mut("n1") {
        m.info.pg = Some(pg(400, false));
    }
    v.alive.insert("n1".into());
    assert!(candidacy("n1", Some(&pg(400, false)), true, &v, SyncMode::On, 0).is_err());
    assert!(candidacy("n2", Some(&pg(500, false)), true, &v, SyncMode::On, 0).is_ok());
}

#[test]
fn asynchronous_mode_bounds_the_lag_and_prefers_the_most_wal() {
    let v = view(
        &[
            ("n1", pg(10 << 20, true)),
            ("n2", pg(10 << 20, false)),
            ("n3", pg(9 << 20, false)),
        ],
        None,
        &["n2", "n3"],
    );
    let e = candidacy(
        "n3",
        Some(&pg(9 << 20, false)),
        true,
        &v,
        SyncMode::Off,
        512 << 10,
    );
    assert!(e.is_err_and(|e| e.contains("behind")));
    let e = candidacy(
        "n3",
        Some(&pg(9 << 20, false)),
        true,
        &v,
        SyncMode::Off,
        2 << 20,
    );
    assert!(e.is_err_and(|e| e.contains("n2 has more WAL")));
    assert!(candidacy("n2", Some(&pg(10 << 20, false)), true, &v, SyncMode::Off, 0).is_ok());
    // A replica that is not alive does not hold the others back.
    let v2 = view(
        &[
            ("n1", pg(10 << 20, true)),
            ("n2", pg(10 << 20, false)),
            ("n3", pg(9 << 20, false)),
        ],
        None,
        &["n3"],
    );
    assert!(candidacy(
        "n3",
        Some(&pg(9 << 20, false)),
        true,
        &v2,
        SyncMode::Off,
        2 << 20
    )
    .is_ok());
    // While a live primary holds the lease the comparison between replicas is not made.
    let v3 = view(
        &[
            ("n1", pg(10 << 20, true)),
            ("n2", pg(10 << 20, false)),
            ("n3", pg(9 << 20, false)),
        ],
        Some("n1"),
        &["n1", "n2", "n3"],
    );
    assert!(candidacy(
        "n3",
        Some(&pg(9 << 20, false)),
        true,
        &v3,
        SyncMode::Off,
        2 << 20
    )
    .is_ok());
}

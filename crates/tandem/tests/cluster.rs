//! The cluster agent end to end: three `tandem run` processes on loopback with the embedded
//! Raft store, and a watch that fails the test if two nodes are ever primary at once.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tandem_testkit::http;

const T: Duration = Duration::from_secs(20);

#[test]
fn one_primary_then_failover_after_sigkill_and_rejoin() {
    let mut c = cluster(3, |_| String::new());
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let watch = c.watch();
    let st = c.nodes[p].get_json("/cluster");
    assert_eq!(st["members"].as_array().map(|m| m.len()), Some(3), "{st}");
    assert!(st["fencing_token"].as_u64().unwrap_or(0) >= 1);

    c.nodes[p].proc.kill();
    let q = c.wait_primary(&c.others(p));
    // The killed node comes back with its data and rejoins as a replica.
    c.nodes[p].restart(bin());
    watch.retarget(&format!("n{}", p + 1), c.nodes[p].admin());
    let name = format!("n{}", p + 1);
    assert!(wait_until(T, || {
        let st = c.nodes[q].get_json("/cluster");
        st["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["name"] == name.as_str() && m["alive"] == true)
        })
    }));
    assert!(!c.is_primary(p));
    let report = watch.stop();
    assert_safe(&report);
    assert!(report.primaries.len() >= 2, "{:?}", report.primaries);
    let m = c.nodes[q].metrics();
    assert!(m.contains("tandem_cluster_is_primary 1"), "{m}");
}

#[test]
fn a_hung_primary_finds_its_lease_expired_when_it_resumes() {
    let c = cluster(3, |_| String::new());
    let p = c.wait_primary(&[0, 1, 2]);
    let watch = c.watch();
    c.nodes[p].proc.stop();
    let q = c.wait_primary(&c.others(p));
    c.nodes[p].proc.cont();
    // Its very first answer after waking up is 503.
    let r = http::request_timeout(
        c.nodes[p].admin(),
        "GET",
        "/primary",
        Duration::from_secs(5),
    );
    assert_eq!(r.map(|r| r.status).unwrap_or(0), 503);
    assert!(c.is_primary(q));
    assert!(wait_until(T, || c.nodes[p]
        .proc
        .output()
        .iter()
        .any(|l| l.contains("\"demoted\""))));
    assert_safe(&watch.stop());
}

/// The Raft group as every node reports it: `(store_leader, store_term, lease_holder)` when all
/// nodes agree on it and have a quorum, else `None`.
fn raft_view(c: &TestCluster) -> Option<(String, u64, String)> {
    let views: Vec<serde_json::Value> = c.nodes.iter().map(|n| n.get_json("/cluster")).collect();
    let view = |st: &serde_json::Value| {
        Some((
            st["store_leader"].as_str()?.to_string(),
            st["store_term"].as_u64()?,
            st["lease_holder"].as_str()?.to_string(),
        ))
    };
    let first = view(&views[0])?;
    views
        .iter()
        .all(|st| st["has_quorum"] == true && view(st).as_ref() == Some(&first))
        .then_some(first)
}

/// A replica frozen past the election timeout comes back without an election of its own (the
/// pre-vote): the primary keeps its quorum, its lease and its token, and the Raft group keeps
/// its leader and its term.
#[test]
fn a_replica_back_from_a_pause_does_not_disturb_the_primary() {
    let c = cluster(3, |_| String::new());
    let p = c.wait_primary(&[0, 1, 2]);
    let token = c.nodes[p].get_json("/primary")["fencing_token"].clone();
    assert!(token.as_u64().is_some_and(|t| t >= 1), "{token}");
    // Settled: every member has a quorum, sees the same holder and token, and the same Raft
    // leader and term, either with the Raft leader on the lease holder or unchanged for a second
    // (leadership may still move to the holder just after start).
    let mut seen: Option<((String, u64, String), std::time::Instant)> = None;
    let settled = wait_until(T, || {
        let tokens_agree = c
            .nodes
            .iter()
            .all(|n| n.get_json("/cluster")["fencing_token"] == token);
        let now = raft_view(&c).filter(|_| tokens_agree);
        let Some(now) = now else {
            seen = None;
            return false;
        };
        let since = match &seen {
            Some((before, at)) if *before == now => *at,
            _ => std::time::Instant::now(),
        };
        seen = Some((now.clone(), since));
        now.0 == now.2 || since.elapsed() >= Duration::from_secs(1)
    });
    let (leader, term) = match seen {
        Some(((leader, term, _), _)) if settled => (leader, term),
        _ => panic!("the cluster did not settle: {seen:?}"),
    };
    // Freeze a Raft follower: freezing the Raft leader is a Raft failover, whose election
    // the primary's lease survives only with slack to spare.
    let r = c
        .others(p)
        .into_iter()
        .find(|&i| format!("n{}", i + 1) != leader)
        .unwrap_or_else(|| panic!("no follower besides the primary (leader {leader})"));
    let watch = c.watch();
    c.nodes[r].proc.stop();
    // Long enough for the frozen node's election timer to run out several times over.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        c.nodes[p].get_json("/cluster")["has_quorum"] == true,
        "the primary lost its quorum with one replica frozen"
    );
    let resumed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    c.nodes[r].proc.cont();
    // The frozen node catches up and sees the same holder.
    let mut st = serde_json::Value::Null;
    let caught_up = wait_until(T, || {
        st = c.nodes[r].get_json("/cluster");
        st["has_quorum"] == true && st["fencing_token"] == token
    });
    assert!(
        caught_up,
        "the frozen node did not catch up (token {token}): {st}"
    );
    // Watch the primary for a while after the return.
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.is_primary(p));
    assert_eq!(c.nodes[p].get_json("/cluster")["fencing_token"], token);
    // No election happened: every node still follows the same Raft leader in the same term
    // (an election started by the returning node would have raised the term everywhere).
    for (i, node) in c.nodes.iter().enumerate() {
        let st = node.get_json("/cluster");
        assert_eq!(
            (st["store_leader"].as_str(), st["store_term"].as_u64()),
            (Some(leader.as_str()), Some(term)),
            "n{} moved off the Raft leader and term it had before the pause: {st}",
            i + 1
        );
    }
    let events = c.nodes[p].get_json("/events?kind=quorum_lost,demoted");
    let after: Vec<_> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["at_ms"].as_u64().unwrap_or(0) >= resumed_at)
        .collect();
    assert!(after.is_empty(), "the primary was disturbed: {after:?}");
    let report = watch.stop();
    assert_safe(&report);
    assert_eq!(report.primaries.len(), 1, "{:?}", report.primaries);
}

#[test]
fn without_quorum_nobody_is_primary() {
    let mut c = cluster(3, |_| String::new());
    let p = c.wait_primary(&[0, 1, 2]);
    let watch = c.watch();
    let others = c.others(p);
    for &i in &others {
        c.nodes[i].proc.kill();
    }
    // The lone primary demotes once its lease runs out, and stays a replica.
    assert!(wait_until(T, || !c.is_primary(p)));
    for _ in 0..30 {
        assert!(!c.is_primary(p), "a node without quorum acted as primary");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.nodes[p].get_json("/cluster")["has_quorum"], false);
    // Quorum back: a primary again.
    c.nodes[others[0]].restart(bin());
    watch.retarget(&format!("n{}", others[0] + 1), c.nodes[others[0]].admin());
    c.wait_primary(&[p, others[0]]);
    assert_safe(&watch.stop());
}

#[test]
fn switchover_pause_and_resume() {
    let mut c = cluster(3, |_| String::new());
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let watch = c.watch();
    let target = c.others(p)[0];
    let name = format!("n{}", target + 1);
    let admin = c.nodes[p].admin().to_string();
    let token = c.nodes[p].dir.path().join("token").display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", &admin, "--token-file", &token];
        all.extend_from_slice(args);
        std::process::Command::new(bin())
            .args(&all)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = ctl(&["switchover", "--to", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The switchover call returns once the record names the target; its promote hook may
    // still be running for a moment.
    assert!(wait_until(T, || c.is_primary(target)));
    assert!(!c.is_primary(p));
    // Bad switchovers change nothing.
    assert!(!ctl(&["switchover", "--to", "nobody"]).status.success());
    assert!(
        !ctl(&["switchover", "--to", &name]).status.success(),
        "already primary"
    );
    let r = http::request(
        c.nodes[p].admin(),
        "POST",
        "/switchover",
        &[],
        br#"{"to":"n1"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);

    // Paused: the primary dies and nobody takes over.
    assert!(ctl(&["pause"]).status.success());
    assert!(wait_until(T, || c.nodes[p].get_json("/cluster")["paused"] == true));
    c.nodes[target].proc.kill();
    let rest = c.others(target);
    std::thread::sleep(Duration::from_millis(TTL_MS * 3));
    assert!(
        rest.iter().all(|&i| !c.is_primary(i)),
        "failover happened while paused"
    );
    assert!(ctl(&["resume"]).status.success());
    c.wait_primary(&rest);
    c.nodes[target].restart(bin());
    watch.retarget(&name, c.nodes[target].admin());
    let report = watch.stop();
    assert_safe(&report);
    let m = c.nodes[rest[0]].metrics() + &c.nodes[rest[1]].metrics();
    assert!(m.contains("tandem_cluster_demotions_total"), "{m}");
}

#[test]
fn an_unhealthy_service_gives_up_the_lease_and_hooks_see_the_token() {
    let backends: Vec<DemoBackend> = (0..3)
        .map(|i| DemoBackend::start(bin(), &format!("svc{i}")))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let c = cluster(3, |i| {
        format!(
            r#"
[service]
kind = "command"
promote = "echo promote $TANDEM_NODE $(date +%s%N) $TANDEM_FENCING_TOKEN >> {{dir}}/hooks.log"
demote = "sleep 0.3; echo demote $TANDEM_NODE $(date +%s%N) $TANDEM_FENCING_TOKEN >> {{dir}}/hooks.log"
[service.health]
check = "http"
url = "http://{}/healthz"
interval = "100ms"
timeout = "300ms"
rise = 2
fall = 2
"#,
            addrs[i]
        )
    });
    let p = c.wait_primary(&[0, 1, 2]);
    let watch = c.watch();
    http::request(addrs[p], "POST", "/control/unhealthy", &[], b"")
        .unwrap_or_else(|e| panic!("{e}"));
    let q = c.wait_primary(&c.others(p));
    let hooks = |i: usize| {
        std::fs::read_to_string(c.nodes[i].dir.path().join("hooks.log")).unwrap_or_default()
    };
    assert!(
        wait_until(T, || hooks(p).contains("demote")),
        "{}",
        hooks(p)
    );
    assert!(
        hooks(p).starts_with(&format!("promote n{} ", p + 1)),
        "{}",
        hooks(p)
    );
    assert!(
        wait_until(T, || hooks(q).contains("promote")),
        "{}",
        hooks(q)
    );
    // The old primary's (slow) demote hook finished before the new primary's promote began.
    let time_of = |s: String, what: &str| -> u128 {
        s.lines()
            .filter(|l| l.starts_with(what))
            .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    assert!(
        time_of(hooks(q), "promote") > time_of(hooks(p), "demote"),
        "{}\n{}",
        hooks(p),
        hooks(q)
    );
    // The new token is larger than the old one.
    let token_of = |s: String| {
        s.lines()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    assert!(token_of(hooks(q)) > token_of(hooks(p)));
    // /replica on the unhealthy old primary: 503; on a healthy replica: 200.
    let r = |i: usize| {
        http::get(c.nodes[i].admin(), "/replica")
            .map(|r| r.status)
            .unwrap_or(0)
    };
    assert_eq!(r(p), 503);
    let other = c.others(p).into_iter().find(|&i| i != q).unwrap_or(q);
    assert!(wait_until(T, || r(other) == 200));
    assert_safe(&watch.stop());
}

/// A member whose data directory was emptied does not rejoin under its old name (it would vote
/// with an empty log): it refuses to start and says why; the cluster is unharmed.
#[test]
fn a_member_with_an_emptied_data_dir_refuses_to_rejoin() {
    let mut c = cluster(3, |_| String::new());
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let token = c.nodes[p].get_json("/primary")["fencing_token"].clone();
    let victim = c.others(p)[0];
    c.nodes[victim].proc.kill();
    std::fs::remove_dir_all(c.nodes[victim].dir.path().join("data"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&c.nodes[victim].config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no Raft state") && err.contains("Lost data directories"),
        "{err}"
    );
    assert!(c.is_primary(p));
    assert_eq!(c.nodes[p].get_json("/primary")["fencing_token"], token);
}

#[test]
fn peer_messages_without_the_secret_are_refused_and_counted() {
    let c = cluster(3, |_| String::new());
    c.wait_primary(&[0, 1, 2]);
    let cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap_or_default();
    let port: u16 = cfg
        .lines()
        .find(|l| l.starts_with("listen = \"127.0.0.1:") && !l.ends_with(":0\""))
        .and_then(|l| l.trim_end_matches('"').rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no peer port in {cfg}"));
    let peer: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let r = http::request(peer, "POST", "/raft/vote", &[], b"{}").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    let r = http::request(
        peer,
        "POST",
        "/raft/append",
        &[("x-tandem-auth", "1.abcd")],
        b"garbage",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    let m = c.nodes[0].metrics();
    assert!(
        m.contains("tandem_cluster_peer_rejected_total{reason=\"unsigned\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tandem_cluster_peer_rejected_total{reason=\"stale_signature\"} 1"),
        "{m}"
    );
    // The cluster is unharmed.
    c.wait_primary(&[0, 1, 2]);
}

/// A real partition: three hosts in network namespaces on a bridge; the primary's link is cut.
#[test]
fn a_partitioned_primary_steps_down_and_the_majority_elects_another() {
    let lab = tandem_testkit::netns::Lab::new(3);
    let c = lab_cluster(&lab);
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let watch = c.watch();
    lab.cut(p);
    let q = c.wait_primary(&c.others(p));
    // The cut-off node is not primary, and stays so while cut off.
    assert!(wait_until(T, || !c.is_primary(p)));
    for _ in 0..20 {
        assert!(!c.is_primary(p));
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.heal(p);
    // Healed: the old primary follows again. (Its higher Raft term from the time it was cut off
    // can cause one more election, so the lease may move once more; never to two holders.)
    assert!(c.others(p).contains(&q));
    assert!(wait_until(T, || {
        let mine = c.nodes[p].get_json("/cluster");
        let theirs = c.nodes[c.others(p)[0]].get_json("/cluster");
        mine["lease_holder"].is_string() && mine["lease_holder"] == theirs["lease_holder"]
    }));
    c.wait_primary(&[0, 1, 2]);
    assert_safe(&watch.stop());
}

/// The same guarantees with etcd holding the lease.
#[cfg(feature = "etcd")]
#[test]
fn etcd_backend_fails_over_and_demotes_when_etcd_is_gone() {
    let etcd = tandem_testkit::etcd::Etcd::start();
    let extra = etcd.cluster_toml();
    let mut c = cluster(3, |_| extra.clone());
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let watch = c.watch();
    c.nodes[p].proc.kill();
    let q = c.wait_primary(&c.others(p));
    // etcd hangs: the primary cannot renew and steps down; nobody else can take the lease.
    etcd.proc.stop();
    assert!(wait_until(T, || !c.is_primary(q)));
    for _ in 0..20 {
        assert!(
            c.others(p).iter().all(|&i| !c.is_primary(i)),
            "a primary without its store"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd.proc.cont();
    c.wait_primary(&c.others(p));
    c.nodes[p].restart(bin());
    watch.retarget(&format!("n{}", p + 1), c.nodes[p].admin());
    assert_safe(&watch.stop());
}

/// Failsafe mode: through an etcd outage the primary stays while every member confirms it,
/// and steps down as soon as one member cannot.
#[cfg(feature = "etcd")]
#[test]
fn failsafe_keeps_the_primary_through_a_store_outage_only_while_all_members_confirm() {
    let etcd = tandem_testkit::etcd::Etcd::start();
    let extra = format!("{}\nfailsafe = true", etcd.cluster_toml());
    let mut c = cluster(3, |_| extra.clone());
    let p = c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let watch = c.watch();
    etcd.proc.stop();
    for _ in 0..(3 * TTL_MS / 100) {
        assert!(
            c.is_primary(p),
            "the primary stepped down although every member confirmed it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = c.others(p)[0];
    c.nodes[gone].proc.kill();
    assert!(
        wait_until(T, || !c.is_primary(p)),
        "still primary without every member's confirmation"
    );
    etcd.proc.cont();
    c.wait_primary(&c.others(gone));
    let m = c.nodes[p].metrics();
    assert!(
        m.contains("tandem_cluster_lease_renewals_total{result=\"failsafe\"}"),
        "{m}"
    );
    assert_safe(&watch.stop());
}

#[test]
fn a_changed_peer_list_is_refused_at_start() {
    let mut c = cluster(3, |_| String::new());
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    c.nodes[0].proc.kill();
    let cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap_or_default();
    let moved = tandem_testkit::free_port();
    // n3 "moves" to another port in n1's config only.
    let peers_line = cfg
        .lines()
        .find(|l| l.starts_with("peers = "))
        .unwrap_or_default()
        .to_string();
    let old_n3 = peers_line
        .split("n3 = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    let changed = cfg.replace(
        &peers_line,
        &peers_line.replace(&old_n3, &format!("127.0.0.1:{moved}")),
    );
    std::fs::write(&c.nodes[0].config, changed).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&c.nodes[0].config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("peers differ"), "{err}");
}

/// `tandem drill` cuts the primary's link (a real partition), measures the failover, and puts
/// the link back up afterwards.
#[test]
fn a_drill_cuts_the_primarys_link_and_undoes_it() {
    let lab = tandem_testkit::netns::Lab::new(3);
    let c = lab_cluster(&lab);
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let nodes = (0..3)
        .map(|i| format!("n{} = \"{}\"", i + 1, c.nodes[i].admin()))
        .collect::<Vec<_>>()
        .join(", ");
    let links = (0..3)
        .map(|i| {
            let (ns, port) = lab.switch_port(i);
            format!("n{} = \"{ns}:{port}\"", i + 1)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let scenario = format!(
        "name = \"cut-primary\"\nallow_targets = [\"10.214.0.0/16\"]\n[target]\nhttp = \"http://{}/health\"\n\
         [workload]\nconcurrency = 2\nrate = 50\nduration = \"5s\"\n\
         [fault]\nkind = \"link-down\"\nat = \"1s\"\nnode = \"primary\"\nduration = \"2s\"\n\
         [watch]\nnodes = {{ {nodes} }}\nlinks = {{ {links} }}\n",
        c.nodes[0].admin()
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (file, json) = (dir.path().join("cut.toml"), dir.path().join("cut.json"));
    std::fs::write(&file, scenario).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(bin())
        .args(["drill", "--scenario"])
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_default()).unwrap_or_default();
    let run = &report["runs"][0];
    assert!(
        run["failover_ms"].as_f64().is_some(),
        "no new primary during the cut: {run}"
    );
    assert!(
        run["split_brain"].as_array().is_some_and(|v| v.is_empty()),
        "{run}"
    );
    // The drill undid its fault: every link is up and the cluster is whole again.
    assert!((0..3).all(|i| lab.is_up(i)));
    c.wait_formed();
}

/// Run `tandem drill` on a scenario text; (exit code, output, JSON report).
fn lab_drill(name: &str, scenario: &str) -> (Option<i32>, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (file, json) = (
        dir.path().join(format!("{name}.toml")),
        dir.path().join(format!("{name}.json")),
    );
    std::fs::write(&file, scenario).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(bin())
        .args(["drill", "--scenario"])
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code(), text, report)
}

/// `tandem drill` partitions the primary from the other nodes (its namespace and theirs
/// cannot reach each other; the test still reaches it over its management link), then puts
/// 100% packet loss on the new primary's link: each time another node takes over,
/// never two primaries, and the drill removes its routes and its qdisc afterwards.
#[test]
fn drills_partition_the_primary_and_make_its_link_lossy_and_undo_both() {
    let lab = tandem_testkit::netns::Lab::new(3);
    let c = lab_cluster(&lab);
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let nodes = (0..3)
        .map(|i| format!("n{} = \"{}\"", i + 1, c.nodes[i].admin()))
        .collect::<Vec<_>>()
        .join(", ");
    let hosts = (0..3)
        .map(|i| format!("n{} = \"{}\"", i + 1, lab.hosts[i].ns))
        .collect::<Vec<_>>()
        .join(", ");
    let links = (0..3)
        .map(|i| {
            let (ns, port) = lab.switch_port(i);
            format!("n{} = \"{ns}:{port}\"", i + 1)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let scenario = |fault: &str| {
        format!(
            "name = \"net\"\nallow_targets = [\"10.214.0.0/16\"]\n[target]\nhttp = \"http://{}/health\"\n\
             [workload]\nconcurrency = 2\nrate = 50\nduration = \"5s\"\n\
             [fault]\n{fault}\nat = \"1s\"\nnode = \"primary\"\nduration = \"2s\"\n\
             [watch]\nnodes = {{ {nodes} }}\nhosts = {{ {hosts} }}\nlinks = {{ {links} }}\n",
            c.nodes[0].admin()
        )
    };
    for (name, fault) in [
        ("partition", "kind = \"partition\""),
        // Loss alone: where the kernel has no netem the drill drops packets with nftables.
        ("netem", "kind = \"netem\"\nloss = \"100%\""),
    ] {
        let (code, out, report) = lab_drill(name, &scenario(fault));
        assert_eq!(code, Some(0), "{name}: {out}");
        let run = &report["runs"][0];
        assert!(
            run["failover_ms"].as_f64().is_some(),
            "{name}: no new primary during the fault: {run}"
        );
        assert!(
            run["split_brain"].as_array().is_some_and(|v| v.is_empty()),
            "{name}: {run}"
        );
        // Undone: no prohibit route and no netem qdisc left, and the cluster forms again.
        for i in 0..3 {
            let routes = std::process::Command::new("ip")
                .args(["-n", &lab.hosts[i].ns, "route", "show"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            assert!(!routes.contains("prohibit"), "{name}: {routes}");
            let (ns, port) = lab.switch_port(i);
            let qdisc = std::process::Command::new("tc")
                .args(["-n", &ns, "qdisc", "show", "dev", &port])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            assert!(!qdisc.contains("netem"), "{name}: {qdisc}");
            let tables = std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "list", "tables"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            assert!(!tables.contains("tandem_drill"), "{name}: {tables}");
        }
        c.wait_formed();
        c.wait_primary(&[0, 1, 2]);
    }
}

/// A drill with `via = "api"` hangs the primary through its `POST /faults` (as from another
/// host): the node stops itself and resumes after the duration, another node takes over.
#[test]
fn a_drill_injects_a_fault_through_the_admin_api() {
    let c = cluster_with(3, "allow_faults = true", |_| String::new());
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("token"), TOKEN).unwrap_or_else(|e| panic!("{e}"));
    let nodes = (0..3)
        .map(|i| format!("n{} = \"{}\"", i + 1, c.nodes[i].admin()))
        .collect::<Vec<_>>()
        .join(", ");
    let s = format!(
        "name = \"api-stop\"\n[target]\nhttp = \"http://{}/health\"\n[workload]\nconcurrency = 2\nrate = 50\nduration = \"5s\"\n\
         [fault]\nkind = \"sigstop\"\nat = \"1s\"\nduration = \"2s\"\nvia = \"api\"\n\
         [watch]\nnodes = {{ {nodes} }}\ntoken_file = \"{}\"\n",
        c.nodes[0].admin(),
        dir.path().join("token").display()
    );
    let (code, out, report) = lab_drill("api", &s);
    assert_eq!(code, Some(0), "{out}");
    let run = &report["runs"][0];
    assert!(run["failover_ms"].as_f64().is_some(), "{out}");
    assert!(run["recovery_ms"].as_f64().is_some(), "{out}");
    c.wait_formed();
}

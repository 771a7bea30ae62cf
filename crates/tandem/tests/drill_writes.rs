//! Drills with sequenced writes read back after the run: against a real PostgreSQL, against
//! the demo service with and without replication behind a load balancer that follows the
//! lease, and with a full disk. A deliberately broken setup must make the drill report lost or
//! failed writes and exit with status 1; a correct one must pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tandem_testkit::pgserver::PgServer;

fn write_scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    p
}

/// Run `tandem drill`; (exit code, output, JSON report).
fn drill(scenario: &Path) -> (Option<i32>, String, serde_json::Value) {
    let json = scenario.with_extension("json");
    let out = Command::new(bin())
        .args(["drill", "--scenario"])
        .arg(scenario)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code(), text, report)
}

#[test]
fn postgres_writes_are_read_back_and_a_crash_without_replica_fails_the_drill() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A clean run through a libpq-style multi-host string whose first host is down: the
    // client moves on to the read-write server, and every acknowledged write is there.
    let dead = tandem_testkit::free_port();
    let clean = format!(
        "name = \"pg-clean\"\n[target]\npostgres = \"host=127.0.0.1,127.0.0.1 port={dead},{} user=postgres dbname=postgres target_session_attrs=read-write\"\n\
         [workload]\nkind = \"writes\"\nconcurrency = 4\nrate = 200\nduration = \"2s\"\n\
         [fault]\nkind = \"none\"\n[objectives]\nrpo = 0\nlost_writes = 0\nfailed_requests = 0\n",
        pg.port
    );
    let (code, out, report) = drill(&write_scenario(dir.path(), "clean", &clean));
    assert_eq!(code, Some(0), "{out}");
    let w = &report["runs"][0]["writes"];
    let acked = w["acked"].as_u64().unwrap_or(0);
    assert!(acked > 100, "{w}");
    assert_eq!(w["found"].as_u64(), Some(acked), "{w}");
    assert_eq!(w["lost"].as_u64(), Some(0), "{w}");
    assert!(out.contains("objective rpo: wanted 0, got 0"), "{out}");

    // The deliberately broken setup: one server, no replica, its postmaster SIGKILLed. Writes
    // fail from then on and nothing can be read back: the drill must not pass.
    let crash = format!(
        "name = \"pg-crash\"\n[target]\npostgres = \"{}\"\n\
         [workload]\nkind = \"writes\"\nconcurrency = 4\nrate = 200\nduration = \"3s\"\ntimeout = \"1s\"\nread_back_timeout = \"1s\"\n\
         [fault]\nkind = \"sigkill\"\nat = \"1s\"\npid_file = \"{}\"\n[objectives]\nrpo = 0\n",
        pg.url(),
        pg.pid_file().display()
    );
    let (code, out, report) = drill(&write_scenario(dir.path(), "crash", &crash));
    assert_eq!(code, Some(1), "{out}");
    let run = &report["runs"][0];
    assert!(run["failed"].as_u64().unwrap_or(0) > 0, "{run}");
    assert!(
        run["writes"]["read_back_error"].is_string() || run["writes"]["lost"].as_u64() > Some(0),
        "{run}"
    );
    assert!(
        out.contains("objective rpo") && out.contains("MISSED"),
        "{out}"
    );
    assert!(out.contains("on pid "), "{out}");
}

#[test]
fn a_pid_file_that_names_no_process_is_refused_before_anything_runs() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pid_file = dir.path().join("gone.pid");
    std::fs::write(&pid_file, "999999999\n").unwrap_or_else(|e| panic!("{e}"));
    let s = format!(
        "name = \"x\"\n[target]\npostgres = \"{}\"\n[workload]\nkind = \"writes\"\nduration = \"2s\"\n\
         [fault]\nkind = \"sigkill\"\nat = \"1s\"\npid_file = \"{}\"\n",
        pg.url(),
        pid_file.display()
    );
    let (code, out, _) = drill(&write_scenario(dir.path(), "gone", &s));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("process 999999999 does not exist"), "{out}");
}

/// Active-active behind the load balancer, one backend SIGKILLed under load: without retries
/// clients see the failures and the drill fails; with retries none does and it passes.
#[test]
fn a_killed_backend_fails_the_drill_without_retries_and_passes_with_them() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for retries in [0, 2] {
        let a = DemoBackend::start(bin(), "web-a");
        let b = DemoBackend::start(bin(), "web-b");
        let cfg = lb_config(&[("a", a.addr, false), ("b", b.addr, false)], "")
            .replace("retries = 2", &format!("retries = {retries}"));
        let lb = start_node(&cfg);
        lb.wait_server("app", "a", "up", std::time::Duration::from_secs(10));
        lb.wait_server("app", "b", "up", std::time::Duration::from_secs(10));
        let pid_file = dir.path().join(format!("web-a-{retries}.pid"));
        std::fs::write(&pid_file, format!("{}\n", a.proc.pid())).unwrap_or_else(|e| panic!("{e}"));
        let s = format!(
            "name = \"kill-backend\"\n[target]\nhttp = \"http://{}/\"\n\
             [workload]\nconcurrency = 8\nrate = 400\nduration = \"3s\"\n\
             [fault]\nkind = \"sigkill\"\nat = \"1s\"\npid_file = \"{}\"\n\
             [watch]\nobservers = [\"{}\"]\n[objectives]\nfailed_requests = 0\n",
            lb.frontend("web"),
            pid_file.display(),
            lb.admin()
        );
        let (code, out, report) = drill(&write_scenario(dir.path(), &format!("r{retries}"), &s));
        let run = &report["runs"][0];
        if retries == 0 {
            assert_eq!(code, Some(1), "{out}");
            assert!(run["failed"].as_u64().unwrap_or(0) > 0, "{run}");
        } else {
            assert_eq!(code, Some(0), "{out}");
            assert_eq!(run["failed"].as_u64(), Some(0), "{run}");
        }
        // The load balancer noticed: a server_down event after the fault.
        assert!(run["detection_ms"].as_f64().is_some(), "{run}");
        drop(b);
    }
}

/// Active-passive: three cluster nodes each managing a demo service that stores writes (copied
/// synchronously to the others when `replicated`), a load balancer whose servers follow the
/// lease (health check every `check_ms`, down after `fall` failures), and a drill that writes
/// through it while the primary's agent hangs past its lease. Returns (exit code, output, run).
fn hang_primary_under_writes(
    name: &str,
    replicated: bool,
    check_ms: u64,
    fall: u32,
) -> (Option<i32>, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ports: Vec<u16> = (0..3).map(|_| tandem_testkit::free_port()).collect();
    let svcs: Vec<DemoBackend> = (0..3)
        .map(|i| {
            let peers: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("127.0.0.1:{}", ports[j]))
                .collect();
            let args = if replicated {
                vec!["--replicate-to".to_string(), peers.join(",")]
            } else {
                Vec::new()
            };
            let listen = format!("127.0.0.1:{}", ports[i]);
            DemoBackend::start_with(bin(), &format!("svc{}", i + 1), &listen, &args)
        })
        .collect();
    let c = cluster(3, |i| {
        format!(
            "[service]\nkind = \"command\"\npromote = \"true\"\ndemote = \"true\"\n\
             [service.health]\ncheck = \"http\"\nurl = \"http://{}/healthz\"\ninterval = \"200ms\"\ntimeout = \"300ms\"\n",
            svcs[i].addr
        )
    });
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let servers: String = (0..3)
        .map(|i| {
            format!(
                "[[backend.server]]\nname = \"svc{}\"\naddress = \"{}\"\ncheck_address = \"{}\"\n",
                i + 1,
                svcs[i].addr,
                c.nodes[i].admin()
            )
        })
        .collect();
    let lb = Node::start(
        bin(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nbackend = \"app\"\naccess_log = false\n\
             [[backend]]\nname = \"app\"\nretries = 2\n[backend.health]\ncheck = \"http\"\npath = \"/primary\"\n\
             interval = \"{check_ms}ms\"\ntimeout = \"200ms\"\nfall = {fall}\nrise = 1\n{servers}"
        ),
        &["app"],
        None,
    );
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        tandem_testkit::http::get(lb.frontend("app"), "/").is_ok_and(|r| r.status == 200)
    }));
    let nodes = (0..3)
        .map(|i| format!("n{} = \"{}\"", i + 1, c.nodes[i].admin()))
        .collect::<Vec<_>>()
        .join(", ");
    let s = format!(
        "name = \"hang-primary\"\n[target]\nhttp = \"http://{}/\"\n\
         [workload]\nkind = \"writes\"\nconcurrency = 4\nrate = 200\nduration = \"5s\"\ntimeout = \"1s\"\n\
         [fault]\nkind = \"sigstop\"\nat = \"1500ms\"\nduration = \"2s\"\n\
         [watch]\nnodes = {{ {nodes} }}\nobservers = [\"{}\"]\nserved_by = {{ svc1 = \"n1\", svc2 = \"n2\", svc3 = \"n3\" }}\n\
         [objectives]\nrpo = 0\nold_primary_acks = 0\n",
        lb.frontend("app"),
        lb.admin()
    );
    let (code, out, report) = drill(&write_scenario(dir.path(), name, &s));
    let run = report["runs"][0].clone();
    assert!(run["failover_ms"].as_f64().is_some(), "no failover: {out}");
    assert!(run["writes"]["acked"].as_u64().unwrap_or(0) > 200, "{out}");
    (code, out, run)
}

/// Without replication the new primary's service lacks the writes the old one acknowledged:
/// lost writes, exit status 1.
#[test]
fn an_unreplicated_service_loses_acknowledged_writes_in_a_failover() {
    let (code, out, run) = hang_primary_under_writes("single", false, 100, 1);
    let w = &run["writes"];
    assert_eq!(code, Some(1), "{out}");
    assert!(w["lost"].as_u64().unwrap_or(0) > 100, "{out}");
    assert!(
        out.contains("objective rpo") && out.contains("MISSED"),
        "{out}"
    );
    assert_eq!(w["old_primary_acks"].as_u64(), Some(0), "{out}");
}

/// With synchronous replication nothing is lost, and the time without service is what the
/// settings predict: about the lease ttl plus one health check interval of the load balancer
/// (less the moments the old service still answered), and the failover no less than the
/// lease allows.
#[test]
fn a_replicated_service_loses_nothing_and_fails_over_in_the_predicted_time() {
    let check_ms = 100;
    let (code, out, run) = hang_primary_under_writes("replicated", true, check_ms, 1);
    let w = &run["writes"];
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w["lost"].as_u64(), Some(0), "{out}");
    assert_eq!(w["old_primary_acks"].as_u64(), Some(0), "{out}");
    let predicted = (TTL_MS + check_ms) as f64;
    let rto = run["rto_ms"].as_f64().unwrap_or(0.0);
    // The old primary's service keeps answering until the load balancer sees its agent gone
    // (a few checks), so the gap clients see can be shorter than the failover by up to that.
    assert!(
        (0.25 * predicted..2.5 * predicted).contains(&rto),
        "rto {rto} ms, predicted {predicted} ms: {out}"
    );
    // The lease itself cannot move before its last renewal (at most a quarter ttl before the
    // fault) is a full ttl old.
    let failover = run["failover_ms"].as_f64().unwrap_or(0.0);
    assert!(
        (0.6 * TTL_MS as f64..2.5 * predicted).contains(&failover),
        "failover {failover} ms, ttl {TTL_MS} ms: {out}"
    );
}

/// A load balancer that notices too slowly (a check per second, down after three failures)
/// keeps sending writes to the old primary's service after the lease has moved: the drill
/// counts them as acknowledged by an old primary and fails.
#[test]
fn a_slow_load_balancer_lets_the_old_primary_acknowledge_writes() {
    let (code, out, run) = hang_primary_under_writes("slow-lb", true, 1000, 3);
    let w = &run["writes"];
    assert_eq!(code, Some(1), "{out}");
    assert!(w["old_primary_acks"].as_u64().unwrap_or(0) > 0, "{out}");
    assert!(
        out.contains("objective old_primary_acks") && out.contains("MISSED"),
        "{out}"
    );
    assert_eq!(w["lost"].as_u64(), Some(0), "{out}");
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs failed (needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// The service's disk fills up for 2 s: writes fail (HTTP 507) and none that was acknowledged
/// is lost; afterwards the file filling the disk is gone and writes succeed again. A path that
/// is not a tmpfs is refused.
#[test]
fn a_full_disk_fails_writes_without_losing_acknowledged_ones_and_is_undone() {
    let disk = Tmpfs::mount("1m");
    let store = disk.0.path().join("writes");
    let svc = DemoBackend::start_with(
        bin(),
        "svc",
        "127.0.0.1:0",
        &["--store".to_string(), store.display().to_string()],
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let scenario = |path: &Path| {
        format!(
            "name = \"disk-full\"\n[target]\nhttp = \"http://{}/\"\n\
             [workload]\nkind = \"writes\"\nconcurrency = 4\nrate = 400\nduration = \"4s\"\n\
             [fault]\nkind = \"disk-full\"\nat = \"1s\"\nduration = \"2s\"\npath = \"{}\"\n\
             [objectives]\nrpo = 0\n",
            svc.addr,
            path.display()
        )
    };
    let (code, out, report) = drill(&write_scenario(
        dir.path(),
        "full",
        &scenario(disk.0.path()),
    ));
    assert_eq!(code, Some(0), "{out}");
    let run = &report["runs"][0];
    assert!(
        run["failures"]["HTTP 507"].as_u64().unwrap_or(0) > 100,
        "{run}"
    );
    assert_eq!(run["writes"]["lost"].as_u64(), Some(0), "{run}");
    // Writes succeeded again after the fault: the last requests of the run are fine.
    let ok = run["timeline"]["ok"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tail: u64 = ok.iter().rev().take(50).filter_map(|v| v.as_u64()).sum();
    assert!(
        tail > 50,
        "no successful writes after the disk was freed: {run}"
    );
    let left: Vec<_> = std::fs::read_dir(disk.0.path())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(left, vec![std::ffi::OsString::from("writes")]);
    // Not a tmpfs: refused before anything runs.
    let (code, out, _) = drill(&write_scenario(dir.path(), "plain", &scenario(dir.path())));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a mount point"), "{out}");
}

/// A TCP target: each request is a connection. A listening server passes; once it is gone
/// every connection is refused and the drill fails.
#[test]
fn a_tcp_target_counts_refused_connections() {
    let mut svc = DemoBackend::start(bin(), "svc");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s = format!(
        "name = \"tcp\"\n[target]\ntcp = \"{}\"\n[workload]\nconcurrency = 2\nrate = 100\nduration = \"1s\"\n\
         [fault]\nkind = \"none\"\n[objectives]\nfailed_requests = 0\n",
        svc.addr
    );
    let file = write_scenario(dir.path(), "tcp", &s);
    let (code, out, report) = drill(&file);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        report["runs"][0]["ok"].as_u64().unwrap_or(0) > 50,
        "{report}"
    );
    svc.proc.kill();
    let (code, out, report) = drill(&file);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        report["runs"][0]["failures"]["refused"]
            .as_u64()
            .unwrap_or(0)
            > 50,
        "{report}"
    );
}

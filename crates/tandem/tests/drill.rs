//! `tandem demo` and `tandem drill` end to end: the demo passes its own drill, and drills
//! against the demo's cluster report what really happened, including failures.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tandem_testkit::proc::Proc;

const T: Duration = Duration::from_secs(120);

#[test]
fn the_demo_runs_a_passing_drill_and_cleans_up() {
    let mut demo = Proc::spawn("demo", {
        let mut c = Command::new(bin());
        c.args(["demo", "--duration", "1"]);
        c
    });
    let status = demo
        .wait_exit(T)
        .unwrap_or_else(|| panic!("the demo did not finish: {:?}", demo.output()));
    let out = demo.output().join("\n");
    assert!(status.success(), "{out}");
    assert!(out.contains("1 run(s), PASSED"), "{out}");
    assert!(out.contains("two primaries seen: no"), "{out}");
    assert!(
        out.contains("promoted, fencing token 2"),
        "no failover in the role log: {out}"
    );
    let dir = out
        .lines()
        .find_map(|l| l.split("files in ").nth(1))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was left behind"
    );
}

/// `--postgres` adds a PostgreSQL cluster and a drill that loses no committed row.
#[test]
fn the_demo_with_postgres_runs_both_drills() {
    let mut demo = Proc::spawn("demo", {
        let mut c = Command::new(bin());
        c.args(["demo", "--duration", "1", "--postgres"]);
        c
    });
    let status = demo
        .wait_exit(Duration::from_secs(240))
        .unwrap_or_else(|| panic!("the demo did not finish: {:?}", demo.output()));
    let out = demo.output().join("\n");
    assert!(status.success(), "{out}");
    assert!(
        out.contains("drill kill-postgres-primary: 1 run(s), PASSED"),
        "{out}"
    );
    assert_eq!(out.matches("1 run(s), PASSED").count(), 2, "{out}");
    assert!(
        out.contains("writes: ") && !out.contains("objective rpo: wanted 0, got 1"),
        "{out}"
    );
    assert!(out.contains("PostgreSQL primary: pg"), "{out}");
}

/// The demo's cluster as a fixture for other drills.
struct Fixture {
    demo: Proc,
    nodes: Vec<String>,
    app: String,
    lb_admin: String,
    token: String,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let demo = Proc::spawn("demo", {
        let mut c = Command::new(bin());
        c.args(["demo", "--duration", "120"]);
        c
    });
    assert!(
        demo.wait_line(T, |l| l.contains("the demo keeps running").then_some(()))
            .is_some(),
        "{:?}",
        demo.output()
    );
    let out = demo.output();
    let after = |marker: &str| -> String {
        out.iter()
            .find_map(|l| l.split(marker).nth(1).map(|s| s.trim().to_string()))
            .unwrap_or_else(|| panic!("{marker}: {out:?}"))
    };
    let nodes: Vec<String> = after("admin APIs: ")
        .split(", ")
        .map(String::from)
        .collect();
    let url = |s: String| {
        s.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let app = url(after("active-passive (app):"));
    let lb_admin = url(after("load balancer admin API:"));
    let files = after("files in ");
    let token = format!("{files}/token");
    Fixture {
        demo,
        nodes,
        app,
        lb_admin,
        token,
        dir: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
    }
}

impl Fixture {
    fn scenario(&self, fault: &str, objectives: &str) -> std::path::PathBuf {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, a)| format!("n{} = \"{a}\"", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "name = \"t\"\n[target]\nhttp = \"http://{}/\"\n[workload]\nconcurrency = 4\nrate = 200\nduration = \"6s\"\n\
             [fault]\n{fault}\n[watch]\nnodes = {{ {nodes} }}\ntoken_file = \"{}\"\nobservers = [\"{}\"]\n[objectives]\n{objectives}\n",
            self.app, self.token, self.lb_admin
        );
        let path = self
            .dir
            .path()
            .join(format!("s{}.toml", tandem_core_free_id()));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn drill(&self, scenario: &std::path::Path, json: &std::path::Path) -> (Option<i32>, String) {
        let out = Command::new(bin())
            .args(["drill", "--scenario"])
            .arg(scenario)
            .arg("--json")
            .arg(json)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    }

    fn admin(&self, i: usize) -> std::net::SocketAddr {
        self.nodes[i]
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", self.nodes[i]))
    }

    /// The index of the one node whose `/primary` answers 200.
    fn primary(&self) -> usize {
        let primaries: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                tandem_testkit::http::get(self.admin(i), "/primary").is_ok_and(|r| r.status == 200)
            })
            .collect();
        match primaries[..] {
            [p] => p,
            _ => panic!("not exactly one primary: {primaries:?} of {:?}", self.nodes),
        }
    }

    /// Wait until the cluster is whole again after a fault (the demo restarts killed nodes).
    fn settle(&self) {
        let ok = wait_until(T, || {
            let primaries = self
                .nodes
                .iter()
                .filter(|a| {
                    let addr = a.parse().unwrap_or_else(|_| unreachable!());
                    tandem_testkit::http::get(addr, "/primary").is_ok_and(|r| r.status == 200)
                })
                .count();
            let all_up = self.nodes.iter().all(|a| {
                tandem_testkit::http::get(a.parse().unwrap_or_else(|_| unreachable!()), "/health")
                    .is_ok()
            });
            primaries == 1 && all_up
        });
        assert!(ok, "the demo cluster did not settle");
    }
}

fn tandem_core_free_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn drills_measure_faults_and_fail_on_missed_objectives() {
    let f = fixture();
    let json = f.dir.path().join("r.json");

    // A kill of the primary cannot meet "zero failed requests" on an active-passive service:
    // the drill must say so, with exit status 1.
    let s = f.scenario(
        "kind = \"sigkill\"\nat = \"2s\"",
        "failed_requests = 0\nrto = \"5s\"",
    );
    let (code, out) = f.drill(&s, &json);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("objective failed_requests") && out.contains("MISSED"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    let run = &report["runs"][0];
    assert!(run["failed"].as_u64().unwrap_or(0) > 0, "{run}");
    assert!(
        run["split_brain"].as_array().is_some_and(|v| v.is_empty()),
        "{run}"
    );
    assert!(run["failover_ms"].as_f64().is_some(), "{run}");
    // The lease ttl is 1 s: the outage cannot be much shorter, nor very much longer.
    let rto = run["rto_ms"].as_f64().unwrap_or(0.0);
    assert!(rto > 200.0 && rto < 5000.0, "rto {rto}");
    f.settle();

    // A hung primary (SIGSTOP 2 s): failover, no two primaries, and it recovers.
    let s = f.scenario(
        "kind = \"sigstop\"\nat = \"2s\"\nduration = \"2s\"",
        "rto = \"5s\"",
    );
    let (code, out) = f.drill(&s, &json);
    assert_eq!(code, Some(0), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    // It answers again right after its 2 s stop ends, measured during the run.
    let rec = report["runs"][0]["recovery_ms"].as_f64().unwrap_or(0.0);
    assert!((1900.0..3500.0).contains(&rec), "recovery {rec}: {report}");
    f.settle();

    // A planned switchover to a node that is not primary yet: no two primaries either, and
    // the target ends up primary (the drill only logs a switchover call that fails).
    let before = f.primary();
    let target = (0..f.nodes.len())
        .rev()
        .find(|&i| i != before)
        .unwrap_or_else(|| panic!("no node besides the primary: {:?}", f.nodes));
    let name = format!("n{}", target + 1);
    let s = f.scenario(
        &format!("kind = \"switchover\"\nat = \"2s\"\nnode = \"primary\"\nto = \"{name}\""),
        "",
    );
    let (code, out) = f.drill(&s, &json);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("two primaries seen: no"), "{out}");
    let addr = f.admin(target);
    let mut st = serde_json::Value::Null;
    let switched = wait_until(Duration::from_secs(10), || {
        let primary = tandem_testkit::http::get(addr, "/primary").is_ok_and(|r| r.status == 200);
        st = tandem_testkit::http::get(addr, "/cluster")
            .ok()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or_default();
        primary && st["lease_holder"] == name.as_str()
    });
    assert!(
        switched,
        "{name} did not become primary (n{} was): {st}\n{out}",
        before + 1
    );

    // Bad scenarios are refused before any fault: exit 2 with the reason.
    let bad = f.dir.path().join("bad.toml");
    for (text, why) in [
        ("name = \"x\"\ncolour = 1\n[target]\nhttp = \"http://127.0.0.1:1/\"\n[fault]\nkind = \"none\"\n", "unknown field"),
        ("name = \"x\"\n[target]\nhttp = \"http://8.8.8.8:80/\"\n[fault]\nkind = \"none\"\n", "outside loopback"),
        ("name = \"x\"\n[target]\nhttp = \"http://127.0.0.1:1/\"\n[fault]\nkind = \"sigkill\"\nnode = \"n7\"\n[watch]\nnodes = { n1 = \"127.0.0.1:1\" }\n", "not in [watch]"),
    ] {
        std::fs::write(&bad, text).unwrap_or_else(|e| panic!("{e}"));
        let (code, out) = f.drill(&bad, &json);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains(why), "{why}: {out}");
    }
    drop(f.demo);
}

//! Chaos drills: a seeded schedule of kill, stop and restart faults on a three-node cluster
//! under sequenced writes, with the invariants checked from outside (one primary, fencing
//! tokens that grow, no acknowledged write lost) and convergence after the last fault; the
//! same seed gives the same schedule.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A three-node cluster on fixed ports (a node the drill starts again must come back on the
/// same admin address), each node managing a demo service that copies every write to the
/// two others before acknowledging it, and a load balancer that follows the lease.
struct Lab {
    svcs: Vec<DemoBackend>,
    c: TestCluster,
    lb: Node,
    admins: Vec<String>,
}

fn lab() -> Lab {
    let ports: Vec<u16> = (0..3).map(|_| tandem_testkit::free_port()).collect();
    let svcs: Vec<DemoBackend> = (0..3)
        .map(|i| {
            let peers: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("127.0.0.1:{}", ports[j]))
                .collect();
            DemoBackend::start_with(
                bin(),
                &format!("svc{}", i + 1),
                &format!("127.0.0.1:{}", ports[i]),
                &["--replicate-to".to_string(), peers.join(",")],
            )
        })
        .collect();
    let admins: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", tandem_testkit::free_port()))
        .collect();
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = shared.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let raft: Vec<u16> = (0..3).map(|_| tandem_testkit::free_port()).collect();
    let peers = (0..3)
        .map(|i| format!("n{} = \"127.0.0.1:{}\"", i + 1, raft[i]))
        .collect::<Vec<_>>()
        .join(", ");
    let nodes = (0..3)
        .map(|i| {
            let cfg = format!(
                "[admin]\nlisten = \"{}\"\ntoken_file = \"{{dir}}/token\"\n[runtime]\ndrain_timeout = \"2s\"\n\
                 [node]\nname = \"n{}\"\ndata_dir = \"{{dir}}/data\"\n\
                 [cluster]\nname = \"chaos\"\nlisten = \"127.0.0.1:{}\"\npeers = {{ {peers} }}\nlease_ttl = \"{TTL_MS}ms\"\nsecret_file = \"{}\"\n\
                 [service]\nkind = \"command\"\npromote = \"true\"\ndemote = \"true\"\n\
                 [service.health]\ncheck = \"http\"\nurl = \"http://{}/healthz\"\ninterval = \"200ms\"\ntimeout = \"300ms\"\n",
                admins[i],
                i + 1,
                raft[i],
                secret.display(),
                svcs[i].addr
            );
            Node::start(bin(), &cfg, &[], Some(TOKEN))
        })
        .collect();
    let c = TestCluster {
        nodes,
        _shared: shared,
    };
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let servers: String = (0..3)
        .map(|i| {
            format!(
                "[[backend.server]]\nname = \"svc{}\"\naddress = \"{}\"\ncheck_address = \"{}\"\n",
                i + 1,
                svcs[i].addr,
                admins[i]
            )
        })
        .collect();
    let lb = Node::start(
        bin(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"app\"\nlisten = \"127.0.0.1:0\"\nbackend = \"app\"\naccess_log = false\n\
             [[backend]]\nname = \"app\"\nretries = 2\n[backend.health]\ncheck = \"http\"\npath = \"/primary\"\n\
             interval = \"100ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 1\n{servers}"
        ),
        &["app"],
        None,
    );
    assert!(wait_until(Duration::from_secs(10), || {
        tandem_testkit::http::get(lb.frontend("app"), "/").is_ok_and(|r| r.status == 200)
    }));
    Lab {
        svcs,
        c,
        lb,
        admins,
    }
}

impl Lab {
    /// A chaos scenario over this lab; `chaos` is the `[chaos]` body.
    fn scenario(&self, dir: &Path, chaos: &str) -> PathBuf {
        let nodes = (0..3)
            .map(|i| format!("n{} = \"{}\"", i + 1, self.admins[i]))
            .collect::<Vec<_>>()
            .join(", ");
        let restart = restart_argvs(&self.c);
        let text = format!(
            "name = \"chaos\"\n[target]\nhttp = \"http://{}/\"\n\
             [workload]\nkind = \"writes\"\nconcurrency = 4\nrate = 100\ntimeout = \"1s\"\n\
             [chaos]\n{chaos}\nrestart = {{ {restart} }}\nrestart_log = \"restarted.log\"\n\
             [watch]\nnodes = {{ {nodes} }}\nobservers = [\"{}\"]\nserved_by = {{ svc1 = \"n1\", svc2 = \"n2\", svc3 = \"n3\" }}\n\
             [objectives]\nrpo = 0\n",
            self.lb.frontend("app"),
            self.lb.admin()
        );
        let p = dir.join("chaos.toml");
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }
}

fn drill(args: &[&str], scenario: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .arg("drill")
        .args(args)
        .arg("--scenario")
        .arg(scenario)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const CHAOS: &str = "seed = 7\nduration = \"70s\"\ninterval = \"7s\"\nfault_duration = \"2s\"\nsettle = \"3s\"\nfaults = [\"kill\", \"stop\", \"restart\"]\nnodes = \"any\"";

#[test]
fn a_chaos_run_of_kills_stops_and_restarts_keeps_every_invariant_and_converges() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = lab.scenario(dir.path(), CHAOS);

    // The same seed gives the same schedule; another seed another one. Nothing runs.
    let (code, first, err) = drill(&["--dry-run"], &file);
    assert_eq!(code, Some(0), "{first}{err}");
    let (_, again, _) = drill(&["--dry-run"], &file);
    assert_eq!(first, again);
    assert!(first.contains("chaos seed 7:"), "{first}");
    let other = lab.scenario(dir.path(), &CHAOS.replace("seed = 7", "seed = 8"));
    let (_, different, _) = drill(&["--dry-run"], &other);
    assert_ne!(first, different);
    let file = lab.scenario(dir.path(), CHAOS);

    let json = dir.path().join("chaos.json");
    let html = dir.path().join("chaos.html");
    let (code, out, err) = drill(
        &[
            "--json",
            &json.display().to_string(),
            "--html",
            &html.display().to_string(),
        ],
        &file,
    );
    stop_restarted(&lab.c);
    let log = std::fs::read_to_string(dir.path().join("restarted.log")).unwrap_or_default();
    let all = format!(
        "{out}{err}\nrestarted nodes' log (tail):\n{}",
        tail(&log, 40)
    );
    assert_eq!(code, Some(0), "{all}");
    assert!(err.contains("chaos seed 7"), "{all}");
    let run = chaos_report(&json, 7, &all);
    let chaos = &run["chaos"];
    let schedule = chaos["schedule"].as_array().cloned().unwrap_or_default();
    assert!(schedule.len() >= 7, "{chaos}");
    // The schedule in the report is the dry run's.
    for (i, f) in schedule.iter().enumerate() {
        let line = format!(
            "{:>4}  at {:>8.3}s  {:<10}",
            i + 1,
            f["at_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            f["kind"].as_str().unwrap_or("")
        );
        assert!(first.contains(&line), "{line:?} not in {first}");
    }
    let invariants = chaos["invariants"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = invariants
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "single_primary",
            "fencing_tokens_grow",
            "no_acknowledged_write_lost"
        ]
    );
    for i in &invariants {
        assert!(i["checks"].as_u64().unwrap_or(0) > 0, "{i}");
        assert_eq!(i["violations"].as_array().map(Vec::len), Some(0), "{i}");
    }
    assert_eq!(chaos["convergence"]["converged"], true, "{all}");
    assert!(out.contains("0 invariant violations"), "{all}");
    let page = std::fs::read_to_string(&html).unwrap_or_default();
    assert_eq!(
        page.matches("class=\"chaos-fault\"").count(),
        schedule.len()
    );
    drop(lab.svcs);
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

//! A chaos drill on a three-node PostgreSQL cluster with synchronous replication: a seeded
//! schedule of kills, stops and restarts of the agents under sequenced inserts through a
//! libpq-style multi-host string, with every PostgreSQL server asked from outside whether it
//! takes writes. Nothing acknowledged is lost, never two writable servers, never two primaries,
//! and the cluster is whole again (one primary, every replica streaming) after the last fault.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

const CHAOS: &str = "seed = 11\nduration = \"80s\"\ninterval = \"8s\"\nfault_duration = \"2s\"\n\
                     settle = \"4s\"\nfaults = [\"kill\", \"stop\", \"restart\"]\nnodes = \"any\"\n\
                     converge_timeout = \"30s\"";

#[test]
fn a_chaos_run_on_synchronous_postgres_loses_nothing_and_converges() {
    // Fixed admin addresses: an agent the drill starts again comes back where it is watched.
    let admins: Vec<u16> = (0..3).map(|_| tandem_testkit::free_port()).collect();
    let (c, ports, _data) =
        postgres_cluster_on(BIN_DIR, |i| format!("127.0.0.1:{}", admins[i]), "on", "");
    c.wait_primary_within(&[0, 1, 2], Duration::from_secs(60));
    // Ready for faults once every replica streams and one is synchronous.
    let ready = wait_until(Duration::from_secs(60), || {
        let codes: Vec<u16> = (0..3)
            .map(|i| {
                tandem_testkit::http::request_timeout(
                    c.nodes[i].admin(),
                    "GET",
                    "/replica",
                    Duration::from_secs(1),
                )
                .map(|r| r.status)
                .unwrap_or(0)
            })
            .collect();
        codes.iter().filter(|&&s| s == 200).count() == 2
    });
    assert!(ready, "the replicas did not stream");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let list = |f: &dyn Fn(usize) -> String| {
        (0..3)
            .map(|i| format!("n{} = {}", i + 1, f(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let nodes = list(&|i| format!("\"{}\"", c.nodes[i].admin()));
    let servers = list(&|i| {
        format!(
            "\"host=127.0.0.1 port={} user=postgres dbname=postgres\"",
            ports[i]
        )
    });
    let restart = restart_argvs(&c);
    let hosts = ["127.0.0.1"; 3].join(",");
    let port_list = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let scenario = format!(
        "name = \"pg-chaos\"\n[target]\n\
         postgres = \"host={hosts} port={port_list} user=postgres dbname=postgres target_session_attrs=read-write\"\n\
         [workload]\nkind = \"writes\"\nconcurrency = 2\nrate = 50\ntimeout = \"1s\"\n\
         [chaos]\n{CHAOS}\nrestart = {{ {restart} }}\nrestart_log = \"restarted.log\"\n\
         [watch]\nnodes = {{ {nodes} }}\npostgres = {{ {servers} }}\n\
         [objectives]\nrpo = 0\n"
    );
    let file = dir.path().join("pg-chaos.toml");
    std::fs::write(&file, scenario).unwrap_or_else(|e| panic!("{e}"));
    let json = dir.path().join("pg-chaos.json");
    let out = Command::new(bin())
        .args(["drill", "--json"])
        .arg(&json)
        .arg("--scenario")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    stop_restarted(&c);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.path().join("restarted.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let all = format!("{text}\nrestarted agents' log (last lines first):\n{tail:#?}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    // Every planned fault was made and undone.
    let run = chaos_report(&json, 11, &all);
    let chaos = &run["chaos"];
    let schedule = chaos["schedule"].as_array().cloned().unwrap_or_default();
    assert!(schedule.len() >= 6, "{chaos}");
    // Every invariant was checked, many times, and held.
    let invariants = chaos["invariants"].as_array().cloned().unwrap_or_default();
    for name in [
        "single_primary",
        "one_writable_postgres",
        "no_acknowledged_write_lost",
    ] {
        let inv = invariants
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no invariant {name}: {chaos}"));
        assert!(inv["checks"].as_u64().unwrap_or(0) > 0, "{inv}");
        assert!(
            inv["violations"].as_array().is_some_and(|v| v.is_empty()),
            "{inv}: {all}"
        );
    }
    let w = &run["writes"];
    assert!(w["acked"].as_u64().unwrap_or(0) > 500, "{w}");
    assert_eq!(w["lost"].as_u64(), Some(0), "{w}");
    assert!(chaos["convergence"]["converged"] == true, "{chaos}");
}

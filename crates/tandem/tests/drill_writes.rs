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

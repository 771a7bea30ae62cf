//! The alert rules `tandem alerts` prints: `promtool check rules`, the promtool unit tests in
//! `tests/alerts/`, and a real Prometheus server scraping a three-node cluster whose primary is
//! SIGKILLed, where `TandemFailoverHappened` must fire and every rule must evaluate cleanly.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tandem_testkit::http;
use tandem_testkit::proc::Proc;

const T: Duration = Duration::from_secs(30);

fn promtool() -> PathBuf {
    tandem_testkit::require_program("promtool", "prometheus")
}

/// `tandem alerts > dir/rules.yml`.
fn write_rules(dir: &Path) -> PathBuf {
    let out = Command::new(bin())
        .arg("alerts")
        .output()
        .unwrap_or_else(|e| panic!("tandem alerts: {e}"));
    assert!(
        out.status.success(),
        "tandem alerts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("rules.yml");
    std::fs::write(&path, &out.stdout).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules() {
    let tool = promtool();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rules = write_rules(dir.path());
    let mut cmd = Command::new(tool);
    cmd.args(["check", "rules"]).arg(&rules);
    let out = run_ok(cmd);
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let tool = promtool();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_rules(dir.path());
    // The unit-test files name `rules.yml`, relative to themselves: run them beside it.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alerts");
    let mut tests = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|x| x == "yml") {
            let to = dir.path().join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &to).unwrap_or_else(|e| panic!("{e}"));
            tests.push(to);
        }
    }
    assert!(!tests.is_empty(), "no unit tests in {}", src.display());
    let mut cmd = Command::new(tool);
    cmd.args(["test", "rules"]).args(&tests);
    let out = run_ok(cmd);
    assert!(out.contains("SUCCESS"), "{out}");
}

// ===== a real Prometheus server =====

/// Three `tandem run` cluster members on loopback, as in tests/cluster.rs.
/// A Prometheus server in a temporary directory, killed (by PID) on drop.
struct Prometheus {
    proc: Proc,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrape `targets` as job `tandem` every second, evaluating `tandem alerts` every second.
    fn start(targets: &[SocketAddr]) -> Prometheus {
        let exe = tandem_testkit::require_program("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rules = write_rules(dir.path());
        let targets = targets
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}\"\n\
             scrape_configs:\n  - job_name: tandem\n    static_configs:\n      - targets: [{targets}]\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("{e}"));
        let addr: SocketAddr = format!("127.0.0.1:{}", tandem_testkit::free_port())
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let p = Prometheus {
            proc: Proc::spawn("prometheus", cmd),
            addr,
            _dir: dir,
        };
        let ready = wait_until(T, || {
            http::get(p.addr, "/-/ready").is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "prometheus did not get ready: {:?}", p.proc.output());
        p
    }

    /// GET an API path and return its `data`.
    fn api(&self, path: &str) -> Value {
        let r = http::get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.text()));
        assert_eq!(v["status"], "success", "GET {path}: {v}");
        v["data"].clone()
    }

    /// The value of an instant query that returns one sample, if it does.
    fn query_one(&self, q: &str) -> Option<f64> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(q)));
        let result = data["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The latest `tandem_cluster_failovers_total` of each scraped node, by instance.
    fn failovers(&self) -> HashMap<String, f64> {
        let data = self.api(&format!(
            "/api/v1/query?query={}",
            encode("tandem_cluster_failovers_total")
        ));
        data["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| {
                        let instance = s["metric"]["instance"].as_str()?.to_string();
                        Some((instance, s["value"][1].as_str()?.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Alerts (pending or firing) named `name`.
    fn alerts(&self, name: &str) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["labels"]["alertname"] == name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every alerting rule with its evaluation health (`ok`, `err`, `unknown`) and last error.
    fn rule_health(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/rules?type=alert");
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                (s("name"), s("health"), s("lastError"))
            })
            .collect()
    }
}

/// Percent-encoding for a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_fires_failover_happened_when_the_primary_is_killed() {
    let mut c = cluster(3, |_| String::new());
    c.wait_primary(&[0, 1, 2]);
    c.wait_formed();
    let admins: Vec<SocketAddr> = c.nodes.iter().map(|n| n.admin()).collect();
    let prom = Prometheus::start(&admins);

    // Every node scraped at least twice (increase() needs a sample before the failover), and
    // every rule evaluated against the real series without an error.
    let scraped = wait_until(T, || {
        prom.query_one("count(count_over_time(tandem_cluster_failovers_total[1m]) >= 2)")
            == Some(3.0)
            && prom.query_one("sum(tandem_cluster_is_primary)") == Some(1.0)
    });
    assert!(
        scraped,
        "prometheus did not scrape the three nodes: {}",
        prom.api("/api/v1/targets")
    );
    let mut health = Vec::new();
    let evaluated = wait_until(T, || {
        health = prom.rule_health();
        health.len() == 11 && health.iter().all(|(_, h, _)| h != "unknown")
    });
    assert!(evaluated, "rules not loaded or not evaluated: {health:?}");
    let bad: Vec<_> = health.iter().filter(|(_, h, _)| h != "ok").collect();
    assert!(bad.is_empty(), "rules failing on real series: {bad:?}");

    // The primary of this moment (the lease may have moved since the cluster formed), and the
    // failover counts Prometheus holds before the kill: the alert must come from a failover
    // Prometheus saw after it.
    let p = c.wait_primary(&[0, 1, 2]);
    let token = c.nodes[p].get_json("/cluster")["fencing_token"].clone();
    let before = prom.failovers();
    c.nodes[p].proc.kill();
    let others: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let q = c.wait_primary(&others);
    let new_primary = c.nodes[q].admin().to_string();
    // /cluster may show the new token a moment after /primary answers 200.
    let moved = wait_until(T, || {
        c.nodes[q].get_json("/cluster")["fencing_token"] != token
    });
    assert!(
        moved,
        "the lease did not move: was the killed node still primary?"
    );

    let mut seen = Vec::new();
    let fired = wait_until(Duration::from_secs(60), || {
        seen = prom.alerts("TandemFailoverHappened");
        let counted = prom.failovers().get(&new_primary).copied().unwrap_or(0.0)
            > before.get(&new_primary).copied().unwrap_or(0.0);
        counted
            && seen.iter().any(|a| {
                a["labels"]["instance"] == new_primary.as_str()
                    && (a["state"] == "firing" || a["state"] == "pending")
            })
    });
    if !fired {
        let metrics: Vec<String> = others
            .iter()
            .map(|&i| {
                let m = c.nodes[i].metrics();
                let lines: Vec<&str> = m
                    .lines()
                    .filter(|l| l.starts_with("tandem_cluster") && !l.contains("_bucket"))
                    .collect();
                format!(
                    "n{}:\n{}\nevents: {}",
                    i + 1,
                    lines.join("\n"),
                    c.nodes[i].get_json("/events")
                )
            })
            .collect();
        panic!(
            "TandemFailoverHappened did not fire for {new_primary}: {seen:?}\nall alerts: {}\n\
             failovers in prometheus before the kill: {before:?}, now: {:?}\nnodes now:\n{}",
            prom.api("/api/v1/alerts"),
            prom.failovers(),
            metrics.join("\n")
        );
    }
    let killed = admins[p].to_string();
    assert!(
        seen.iter()
            .all(|a| a["labels"]["severity"] == "warning"
                && a["labels"]["instance"] != killed.as_str()),
        "{seen:?}"
    );
    let firing_two = prom
        .alerts("TandemTwoPrimaries")
        .into_iter()
        .filter(|a| a["state"] == "firing")
        .count();
    assert_eq!(
        firing_two, 0,
        "two primaries reported during a clean failover"
    );
    let bad: Vec<_> = prom
        .rule_health()
        .into_iter()
        .filter(|(_, h, _)| h != "ok")
        .collect();
    assert!(bad.is_empty(), "rules failing after the failover: {bad:?}");
}

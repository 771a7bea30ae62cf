//! Shared pieces of the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tandem_testkit::http;
use tandem_testkit::invariants::{PrimaryWatch, WatchReport};

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A node config with one HTTP frontend `web` on port 0 and backend `app` over `servers`
/// (name, address, backup); `extra` is appended to the `[[backend]]` table.
pub fn lb_config(servers: &[(&str, SocketAddr, bool)], extra: &str) -> String {
    let mut s = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_file = "{{dir}}/token"

[runtime]
drain_timeout = "5s"

[[frontend]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
access_log = false

[[backend]]
name = "app"
retries = 2
connect_timeout = "500ms"
try_timeout = "1s"
{extra}
[backend.health]
check = "http"
path = "/healthz"
interval = "200ms"
timeout = "300ms"
rise = 2
fall = 2
"#
    );
    for (name, addr, backup) in servers {
        s.push_str(&format!(
            "\n[[backend.server]]\nname = \"{name}\"\naddress = \"{addr}\"\nbackup = {backup}\n"
        ));
    }
    s
}

/// Start a node with the test token in `{dir}/token`, waiting for the `web` frontend.
pub fn start_node(config: &str) -> Node {
    Node::start(bin(), config, &["web"], Some(TOKEN))
}

#[allow(unused_imports)]
pub use tandem_testkit::tandem::{DemoBackend, Node};
/// Poll with a deadline (re-exported for brevity).
#[allow(unused_imports)]
pub use tandem_testkit::wait_until;

// ===== clusters =====

/// The cluster tests' lease ttl.
pub const TTL_MS: u64 = 1000;
const CT: Duration = Duration::from_secs(20);

/// A cluster of `tandem run` nodes n1..nN on loopback.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    pub _shared: tempfile::TempDir,
}

/// `extra(i)` is appended to node i's config (e.g. a [service] section).
pub fn cluster(n: usize, extra: impl Fn(usize) -> String) -> TestCluster {
    cluster_with(n, "", extra)
}

/// As `cluster`, with `admin` added to every node's `[admin]` table.
pub fn cluster_with(n: usize, admin: &str, extra: impl Fn(usize) -> String) -> TestCluster {
    cluster_on(n, |_| "127.0.0.1:0".into(), admin, extra)
}

/// As `cluster_with`, node i's admin API on `listen(i)` (a fixed address lets a node that a
/// drill starts again come back where the drill watches it).
pub fn cluster_on(
    n: usize,
    listen: impl Fn(usize) -> String,
    admin: &str,
    extra: impl Fn(usize) -> String,
) -> TestCluster {
    cluster_full(n, listen, Duration::from_millis(TTL_MS), admin, extra)
}

/// As `cluster_with`, with another lease ttl.
pub fn cluster_ttl(
    n: usize,
    ttl: Duration,
    admin: &str,
    extra: impl Fn(usize) -> String,
) -> TestCluster {
    cluster_full(n, |_| "127.0.0.1:0".into(), ttl, admin, extra)
}

fn cluster_full(
    n: usize,
    listen: impl Fn(usize) -> String,
    ttl: Duration,
    admin: &str,
    extra: impl Fn(usize) -> String,
) -> TestCluster {
    let ttl_ms = ttl.as_millis();
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = shared.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let ports: Vec<u16> = (0..n).map(|_| tandem_testkit::free_port()).collect();
    let peers = (0..n)
        .map(|i| format!("n{} = \"127.0.0.1:{}\"", i + 1, ports[i]))
        .collect::<Vec<_>>()
        .join(", ");
    let nodes = (0..n)
        .map(|i| {
            let cfg = format!(
                r#"
[admin]
listen = "{}"
token_file = "{{dir}}/token"
{admin}

[node]
name = "n{}"
data_dir = "{{dir}}/data"

[cluster]
name = "test"
listen = "127.0.0.1:{}"
peers = {{ {peers} }}
lease_ttl = "{ttl_ms}ms"
secret_file = "{}"
{}
"#,
                listen(i),
                i + 1,
                ports[i],
                secret.display(),
                extra(i)
            );
            Node::start(bin(), &cfg, &[], Some(TOKEN))
        })
        .collect();
    TestCluster {
        nodes,
        _shared: shared,
    }
}

impl TestCluster {
    pub fn is_primary(&self, i: usize) -> bool {
        http::request_timeout(
            self.nodes[i].admin(),
            "GET",
            "/primary",
            Duration::from_millis(500),
        )
        .is_ok_and(|r| r.status == 200)
    }

    /// Wait until exactly one node among `among` is primary.
    pub fn wait_primary(&self, among: &[usize]) -> usize {
        self.wait_primary_within(among, CT)
    }

    /// `wait_primary` with another deadline.
    pub fn wait_primary_within(&self, among: &[usize], deadline: Duration) -> usize {
        let mut found = None;
        let ok = wait_until(deadline, || {
            let p: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&i| self.is_primary(i))
                .collect();
            found = p.first().copied();
            p.len() == 1
        });
        assert!(ok, "no single primary among {among:?}");
        found.unwrap_or_else(|| unreachable!())
    }

    /// Wait until every node sees every member alive and the same lease holder.
    pub fn wait_formed(&self) {
        let n = self.nodes.len();
        let ok = wait_until(CT, || {
            let views: Vec<serde_json::Value> = self
                .nodes
                .iter()
                .map(|node| node.get_json("/cluster"))
                .collect();
            views.iter().all(|v| {
                v["lease_holder"].is_string()
                    && v["lease_holder"] == views[0]["lease_holder"]
                    && v["members"]
                        .as_array()
                        .is_some_and(|m| m.len() == n && m.iter().all(|m| m["alive"] == true))
            })
        });
        assert!(
            ok,
            "the cluster did not form: {:?}",
            self.nodes
                .iter()
                .map(|n| n.get_json("/cluster"))
                .collect::<Vec<_>>()
        );
    }

    pub fn watch(&self) -> PrimaryWatch {
        let targets: Vec<(String, SocketAddr)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("n{}", i + 1), n.admin()))
            .collect();
        let w = PrimaryWatch::start(&targets, Duration::from_millis(10));
        w.settle();
        w
    }

    pub fn others(&self, i: usize) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&j| j != i).collect()
    }
}

/// No two primaries were seen, and fencing tokens grew.
pub fn assert_safe(report: &WatchReport) {
    assert!(report.samples > 10, "the watch barely sampled: {report:?}");
    assert!(
        report.violations.is_empty(),
        "two primaries: {:?}",
        report.violations
    );
    assert!(
        report.tokens_increase(),
        "fencing tokens went back: {:?}",
        report.primaries
    );
}

/// Three nodes in the lab's namespaces: peers on the shared network, admin APIs on the
/// management links (so the test still sees a host whose shared link is cut).
pub fn lab_cluster(lab: &tandem_testkit::netns::Lab) -> TestCluster {
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = shared.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let peers = (0..3)
        .map(|i| format!("n{} = \"{}:7100\"", i + 1, lab.hosts[i].ip))
        .collect::<Vec<_>>()
        .join(", ");
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let cfg = format!(
                "[admin]\nlisten = \"{}:0\"\ntoken_file = \"{{dir}}/token\"\n[node]\nname = \"n{}\"\ndata_dir = \"{{dir}}/data\"\n\
                 [cluster]\nname = \"lab\"\nlisten = \"{}:7100\"\npeers = {{ {peers} }}\nlease_ttl = \"{TTL_MS}ms\"\nsecret_file = \"{}\"\n",
                lab.hosts[i].mgmt_ip,
                i + 1,
                lab.hosts[i].ip,
                secret.display()
            );
            Node::start_in(bin(), &cfg, &[], Some(TOKEN), lab.wrapper(i))
        })
        .collect();
    TestCluster {
        nodes,
        _shared: shared,
    }
}

/// Three nodes managing PostgreSQL (`kind = "postgres"`, binaries in `bin_dir`), each on a free
/// port, with `synchronous = sync`; `params` are added to `parameters`. Returns the cluster, the
/// PostgreSQL ports and the directory holding the data directories.
pub fn postgres_cluster(
    bin_dir: &str,
    sync: &str,
    params: &str,
) -> (TestCluster, Vec<u16>, tempfile::TempDir) {
    postgres_cluster_on(bin_dir, |_| "127.0.0.1:0".into(), sync, params)
}

/// As `postgres_cluster`, node i's admin API on `listen(i)`.
pub fn postgres_cluster_on(
    bin_dir: &str,
    listen: impl Fn(usize) -> String,
    sync: &str,
    params: &str,
) -> (TestCluster, Vec<u16>, tempfile::TempDir) {
    assert!(
        Path::new(bin_dir).join("postgres").exists(),
        "PostgreSQL 15 is needed: apt-get install postgresql-15"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // PostgreSQL runs as `postgres`: it must reach its data dir.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ports: Vec<u16> = (0..3).map(|_| tandem_testkit::free_port()).collect();
    let root = dir.path().display().to_string();
    let c = cluster_on(3, listen, "", |i| {
        format!(
            r#"
[service]
kind = "postgres"
bin_dir = "{bin_dir}"
data_dir = "{root}/pg{}"
listen = "127.0.0.1:{}"
synchronous = "{sync}"
maximum_lag_on_failover = "64MB"
parameters = {{ max_connections = "40", fsync = "off"{params} }}
"#,
            i + 1,
            ports[i]
        )
    });
    (c, ports, dir)
}

/// Stop, by pid, the nodes a drill started again (their pids from `/status`; the ones this
/// test started stop with their `Node`).
pub fn stop_restarted(c: &TestCluster) {
    for node in &c.nodes {
        // A node that does not answer has nothing to stop.
        let pid = http::request_timeout(node.admin(), "GET", "/status", Duration::from_secs(1))
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v["pid"].as_i64())
            .map(|p| p as i32);
        let Some(pid) = pid.filter(|&p| p != node.proc.pid()) else {
            continue;
        };
        tandem_testkit::proc::signal_pid(pid, libc::SIGCONT);
        tandem_testkit::proc::signal_pid(pid, libc::SIGTERM);
        let gone = wait_until(Duration::from_secs(30), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        if !gone {
            tandem_testkit::proc::signal_pid(pid, libc::SIGKILL);
        }
    }
}

/// `restart = { n1 = [...], ... }` for a `[chaos]` section: each node started again with its own
/// config, as the test started it.
pub fn restart_argvs(c: &TestCluster) -> String {
    c.nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            format!(
                "n{} = [\"{}\", \"--log-format\", \"json\", \"run\", \"--config\", \"{}\"]",
                i + 1,
                bin().display(),
                node.config.display()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `chaos` part of a drill's JSON report at `json` (Null when unreadable), after checking
/// that it ran with `seed` and made and undid every planned fault; `context` goes into the
/// failure messages.
pub fn chaos_report(json: &Path, seed: u64, context: &str) -> serde_json::Value {
    let report: serde_json::Value = std::fs::read(json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let run = report["runs"][0].clone();
    let chaos = &run["chaos"];
    assert_eq!(chaos["seed"].as_u64(), Some(seed), "{chaos}");
    let schedule = chaos["schedule"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        chaos["injected"].as_u64(),
        Some(schedule.len() as u64),
        "{context}"
    );
    for f in &schedule {
        assert!(f["error"].is_null(), "{f}: {context}");
        assert!(f["undone_ms"].as_f64() > f["injected_ms"].as_f64(), "{f}");
    }
    run
}

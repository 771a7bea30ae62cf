//! docs/metrics.md lists every metric: a node running every component (a one-node cluster with
//! a `[service]`, a proxy frontend and backend) is scraped, and each `# TYPE` family must be in
//! the doc's tables with the same type. The shipped alert rules may only use metrics such a node
//! exposes, or those of components still to come.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;

/// Metrics the alert rules use before any node exports them (docs/metrics.md says so).
const NOT_YET_EXPORTED: [&str; 1] = ["tandem_postgres_replication_lag_bytes"];

/// A node with every component (a 1-node cluster with a service, and a load balancer), with
/// its backend and the directory holding the cluster secret.
struct FullNode {
    node: Node,
    _backend: DemoBackend,
    _shared: tempfile::TempDir,
}

fn full_node() -> FullNode {
    let backend = DemoBackend::start(bin(), "a");
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = shared.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let port = tandem_testkit::free_port();
    let cfg = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_file = "{{dir}}/token"

[node]
name = "n1"
data_dir = "{{dir}}/data"

[cluster]
name = "metrics"
listen = "127.0.0.1:{port}"
peers = {{ n1 = "127.0.0.1:{port}" }}
lease_ttl = "1s"
secret_file = "{}"

[service]
kind = "command"
promote = "true"
demote = "true"

[[frontend]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
access_log = false

[[backend]]
name = "app"
[backend.health]
check = "http"
path = "/healthz"
interval = "200ms"

[[backend.server]]
name = "a"
address = "{}"
"#,
        secret.display(),
        backend.addr
    );
    FullNode {
        node: Node::start(bin(), &cfg, &["web"], Some(TOKEN)),
        _backend: backend,
        _shared: shared,
    }
}

/// `# TYPE` families of an exposition: name -> type.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, ty) = l.split_once(' ')?;
            Some((name.to_string(), ty.trim().to_string()))
        })
        .collect()
}

/// Metrics documented in docs/metrics.md: table rows whose first cell is a `tandem_*` name,
/// name -> the type cell.
fn documented() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("| `tandem_")?;
            let (name, after) = rest.split_once('`')?;
            let ty = after.trim_start_matches([' ', '|']);
            let ty = ty.split('|').next()?.trim();
            Some((format!("tandem_{name}"), ty.to_string()))
        })
        .collect()
}

/// The name users query: counters carry `_total` in their samples but not in `# TYPE`.
fn sample_name(family: &str, ty: &str) -> String {
    if ty == "counter" {
        format!("{family}_total")
    } else {
        family.to_string()
    }
}

/// Scrape until both components have registered (the first scrape can come very early).
fn scrape(node: &Node) -> String {
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        text = node.metrics();
        text.contains("# TYPE tandem_proxy_") && text.contains("# TYPE tandem_cluster_")
    });
    assert!(
        ok,
        "the node did not expose proxy and cluster metrics:\n{text}"
    );
    text
}

#[test]
fn every_exposed_metric_is_documented() {
    let full = full_node();
    let text = scrape(&full.node);
    let fams = families(&text);
    let docs = documented();
    assert!(
        fams.len() >= 20,
        "too few families, is the node whole?\n{text}"
    );

    let mut problems = Vec::new();
    for (family, ty) in &fams {
        if !family.starts_with("tandem_") {
            problems.push(format!("{family}: the name does not start with tandem_"));
        }
        if !text.contains(&format!("# HELP {family} ")) {
            problems.push(format!("{family}: no # HELP text"));
        }
        let name = sample_name(family, ty);
        match docs.get(&name) {
            None => problems.push(format!(
                "{name} ({ty}, `# TYPE {family}`) is not documented in docs/metrics.md"
            )),
            Some(doc_ty) if doc_ty != ty => problems.push(format!(
                "{name} is a {ty} but docs/metrics.md says {doc_ty:?}"
            )),
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "metrics and docs/metrics.md disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_alert_rules_use_exposed_metrics() {
    let full = full_node();
    let fams = families(&scrape(&full.node));
    let mut known: Vec<String> = NOT_YET_EXPORTED.iter().map(|s| s.to_string()).collect();
    for (family, ty) in &fams {
        match ty.as_str() {
            "counter" => known.push(format!("{family}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.push(format!("{family}{suffix}"));
                }
            }
            _ => known.push(family.clone()),
        }
    }
    let out = std::process::Command::new(bin())
        .arg("alerts")
        .output()
        .unwrap_or_else(|e| panic!("tandem alerts: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = String::from_utf8_lossy(&out.stdout);
    let used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tandem_"))
        .collect();
    assert!(used.len() > 10, "{rules}");
    let unknown: Vec<&&str> = used
        .iter()
        .filter(|w| !known.iter().any(|k| k == *w))
        .collect();
    assert!(
        unknown.is_empty(),
        "the rules use metrics no node exposes: {unknown:?}\nexposed: {known:?}"
    );
}

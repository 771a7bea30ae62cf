//! The dashboard in a real browser: headless Chromium (Debian packages `chromium` and
//! `chromium-driver`), driven over plain WebDriver HTTP calls, against a three-node cluster
//! whose primary is killed. Screenshots are kept under `target/` as CI artefacts.
//!
//! WebDriver rather than `chromium --dump-dom`: the page holds an EventSource open, so
//! `--virtual-time-budget` never runs out, and without it the DOM is dumped before the first
//! `/status` answer. WebDriver also lets one page stay open across the failover, which is what
//! proves the live updates.

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tandem_testkit::http;
use tandem_testkit::proc::Proc;

const T: Duration = Duration::from_secs(20);

/// Markup in an event's reason: a config key the reload rejects, quoted in its error.
const MARKUP: &str = "<img id=xss src=x onerror=window.pwned=1><script>window.pwned=1</script>";

// ===== the browser =====

/// A chromedriver process with one headless Chromium session.
struct Browser {
    session: String,
    addr: SocketAddr,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let chromium = Path::new("/usr/bin/chromium");
        assert!(
            chromium.exists(),
            "/usr/bin/chromium is missing: run `apt-get install -y chromium` (.ci/run does this)"
        );
        let driver_bin = tandem_testkit::require_program("chromedriver", "chromium-driver");
        let port = tandem_testkit::free_port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", cmd);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let up = wait_until(T, || {
            webdriver(addr, "GET", "/status", None).is_ok_and(|v| v["value"]["ready"] == true)
        });
        assert!(up, "chromedriver did not start: {:?}", driver.output());
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // The flags this machine needs (no network beyond loopback) and a fresh profile.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let v = webdriver(addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("new session: {e}: {:?}", driver.output()));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            session,
            addr,
            _driver: driver,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let v = webdriver(self.addr, method, &path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// What the dashboard shows now (see `SNAPSHOT`).
    fn snapshot(&self) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": SNAPSHOT, "args": [] })),
        )
    }

    /// Poll the page until `f` holds, or fail with what it showed last.
    fn wait(&self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(T, || {
            last = self.snapshot();
            f(&last)
        });
        assert!(ok, "the dashboard never showed {what}; it showed {last:#}");
        last
    }

    fn resize(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.call("POST", "/window/rect", Some(&rect));
    }

    fn screenshot(&self, path: &Path) {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64_decode(png.as_str().unwrap_or_default());
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG screenshot");
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; chromedriver itself is killed when `_driver` drops.
        let path = format!("/session/{}", self.session);
        let _ = webdriver(self.addr, "DELETE", &path, None);
    }
}

/// One WebDriver call. chromedriver refuses a Host header other than an address, so the
/// request is written here rather than with `http::request`.
fn webdriver(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<Value> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let resp = http::read_response(&mut BufReader::new(s), false)?;
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    if resp.status != 200 {
        return Err(std::io::Error::other(format!("HTTP {}: {v}", resp.status)));
    }
    Ok(v)
}

/// Standard base64 (the screenshot), without a dependency for it.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Read back from the page what a user sees, by the page's stable ids and classes.
const SNAPSHOT: &str = r#"
const all = (s) => [...document.querySelectorAll(s)];
const text = (s) => { const e = document.querySelector(s); return e ? e.textContent : null; };
return {
  live: text('#live'),
  primary: text('#primary'),
  token: text('#fencing-token'),
  quorum: text('#quorum'),
  vip: text('#vip'),
  members: all('#members tr[data-name]').map((r) => ({
    name: r.dataset.name, role: r.dataset.role, text: r.textContent })),
  servers: all('#backends tr.server').map((r) => ({
    backend: r.dataset.backend, name: r.dataset.name, state: r.dataset.state,
    rate: r.querySelector('.rate').textContent })),
  events: all('#events li').map((li) => ({
    kind: li.dataset.kind, subject: li.querySelector('.subject').textContent,
    reason: li.querySelector('.reason').textContent })),
  injected: document.querySelectorAll('#xss, #events script, #events img').length
    + (window.pwned === undefined ? 0 : 1),
};
"#;

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn member<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    list(v, "members").iter().find(|m| m["name"] == name)
}

// ===== the cluster =====

struct TestCluster {
    nodes: Vec<Node>,
    configs: Vec<String>,
    _backend: DemoBackend,
    _shared: tempfile::TempDir,
}

/// Three nodes, each also balancing frontend `web` over backend `app`: server `a` (a demo
/// backend) and backup `spare` (a closed port, so it shows down).
fn cluster() -> TestCluster {
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = shared.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let backend = DemoBackend::start(bin(), "a");
    let closed: SocketAddr = ([127, 0, 0, 1], tandem_testkit::free_port()).into();
    let servers = [("a", backend.addr, false), ("spare", closed, true)];
    let ports: Vec<u16> = (0..3).map(|_| tandem_testkit::free_port()).collect();
    let peers = (0..3)
        .map(|i| format!("n{} = \"127.0.0.1:{}\"", i + 1, ports[i]))
        .collect::<Vec<_>>()
        .join(", ");
    let configs: Vec<String> = (0..3)
        .map(|i| {
            let cluster = format!(
                "\n[node]\nname = \"n{}\"\ndata_dir = \"{{dir}}/data\"\n\n[cluster]\n\
                 name = \"test\"\nlisten = \"127.0.0.1:{}\"\npeers = {{ {peers} }}\n\
                 lease_ttl = \"1s\"\nsecret_file = \"{}\"\n",
                i + 1,
                ports[i],
                secret.display()
            );
            // [node] and [cluster] go first: lb_config ends inside [[backend.server]].
            format!("{cluster}{}", lb_config(&servers, ""))
        })
        .collect();
    let nodes = configs
        .iter()
        .map(|cfg| Node::start(bin(), cfg, &["web"], Some(TOKEN)))
        .collect();
    TestCluster {
        nodes,
        configs,
        _backend: backend,
        _shared: shared,
    }
}

impl TestCluster {
    fn is_primary(&self, i: usize) -> bool {
        http::request_timeout(
            self.nodes[i].admin(),
            "GET",
            "/primary",
            Duration::from_millis(500),
        )
        .is_ok_and(|r| r.status == 200)
    }

    /// Wait until exactly one node among `among` is primary and every live node names it.
    fn wait_primary(&self, among: &[usize]) -> usize {
        let mut found = None;
        let ok = wait_until(T, || {
            let p: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&i| self.is_primary(i))
                .collect();
            found = p.first().copied();
            let name = found.map(name);
            p.len() == 1
                && among.iter().all(|&i| {
                    self.nodes[i].get_json("/cluster")["lease_holder"].as_str() == name.as_deref()
                })
        });
        assert!(ok, "no single primary among {among:?}");
        found.unwrap_or_else(|| unreachable!())
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}/", self.nodes[i].admin())
    }
}

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Where CI picks up artefacts: the workspace's target directory.
fn artefact(file: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join(file)
}

// ===== tests =====

#[test]
fn dashboard_shows_the_cluster_and_follows_a_failover() {
    let mut c = cluster();
    let p = c.wait_primary(&[0, 1, 2]);
    let browser = Browser::start();
    // Watch from a replica, so the page outlives the kill.
    let w = (p + 1) % 3;
    browser.open(&c.url(w));
    let before = browser.wait("three members and the primary", |v| {
        list(v, "members").len() == 3
            && v["primary"] == name(p).as_str()
            && member(v, &name(p)).is_some_and(|m| m["role"] == "primary")
    });
    for i in 0..3 {
        assert!(member(&before, &name(i)).is_some(), "{before:#}");
    }
    assert_eq!(before["vip"], "not configured");
    assert_eq!(before["quorum"], "yes");
    wait_for_rates(&browser, c.nodes[w].frontend("web"));

    c.nodes[p].proc.kill();
    let q = c.wait_primary(&[w, 3 - p - w]);
    // The open page follows without a reload: new primary, old one lost.
    browser.wait("the new primary on the open page", |v| {
        v["primary"] == name(q).as_str()
            && member(v, &name(p)).is_some_and(|m| {
                m["role"] == "replica" && m["text"].as_str().is_some_and(|t| t.contains("lost"))
            })
    });

    // The new primary's own dashboard has the promotion in its timeline.
    browser.open(&c.url(q));
    let token = c.nodes[q].get_json("/cluster")["fencing_token"].clone();
    let after = browser.wait("the promotion in the timeline", |v| {
        v["primary"] == name(q).as_str()
            && v["live"] == "live"
            && list(v, "events").iter().any(|e| {
                e["kind"] == "promoted"
                    && e["subject"] == name(q).as_str()
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.ends_with(&format!("fencing token {token}")))
            })
    });
    assert_eq!(after["token"], token.to_string(), "{after:#}");
    // Newest first: the promotion comes before the node's start.
    let kinds: Vec<&str> = list(&after, "events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k);
    assert!(pos("promoted") < pos("started"), "{kinds:?}");

    shows_markup_as_text(&c, &browser, q);
    wait_for_rates(&browser, c.nodes[q].frontend("web"));

    browser.screenshot(&artefact("dashboard.png"));
    browser.resize(390, 844);
    browser.wait("the phone layout", |v| !list(v, "members").is_empty());
    browser.screenshot(&artefact("dashboard-phone.png"));
}

/// Request rates come from /metrics samples 2 s apart: send traffic until `a` shows one
/// (and the backup `spare`, on a closed port, shows down).
fn wait_for_rates(browser: &Browser, web: SocketAddr) {
    browser.wait("a request rate for app/a and spare down", |v| {
        let _ = http::get(web, "/");
        let servers = list(v, "servers");
        let rate = |n: &str| {
            servers
                .iter()
                .find(|s| s["backend"] == "app" && s["name"] == n)
                .and_then(|s| s["rate"].as_str()?.parse::<f64>().ok())
        };
        rate("a").is_some_and(|r| r > 0.0)
            && servers
                .iter()
                .any(|s| s["name"] == "spare" && s["state"] == "down")
    });
}

/// An event whose reason carries markup arrives over the live stream and shows as text.
fn shows_markup_as_text(c: &TestCluster, browser: &Browser, i: usize) {
    let bad = c.configs[i].replacen("[node]\n", &format!("[node]\n\"{MARKUP}\" = 1\n"), 1);
    c.nodes[i].write_config(&bad);
    let r = c.nodes[i].post("/reload", "");
    c.nodes[i].write_config(&c.configs[i]);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = browser.wait("the rejected reload in the timeline", |v| {
        list(v, "events").iter().any(|e| {
            e["kind"] == "config_rejected"
                && e["reason"].as_str().is_some_and(|r| r.contains(MARKUP))
        })
    });
    assert_eq!(v["injected"], 0, "markup from an event ran: {v:#}");
}

/// Values reach the page only as text: the page never parses data as markup.
#[test]
fn dashboard_source_never_builds_markup_from_strings() {
    let src = include_str!("../src/dashboard.html");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "createContextualFragment",
    ] {
        assert!(!src.contains(sink), "dashboard.html uses {sink}");
    }
    // Self-contained: nothing loaded from elsewhere.
    for external in ["http://", "https://", "//cdn", "@import", "src=\""] {
        let uses = src
            .lines()
            .filter(|l| l.contains(external) && !l.contains("'http://' + m.api"))
            .collect::<Vec<_>>();
        assert!(
            uses.is_empty(),
            "dashboard.html refers to {external}: {uses:?}"
        );
    }
}

/// The drill's HTML report opens without network access and draws its timeline.
#[test]
fn the_drill_report_renders_its_timeline() {
    use tandem_drill::report::{RunReport, Timeline};
    // A run with a 500 ms outage after a fault at 1 s: successes before and after, failures in
    // between, and a new primary.
    let n = 300;
    let mut timeline = Timeline {
        bucket_ms: 10,
        ..Default::default()
    };
    for i in 0..n {
        let outage = (100..150).contains(&i);
        timeline.ok.push(if outage { 0 } else { 4 });
        timeline.failed.push(if outage { 4 } else { 0 });
        timeline.max_latency_ms.push(if outage { 3.0 } else { 1.0 });
    }
    timeline.primaries = vec![(0.0, "n1".into(), 1), (1500.0, "n2".into(), 2)];
    let run = RunReport {
        scenario: "kill-primary".into(),
        fault: "sigkill".into(),
        faulted_node: Some("n1".into()),
        fault_ms: Some(1000.0),
        requests: 1200,
        ok: 1000,
        failed: 200,
        rto_ms: 500.0,
        timeline,
        // Three acknowledged writes lost just before the fault.
        writes: Some(tandem_drill::writes::WriteReport {
            acked: 1000,
            found: 997,
            lost: 3,
            lost_at_ms: vec![980.0, 990.0, 995.0],
            rpo_ms: Some(20.0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let summary = tandem_drill::Summary::new("kill-primary", vec![run]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("report.html");
    std::fs::write(&file, summary.html()).unwrap_or_else(|e| panic!("{e}"));
    let browser = Browser::start();
    browser.open(&format!("file://{}", file.display()));
    let script = "const svg = document.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};\
                  return { rects: document.querySelectorAll('svg rect').length, failed: document.querySelectorAll('svg rect.failed').length,\
                  lost: document.querySelectorAll('svg line.lost').length,\
                  width: box.width, height: box.height, text: document.body.innerText };";
    let v = browser.call(
        "POST",
        "/execute/sync",
        Some(&json!({ "script": script, "args": [] })),
    );
    assert!(v["rects"].as_u64().unwrap_or(0) > 200, "{v:#}");
    assert_eq!(v["failed"].as_u64(), Some(50), "{v:#}");
    assert_eq!(v["lost"].as_u64(), Some(3), "{v:#}");
    assert!(
        v["width"].as_f64().unwrap_or(0.0) > 300.0 && v["height"].as_f64().unwrap_or(0.0) > 50.0,
        "{v:#}"
    );
    let text = v["text"].as_str().unwrap_or("");
    assert!(
        text.contains("time without service")
            && text.contains("n2 (token 2)")
            && text.contains("3 lost"),
        "{text}"
    );
    browser.screenshot(&artefact("drill-report.png"));
}

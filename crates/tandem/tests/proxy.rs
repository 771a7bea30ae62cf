//! The load balancer end to end: real `tandem run` and real backend processes on loopback.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use tandem_testkit::http::{self as http, Conn};
use tandem_testkit::load::Load;

const T: Duration = Duration::from_secs(15);

fn two_servers(extra: &str) -> (DemoBackend, DemoBackend, Node) {
    let a = DemoBackend::start(bin(), "a");
    let b = DemoBackend::start(bin(), "b");
    let node = start_node(&lb_config(
        &[("a", a.addr, false), ("b", b.addr, false)],
        extra,
    ));
    node.wait_server("app", "a", "up", T);
    node.wait_server("app", "b", "up", T);
    (a, b, node)
}

fn served_by(node: &Node, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = http::get(node.frontend("web"), "/").unwrap_or_else(|e| panic!("GET /: {e}"));
            assert_eq!(r.status, 200, "{}", r.text());
            r.text().trim().to_string()
        })
        .collect()
}

#[test]
fn balances_and_forwards_headers() {
    let (_a, _b, node) = two_servers("");
    let seen: BTreeSet<String> = served_by(&node, 6).into_iter().collect();
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "b".to_string()]));

    // X-Forwarded-For appended, X-Forwarded-Proto set, hop-by-hop headers removed
    // (including those the Connection header names).
    let r = http::request(
        node.frontend("web"),
        "GET",
        "/headers",
        &[
            ("X-Forwarded-For", "10.1.1.1"),
            ("Connection", "x-secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "5"),
        ],
        b"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = r.text();
    assert!(
        text.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(!text.contains("x-secret"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
}

#[test]
fn upstream_connections_are_reused() {
    let a = DemoBackend::start(bin(), "a");
    let node = start_node(&lb_config(&[("a", a.addr, false)], ""));
    node.wait_server("app", "a", "up", T);
    let mut c = Conn::open(node.frontend("web"), T).unwrap_or_else(|e| panic!("{e}"));
    let before = http::get(a.addr, "/connections")
        .map(|r| r.text())
        .unwrap_or_default();
    for path in ["/", "/headers", "/status/204", "/status/404"]
        .iter()
        .cycle()
        .take(100)
    {
        let r = c
            .request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status < 500, "{path}: {}", r.status);
    }
    let after = http::get(a.addr, "/connections")
        .map(|r| r.text())
        .unwrap_or_default();
    let (before, after): (u64, u64) = (
        before.trim().parse().unwrap_or(0),
        after.trim().parse().unwrap_or(u64::MAX),
    );
    // Health checks open one each (2 per check), our two /connections probes one each; the
    // 100 proxied requests should need one or two.
    let checks = node
        .metrics()
        .lines()
        .filter(|l| l.starts_with("tandem_proxy_health_checks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(
        after - before <= checks + 4,
        "{} new upstream connections for 100 requests ({checks} checks)",
        after - before
    );
}

#[test]
fn sigkill_of_a_server_under_load_fails_no_get() {
    let (mut a, _b, node) = two_servers("");
    let load = Load::start(node.frontend("web"), "/", 8, Duration::from_secs(30));
    assert!(
        wait_until(T, || load.progress() > 300),
        "load did not start"
    );
    a.proc.kill();
    let before = load.progress();
    assert!(
        wait_until(T, || load.progress() > before + 1000),
        "load stalled after the kill"
    );
    node.wait_server("app", "a", "down", T);
    let report = load.stop();
    assert_eq!(report.failed(), 0, "failed requests: {report:?}");
    assert!(report.ok > 1000);
    let m = node.metrics();
    assert!(
        m.contains("tandem_proxy_server_up{backend=\"app\",server=\"a\"} 0"),
        "{m}"
    );
}

#[test]
fn hung_server_under_load_fails_no_get() {
    let (a, _b, node) = two_servers("");
    let load = Load::start(node.frontend("web"), "/", 8, Duration::from_secs(30));
    assert!(
        wait_until(T, || load.progress() > 300),
        "load did not start"
    );
    a.proc.stop();
    node.wait_server("app", "a", "down", T);
    let before = load.progress();
    assert!(
        wait_until(T, || load.progress() > before + 500),
        "load stalled while a server hangs"
    );
    a.proc.cont();
    node.wait_server("app", "a", "up", T);
    let report = load.stop();
    assert_eq!(report.failed(), 0, "failed requests: {report:?}");
    // No request waited much longer than one try timeout (1s) plus a retry.
    assert!(report.max_latency < Duration::from_secs(5), "{report:?}");
}

#[test]
fn health_transitions_both_ways_with_events() {
    let (a, _b, node) = two_servers("");
    http::request(a.addr, "POST", "/control/unhealthy", &[], b"").unwrap_or_else(|e| panic!("{e}"));
    node.wait_server("app", "a", "down", T);
    assert!(served_by(&node, 6).iter().all(|s| s == "b"));
    http::request(a.addr, "POST", "/control/healthy", &[], b"").unwrap_or_else(|e| panic!("{e}"));
    node.wait_server("app", "a", "up", T);
    assert!(wait_until(T, || served_by(&node, 4).contains(&"a".to_string())));
    let events = node.get_json("/events");
    let kinds: Vec<String> = events
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|e| e["subject"] == "app/a")
                .filter_map(|e| e["kind"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // up at start, down, up again.
    assert_eq!(
        kinds,
        vec!["server_up", "server_down", "server_up"],
        "{events}"
    );
    let m = node.metrics();
    assert!(
        m.contains(
            "tandem_proxy_health_transitions_total{backend=\"app\",server=\"a\",to=\"down\"} 1"
        ),
        "{m}"
    );
}

#[test]
fn backup_takes_over_and_hands_back() {
    let a = DemoBackend::start(bin(), "a");
    let spare = DemoBackend::start(bin(), "spare");
    let node = start_node(&lb_config(
        &[("a", a.addr, false), ("spare", spare.addr, true)],
        "",
    ));
    node.wait_server("app", "a", "up", T);
    node.wait_server("app", "spare", "up", T);
    assert!(served_by(&node, 4).iter().all(|s| s == "a"));
    http::request(a.addr, "POST", "/control/unhealthy", &[], b"").unwrap_or_else(|e| panic!("{e}"));
    node.wait_server("app", "a", "down", T);
    assert!(served_by(&node, 4).iter().all(|s| s == "spare"));
    http::request(a.addr, "POST", "/control/healthy", &[], b"").unwrap_or_else(|e| panic!("{e}"));
    node.wait_server("app", "a", "up", T);
    assert!(served_by(&node, 4).iter().all(|s| s == "a"));
    let kinds: Vec<String> = node
        .get_json("/events")
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|e| e["kind"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        kinds.contains(&"backup_active".to_string())
            && kinds.contains(&"backup_inactive".to_string()),
        "{kinds:?}"
    );
}

#[test]
fn nothing_up_answers_503_with_a_reason() {
    let a = DemoBackend::start(bin(), "a");
    let node = start_node(&lb_config(&[("a", a.addr, false)], ""));
    node.wait_server("app", "a", "up", T);
    http::request(a.addr, "POST", "/control/unhealthy", &[], b"").unwrap_or_else(|e| panic!("{e}"));
    node.wait_server("app", "a", "down", T);
    let r = http::get(node.frontend("web"), "/").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no server is available"), "{}", r.text());
    assert!(node
        .metrics()
        .contains("tandem_proxy_errors_total{backend=\"app\",kind=\"no_server\"} 1"));
}

#[test]
fn drain_lets_in_flight_finish_and_takes_no_new_requests() {
    let (_a, _b, node) = two_servers("balance = \"least-conn\"");
    // A slow request in flight on one server...
    let web = node.frontend("web");
    let slow = std::thread::spawn(move || http::get(web, "/slow?ms=700"));
    assert!(wait_until(T, || {
        let st = node.get_json("/status");
        st["proxy"]["backends"][0]["servers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["inflight"] == 1))
    }));
    let st = node.get_json("/status");
    let busy = st["proxy"]["backends"][0]["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["inflight"] == 1))
        .and_then(|s| s["name"].as_str())
        .map(String::from)
        .unwrap_or_default();
    // ...is drained: it finishes, and new requests go elsewhere.
    let r = node.post(
        &format!("/servers/app/{busy}/state"),
        r#"{"state":"drain"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(served_by(&node, 6).iter().all(|s| *s != busy));
    let done = slow
        .join()
        .unwrap_or_else(|_| panic!("slow request thread"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status, 200);
    assert_eq!(done.text().trim(), busy);
    // maint keeps it out; ready brings it back.
    assert_eq!(
        node.post(
            &format!("/servers/app/{busy}/state"),
            r#"{"state":"maint"}"#
        )
        .status,
        200
    );
    assert!(served_by(&node, 4).iter().all(|s| *s != busy));
    assert_eq!(
        node.post(
            &format!("/servers/app/{busy}/state"),
            r#"{"state":"ready"}"#
        )
        .status,
        200
    );
    assert!(wait_until(T, || served_by(&node, 4).contains(&busy)));
    // Bad calls change nothing.
    assert_eq!(
        node.post("/servers/app/nope/state", r#"{"state":"drain"}"#)
            .status,
        404
    );
    assert_eq!(
        node.post(
            &format!("/servers/app/{busy}/state"),
            r#"{"state":"sleep"}"#
        )
        .status,
        400
    );
    assert_eq!(
        node.post(&format!("/servers/app/{busy}/state"), "not json")
            .status,
        400
    );
}

#[test]
fn reload_under_keep_alive_load_drops_nothing() {
    let a = DemoBackend::start(bin(), "a");
    let b = DemoBackend::start(bin(), "b");
    let c = DemoBackend::start(bin(), "c");
    let base = [("a", a.addr, false), ("b", b.addr, false)];
    let node = start_node(&lb_config(&base, ""));
    node.wait_server("app", "a", "up", T);
    node.wait_server("app", "b", "up", T);
    let load = Load::start(node.frontend("web"), "/", 8, Duration::from_secs(40));
    let web = node.frontend("web");
    let slow = std::thread::spawn(move || http::get(web, "/slow?ms=800"));
    assert!(wait_until(T, || load.progress() > 200));
    let configs = [
        lb_config(
            &[
                ("a", a.addr, false),
                ("b", b.addr, false),
                ("c", c.addr, false),
            ],
            "",
        ),
        lb_config(
            &[("a", a.addr, false), ("c", c.addr, false)],
            "balance = \"p2c\"",
        ),
        lb_config(&base, ""),
    ];
    for cfg in &configs {
        node.write_config(cfg);
        node.proc.signal(libc_sighup());
        let before = load.progress();
        assert!(wait_until(T, || load.progress() > before + 300));
    }
    let r = node.post("/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(
        report.reconnects, 0,
        "a reload closed client connections: {report:?}"
    );
    let done = slow
        .join()
        .unwrap_or_else(|_| panic!("thread"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status, 200);
    let m = node.metrics();
    assert!(
        m.contains("tandem_proxy_reloads_total{result=\"ok\"} 4"),
        "{m}"
    );
}

fn libc_sighup() -> i32 {
    1
}

#[test]
fn invalid_reload_is_refused_and_the_old_config_serves() {
    let (_a, _b, node) = two_servers("");
    node.write_config("[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nbackend = \"missing\"\n");
    let r = node.post("/reload", "");
    assert_eq!(r.status, 400);
    let text = r.text();
    assert!(
        text.contains("tandem.toml:6") && text.contains("frontend[0].backend"),
        "{text}"
    );
    assert_eq!(served_by(&node, 2).len(), 2);
    // SIGHUP with a bad file: logged, still serving.
    node.proc.signal(1);
    assert!(wait_until(T, || node
        .proc
        .output()
        .iter()
        .filter(|l| l.contains("reload rejected"))
        .count()
        >= 2));
    assert_eq!(served_by(&node, 2).len(), 2);
    let m = node.metrics();
    assert!(
        m.contains("tandem_proxy_reloads_total{result=\"rejected\"} 2"),
        "{m}"
    );
}

#[test]
fn unsafe_requests_are_not_replayed() {
    let (_a, _b, node) = two_servers("");
    // Both servers too slow for the 1s try timeout: a GET is tried on each, then 504.
    let r = http::get(node.frontend("web"), "/slow?ms=3000").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 504);
    assert!(node
        .metrics()
        .contains("tandem_proxy_retries_total{backend=\"app\"} 2"));
    // A POST is sent once only.
    let r = http::request(node.frontend("web"), "POST", "/slow?ms=3000", &[], b"x=1")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 504);
    assert!(node
        .metrics()
        .contains("tandem_proxy_retries_total{backend=\"app\"} 2"));
}

#[test]
fn bodies_stream_both_ways() {
    let (_a, _b, node) = two_servers("");
    // Chunked upload echoed back.
    let mut c = Conn::open(node.frontend("web"), T).unwrap_or_else(|e| panic!("{e}"));
    let s = c.stream();
    let req = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let r = http::read_response(&mut reader, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.text(), "hello world");
    // An endless event stream: the first event arrives long before the stream could end.
    let mut s = TcpStream::connect(node.frontend("web")).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(T))
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GET /stream?n=100000&ms=50 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("no event streamed: {e}"));
        assert!(n > 0, "stream closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("text/event-stream"));
}

#[test]
fn bad_input_gets_clear_errors_and_harms_no_one() {
    let (_a, _b, node) = two_servers("");
    let web = node.frontend("web");
    let mut good = Conn::open(web, T).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        good.request("GET", "/", &[], b"")
            .map(|r| r.status)
            .unwrap_or(0),
        200
    );
    // Malformed request: 400 and that connection closed.
    let mut s = TcpStream::connect(web).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(T))
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GARBAGE\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    // Oversized headers: 431.
    let big = "x".repeat(20_000);
    let r =
        http::request(web, "GET", "/", &[("X-Big", &big)], b"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 431);
    // The other client's keep-alive connection is fine.
    assert_eq!(
        good.request("GET", "/", &[], b"")
            .map(|r| r.status)
            .unwrap_or(0),
        200
    );
    // Half-sent headers then hang up: nothing breaks.
    let mut s = TcpStream::connect(web).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: ");
    let _ = s.shutdown(Shutdown::Both);
    assert_eq!(
        good.request("GET", "/", &[], b"")
            .map(|r| r.status)
            .unwrap_or(0),
        200
    );
}

#[test]
fn garbage_from_a_server_is_a_502() {
    // A "server" that answers anything with junk.
    let junk = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = junk.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for s in junk.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"this is not http\r\n\r\n");
        }
    });
    let cfg =
        lb_config(&[("junk", addr, false)], "").replace("check = \"http\"", "check = \"tcp\"");
    let node = start_node(&cfg);
    node.wait_server("app", "junk", "up", T);
    let r = http::request(node.frontend("web"), "POST", "/", &[], b"a")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 502);
}

#[test]
fn tcp_mode_relays_with_half_close_and_skips_a_dead_server() {
    let a = DemoBackend::start(bin(), "a");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[frontend]]
name = "db"
listen = "127.0.0.1:0"
mode = "tcp"
backend = "pool"
[[backend]]
name = "pool"
retries = 2
[backend.health]
check = "none"
[[backend.server]]
name = "dead"
address = "{dead}"
[[backend.server]]
name = "a"
address = "{}"
"#,
        a.addr
    );
    let node = Node::start(bin(), &cfg, &["db"], None);
    for _ in 0..4 {
        let mut s = TcpStream::connect(node.frontend("db")).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(T))
            .unwrap_or_else(|e| panic!("{e}"));
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        // Half-close: we are done sending, the answer still comes back.
        s.shutdown(Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        assert!(out.ends_with("a\n"), "{out}");
    }
}

#[test]
fn h2c_clients_are_served() {
    let (_a, _b, node) = two_servers("");
    let web = node.frontend("web");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let status = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(web)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
        tokio::spawn(conn);
        let req = ::http::Request::builder()
            .uri(format!("http://{web}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        send.send_request(req)
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    assert_eq!(status, 200);
}

#[test]
fn slow_and_idle_clients_are_cut_at_client_timeout_without_starving_others() {
    let a = DemoBackend::start(bin(), "a");
    let cfg = lb_config(&[("a", a.addr, false)], "").replace(
        "access_log = false",
        "access_log = false\nclient_timeout = \"1s\"",
    );
    let node = start_node(&cfg);
    node.wait_server("app", "a", "up", T);
    let web = node.frontend("web");
    // A client trickling its headers, one line every 100 ms: cut at about the 1 s timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(web).unwrap_or_else(|e| panic!("{e}"));
    let mut writer = slow.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let trickle = std::thread::spawn(move || {
        if writer.write_all(b"GET / HTTP/1.1\r\n").is_err() {
            return;
        }
        for _ in 0..100 {
            if writer.write_all(b"X-Slow: 1\r\n").is_err() {
                return; // cut by the proxy
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let slow_cut = std::thread::spawn(move || {
        let closed = closed_by_peer(&mut slow, CUT_WAIT);
        (closed, started.elapsed())
    });
    // Others are served meanwhile.
    for _ in 0..20 {
        assert_eq!(http::get(web, "/").map(|r| r.status).unwrap_or(0), 200);
    }
    let (closed, after) = slow_cut
        .join()
        .unwrap_or_else(|_| panic!("reader panicked"));
    let _ = trickle.join();
    closed.unwrap_or_else(|e| panic!("a client trickling headers was not cut: {e}"));
    // Cut by the timeout, not by a header limit or anything sooner.
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(5)).contains(&after),
        "a client trickling headers was cut after {after:?}, not at the 1 s client timeout"
    );
    // An idle keep-alive connection is closed after the timeout.
    let mut idle = Conn::open(web, T).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        idle.request("GET", "/", &[], b"")
            .map(|r| r.status)
            .unwrap_or(0),
        200
    );
    let served = Instant::now();
    closed_by_peer(idle.stream(), CUT_WAIT)
        .unwrap_or_else(|e| panic!("idle connection should be closed by the proxy: {e}"));
    let after = served.elapsed();
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(5)).contains(&after),
        "an idle connection was closed after {after:?}, not at the 1 s client timeout"
    );
}

/// Several times the 1 s client timeout those tests configure: a proxy that never closes is
/// told apart from one that closes late.
const CUT_WAIT: Duration = Duration::from_secs(10);

/// Wait up to `wait` for the peer to close `s`: `Ok` on end of stream or a reset, with the
/// bytes it sent first; `Err` when the wait runs out (or the socket fails otherwise).
fn closed_by_peer(s: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("still open after {wait:?} (got {got:?})"));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("still open after {wait:?} (got {got:?})"));
            }
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

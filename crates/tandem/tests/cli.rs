//! The command line: version, check, run's refusal of bad configs, ctl, tokens, graceful stop.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tandem_testkit::http;

const T: Duration = Duration::from_secs(15);

fn tandem(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running tandem: {e}"))
}

#[test]
fn version_prints_the_version() {
    let out = tandem(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tandem {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_examples_and_refuses_bad_configs_with_exit_2() {
    let examples = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    let mut checked = 0;
    // Node configs at the top and in subfolders; drill scenarios are checked by the drill tests.
    let mut dirs = vec![examples.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() && !path.ends_with("drills") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let out = tandem(&["check", "--config", &path.display().to_string()]);
                assert!(
                    out.status.success(),
                    "{}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} example configs");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[admin]\nlisten = \"127.0.0.1:0\"\nlistne = 1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = tandem(&["check", "--config", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3") && err.contains("listne"),
        "{err}"
    );

    let out = tandem(&["check", "--config", "/nonexistent/tandem.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn check_and_run_refuse_an_etcd_lease_shorter_than_an_etcd_election() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let admin = tandem_testkit::free_port();
    let base = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[node]\nname = \"n1\"\ndata_dir = \"{}\"\n\n\
         [cluster]\nname = \"lab\"\nlisten = \"127.0.0.1:7101\"\n\
         peers = {{ n1 = \"127.0.0.1:7101\", n2 = \"127.0.0.1:7102\", n3 = \"127.0.0.1:7103\" }}\n\
         secret_file = \"{}\"\ndcs = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n",
        dir.path().join("data").display(),
        secret.display()
    );
    let cfg = dir.path().join("etcd.toml");
    // The default lease_ttl (2s) against etcd's default election timeout (1s).
    std::fs::write(&cfg, &base).unwrap_or_else(|e| panic!("{e}"));
    for cmd in ["check", "run"] {
        let out = tandem(&[cmd, "--config", &cfg.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "tandem {cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cluster.lease_ttl")
                && err.contains("the smallest safe lease_ttl is 5.6s")
                && err.contains("etcd_election_timeout"),
            "tandem {cmd}: {err}"
        );
    }
    // Nothing was bound by the refused run.
    assert!(std::net::TcpListener::bind(("127.0.0.1", admin)).is_ok());
    // The smallest safe ttl it names is accepted.
    std::fs::write(&cfg, format!("{base}lease_ttl = \"5.6s\"\n")).unwrap_or_else(|e| panic!("{e}"));
    let out = tandem(&["check", "--config", &cfg.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("cluster.lease_ttl"), "{err}");
}

#[test]
fn run_refuses_a_bad_config_before_binding_anything() {
    let port = tandem_testkit::free_port();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = dir.path().join("t.toml");
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nbackend = \"app\"\n\
         [[backend]]\nname = \"app\"\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nweight = 0\n"
    );
    std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("{e}"));
    let out = tandem(&["run", "--config", &cfg.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t.toml:12: backend[0].server[0].weight"),
        "{err}"
    );
}

#[test]
fn ctl_drives_a_node_and_needs_the_token() {
    let a = DemoBackend::start(bin(), "a");
    // A fixed admin port, so that `ctl --config` can find it from the file.
    let port = tandem_testkit::free_port();
    let cfg = lb_config(&[("a", a.addr, false)], "").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let node = start_node(&cfg);
    node.wait_server("app", "a", "up", T);
    let admin = node.admin().to_string();
    let token = node.dir.path().join("token").display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", &admin, "--token-file", &token];
        all.extend_from_slice(args);
        tandem(&all)
    };
    let out = ctl(&["status", "--json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"state\": \"up\""));
    assert!(ctl(&["server", "app/a", "maint"]).status.success());
    assert_eq!(
        node.get_json("/status")["proxy"]["backends"][0]["servers"][0]["admin"],
        "maint"
    );
    assert!(ctl(&["reload"]).status.success());
    assert!(!ctl(&["server", "app/zzz", "ready"]).status.success());
    assert!(!ctl(&["server", "app-a", "ready"]).status.success());
    // --config finds the admin address and the token by itself.
    let out = tandem(&[
        "ctl",
        "--config",
        &node.config.display().to_string(),
        "server",
        "app/a",
        "ready",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the token: refused, nothing changed.
    let out = tandem(&["ctl", "--admin", &admin, "server", "app/a", "drain"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert_eq!(
        node.get_json("/status")["proxy"]["backends"][0]["servers"][0]["admin"],
        "ready"
    );
    let r = http::request(
        node.admin(),
        "POST",
        "/reload",
        &[("Authorization", "Bearer wrong-token-0123456789")],
        b"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    // Read-only endpoints need no token; unknown ones and bad filters get clear errors.
    assert_eq!(
        http::get(node.admin(), "/health")
            .map(|r| r.status)
            .unwrap_or(0),
        200
    );
    assert_eq!(
        http::get(node.admin(), "/nope")
            .map(|r| r.status)
            .unwrap_or(0),
        404
    );
    assert_eq!(
        http::get(node.admin(), "/events?since=abc")
            .map(|r| r.status)
            .unwrap_or(0),
        400
    );
    assert_eq!(
        http::get(node.admin(), "/events?colour=red")
            .map(|r| r.status)
            .unwrap_or(0),
        400
    );
}

#[test]
fn mutating_calls_are_refused_on_a_public_admin_address_without_a_token() {
    let cfg = "[admin]\nlisten = \"0.0.0.0:0\"\n";
    let node = Node::start(bin(), cfg, &[], None);
    let port = node.admin().port();
    let local = format!("127.0.0.1:{port}")
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let r = http::request(local, "POST", "/reload", &[], b"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        http::get(local, "/health").map(|r| r.status).unwrap_or(0),
        200
    );
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits() {
    let a = DemoBackend::start(bin(), "a");
    let mut node = start_node(&lb_config(&[("a", a.addr, false)], ""));
    node.wait_server("app", "a", "up", T);
    let web = node.frontend("web");
    let slow = std::thread::spawn(move || http::get(web, "/slow?ms=700"));
    assert!(wait_until(T, || node.get_json("/status")["proxy"]
        ["backends"][0]["servers"][0]["inflight"]
        == 1));
    node.proc.signal(15);
    let done = slow
        .join()
        .unwrap_or_else(|_| panic!("thread"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status, 200);
    let status = node
        .proc
        .wait_exit(T)
        .unwrap_or_else(|| panic!("tandem did not exit after SIGTERM"));
    assert!(status.success());
    // New connections are refused once it stopped.
    assert!(std::net::TcpStream::connect(web).is_err());
}

#[test]
fn nginx_backends_killed_under_load_fail_no_get() {
    let a = tandem_testkit::nginx::Nginx::start("a");
    let b = tandem_testkit::nginx::Nginx::start("b");
    let node = start_node(&lb_config(
        &[("a", a.addr, false), ("b", b.addr, false)],
        "",
    ));
    node.wait_server("app", "a", "up", T);
    node.wait_server("app", "b", "up", T);
    let mut a = a;
    let load =
        tandem_testkit::load::Load::start(node.frontend("web"), "/", 8, Duration::from_secs(30));
    assert!(wait_until(T, || load.progress() > 300));
    a.proc.kill();
    node.wait_server("app", "a", "down", T);
    let before = load.progress();
    assert!(wait_until(T, || load.progress() > before + 500));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}");
    assert!(report.served_by.contains_key("b"));
}

#[test]
fn events_are_filtered_and_streamed_live() {
    use std::io::{BufRead, BufReader, Write};
    let a = DemoBackend::start(bin(), "a");
    let node = start_node(&lb_config(&[("a", a.addr, false)], ""));
    node.wait_server("app", "a", "up", T);
    let mut s = std::net::TcpStream::connect(node.admin()).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(T))
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GET /events/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // Headers first, then the stream.
    while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
        line.clear();
    }
    assert_eq!(
        node.post("/servers/app/a/state", r#"{"state":"drain"}"#)
            .status,
        200
    );
    let mut seen = String::new();
    while !seen.contains("server_drain") {
        line.clear();
        let n = r
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("no event streamed: {e}"));
        assert!(n > 0, "stream closed");
        seen.push_str(&line);
    }
    let drained = node.get_json("/events?kind=server_drain");
    assert_eq!(drained.as_array().map(|a| a.len()), Some(1), "{drained}");
    let both = node.get_json("/events?kind=server_up,server_drain&since=0");
    assert_eq!(both.as_array().map(|a| a.len()), Some(2), "{both}");
    assert_eq!(
        http::get(node.admin(), "/").map(|r| r.status).unwrap_or(0),
        200
    );
}

#[test]
fn faults_through_the_admin_api_are_opt_in_and_undone() {
    let a = DemoBackend::start(bin(), "a");
    let closed = start_node(&lb_config(&[("a", a.addr, false)], ""));
    let r = closed.post("/faults", r#"{"kind":"sigstop","duration":"1s"}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    let open = start_node(&lb_config(&[("a", a.addr, false)], "").replace(
        "token_file = \"{dir}/token\"",
        "token_file = \"{dir}/token\"\nallow_faults = true",
    ));
    let admin = open.admin();
    let r = http::request(
        admin,
        "POST",
        "/faults",
        &[("content-type", "application/json")],
        br#"{"kind":"sigstop","duration":"1s"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401, "no token");
    assert_eq!(open.post("/faults", r#"{"kind":"meteor"}"#).status, 400);
    assert_eq!(
        open.post("/faults", r#"{"kind":"sigstop"}"#).status,
        400,
        "no duration"
    );
    assert_eq!(
        open.post(
            "/faults",
            r#"{"kind":"link-down","duration":"1s","interface":"eth0; reboot"}"#
        )
        .status,
        400
    );
    // A real stop: the node stops answering, then answers again by itself.
    assert_eq!(
        open.post("/faults", r#"{"kind":"sigstop","duration":"1s"}"#)
            .status,
        202
    );
    assert!(wait_until(T, || http::request_timeout(
        admin,
        "GET",
        "/health",
        Duration::from_millis(200)
    )
    .is_err()));
    assert!(wait_until(T, || http::request_timeout(
        admin,
        "GET",
        "/health",
        Duration::from_millis(200)
    )
    .is_ok()));
    let ev = open.get_json("/events?kind=fault_injected");
    assert_eq!(ev.as_array().map(|e| e.len()), Some(1), "{ev}");
}

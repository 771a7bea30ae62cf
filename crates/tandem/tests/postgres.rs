//! PostgreSQL high availability end to end: three nodes on loopback, each with its own
//! PostgreSQL 15 (Debian's postgresql-15), under two writers that insert one sequence number per
//! transaction and record every acknowledged one: one writes through whichever node `/primary`
//! names, the other through libpq-style multi-host `target_session_attrs=read-write` without
//! asking tandem. After each fault: no acknowledged number is missing on the new primary, no
//! two PostgreSQL servers were writable at any sample, and the old primary rejoins as a replica.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_safe, bin, TestCluster};
use tandem_testkit::{http, wait_until};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::NoTls;

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const LONG: Duration = Duration::from_secs(60);

struct PgLab {
    c: TestCluster,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn pg_lab(sync: &str) -> PgLab {
    let lab = pg_cluster(sync, "");
    let p = lab.wait_primary(&[0, 1, 2]);
    lab.wait_replicas(p);
    if sync != "off" {
        // Ready for a failover once a standby has caught up and joined the synchronous set.
        let ok = wait_until(LONG, || {
            (0..3).filter(|&i| lab.code(i, "/sync") == 200).count() == 1
        });
        assert!(ok, "no synchronous standby: {}", lab.dump());
    }
    lab.sql(p, "CREATE TABLE IF NOT EXISTS w (seq bigint PRIMARY KEY)");
    lab
}

/// Three nodes; `params` are added to `parameters`.
fn pg_cluster(sync: &str, params: &str) -> PgLab {
    let (c, ports, dir) = common::postgres_cluster(BIN_DIR, sync, params);
    PgLab {
        c,
        ports,
        _dir: dir,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn connect(port: u16) -> Option<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(1));
    let (client, conn) = tokio::time::timeout(Duration::from_secs(2), cfg.connect(NoTls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

impl PgLab {
    fn is_primary(&self, i: usize) -> bool {
        self.c.is_primary(i)
    }

    fn wait_primary(&self, among: &[usize]) -> usize {
        self.c.wait_primary_within(among, LONG)
    }

    fn status(&self, i: usize) -> serde_json::Value {
        http::request_timeout(
            self.c.nodes[i].admin(),
            "GET",
            "/status",
            Duration::from_secs(1),
        )
        .ok()
        .and_then(|r| serde_json::from_slice(&r.body).ok())
        .unwrap_or_default()
    }

    fn code(&self, i: usize, path: &str) -> u16 {
        http::request_timeout(self.c.nodes[i].admin(), "GET", path, Duration::from_secs(1))
            .map(|r| r.status)
            .unwrap_or(0)
    }

    fn dump(&self) -> String {
        let mut out = (0..3)
            .map(|i| {
                format!(
                    "n{}: /replica {} /primary {} {}",
                    i + 1,
                    self.code(i, "/replica"),
                    self.code(i, "/primary"),
                    self.status(i)["postgres"]
                )
            })
            .collect::<Vec<_>>();
        // Every node's events on one time line: what happened, in order.
        let mut events = Vec::new();
        for i in 0..3 {
            let got = http::request_timeout(
                self.c.nodes[i].admin(),
                "GET",
                "/events",
                Duration::from_secs(1),
            )
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok());
            for e in got
                .as_ref()
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let at = e["at_ms"].as_u64().unwrap_or(0);
                events.push((
                    at,
                    format!(
                        "{}.{:03} n{} {} {}: {}",
                        at / 1000 % 1000,
                        at % 1000,
                        i + 1,
                        e["kind"].as_str().unwrap_or("?"),
                        e["subject"].as_str().unwrap_or(""),
                        e["reason"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        events.sort();
        out.push("events:".into());
        out.extend(events.into_iter().map(|(_, l)| l));
        out.join("\n")
    }

    /// Every node but `p` streams as a replica.
    fn wait_replicas(&self, p: usize) {
        let ok = wait_until(LONG, || {
            (0..3)
                .filter(|&i| i != p)
                .all(|i| self.code(i, "/replica") == 200)
        });
        assert!(ok, "replicas did not stream: {}", self.dump());
    }

    fn sql(&self, i: usize, q: &str) {
        let port = self.ports[i];
        rt().block_on(async {
            let c = connect(port)
                .await
                .unwrap_or_else(|| panic!("cannot connect to n{}", i + 1));
            c.batch_execute(q)
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
        });
    }

    fn rows(&self, i: usize) -> std::collections::BTreeSet<i64> {
        let port = self.ports[i];
        rt().block_on(async {
            let c = connect(port)
                .await
                .unwrap_or_else(|| panic!("cannot connect to n{}", i + 1));
            c.query("SELECT seq FROM w", &[])
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .map(|r| {
                    r.try_get::<_, i64>(0)
                        .unwrap_or_else(|e| panic!("unexpected row: {e}"))
                })
                .collect()
        })
    }

    fn postmaster(&self, i: usize) -> i32 {
        self.status(i)["postgres"]["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("n{} has no postmaster: {}", i + 1, self.dump()))
            as i32
    }
}

/// A writer: inserts `base+1, base+2, ...`, one per transaction, and records what was
/// acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Copy)]
enum Route {
    /// Ask each node's `/primary` and write to the PostgreSQL of the one that answers 200.
    Api,
    /// libpq multi-host, `target_session_attrs=read-write`.
    MultiHost,
}

impl Writer {
    fn start(route: Route, admins: Vec<SocketAddr>, ports: Vec<u16>, base: i64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, a, f) = (stop.clone(), acked.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            rt().block_on(async move {
                let started = Instant::now();
                let mut seq = base;
                let mut client: Option<tokio_postgres::Client> = None;
                // Bounded in count and time whatever happens.
                while !s.load(Ordering::Relaxed)
                    && seq < base + 200_000
                    && started.elapsed() < Duration::from_secs(180)
                {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = match route {
                            Route::Api => {
                                let p = admins.iter().position(|a| {
                                    http::request_timeout(
                                        *a,
                                        "GET",
                                        "/primary",
                                        Duration::from_millis(300),
                                    )
                                    .is_ok_and(|r| r.status == 200)
                                });
                                match p {
                                    Some(i) => connect(ports[i]).await,
                                    None => None,
                                }
                            }
                            Route::MultiHost => {
                                let mut cfg = tokio_postgres::Config::new();
                                for p in &ports {
                                    cfg.host("127.0.0.1").port(*p);
                                }
                                cfg.user("postgres")
                                    .dbname("postgres")
                                    .connect_timeout(Duration::from_millis(500))
                                    .target_session_attrs(TargetSessionAttrs::ReadWrite);
                                match tokio::time::timeout(
                                    Duration::from_secs(3),
                                    cfg.connect(NoTls),
                                )
                                .await
                                {
                                    Ok(Ok((c, conn))) => {
                                        tokio::spawn(async move {
                                            let _ = conn.await;
                                        });
                                        Some(c)
                                    }
                                    _ => None,
                                }
                            }
                        };
                        if client.is_none() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                    let Some(c) = &client else { continue };
                    seq += 1;
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        c.execute("INSERT INTO w (seq) VALUES ($1)", &[&seq]),
                    )
                    .await;
                    match r {
                        Ok(Ok(_)) => a.lock().unwrap_or_else(|e| e.into_inner()).push(seq),
                        _ => {
                            f.fetch_add(1, Ordering::Relaxed);
                            client = None;
                        }
                    }
                }
            });
        });
        Writer {
            stop,
            acked,
            failed,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Wait until `n` more writes are acknowledged.
    fn wait_more(&self, n: usize, what: &str) {
        let start = self.count();
        assert!(
            wait_until(LONG, || self.count() >= start + n),
            "{what}: the writer made no progress ({} acked, {} failed)",
            self.count(),
            self.failed.load(Ordering::Relaxed)
        );
    }

    fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Samples every PostgreSQL's `pg_is_in_recovery()` and records moments with two writable.
struct Writable {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Writable {
    fn start(ports: Vec<u16>) -> Writable {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            rt().block_on(async move {
                let mut clients: Vec<Option<tokio_postgres::Client>> =
                    ports.iter().map(|_| None).collect();
                let (mut samples, mut bad) = (0u64, Vec::new());
                let started = Instant::now();
                while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(240) {
                    let mut writable = Vec::new();
                    for (i, port) in ports.iter().enumerate() {
                        if clients[i].as_ref().is_none_or(|c| c.is_closed()) {
                            clients[i] = connect(*port).await;
                        }
                        let Some(c) = &clients[i] else { continue };
                        let r = tokio::time::timeout(
                            Duration::from_millis(500),
                            c.query_one("SELECT NOT pg_is_in_recovery()", &[]),
                        )
                        .await;
                        match r {
                            Ok(Ok(row)) if row.try_get::<_, bool>(0).unwrap_or(false) => {
                                writable.push(i + 1)
                            }
                            Ok(Ok(_)) => {}
                            _ => clients[i] = None,
                        }
                    }
                    samples += 1;
                    if writable.len() > 1 {
                        bad.push(format!("{:?}: n{writable:?} writable", started.elapsed()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (samples, bad)
            })
        });
        Writable {
            stop,
            thread: Some(thread),
        }
    }

    fn assert_never_two(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, bad) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        assert!(samples > 10, "the writable sampler barely ran");
        assert!(bad.is_empty(), "two writable PostgreSQL servers: {bad:?}");
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn writers(lab: &PgLab) -> (Writer, Writer) {
    let admins: Vec<SocketAddr> = lab.c.nodes.iter().map(|n| n.admin()).collect();
    let api = Writer::start(Route::Api, admins.clone(), lab.ports.clone(), 0);
    let multi = Writer::start(Route::MultiHost, admins, lab.ports.clone(), 1_000_000_000);
    api.wait_more(20, "before the fault");
    multi.wait_more(20, "before the fault");
    (api, multi)
}

/// Both writers keep going on the new primary; then every acknowledged number is there.
fn check_no_lost_writes(lab: &PgLab, api: Writer, multi: Writer) -> usize {
    api.wait_more(20, "after the failover");
    multi.wait_more(20, "after the failover");
    let p = lab.wait_primary(&[0, 1, 2]);
    let (a, m) = (api.finish(), multi.finish());
    let rows = lab.rows(p);
    for (name, acked) in [("API writer", &a), ("multi-host writer", &m)] {
        let missing: Vec<i64> = acked
            .iter()
            .copied()
            .filter(|s| !rows.contains(s))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: {} of {} acknowledged writes missing on the new primary n{}: {:?}",
            missing.len(),
            acked.len(),
            p + 1,
            &missing[..missing.len().min(20)]
        );
    }
    p
}

#[test]
fn postgres_bootstraps_replicates_and_switches_over_without_losing_writes() {
    let lab = pg_lab("on");
    let p = lab.wait_primary(&[0, 1, 2]);
    // Load balancer endpoints: exactly one synchronous standby, every node readable.
    assert!(wait_until(LONG, || (0..3)
        .filter(|&i| lab.code(i, "/sync") == 200)
        .count()
        == 1));
    for i in 0..3 {
        assert_eq!(lab.code(i, "/read-only"), 200);
        assert_eq!(lab.code(i, "/health"), 200);
    }
    assert_eq!(lab.code(p, "/replica"), 503);
    assert_eq!(lab.code((p + 1) % 3, "/replica?lag=64MB"), 200);
    assert_eq!(lab.code((p + 1) % 3, "/replica?lag=zzz"), 400);
    let watch = lab.c.watch();
    let writable = Writable::start(lab.ports.clone());
    let (api, multi) = writers(&lab);
    // In synchronous mode the target must be the synchronous standby (as with Patroni).
    let target = (0..3)
        .find(|&i| lab.code(i, "/sync") == 200)
        .unwrap_or_else(|| panic!("no synchronous standby: {}", lab.dump()));
    // The API refuses until the target reports itself a candidate (its next heartbeat).
    let body = format!(r#"{{"to":"n{}"}}"#, target + 1);
    let mut last = String::new();
    let ok = wait_until(LONG, || {
        let r = lab.c.nodes[p].post("/switchover", &body);
        last = String::from_utf8_lossy(&r.body).into_owned();
        r.status == 200
    });
    assert!(ok, "switchover refused: {last}");
    // The answer says for how long writes were refused at most.
    let answer: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
    assert!(answer["downtime_ms"].is_u64(), "{last}");
    assert_eq!(answer["lease_holder"], format!("n{}", target + 1));
    assert_eq!(lab.wait_primary(&[0, 1, 2]), target);
    let np = check_no_lost_writes(&lab, api, multi);
    assert_eq!(np, target);
    // A tandem proxy with a TCP frontend whose servers are checked with GET /primary (as in
    // examples/postgres/lb-postgres.toml) sends clients to the new primary.
    let servers: String = (0..3)
        .map(|i| {
            format!(
                "[[backend.server]]\nname = \"n{}\"\naddress = \"127.0.0.1:{}\"\ncheck_address = \"{}\"\n",
                i + 1,
                lab.ports[i],
                lab.c.nodes[i].admin()
            )
        })
        .collect();
    let lb = tandem_testkit::tandem::Node::start(
        bin(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"rw\"\nlisten = \"127.0.0.1:0\"\nmode = \"tcp\"\nbackend = \"primary\"\n[[backend]]\nname = \"primary\"\n[backend.health]\ncheck = \"http\"\npath = \"/primary\"\nexpect = \"200\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\n{servers}"
        ),
        &["rw"],
        None,
    );
    let via = lb.frontend("rw").port();
    let ok = wait_until(LONG, || {
        rt().block_on(async {
            match connect(via).await {
                Some(c) => c
                    .query_one(
                        "SELECT NOT pg_is_in_recovery(), current_setting('port')",
                        &[],
                    )
                    .await
                    .is_ok_and(|r| {
                        r.try_get::<_, bool>(0).unwrap_or(false)
                            && r.try_get::<_, String>(1).ok() == Some(lab.ports[target].to_string())
                    }),
                None => false,
            }
        })
    });
    assert!(ok, "the proxy did not lead to the new primary");
    // The old primary follows the new one.
    lab.wait_replicas(target);
    writable.assert_never_two();
    assert_safe(&watch.stop());
    let m = lab.c.nodes[target].metrics();
    assert!(m.contains("tandem_postgres_switchovers_total 1"), "{m}");
    assert!(m.contains("tandem_postgres_primary 1"), "{m}");
}

/// The primary's postmaster dies (its agent lives): the node gives up the lease; whichever
/// candidate takes it (the same node, restarted as a replica, qualifies when it holds the most
/// WAL) is promoted on a new timeline, and the rest follow it.
#[test]
fn postgres_recovers_when_the_primary_postmaster_is_killed() {
    let lab = pg_lab("on");
    let p = lab.wait_primary(&[0, 1, 2]);
    let writable = Writable::start(lab.ports.clone());
    let (api, multi) = writers(&lab);
    let pid = lab.postmaster(p);
    tandem_testkit::proc::signal_pid(-pid, libc::SIGKILL);
    let failed = wait_until(LONG, || {
        lab.c.nodes[p]
            .get_json("/events?kind=postgres_failed")
            .to_string()
            .contains("exited")
    });
    assert!(failed, "the agent did not notice: {}", lab.dump());
    let _ = check_no_lost_writes(&lab, api, multi);
    let np = lab.wait_primary(&[0, 1, 2]);
    lab.wait_replicas(np);
    // Everybody follows the new primary on its new timeline.
    let ok = wait_until(LONG, || {
        let tl: Vec<serde_json::Value> = (0..3)
            .map(|i| lab.status(i)["postgres"]["timeline"].clone())
            .collect();
        tl.iter().all(|t| *t == tl[np]) && tl[np].as_u64() > Some(1)
    });
    assert!(ok, "not all on the new timeline: {}", lab.dump());
    assert_ne!(lab.postmaster(p), pid);
    writable.assert_never_two();
}

/// The agent dies, PostgreSQL would run on: its parent-death signal shuts it down fast, the
/// standbys get its last WAL, and even asynchronous replication loses nothing.
#[test]
fn postgres_agent_killed_loses_nothing_even_asynchronous() {
    agent_killed("off");
}

#[test]
fn postgres_agent_killed_loses_nothing_synchronous() {
    agent_killed("on");
}

fn agent_killed(sync: &str) {
    let mut lab = pg_lab(sync);
    let p = lab.wait_primary(&[0, 1, 2]);
    let writable = Writable::start(lab.ports.clone());
    let (api, multi) = writers(&lab);
    let pid = lab.postmaster(p);
    lab.c.nodes[p].proc.kill();
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "PostgreSQL outlived its agent"
    );
    let np = lab.wait_primary(&lab.c.others(p));
    let _ = check_no_lost_writes(&lab, api, multi);
    // Back with an agent, the old primary rejoins by itself.
    lab.c.nodes[p].restart(bin());
    lab.wait_replicas(np);
    writable.assert_never_two();
}

/// Asynchronous replication, switchovers back and forth under writes: each target becomes
/// primary (a replica whose stream just ended keeps the timeline it streamed on, so it is not
/// taken for one behind the others), and nothing acknowledged is lost.
#[test]
fn postgres_switchovers_back_and_forth_asynchronous() {
    let lab = pg_lab("off");
    let first = lab.wait_primary(&[0, 1, 2]);
    let other = lab.c.others(first)[0];
    let watch = lab.c.watch();
    let writable = Writable::start(lab.ports.clone());
    let (api, multi) = writers(&lab);
    let mut p = first;
    for target in [other, first, other] {
        lab.wait_replicas(p);
        let body = format!(r#"{{"to":"n{}"}}"#, target + 1);
        let mut last = String::new();
        // Refused (409) until the target reports itself a candidate; the answer can take up
        // to the handler's own wait for the new primary.
        let ok = wait_until(LONG, || {
            match lab.c.nodes[p].try_post("/switchover", &body, Duration::from_secs(45)) {
                Ok(r) => {
                    last = String::from_utf8_lossy(&r.body).into_owned();
                    r.status == 200
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        assert!(ok, "switchover to n{} refused: {last}", target + 1);
        // Accepted means done: the target served as primary before the answer.
        let answer: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        assert!(
            answer["downtime_ms"].is_u64(),
            "the target never served: {last}\n{}",
            lab.dump()
        );
        let now = lab.wait_primary(&[0, 1, 2]);
        assert_eq!(
            now,
            target,
            "n{} is primary, not n{}: {}",
            now + 1,
            target + 1,
            lab.dump()
        );
        p = target;
    }
    let np = check_no_lost_writes(&lab, api, multi);
    assert_eq!(np, other);
    writable.assert_never_two();
    assert_safe(&watch.stop());
}

/// A hung agent (SIGSTOP longer than the lease) cannot renew: the watchdog stops its
/// PostgreSQL before the lease can pass on, so nothing is written to it afterwards.
#[test]
fn postgres_agent_hung_is_fenced_by_the_watchdog() {
    agent_hung("off");
}

#[test]
fn postgres_agent_hung_is_fenced_by_the_watchdog_synchronous() {
    agent_hung("on");
}

fn agent_hung(sync: &str) {
    let lab = pg_lab(sync);
    let p = lab.wait_primary(&[0, 1, 2]);
    let writable = Writable::start(lab.ports.clone());
    let (api, multi) = writers(&lab);
    let pid = lab.postmaster(p);
    lab.c.nodes[p].proc.stop();
    let np = lab.wait_primary(&lab.c.others(p));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the hung node's PostgreSQL still runs after the failover"
    );
    let _ = check_no_lost_writes(&lab, api, multi);
    lab.c.nodes[p].proc.cont();
    lab.wait_replicas(np);
    writable.assert_never_two();
}

/// Agent and postmaster killed together (a host crash): synchronous replication loses nothing.
#[test]
fn postgres_host_crash_in_synchronous_mode_loses_nothing() {
    let mut lab = pg_lab("on");
    let p = lab.wait_primary(&[0, 1, 2]);
    let writable = Writable::start(lab.ports.clone());
    let (api, multi) = writers(&lab);
    let pid = lab.postmaster(p);
    tandem_testkit::proc::signal_pid(-pid, libc::SIGKILL);
    lab.c.nodes[p].proc.kill();
    let np = lab.wait_primary(&lab.c.others(p));
    let _ = check_no_lost_writes(&lab, api, multi);
    lab.c.nodes[p].restart(bin());
    lab.wait_replicas(np);
    writable.assert_never_two();
}

/// A PostgreSQL that cannot start (here: a value it rejects) is reported with PostgreSQL's own
/// words in the API and never makes any node primary.
#[test]
fn postgres_that_cannot_start_is_reported_and_never_promoted() {
    let lab = pg_cluster("on", ", shared_buffers = \"lots\"");
    let mut seen = String::new();
    let reported = wait_until(LONG, || {
        (0..3).any(|i| {
            let e = lab.status(i)["postgres"]["error"].to_string();
            let hit = e.contains("shared_buffers");
            if hit {
                seen = e;
            }
            hit
        })
    });
    assert!(
        reported,
        "no node reported the bad parameter: {}",
        lab.dump()
    );
    // Over a few lease periods nobody serves as primary.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        for i in 0..3 {
            assert!(
                !lab.is_primary(i),
                "n{} became primary: {}",
                i + 1,
                lab.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.contains("invalid value"), "{seen}");
    let events = lab.c.nodes[0].get_json("/events?kind=postgres_error,postgres_promote_failed");
    assert!(events.to_string().contains("shared_buffers"), "{events}");
}

/// A replica whose PostgreSQL cannot start (here: a value it rejects, written into its
/// postgresql.auto.conf while it was stopped) is reported with PostgreSQL's own FATAL line, and
/// after `max_start_failures` failed starts its data directory is set aside (kept as
/// `<data_dir>.failed-<secs>`) and cloned afresh: it streams again.
#[test]
fn postgres_replica_that_cannot_start_is_set_aside_and_cloned() {
    let mut lab = pg_lab("off");
    let p = lab.wait_primary(&[0, 1, 2]);
    let r = lab.c.others(p)[0];
    let pid = lab.postmaster(r);
    lab.c.nodes[r].proc.kill();
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "PostgreSQL outlived its agent"
    );
    let root = lab._dir.path().to_path_buf();
    let name = format!("pg{}", r + 1);
    let auto = root.join(&name).join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_else(|e| panic!("{e}"));
    text.push_str("shared_buffers = 'lots'\n");
    std::fs::write(&auto, text).unwrap_or_else(|e| panic!("{e}"));
    lab.c.nodes[r].restart(bin());
    let set_aside = wait_until(LONG, || {
        lab.c.nodes[r]
            .get_json("/events?kind=postgres_set_aside")
            .to_string()
            .contains(".failed-")
    });
    assert!(
        set_aside,
        "the data directory was not set aside: {}",
        lab.dump()
    );
    lab.wait_replicas(p);
    // The failed starts were reported with PostgreSQL's FATAL line (not only the log's tail).
    let errors = lab.c.nodes[r]
        .get_json("/events?kind=postgres_error")
        .to_string();
    assert!(
        errors.contains("FATAL:") && errors.contains("contains errors"),
        "{errors}"
    );
    // The old directory is kept beside the new clone, once.
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|d| d.ok())
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.failed-"))
        })
        .map(|d| d.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].join("PG_VERSION").exists());
    let metrics = http::request_timeout(
        lab.c.nodes[r].admin(),
        "GET",
        "/metrics",
        Duration::from_secs(2),
    )
    .map(|m| String::from_utf8_lossy(&m.body).into_owned())
    .unwrap_or_default();
    assert!(
        metrics.contains("tandem_postgres_data_set_aside_total 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("tandem_postgres_start_failures_total 0\n"));
}

//! docs/tutorial.md cannot drift: every ```sh block in it is a step, marked
//! `<!-- step: NAME -->`, and each step runs here as written, the way a reader runs it on a
//! fresh machine: in a network namespace of its own (so its fixed loopback ports are free) with
//! private, empty `/tmp/tandem-tutorial` and `/tmp/tandem-example` (the only paths the tutorial
//! writes; the rest of /tmp stays visible, so a checkout under /tmp works), from the repository
//! root, with this build's `tandem` first on PATH.
//! Whatever it left running (in its namespace, or below its shell) is killed by pid afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tandem_testkit::proc::Proc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (name, script) of every step, in order.
fn steps() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("docs/tutorial.md"))
        .unwrap_or_else(|e| panic!("docs/tutorial.md: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("```sh") {
            // The marker is the closest non-blank line above.
            let marker = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!-- step:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|n| n.trim().to_string())
                .unwrap_or_else(|| {
                    panic!(
                        "docs/tutorial.md line {}: a ```sh block without <!-- step: NAME -->",
                        i + 1
                    )
                });
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("unclosed block at line {}", i + 1));
            out.push((marker, lines[i + 1..end].join("\n")));
            i = end;
        }
        i += 1;
    }
    out
}

/// A network namespace for one step, deleted (with whatever still runs in it) on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tdtut{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        tandem_testkit::require_program("ip", "iproute2");
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let ok = Command::new("ip")
                .args(&args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} failed (needs root)");
        }
        Netns(name)
    }

    /// Kill, by pid, every process still running in the namespace.
    fn kill_all(&self) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            for sig in ["-CONT", "-KILL"] {
                let _ = Command::new("kill")
                    .args([sig, &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Parent pid and start time (clock ticks after boot) of a running process.
fn parent_and_start(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ... STARTTIME ...": COMM may hold spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Every process descending from `root`, with its start time.
fn descendants(root: i32) -> Vec<(i32, u64)> {
    let procs: Vec<(i32, i32, u64)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| parent_and_start(pid).map(|(ppid, st)| (pid, ppid, st)))
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<(i32, u64)> = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(pid, ppid, start) in &procs {
            if ppid == p && !out.iter().any(|&(o, _)| o == pid) {
                out.push((pid, start));
                todo.push(pid);
            }
        }
    }
    out
}

/// A step that did not finish may run processes in network namespaces of its own (the vip
/// step's hosts), out of `Netns::kill_all`'s reach: SIGTERM its shell, which runs the step's
/// EXIT trap (its cleanup), then SIGKILL whatever of its process tree is left.
fn stop_step(p: &mut Proc) {
    let tree = descendants(p.pid());
    p.signal(libc::SIGTERM);
    if p.wait_exit(Duration::from_secs(10)).is_none() {
        p.kill();
    }
    for (pid, start) in tree {
        // Only the same process: its pid may have been reused since.
        if parent_and_start(pid).is_some_and(|(_, s)| s == start) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Run step `name` and return its output; it must exit with status 0 within 90 s.
fn run_step(name: &str) -> String {
    let script = steps()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("docs/tutorial.md has no step {name}"));
    let bin = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let bin_dir = bin.parent().unwrap_or(Path::new("."));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tutorial-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let wrapper = dir.join("step.sh");
    std::fs::write(
        &wrapper,
        format!(
            "set -euo pipefail\n\
             mkdir -p /tmp/tandem-tutorial /tmp/tandem-example\n\
             mount -t tmpfs -o size=1g tmpfs /tmp/tandem-tutorial\n\
             mount -t tmpfs -o size=256m tmpfs /tmp/tandem-example\n\
             trap 'echo \"---- failed at line $LINENO; logs:\"; tail -n 30 /tmp/tandem-tutorial/*.log 2> /dev/null' ERR\n\
             cd {}\nexport PATH={}:$PATH\n{script}\n",
            repo().display(),
            bin_dir.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ns = Netns::new();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.0,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "bash",
    ])
    .arg(&wrapper);
    let mut p = Proc::spawn(&format!("tutorial step {name}"), cmd);
    let status = p.wait_exit(Duration::from_secs(90));
    if status.is_none() {
        stop_step(&mut p);
    }
    ns.kill_all();
    let out = p.output().join("\n");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("---- step {name} ----\n{out}");
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("step {name} exited with {s}:\n{out}"),
        None => panic!("step {name} did not finish in 90 s:\n{out}"),
    }
}

/// Every step of the tutorial has a test below.
#[test]
fn every_step_is_tested() {
    let names: Vec<String> = steps().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "demo",
            "single-server",
            "active-active",
            "n-plus-1",
            "active-passive",
            "rpo",
            "quorum",
            "monitoring",
            "vip",
            "postgres"
        ]
    );
}

#[test]
fn step_demo() {
    let out = run_step("demo");
    assert!(out.contains("1 run(s), PASSED"), "{out}");
}

#[test]
fn step_single_server() {
    let out = run_step("single-server");
    assert!(out.contains("1 run(s), FAILED"), "{out}");
    assert!(out.contains("objective rto: wanted <= 1s"), "{out}");
    assert!(out.contains("drill exit status: 1"), "{out}");
}

#[test]
fn step_active_active() {
    let out = run_step("active-active");
    assert!(out.contains("1 run(s), PASSED"), "{out}");
    assert!(
        out.contains("objective failed_requests: wanted <= 0, got 0: met"),
        "{out}"
    );
    // Round robin over both servers before the kill.
    assert!(
        out.lines().any(|l| l == "a") && out.lines().any(|l| l == "b"),
        "{out}"
    );
}

#[test]
fn step_n_plus_1() {
    let out = run_step("n-plus-1");
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| ["a", "b", "spare"].contains(l))
        .collect();
    // Four answers from a and b, then the spare once both are gone.
    assert!(answers.len() >= 5, "{out}");
    assert!(answers[..4].iter().all(|&a| a != "spare"), "{out}");
    assert_eq!(answers.last(), Some(&"spare"), "{out}");
}

#[test]
fn step_active_passive() {
    let out = run_step("active-passive");
    assert!(out.contains("1 run(s), PASSED"), "{out}");
    assert!(out.contains("objective rpo: wanted 0, got 0"), "{out}");
    assert!(out.contains("two primaries seen: no"), "{out}");
    assert!(out.contains("promote, fencing token 2"), "{out}");
}

#[test]
fn step_rpo() {
    let out = run_step("rpo");
    assert!(out.contains("1 run(s), FAILED"), "{out}");
    assert!(
        out.contains("objective rpo") && out.contains("MISSED"),
        "{out}"
    );
    assert!(out.contains("drill exit status: 1"), "{out}");
}

#[test]
fn step_quorum() {
    let out = run_step("quorum");
    assert!(out.contains(" alone answers /primary with 503"), "{out}");
    assert!(out.contains(" demote, fencing token 1"), "{out}");
    // A primary before n1 was left alone, and one again after.
    let with_primary = out
        .lines()
        .filter(|l| l.starts_with("cluster example") && l.contains(" primary n"))
        .count();
    assert_eq!(with_primary, 2, "{out}");
}

#[test]
fn step_monitoring() {
    let out = run_step("monitoring");
    assert!(out.contains("tandem_cluster_is_primary"), "{out}");
    assert!(out.contains("\"kind\":\"lease_holder_changed\""), "{out}");
    assert!(out.contains("alert:"), "{out}");
    // Prometheus accepts the rules.
    tandem_testkit::require_program("promtool", "prometheus");
    assert!(out.contains("SUCCESS"), "{out}");
    assert!(out.contains("\"kind\""), "{out}");
}

#[test]
fn step_vip() {
    let out = run_step("vip");
    let holders = |l: &str| -> Vec<String> {
        l.split_once(": ")
            .filter(|(h, addrs)| h.starts_with("host") && addrs.contains(" 10.77.0.100/24"))
            .map(|(h, _)| vec![h.to_string()])
            .unwrap_or_default()
    };
    // Two snapshots of the three hosts' addresses: before and after the crash.
    let snapshots: Vec<Vec<String>> = out
        .lines()
        .filter(|l| l.starts_with("host") && l.contains(": "))
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| c.iter().flat_map(|l| holders(l)).collect())
        .collect();
    assert_eq!(snapshots.len(), 2, "{out}");
    let answer = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no line {prefix:?}: {out}"))
    };
    let old = answer("the VIP answers from ");
    let new = answer("after the crash, the VIP answers from ");
    assert!(old.starts_with("host") && new.starts_with("host"), "{out}");
    assert_ne!(old, new, "{out}");
    // One holder each time: the host that answered.
    assert_eq!(snapshots[0], [old], "{out}");
    assert_eq!(snapshots[1], [new], "{out}");
}

#[test]
fn step_postgres() {
    let out = run_step("postgres");
    assert!(out.contains("1 run(s), PASSED"), "{out}");
    assert!(out.contains("objective rpo: wanted 0, got 0"), "{out}");
    assert!(
        out.lines().any(|l| l.trim() == "f"),
        "psql did not reach the primary: {out}"
    );
    assert!(
        out.contains("replicas streaming: 2"),
        "the killed node did not rejoin: {out}"
    );
}

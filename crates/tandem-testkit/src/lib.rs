//! Test helpers for tandem's integration tests: child processes killed on drop, waiting for a
//! condition with a deadline, a small blocking HTTP/1.1 client, a keep-alive load generator
//! that counts failures, and real nginx backends.
//!
//! Everything binds port 0 where the program allows it, and lives in temporary directories,
//! so tests run in parallel.

pub mod etcd;
pub mod http;
pub mod invariants;
pub mod load;
pub mod netns;
pub mod nginx;
pub mod proc;
pub mod tandem;

use std::time::{Duration, Instant};

/// Poll `f` every 20 ms until it returns true or `deadline` passes; returns the last result.
pub fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago, for programs that cannot bind port 0 themselves (nginx).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Path of a system program, or a panic that says how to install it.
pub fn require_program(name: &str, package: &str) -> std::path::PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = std::path::Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run `apt-get install -y {package}` (.ci/run does this)");
}

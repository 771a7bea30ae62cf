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

/// A port that was free a moment ago, for programs that cannot bind port 0 themselves (nginx,
/// cluster peers that must know each other's addresses in advance).
///
/// It is drawn below the kernel's ephemeral range (32768 and up by default), so that no
/// outgoing connection of a parallel test can take it before the program binds it, from a block
/// of 500 ports chosen by the process id (so parallel test processes rarely share a block), and
/// never handed out twice by one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    static STATE: AtomicU64 = AtomicU64::new(0);
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let seed = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..1000 {
        // xorshift, good enough to spread parallel test processes over the range.
        let mut x = STATE.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        STATE.store(x, Ordering::Relaxed);
        let block = (std::process::id() % 24) as u16;
        let port = 20_000 + block * 500 + (x % 500) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found below the ephemeral range on 127.0.0.1");
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

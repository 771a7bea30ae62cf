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
pub mod pgserver;
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
    use std::sync::Mutex;
    static PICKER: Mutex<Option<(tandem_core::ports::PortPicker, Vec<u16>)>> = Mutex::new(None);
    let mut guard = PICKER.lock().unwrap_or_else(|e| e.into_inner());
    let (picker, given) =
        guard.get_or_insert_with(|| (tandem_core::ports::PortPicker::new(), Vec::new()));
    for _ in 0..100 {
        let Some((port, _released)) = picker.pick() else {
            break;
        };
        if !given.contains(&port) {
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

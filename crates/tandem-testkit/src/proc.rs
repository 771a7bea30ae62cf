//! Child processes for tests: output captured line by line, signals by PID, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child process. Dropping it sends SIGKILL (and SIGCONT first, in case it was
/// stopped) and reaps it.
pub struct Proc {
    child: Child,
    name: String,
    lines: Arc<Mutex<Vec<String>>>,
    /// Output pipes closed so far (2 once the process and its children are gone).
    closed: Arc<AtomicUsize>,
}

impl Proc {
    /// Start `cmd` with stdout and stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        if let Some(out) = child.stdout.take() {
            pump(out, lines.clone(), closed.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, lines.clone(), closed.clone());
        }
        Proc {
            child,
            name: name.to_string(),
            lines,
            closed,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// All output lines so far (stdout and stderr interleaved).
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Wait for an output line that `pred` maps to `Some`.
    pub fn wait_line<T>(
        &self,
        deadline: Duration,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + deadline;
        let mut seen = 0;
        loop {
            let lines = self.output();
            for l in &lines[seen..] {
                if let Some(t) = pred(l) {
                    return Some(t);
                }
            }
            seen = lines.len();
            // The output ended (the process is gone): no line can come any more.
            let ended = self.closed.load(Ordering::Acquire) == 2 && self.output().len() == seen;
            if ended || Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: libc::kill is a plain syscall on a PID we own.
        let rc = unsafe_kill(self.pid(), sig);
        assert!(
            rc == 0 || sig == libc::SIGKILL,
            "kill({}, {sig}) failed for {}",
            self.pid(),
            self.name
        );
    }

    pub fn kill(&mut self) {
        unsafe_kill(self.pid(), libc::SIGCONT);
        unsafe_kill(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Wait for the process to exit by itself; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        if std::thread::panicking() {
            eprintln!("---- output of {} ----", self.name);
            for l in self.output().iter().rev().take(60).rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Signal a process (or, with a negative pid, a process group) that a process of this test
/// started, e.g. a postmaster run by a tandem node.
pub fn signal_pid(pid: i32, sig: i32) -> bool {
    unsafe_kill(pid, sig) == 0
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) }
}

fn pump(r: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>, closed: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = lines.lock() {
                l.push(line);
            }
        }
        closed.fetch_add(1, Ordering::Release);
    });
}

//! The fencing watchdog: a small separate process (`tandem watchdog`) that stops PostgreSQL
//! when the agent stops feeding it, so that a hung agent (SIGSTOP, a stuck disk, a livelock)
//! cannot leave a writable primary behind after its lease ran out.
//!
//! The agent writes lines to the watchdog's standard input:
//! - `P <pid>`: the postmaster to watch (its process group is signalled too);
//! - `D <ns>`: PostgreSQL may accept writes until this CLOCK_BOOTTIME instant (the lease's end);
//! - `N`: PostgreSQL does not accept writes (stopped, or a replica): no deadline.
//!
//! Deadlines are absolute, so a line written late (the agent was stopped between reading the
//! clock and writing) never extends anything. CLOCK_BOOTTIME keeps counting while the host is
//! suspended, and the loop looks at it at least every 10 ms of CLOCK_MONOTONIC (which tokio's and
//! std's timers use), so a host that resumes past the deadline is fenced within 10 ms, not after
//! the part of the lease that was left before the suspend. When the deadline passes the watchdog sends
//! SIGINT (PostgreSQL's fast shutdown: clients are cut off, connected standbys receive the
//! remaining WAL) and, after `grace`, SIGKILL to the whole process group. When its input
//! closes (the agent died) it keeps the last deadline, fences if one was set, and exits.

use std::io::{self, BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tandem_core::clock;

use super::sys;

/// The longest the loop waits before looking at the clock again.
const POLL: Duration = Duration::from_millis(10);

/// One line of the feeding protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Watch(i32),
    Deadline(u64),
    NoDeadline,
}

impl Feed {
    pub fn parse(line: &str) -> Option<Feed> {
        let mut it = line.split_whitespace();
        let f = match (it.next()?, it.next()) {
            ("P", Some(p)) => Feed::Watch(p.parse().ok().filter(|p: &i32| *p > 1)?),
            ("D", Some(d)) => Feed::Deadline(d.parse().ok()?),
            ("N", None) => Feed::NoDeadline,
            _ => return None,
        };
        it.next().is_none().then_some(f)
    }

    fn line(self) -> String {
        match self {
            Feed::Watch(p) => format!("P {p}\n"),
            Feed::Deadline(d) => format!("D {d}\n"),
            Feed::NoDeadline => "N\n".into(),
        }
    }
}

/// The watchdog's decisions, apart from I/O: what to do at `now`.
#[derive(Debug, Default)]
pub struct Watch {
    pid: Option<i32>,
    deadline: Option<u64>,
    /// When SIGINT was sent (then SIGKILL follows after the grace).
    interrupted_at: Option<u64>,
}

/// What the watchdog must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    Nothing,
    Interrupt(i32),
    Kill(i32),
}

impl Watch {
    pub fn feed(&mut self, f: Feed) {
        match f {
            Feed::Watch(p) => {
                self.pid = Some(p);
                self.interrupted_at = None;
            }
            Feed::Deadline(d) => self.deadline = Some(d),
            Feed::NoDeadline => {
                self.deadline = None;
                self.interrupted_at = None;
            }
        }
    }

    /// Called often; `grace` in nanoseconds.
    pub fn check(&mut self, now: u64, grace: u64) -> Fence {
        let (Some(pid), Some(deadline)) = (self.pid, self.deadline) else {
            return Fence::Nothing;
        };
        if now < deadline {
            return Fence::Nothing;
        }
        match self.interrupted_at {
            None => {
                self.interrupted_at = Some(now);
                Fence::Interrupt(pid)
            }
            Some(at) if now >= at + grace => {
                // Done with this postmaster: nothing more to fence until told again.
                self.deadline = None;
                self.interrupted_at = None;
                Fence::Kill(pid)
            }
            Some(_) => Fence::Nothing,
        }
    }

    /// The next instant `check` must run at (nanoseconds), if any.
    pub fn next_check(&self, grace: u64) -> Option<u64> {
        self.deadline?;
        Some(match self.interrupted_at {
            Some(at) => at + grace,
            None => self.deadline?,
        })
    }

    /// How long to wait at `now` before the next `check`: until it is due, and never longer than
    /// `POLL`, because a suspend of the host stops the timer's clock but not `now`'s.
    pub fn wait(&self, now: u64, grace: u64) -> Duration {
        let due = self
            .next_check(grace)
            .map_or(u64::MAX, |t| t.saturating_sub(now));
        Duration::from_nanos(due).min(POLL)
    }
}

/// The watchdog process's main loop: reads feeds from stdin until it closes.
pub fn run(grace: Duration) -> io::Result<()> {
    let grace = grace.as_nanos() as u64;
    let (tx, rx) = mpsc::channel::<Option<Feed>>();
    std::thread::spawn(move || {
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            match Feed::parse(&line) {
                Some(f) => {
                    if tx.send(Some(f)).is_err() {
                        return;
                    }
                }
                None => eprintln!("watchdog: ignoring malformed line {line:?}"),
            }
        }
        let _ = tx.send(None);
    });
    let mut watch = Watch::default();
    let mut input_open = true;
    loop {
        let now = clock::boottime_ns();
        match watch.check(now, grace) {
            Fence::Nothing => {}
            Fence::Interrupt(pid) => {
                eprintln!("watchdog: not fed before the lease deadline: fast shutdown of PostgreSQL (pid {pid})");
                let _ = sys::kill(pid, libc::SIGINT);
            }
            Fence::Kill(pid) => {
                if sys::alive(pid) {
                    eprintln!("watchdog: PostgreSQL still running after the grace: SIGKILL to its process group");
                    let _ = sys::kill(-pid, libc::SIGKILL);
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !input_open && watch.next_check(grace).is_none() {
            return Ok(());
        }
        // Wake for the next feed, the next deadline, or at least every POLL.
        let wait = watch.wait(clock::boottime_ns(), grace);
        if !input_open {
            std::thread::sleep(wait);
            continue;
        }
        match rx.recv_timeout(wait) {
            Ok(Some(f)) => watch.feed(f),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => input_open = false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// The agent's end: a running watchdog process and its input.
pub struct Watchdog {
    child: Child,
    stdin: ChildStdin,
}

impl Watchdog {
    /// Start `exe watchdog --grace-ms N` (the tandem binary itself).
    pub fn start(exe: &std::path::Path, grace: Duration) -> io::Result<Watchdog> {
        let mut cmd = Command::new(exe);
        cmd.arg("watchdog")
            .arg("--grace-ms")
            .arg(grace.as_millis().max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // Its own process group: a Ctrl-C meant for the agent does not reach it; it ends by
        // itself once its input closes and nothing is left to fence.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin pipe"))?;
        Ok(Watchdog { child, stdin })
    }

    pub fn send(&mut self, f: Feed) -> io::Result<()> {
        self.stdin.write_all(f.line().as_bytes())
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the input lets it finish by itself; reap it if it already did.
        let _ = self.child.try_wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_parse_strictly() {
        assert_eq!(Feed::parse("P 1234"), Some(Feed::Watch(1234)));
        assert_eq!(Feed::parse("D 99"), Some(Feed::Deadline(99)));
        assert_eq!(Feed::parse("N"), Some(Feed::NoDeadline));
        for bad in [
            "", "P", "P 1", "P -5", "P x", "D", "D -1", "N 3", "X 1", "D 1 2",
        ] {
            assert_eq!(Feed::parse(bad), None, "{bad:?}");
        }
        for f in [Feed::Watch(77), Feed::Deadline(5), Feed::NoDeadline] {
            assert_eq!(Feed::parse(f.line().trim()), Some(f));
        }
    }

    #[test]
    fn fences_only_after_the_deadline_then_escalates() {
        let mut w = Watch::default();
        assert_eq!(w.check(100, 10), Fence::Nothing);
        w.feed(Feed::Deadline(50));
        // No postmaster known: nothing to fence.
        assert_eq!(w.check(100, 10), Fence::Nothing);
        w.feed(Feed::Watch(42));
        w.feed(Feed::Deadline(200));
        assert_eq!(w.check(199, 10), Fence::Nothing);
        assert_eq!(w.next_check(10), Some(200));
        assert_eq!(w.check(200, 10), Fence::Interrupt(42));
        assert_eq!(w.check(205, 10), Fence::Nothing);
        assert_eq!(w.check(210, 10), Fence::Kill(42));
        assert_eq!(w.check(500, 10), Fence::Nothing);
        assert_eq!(w.next_check(10), None);
    }

    #[test]
    fn a_newer_deadline_or_disarming_prevents_the_fence() {
        let mut w = Watch::default();
        w.feed(Feed::Watch(42));
        w.feed(Feed::Deadline(100));
        w.feed(Feed::Deadline(300));
        assert_eq!(w.check(200, 10), Fence::Nothing);
        w.feed(Feed::NoDeadline);
        assert_eq!(w.check(1000, 10), Fence::Nothing);
        // A late, older deadline still fences at its own time: absolute instants only.
        w.feed(Feed::Deadline(50));
        assert_eq!(w.check(60, 10), Fence::Interrupt(42));
    }

    #[test]
    fn a_host_resumed_past_the_deadline_is_fenced_at_the_next_look() {
        let grace = Duration::from_millis(100).as_nanos() as u64;
        let mut w = Watch::default();
        w.feed(Feed::Watch(42));
        w.feed(Feed::Deadline(clock::boottime_ns() + 1_000_000_000));
        assert_eq!(w.check(clock::boottime_ns(), grace), Fence::Nothing);
        // However far the deadline, the loop looks again within POLL of the timers' clock.
        assert_eq!(w.wait(clock::boottime_ns(), grace), POLL);
        // The host sleeps for 2 s: the clock the watchdog reads counts it.
        clock::simulate_suspend(Duration::from_secs(2));
        assert_eq!(w.check(clock::boottime_ns(), grace), Fence::Interrupt(42));
        // A suspend during the grace counts too.
        assert_eq!(w.wait(clock::boottime_ns(), grace), POLL);
        clock::simulate_suspend(Duration::from_millis(150));
        assert_eq!(w.wait(clock::boottime_ns(), grace), Duration::ZERO);
        assert_eq!(w.check(clock::boottime_ns(), grace), Fence::Kill(42));
    }
}

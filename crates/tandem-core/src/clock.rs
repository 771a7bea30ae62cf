//! The one place components read time from.
//!
//! [`now`] is tokio's monotonic clock (so `tokio::time::pause()` tests control it) plus the time
//! the host has spent suspended since this process first read the clock. CLOCK_MONOTONIC stops
//! while the host is suspended (a closed laptop lid, suspend-to-RAM); CLOCK_BOOTTIME keeps
//! counting. A lease judged by a clock that stopped would look valid after the resume for the
//! part that was left before the suspend, while another node already holds it; judged by this
//! clock, it has run out at the first look after the resume.
//!
//! Timers stay tokio's, on CLOCK_MONOTONIC. Sleep until an instant of this clock with
//! [`sleep_until`] (or bound a future with [`timeout_at`]), which take the suspended time back
//! out. A sleep that spans a suspend wakes late by the length of the suspend, so whatever judges
//! a deadline reads [`now`] again each time it looks, and loops that guard a lease wake at least
//! every tick.
//!
//! Wall-clock time is only used for timestamps shown to people (events, logs).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Monotonic now, counting time spent in a host suspend (pausable in tests).
pub fn now() -> Instant {
    Instant::now() + suspended()
}

/// Monotonic now that does *not* count a host suspend, for protocol timers that must not
/// expire while the host could not listen: a VRRP backup that resumes has heard no adverts
/// because it was asleep, not because its master is gone (RFC 5798 timers run on the
/// router's own time, as Keepalived's do). Never use it to judge a lease.
pub fn protocol_now() -> Instant {
    Instant::now()
}

/// Sleep until `deadline`, an instant of [`protocol_now`]'s clock.
#[allow(clippy::disallowed_methods)] // protocol timers are tokio's own
pub async fn protocol_sleep_until(deadline: Instant) {
    tokio::time::sleep_until(deadline).await
}

/// How long since `earlier`, an instant of this clock (a suspend included). Use it instead of
/// `Instant::elapsed`, which reads tokio's clock alone.
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// How long the host has been suspended since this process first read the clock (never less
/// than an earlier answer).
pub fn suspended() -> Duration {
    Duration::from_nanos(real_suspended_ns() + simulated_ns())
}

/// Sleep until `deadline`, an instant of [`now`]'s clock.
#[allow(clippy::disallowed_methods)] // the one place that converts
pub async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(timer_instant(deadline)).await
}

/// Run `fut` until `deadline`, an instant of [`now`]'s clock.
#[allow(clippy::disallowed_methods)] // the one place that converts
pub async fn timeout_at<F: Future>(
    deadline: Instant,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(timer_instant(deadline), fut).await
}

/// The instant of tokio's timers at which `deadline` falls due, with the suspends so far.
pub fn timer_instant(deadline: Instant) -> Instant {
    deadline
        .checked_sub(suspended())
        .unwrap_or_else(Instant::now)
}

/// CLOCK_BOOTTIME in nanoseconds: the same clock in every process of the host, so an absolute
/// deadline sent to another process means the same instant there however late it arrives, and
/// it keeps counting through a suspend. (Tests: plus this thread's simulated suspends.)
pub fn boottime_ns() -> u64 {
    let t = read(libc::CLOCK_BOOTTIME)
        .or_else(|| read(libc::CLOCK_MONOTONIC))
        .unwrap_or(0);
    t + simulated_ns()
}

/// Wall-clock milliseconds since the Unix epoch, for timestamps shown to people.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Tests only: from now on this thread's clock reads as if the host had just been suspended for
/// `d`: [`now`] and [`boottime_ns`] jump ahead by `d`, tokio's timers do not. A
/// `#[tokio::test]` runtime runs its tasks on the test's thread, so they all see it.
#[cfg(any(test, feature = "test-util"))]
pub fn simulate_suspend(d: Duration) {
    SIMULATED.with(|s| s.set(s.get().saturating_add(d.as_nanos() as u64)));
}

#[cfg(any(test, feature = "test-util"))]
thread_local! {
    static SIMULATED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn simulated_ns() -> u64 {
    #[cfg(any(test, feature = "test-util"))]
    return SIMULATED.with(std::cell::Cell::get);
    #[cfg(not(any(test, feature = "test-util")))]
    0
}

// ===== the suspended time =====

/// BOOTTIME - MONOTONIC at the first reading.
static BASE: OnceLock<i64> = OnceLock::new();
/// The largest growth of BOOTTIME - MONOTONIC seen since, in nanoseconds.
static SEEN: AtomicU64 = AtomicU64::new(0);
const MS: u64 = 1_000_000;

/// The growth of BOOTTIME - MONOTONIC since the first reading. The kernel keeps the two apart by
/// exactly the time spent suspended; each reading here is a lower bound of that difference (see
/// `boot_minus_mono`), so the largest one seen never overshoots it. Growth is counted in whole
/// milliseconds, so the few nanoseconds between two clock reads never show as a suspend.
fn real_suspended_ns() -> u64 {
    let base = *BASE.get_or_init(|| (0..3).filter_map(|_| boot_minus_mono()).max().unwrap_or(0));
    let grown = boot_minus_mono().map_or(0, |d| d.saturating_sub(base).max(0) as u64);
    let grown = grown - grown % MS;
    // Write only when it grew (after a resume): the load alone keeps the hot path free of
    // contended writes.
    let seen = SEEN.load(Ordering::Relaxed);
    if grown <= seen {
        return seen;
    }
    SEEN.fetch_max(grown, Ordering::Relaxed).max(grown)
}

/// BOOTTIME, then MONOTONIC: MONOTONIC is read later, so the result is at most the kernel's
/// difference between the two (by the time between the reads).
fn boot_minus_mono() -> Option<i64> {
    let boot = read(libc::CLOCK_BOOTTIME)?;
    let mono = read(libc::CLOCK_MONOTONIC)?;
    Some(boot as i64 - mono as i64)
}

#[allow(unsafe_code)]
fn read(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into memory we own and keeps no pointer to it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests;

//! The one place components read time from.
//!
//! Monotonic time comes from tokio so that `tokio::time::pause()` tests control it; wall-clock
//! time is only used for timestamps shown to people (events, logs).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Monotonic now (tokio's clock, pausable in tests).
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock milliseconds since the Unix epoch, for timestamps shown to people.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

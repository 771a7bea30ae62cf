//! Shared plumbing for every tandem component: the clock, human durations, shutdown and drain,
//! task handles that cancel on drop, and the typed event bus.
//!
//! This crate depends on no other tandem crate.

pub mod clock;
pub mod duration;
pub mod events;
pub mod health;
pub mod ports;
pub mod probe;
pub mod shutdown;
pub mod task;
pub mod validate;

pub use duration::HumanDuration;
pub use events::{Event, EventBus};
pub use shutdown::Shutdown;
pub use task::TaskHandle;

//! Supervision of the PostgreSQL manager task. When the manager panics or returns an error,
//! the supervisor at once reports the node not eligible (the agent demotes and releases the
//! lease if it holds it: the release goes out only after the demote, which waits for
//! PostgreSQL to stop), fences PostgreSQL itself (stopped within the lease's remaining
//! validity), logs the reason, counts `tandem_postgres_manager_failures_total` and emits
//! `postgres_manager_failed`. Then it restarts the manager after a backoff, a bounded number
//! of times in a row; past that it leaves PostgreSQL stopped and the node out of the election,
//! with the reason in its status, until tandem is restarted.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::clock::{self, Instant};
use tandem_core::EventBus;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::manager::{locked, PgHandle};
use super::metrics::PgMetrics;
use crate::state::PgMember;

/// How failed managers are restarted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Restarts in a row before giving up.
    pub max_restarts: u32,
    /// The first backoff; it doubles with every failure in a row, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A manager that ran this long before failing starts the count afresh.
    pub healthy_after: Duration,
}

pub(crate) const POLICY: Policy = Policy {
    max_restarts: 5,
    backoff: Duration::from_secs(1),
    backoff_max: Duration::from_secs(30),
    healthy_after: Duration::from_secs(600),
};

/// What the supervisor acts on besides the manager.
pub(crate) struct Ctx {
    pub me: String,
    pub handle: PgHandle,
    pub eligible: mpsc::UnboundedSender<bool>,
    pub events: EventBus,
    pub metrics: PgMetrics,
    /// Until when this node may act as primary.
    pub lease: Arc<dyn Fn() -> Option<Instant> + Send + Sync>,
}

/// The step of the fast -> immediate -> kill escalation: every step fits three times in what
/// is left of the lease, so PostgreSQL is gone before the lease can pass on.
pub(crate) fn fence_step(lease_left: Option<Duration>) -> Duration {
    match lease_left {
        Some(left) => (left / 3).clamp(Duration::from_millis(20), Duration::from_secs(5)),
        None => Duration::from_secs(5),
    }
}

/// The backoff before restart number `n` (1-based).
pub(crate) fn backoff(policy: &Policy, n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(16);
    policy
        .backoff
        .saturating_mul(1u32 << exp)
        .min(policy.backoff_max)
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "was cancelled".into();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("panicked: {msg}")
}

/// Run managers made by `spawn` until one stops on request (or the node stops).
pub(crate) async fn supervise<F>(ctx: Ctx, policy: Policy, mut spawn: F)
where
    F: FnMut() -> Result<JoinHandle<Result<(), String>>, String> + Send,
{
    let mut in_row = 0u32;
    loop {
        let started = clock::now();
        let why = match spawn() {
            Ok(task) => match task.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("failed: {e}"),
                Err(e) => panic_message(e),
            },
            Err(e) => format!("could not be started: {e}"),
        };
        if clock::since(started) >= policy.healthy_after {
            in_row = 0;
        }
        in_row += 1;
        let stopping = ctx
            .handle
            .stopping
            .load(std::sync::atomic::Ordering::Acquire);
        let give_up = stopping || in_row > policy.max_restarts;
        let next = if stopping {
            "the node is stopping: not restarted".to_string()
        } else if give_up {
            format!(
                "{} failures in a row: not restarted; PostgreSQL stays stopped and this node out of the election until tandem is restarted",
                in_row
            )
        } else {
            format!(
                "restarting it in {:?} ({in_row} of {} restarts in a row)",
                backoff(&policy, in_row),
                policy.max_restarts
            )
        };
        on_failure(&ctx, &why, &next).await;
        if give_up {
            return;
        }
        tokio::time::sleep(backoff(&policy, in_row)).await;
        if ctx
            .handle
            .stopping
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
    }
}

/// Not eligible first (the agent's demote then waits for the fence below before the release
/// goes out), then fence, then tell.
async fn on_failure(ctx: &Ctx, why: &str, next: &str) {
    tracing::error!(component = "postgres", reason = %why, next, "the PostgreSQL manager failed");
    ctx.metrics.manager_failures.inc();
    if ctx.eligible.send(false).is_err() {
        tracing::warn!(
            component = "postgres",
            "the agent is gone: the failure is not reported to it"
        );
    }
    let left = (ctx.lease)().map(|until| until.saturating_duration_since(clock::now()));
    ctx.handle.fence(fence_step(left)).await;
    *locked(&ctx.handle.pm) = None;
    let text = format!("the PostgreSQL manager {why}; PostgreSQL stopped; {next}");
    {
        let mut s = locked(&ctx.handle.status);
        s.pid = None;
        s.running = false;
        s.primary = false;
        s.streaming = false;
        s.replicas.clear();
        s.state = text.clone();
        s.error = Some(text.clone());
        s.not_candidate = Some(format!("the PostgreSQL manager {why}"));
    }
    *locked(&ctx.handle.member) = Some(PgMember {
        addr: ctx.handle.addr.clone(),
        ..Default::default()
    });
    ctx.metrics.up.set(0);
    ctx.metrics.primary.set(0);
    ctx.events
        .emit("postgres_manager_failed", "postgres", &ctx.me, text);
}

#[cfg(test)]
mod tests;

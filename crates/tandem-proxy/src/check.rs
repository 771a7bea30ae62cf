//! Active health checks: the task that owns one server's up/down state machine.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::backend::Backend;
use crate::config::CheckKind;
use crate::server::{AdminState, Server};
use tandem_core::health::{Hysteresis, Input, Status};
use tandem_core::probe::{probe, Probe};

/// The status-line parser of HTTP checks (it lives with the probes in `tandem-core`).
pub use tandem_core::probe::parse_status_line;

/// Check `server` until the backend goes away or the task is aborted. Passive failures reported
/// by the request path arrive through `server.passive_notify`.
pub(crate) async fn run(backend: Weak<Backend>, server: Arc<Server>) {
    let (health, initial) = match backend.upgrade() {
        Some(b) => (
            b.cfg.health.clone(),
            if server.is_up() {
                Status::Up
            } else {
                Status::Down
            },
        ),
        None => return,
    };
    let mut engine = Hysteresis::new(health.rise, health.fall, initial);
    let interval = health.interval.get();
    // The first check runs at once, so servers come up quickly after start.
    let mut delay = Duration::ZERO;
    loop {
        let input = tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            _ = server.passive_notify.notified() => Some(Input::PassiveDown(server.take_passive_reason())),
        };
        let Some(backend) = backend.upgrade() else {
            return;
        };
        let input = match input {
            Some(i) => Some(i),
            None if server.admin() == AdminState::Maint => None,
            None if health.check == CheckKind::None => Some(Input::Passed),
            None => {
                let kind = match health.check {
                    CheckKind::Http => Probe::Http {
                        path: &health.path,
                        expect: &backend.expect,
                    },
                    _ => Probe::Tcp,
                };
                let result = probe(kind, server.check_addr, health.timeout.get()).await;
                match result {
                    Ok(()) => {
                        server.metrics.check_passed.inc();
                        Some(Input::Passed)
                    }
                    Err(why) => {
                        server.metrics.check_failed.inc();
                        tracing::debug!(backend = %backend.name, server = %server.name, %why, "health check failed");
                        Some(Input::Failed(why))
                    }
                }
            }
        };
        if let Some(t) = input.and_then(|i| engine.handle(i)) {
            backend.apply_transition(&server, &t);
        }
        delay = engine.next_interval(interval);
    }
}

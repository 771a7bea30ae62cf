//! The typed event bus: every state change (server up/down, leader change, VIP move, promotion)
//! is one event, fed to logs, metrics, the event log API and alerts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock;

/// One state change, with the reason it happened.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    /// Sequence number, increasing per process.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What kind of change, e.g. `server_down`, `server_up`, `config_reloaded`.
    pub kind: String,
    /// The component that changed, e.g. `proxy`.
    pub component: String,
    /// The thing that changed, e.g. `app/a` for a server.
    pub subject: String,
    /// Why, in words.
    pub reason: String,
}

const RECENT: usize = 1024;

/// Publishes events to live subscribers and keeps the most recent ones.
#[derive(Clone, Debug)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<Event>,
    recent: Mutex<(u64, VecDeque<Event>)>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(RECENT);
        Self {
            inner: Arc::new(Inner {
                tx,
                recent: Mutex::new((0, VecDeque::new())),
            }),
        }
    }

    /// Record and broadcast an event; it is also logged with its reason.
    pub fn emit(&self, kind: &str, component: &str, subject: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::info!(kind, component, subject, reason = %reason, "event");
        let event = {
            let mut guard = match self.inner.recent.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.0 += 1;
            let event = Event {
                seq: guard.0,
                at_ms: clock::unix_millis(),
                kind: kind.to_string(),
                component: component.to_string(),
                subject: subject.to_string(),
                reason,
            };
            if guard.1.len() == RECENT {
                guard.1.pop_front();
            }
            guard.1.push_back(event.clone());
            event
        };
        // No subscriber is not an error: the event is kept in `recent`.
        let _ = self.inner.tx.send(event);
    }

    /// Events with a sequence number above `since`, oldest first.
    pub fn recent(&self, since: u64) -> Vec<Event> {
        let guard = match self.inner.recent.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.1.iter().filter(|e| e.seq > since).cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_in_order() {
        let bus = EventBus::new();
        bus.emit("server_down", "proxy", "app/a", "connection refused");
        bus.emit("server_up", "proxy", "app/a", "2 checks passed");
        let all = bus.recent(0);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, "server_down");
        assert_eq!(bus.recent(1).len(), 1);
    }
}

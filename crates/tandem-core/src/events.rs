//! The typed event bus: every state change (server up/down, leader change, VIP move, promotion)
//! is one event, fed to logs, metrics, the event log API and alerts.
//!
//! The event log file is written by a thread of its own through a bounded queue: `emit` runs on
//! the runtime that renews the lease and never waits for a disk. When the queue is full (a
//! stuck disk) the event is still kept in memory and broadcast, but not written; such drops are
//! counted (`log_dropped`, and the hook set with `on_log_drop`).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock;

/// One state change, with the reason it happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
/// Events waiting for the log writer at most; more are dropped from the file (not from memory).
const LOG_QUEUE: usize = 4096;

/// Publishes events to live subscribers and keeps the most recent ones.
#[derive(Clone, Debug)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<Event>,
    recent: Mutex<(u64, VecDeque<Event>)>,
    /// Where events are kept across restarts (JSON lines), if anywhere.
    log: Option<LogQueue>,
}

type DropHook = Arc<dyn Fn() + Send + Sync>;

/// The queue to the log writer thread.
struct LogQueue {
    tx: SyncSender<LogMsg>,
    dropped: AtomicU64,
    on_drop: OnceLock<DropHook>,
}

impl std::fmt::Debug for LogQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogQueue")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

enum LogMsg {
    Event(Event),
    /// Answered once everything queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The event log file: appended to, compacted to the last `RECENT` events when it doubles.
/// Owned by the writer thread.
#[derive(Debug)]
struct EventLog {
    path: PathBuf,
    lines: usize,
    recent: VecDeque<Event>,
}

impl EventLog {
    fn run(mut self, rx: std::sync::mpsc::Receiver<LogMsg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                LogMsg::Event(e) => {
                    if self.recent.len() == RECENT {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(e.clone());
                    self.append(&e);
                }
                LogMsg::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    fn append(&mut self, e: &Event) {
        let recent = &self.recent;
        let result = (|| -> std::io::Result<()> {
            if self.lines >= 2 * RECENT {
                let tmp = self.path.with_extension("tmp");
                let mut f = std::fs::File::create(&tmp)?;
                for r in recent {
                    writeln!(f, "{}", serde_json::to_string(r).unwrap_or_default())?;
                }
                f.sync_all()?;
                std::fs::rename(&tmp, &self.path)?;
                self.lines = recent.len();
                return Ok(());
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            writeln!(f, "{}", serde_json::to_string(e).unwrap_or_default())?;
            self.lines += 1;
            Ok(())
        })();
        if let Err(err) = result {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot write the event log");
        }
    }
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
                log: None,
            }),
        }
    }

    /// A bus whose events are kept in `path` (JSON lines) and reloaded from it at start, so
    /// the event log survives restarts. Unreadable lines are skipped.
    pub fn with_log(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut recent = VecDeque::new();
        let mut lines = 0;
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                lines += 1;
                if let Ok(e) = serde_json::from_str::<Event>(line) {
                    if recent.len() == RECENT {
                        recent.pop_front();
                    }
                    recent.push_back(e);
                }
            }
        }
        let seq = recent.back().map_or(0, |e: &Event| e.seq);
        let (tx, _) = broadcast::channel(RECENT);
        let writer = EventLog {
            path: path.to_path_buf(),
            lines,
            recent: recent.clone(),
        };
        let (qtx, qrx) = sync_channel(LOG_QUEUE);
        // Ends once the bus (the queue's only sender) is gone.
        std::thread::Builder::new()
            .name("tandem-event-log".into())
            .spawn(move || writer.run(qrx))?;
        let log = Some(LogQueue {
            tx: qtx,
            dropped: AtomicU64::new(0),
            on_drop: OnceLock::new(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                recent: Mutex::new((seq, recent)),
                log,
            }),
        })
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
            // Queued under the lock, so the file keeps the order of the sequence numbers.
            if let Some(log) = &self.inner.log {
                match log.tx.try_send(LogMsg::Event(event.clone())) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        let n = log.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(
                                dropped = n,
                                "the event log writer is behind: events not written to the file"
                            );
                        }
                        if let Some(hook) = log.on_drop.get() {
                            hook();
                        }
                    }
                }
            }
            event
        };
        // No subscriber is not an error: the event is kept in `recent`.
        let _ = self.inner.tx.send(event);
    }

    /// Events that were not written to the event log file because its queue was full.
    pub fn log_dropped(&self) -> u64 {
        self.inner
            .log
            .as_ref()
            .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
    }

    /// Call `hook` for every event not written to the log file (for a metric); set once.
    pub fn on_log_drop(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        if let Some(l) = &self.inner.log {
            let _ = l.on_drop.set(hook);
        }
    }

    /// Wait (blocking, up to `limit`) until every event emitted so far is in the log file.
    /// True when done (or there is no file). Call it off the runtime or at shutdown.
    pub fn flush(&self, limit: Duration) -> bool {
        let Some(l) = &self.inner.log else {
            return true;
        };
        let (reply, done) = std::sync::mpsc::channel();
        let queued = match l.tx.try_send(LogMsg::Flush(reply.clone())) {
            Ok(()) => true,
            // Full: wait for room, within the limit.
            Err(TrySendError::Full(_)) => {
                let deadline = std::time::Instant::now() + limit;
                loop {
                    match l.tx.try_send(LogMsg::Flush(reply.clone())) {
                        Ok(()) => break true,
                        Err(TrySendError::Disconnected(_)) => break false,
                        Err(TrySendError::Full(_)) if std::time::Instant::now() >= deadline => {
                            break false
                        }
                        Err(TrySendError::Full(_)) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
            Err(TrySendError::Disconnected(_)) => false,
        };
        queued && done.recv_timeout(limit).is_ok()
    }

    /// Events with a sequence number above `since`, oldest first.
    pub fn recent(&self, since: u64) -> Vec<Event> {
        self.filtered(since, &[])
    }

    /// Events above `since` whose kind is one of `kinds` (all kinds when empty).
    pub fn filtered(&self, since: u64, kinds: &[&str]) -> Vec<Event> {
        let guard = match self.inner.recent.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard
            .1
            .iter()
            .filter(|e| e.seq > since && (kinds.is_empty() || kinds.contains(&e.kind.as_str())))
            .cloned()
            .collect()
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
        assert_eq!(bus.filtered(0, &["server_up"]).len(), 1);
    }

    #[test]
    fn the_log_survives_a_restart_and_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("tandem-events-{}", std::process::id()));
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let bus = EventBus::with_log(&path).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..(2 * RECENT + 10) {
            bus.emit("server_down", "proxy", &format!("app/{i}"), "test");
        }
        assert!(bus.flush(Duration::from_secs(10)));
        assert_eq!(bus.log_dropped(), 0);
        let again = EventBus::with_log(&path).unwrap_or_else(|e| panic!("{e}"));
        let all = again.recent(0);
        assert_eq!(all.len(), RECENT);
        assert_eq!(all.last().map(|e| e.seq), Some(2 * RECENT as u64 + 10));
        again.emit("server_up", "proxy", "app/x", "test");
        assert_eq!(
            again.recent(0).last().map(|e| e.seq),
            Some(2 * RECENT as u64 + 11)
        );
        assert!(again.flush(Duration::from_secs(10)));
        let lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count();
        assert!(lines <= 2 * RECENT, "{lines} lines");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

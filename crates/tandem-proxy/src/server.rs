//! One backend server's runtime state: health as the balancer sees it, operator state,
//! in-flight count, latency EWMA, passive failure streak, and its pool of idle connections.
//! The request path reads and updates it without locks, except the pool's short mutex.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use serde::Serialize;
use tandem_core::clock::{self, Instant};
use tokio::sync::Notify;

use crate::body::ReqBody;
use crate::config::ServerConfig;
use crate::metrics::ServerMetrics;

/// What an operator set for a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In rotation (when healthy).
    Ready,
    /// No new requests; in-flight ones finish.
    Drain,
    /// Out of rotation and not health-checked.
    Maint,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }
}

const MAX_IDLE_PER_SERVER: usize = 1024;

struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

/// A backend server at run time. Shared by the request path, its checker and the admin API;
/// kept across reloads when its name and address stay the same.
pub struct Server {
    pub backend: String,
    pub name: String,
    pub addr: SocketAddr,
    /// Where active health checks go (`check_address`, or `addr`).
    pub check_addr: SocketAddr,
    pub cfg: ServerConfig,
    up: AtomicBool,
    admin: AtomicU8,
    inflight: AtomicUsize,
    ewma_us: AtomicU64,
    passive_fails: AtomicU32,
    passive_reason: Mutex<String>,
    pub(crate) passive_notify: Notify,
    pool: Mutex<Vec<Idle>>,
    pub(crate) metrics: ServerMetrics,
}

impl Server {
    pub(crate) fn new(
        backend: &str,
        cfg: ServerConfig,
        addr: SocketAddr,
        up: bool,
        admin: AdminState,
        metrics: ServerMetrics,
    ) -> Self {
        metrics.up.set(i64::from(up));
        Self {
            backend: backend.to_string(),
            name: cfg.name.clone(),
            addr,
            check_addr: cfg
                .check_address
                .as_deref()
                .and_then(|a| a.parse().ok())
                .unwrap_or(addr),
            cfg,
            up: AtomicBool::new(up),
            admin: AtomicU8::new(admin.as_u8()),
            inflight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            passive_fails: AtomicU32::new(0),
            passive_reason: Mutex::new(String::new()),
            passive_notify: Notify::new(),
            pool: Mutex::new(Vec::new()),
            metrics,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn set_up(&self, up: bool) {
        // A new state starts a new passive failure streak.
        self.passive_fails.store(0, Ordering::Relaxed);
        self.up.store(up, Ordering::Release);
        self.metrics.up.set(i64::from(up));
        if !up {
            self.clear_pool();
        }
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Acquire))
    }

    pub(crate) fn set_admin(&self, s: AdminState) {
        self.admin.store(s.as_u8(), Ordering::Release);
        if s == AdminState::Maint {
            self.clear_pool();
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// True when `maxconn` is set and reached.
    pub(crate) fn is_full(&self) -> bool {
        self.cfg.maxconn != 0 && self.inflight() >= self.cfg.maxconn as usize
    }

    /// Latency EWMA in microseconds (0 before the first answer).
    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Ordering::Relaxed)
    }

    pub(crate) fn observe_latency(&self, d: Duration) {
        let sample = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.ewma_us.load(Ordering::Relaxed);
        // alpha = 1/4: reacts within a few requests, a lost update only delays that a little.
        let new = if old == 0 {
            sample
        } else {
            old - old / 4 + sample / 4
        };
        self.ewma_us.store(new.max(1), Ordering::Relaxed);
    }

    /// A request to this server succeeded: the passive failure streak ends.
    pub(crate) fn passive_ok(&self) {
        if self.passive_fails.load(Ordering::Relaxed) != 0 {
            self.passive_fails.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this server failed; at `fall` consecutive failures its checker takes it
    /// down at once (the checker owns the up/down state machine).
    pub(crate) fn passive_failure(&self, fall: u32, what: &str) {
        let n = self.passive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= fall.max(1) && self.is_up() {
            if let Ok(mut r) = self.passive_reason.lock() {
                *r = format!("{n} consecutive request failures, last: {what}");
            }
            self.passive_notify.notify_one();
        }
    }

    pub(crate) fn take_passive_reason(&self) -> String {
        self.passive_fails.store(0, Ordering::Relaxed);
        self.passive_reason
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    pub(crate) fn inflight_guard(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.metrics.inflight.inc();
        InflightGuard(self.clone())
    }

    /// An idle pooled connection, if one is usable: not closed, not idle longer than
    /// `max_idle`, and ready for a new request.
    pub(crate) async fn checkout(&self, max_idle: Duration) -> Option<SendRequest<ReqBody>> {
        loop {
            let idle = self.pool.lock().ok()?.pop()?;
            if idle.sender.is_closed() || clock::now().duration_since(idle.since) > max_idle {
                continue;
            }
            let mut sender = idle.sender;
            if sender.is_ready() {
                return Some(sender);
            }
            // The dispatcher may still be finishing the previous response on it.
            match tokio::time::timeout(Duration::from_millis(100), sender.ready()).await {
                Ok(Ok(())) => return Some(sender),
                _ => continue,
            }
        }
    }

    pub(crate) fn checkin(&self, sender: SendRequest<ReqBody>) {
        if sender.is_closed() || !self.is_up() || self.admin() == AdminState::Maint {
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < MAX_IDLE_PER_SERVER {
                pool.push(Idle {
                    sender,
                    since: clock::now(),
                });
            }
        }
    }

    fn clear_pool(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
    }
}

/// Counts a request or connection as in flight on a server until dropped.
pub(crate) struct InflightGuard(Arc<Server>);

impl InflightGuard {
    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.inflight.dec();
    }
}

/// A server as shown by the status API.
#[derive(Clone, Debug, Serialize)]
pub struct ServerStatus {
    pub name: String,
    pub address: String,
    pub state: &'static str,
    pub admin: AdminState,
    pub weight: u32,
    pub backup: bool,
    pub inflight: usize,
    pub latency_ewma_ms: f64,
}

impl Server {
    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            name: self.name.clone(),
            address: self.addr.to_string(),
            state: if self.is_up() { "up" } else { "down" },
            admin: self.admin(),
            weight: self.cfg.weight,
            backup: self.cfg.backup,
            inflight: self.inflight(),
            latency_ewma_ms: self.ewma_us() as f64 / 1000.0,
        }
    }
}

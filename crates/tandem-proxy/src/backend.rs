//! A backend at run time: its servers, the selection snapshot the request path reads, the
//! picker, and the health checker tasks that own each server's up/down state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderName;
use serde::Serialize;
use tandem_core::{EventBus, TaskHandle};

use crate::balance::{Picker, Selection};
use crate::config::{BackendConfig, CheckKind, StatusSet};
use crate::metrics::{BackendMetrics, ProxyMetrics};
use crate::server::{AdminState, Server, ServerStatus};
use crate::{check, ProxyError};
use tandem_core::health::{Status, Transition};

/// One `[[backend]]` at run time.
pub struct Backend {
    pub name: String,
    pub cfg: BackendConfig,
    pub(crate) servers: Vec<Arc<Server>>,
    selection: ArcSwap<Selection>,
    refresh_lock: Mutex<()>,
    pub(crate) picker: Picker,
    pub(crate) expect: StatusSet,
    pub(crate) hash_header: Option<HeaderName>,
    pub(crate) metrics: BackendMetrics,
    events: EventBus,
    checkers: Mutex<Vec<TaskHandle>>,
}

impl Backend {
    /// Build from a validated config. Servers whose name and address match one in `previous`
    /// keep its runtime state (health, operator state, pool), so a reload changes nothing for
    /// them.
    pub(crate) fn build(
        cfg: BackendConfig,
        previous: Option<&Backend>,
        metrics: &ProxyMetrics,
        events: &EventBus,
    ) -> Result<Arc<Backend>, ProxyError> {
        let old: HashMap<(&str, SocketAddr), &Arc<Server>> = previous
            .map(|b| {
                b.servers
                    .iter()
                    .map(|s| ((s.name.as_str(), s.addr), s))
                    .collect()
            })
            .unwrap_or_default();
        let mut servers = Vec::with_capacity(cfg.server.len());
        for s in &cfg.server {
            let addr: SocketAddr = s.address.parse().map_err(|_| ProxyError::InvalidConfig {
                path: format!("backend {}: server {}", cfg.name, s.name),
                message: format!("{:?} is not an address:port", s.address),
            })?;
            let server = match old.get(&(s.name.as_str(), addr)) {
                Some(prev) if prev.cfg == *s => Arc::clone(prev),
                Some(prev) => Arc::new(Server::new(
                    &cfg.name,
                    s.clone(),
                    addr,
                    prev.is_up(),
                    prev.admin(),
                    metrics.server(&cfg.name, &s.name),
                )),
                None => Arc::new(Server::new(
                    &cfg.name,
                    s.clone(),
                    addr,
                    // Without active checks a server is presumed up; with them it starts
                    // down until it passes `rise` checks.
                    cfg.health.check == CheckKind::None,
                    AdminState::Ready,
                    metrics.server(&cfg.name, &s.name),
                )),
            };
            servers.push(server);
        }
        let expect =
            StatusSet::parse(&cfg.health.expect).map_err(|message| ProxyError::InvalidConfig {
                path: format!("backend {}: health.expect", cfg.name),
                message,
            })?;
        let hash_header = match &cfg.hash_header {
            Some(h) => Some(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                ProxyError::InvalidConfig {
                    path: format!("backend {}: hash_header", cfg.name),
                    message: format!("{h:?} is not a header name"),
                }
            })?),
            None => None,
        };
        let seed = cfg
            .name
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        let backend = Arc::new(Backend {
            name: cfg.name.clone(),
            picker: Picker::new(cfg.balance, seed),
            selection: ArcSwap::from_pointee(Selection::build(&servers)),
            refresh_lock: Mutex::new(()),
            servers,
            expect,
            hash_header,
            metrics: metrics.backend(&cfg.name),
            events: events.clone(),
            checkers: Mutex::new(Vec::new()),
            cfg,
        });
        Ok(backend)
    }

    /// Start one checker task per server (they stop with `stop_checks` or when dropped).
    pub(crate) fn start_checks(self: &Arc<Self>) {
        let tasks: Vec<TaskHandle> = self
            .servers
            .iter()
            .map(|s| TaskHandle::spawn(check::run(Arc::downgrade(self), Arc::clone(s))))
            .collect();
        if let Ok(mut c) = self.checkers.lock() {
            *c = tasks;
        }
    }

    pub(crate) fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    pub(crate) fn stop_checks(&self) {
        if let Ok(mut c) = self.checkers.lock() {
            c.clear();
        }
    }

    pub(crate) fn selection(&self) -> arc_swap::Guard<Arc<Selection>> {
        self.selection.load()
    }

    /// Rebuild the selection snapshot from the servers' current states.
    pub(crate) fn refresh(&self) {
        let _serialised = self.refresh_lock.lock();
        let was_on_backup = self.selection.load().on_backup;
        let sel = Selection::build(&self.servers);
        if sel.on_backup != was_on_backup {
            let (kind, reason) = if sel.on_backup {
                (
                    "backup_active",
                    "no primary server is up: backups take the traffic",
                )
            } else {
                ("backup_inactive", "a primary server is up again")
            };
            self.events.emit(kind, "proxy", &self.name, reason);
        }
        if sel.servers.is_empty() {
            tracing::warn!(backend = %self.name, "no server available: requests get 503");
        }
        self.selection.store(Arc::new(sel));
    }

    /// The one place a server's health changes: metrics, event, log, snapshot.
    pub(crate) fn apply_transition(&self, server: &Server, t: &Transition) {
        let up = t.to == Status::Up;
        if server.is_up() == up {
            return;
        }
        server.set_up(up);
        let (kind, counter) = if up {
            ("server_up", &server.metrics.went_up)
        } else {
            ("server_down", &server.metrics.went_down)
        };
        counter.inc();
        self.events.emit(
            kind,
            "proxy",
            &format!("{}/{}", self.name, server.name),
            t.reason.clone(),
        );
        self.refresh();
    }

    /// Set a server's operator state (`ready`, `drain`, `maint`).
    pub(crate) fn set_admin(&self, server: &str, state: AdminState) -> Result<(), ProxyError> {
        let s = self.server(server)?;
        if s.admin() != state {
            s.set_admin(state);
            let kind = match state {
                AdminState::Ready => "server_ready",
                AdminState::Drain => "server_drain",
                AdminState::Maint => "server_maint",
            };
            self.events.emit(
                kind,
                "proxy",
                &format!("{}/{}", self.name, server),
                "operator request",
            );
            self.refresh();
        }
        Ok(())
    }

    fn server(&self, name: &str) -> Result<&Arc<Server>, ProxyError> {
        self.servers
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ProxyError::NotFound {
                what: format!("server {name:?} in backend {:?}", self.name),
            })
    }

    pub fn status(&self) -> BackendStatus {
        let sel = self.selection();
        BackendStatus {
            name: self.name.clone(),
            balance: self.cfg.balance,
            available: sel.servers.len(),
            on_backup: sel.on_backup,
            servers: self.servers.iter().map(|s| s.status()).collect(),
        }
    }
}

/// A backend as shown by the status API.
#[derive(Clone, Debug, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub balance: crate::config::Balance,
    /// Servers taking new traffic now.
    pub available: usize,
    pub on_backup: bool,
    pub servers: Vec<ServerStatus>,
}

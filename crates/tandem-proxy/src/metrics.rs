//! `tandem_proxy_*` metrics. Registered once by the proxy; per-server and per-frontend handles
//! are resolved when those are built so the request path only increments atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendClass {
    frontend: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendLabel {
    frontend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerClass {
    backend: String,
    server: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    backend: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerResult {
    backend: String,
    server: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerTo {
    backend: String,
    server: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendKind {
    backend: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// Status classes used as label values, indexed by `status / 100 - 1`.
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub(crate) fn class_index(status: u16) -> usize {
    (usize::from(status / 100)).clamp(1, 5) - 1
}

/// Why a request to a server (or to no server) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Connect,
    ConnectTimeout,
    TryTimeout,
    Reset,
    BadResponse,
    NoServer,
    ClientAborted,
}

impl ErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::TryTimeout => "try_timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::NoServer => "no_server",
            ErrorKind::ClientAborted => "client_aborted",
        }
    }
}

/// Every proxy metric family.
#[derive(Clone)]
pub struct ProxyMetrics {
    frontend_requests: Family<FrontendClass, Counter>,
    frontend_connections: Family<FrontendLabel, Gauge>,
    server_requests: Family<ServerClass, Counter>,
    server_up: Family<ServerLabel, Gauge>,
    server_inflight: Family<ServerLabel, Gauge>,
    checks: Family<ServerResult, Counter>,
    transitions: Family<ServerTo, Counter>,
    retries: Family<BackendLabel, Counter>,
    errors: Family<BackendKind, Counter>,
    duration: Family<BackendLabel, Histogram, fn() -> Histogram>,
    reloads: Family<ResultLabel, Counter>,
}

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl ProxyMetrics {
    /// Register under `registry` (expected to carry the `tandem` prefix) as `proxy_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            frontend_requests: Family::default(),
            frontend_connections: Family::default(),
            server_requests: Family::default(),
            server_up: Family::default(),
            server_inflight: Family::default(),
            checks: Family::default(),
            transitions: Family::default(),
            retries: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(new_histogram as fn() -> Histogram),
            reloads: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("proxy");
        r.register(
            "frontend_requests",
            "Requests answered by a frontend, by status class",
            m.frontend_requests.clone(),
        );
        r.register(
            "frontend_connections",
            "Open client connections per frontend",
            m.frontend_connections.clone(),
        );
        r.register(
            "server_requests",
            "Requests answered by a server, by status class",
            m.server_requests.clone(),
        );
        r.register(
            "server_up",
            "Server health as the balancer sees it (1 up, 0 down)",
            m.server_up.clone(),
        );
        r.register(
            "server_inflight",
            "Requests or connections in flight to a server",
            m.server_inflight.clone(),
        );
        r.register(
            "health_checks",
            "Active health check results per server",
            m.checks.clone(),
        );
        r.register(
            "health_transitions",
            "Server health transitions, by new state",
            m.transitions.clone(),
        );
        r.register(
            "retries",
            "Requests sent again to another server after a failed try",
            m.retries.clone(),
        );
        r.register(
            "errors",
            "Failed tries and requests, by kind",
            m.errors.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request to response headers, per backend",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        m
    }

    pub(crate) fn server(&self, backend: &str, server: &str) -> ServerMetrics {
        let l = ServerLabel {
            backend: backend.into(),
            server: server.into(),
        };
        let class = |c: &str| {
            self.server_requests
                .get_or_create(&ServerClass {
                    backend: backend.into(),
                    server: server.into(),
                    class: c.into(),
                })
                .clone()
        };
        let result = |r: &str| {
            self.checks
                .get_or_create(&ServerResult {
                    backend: backend.into(),
                    server: server.into(),
                    result: r.into(),
                })
                .clone()
        };
        let to = |t: &str| {
            self.transitions
                .get_or_create(&ServerTo {
                    backend: backend.into(),
                    server: server.into(),
                    to: t.into(),
                })
                .clone()
        };
        ServerMetrics {
            up: self.server_up.get_or_create(&l).clone(),
            inflight: self.server_inflight.get_or_create(&l).clone(),
            requests: CLASSES.map(class),
            check_passed: result("passed"),
            check_failed: result("failed"),
            went_up: to("up"),
            went_down: to("down"),
        }
    }

    pub(crate) fn backend(&self, backend: &str) -> BackendMetrics {
        let l = BackendLabel {
            backend: backend.into(),
        };
        BackendMetrics {
            name: backend.to_string(),
            retries: self.retries.get_or_create(&l).clone(),
            duration: self.duration.get_or_create(&l).clone(),
            errors: self.errors.clone(),
        }
    }

    pub(crate) fn frontend(&self, frontend: &str) -> FrontendMetrics {
        let class = |c: &str| {
            self.frontend_requests
                .get_or_create(&FrontendClass {
                    frontend: frontend.into(),
                    class: c.into(),
                })
                .clone()
        };
        FrontendMetrics {
            requests: CLASSES.map(class),
            connections: self
                .frontend_connections
                .get_or_create(&FrontendLabel {
                    frontend: frontend.into(),
                })
                .clone(),
        }
    }

    /// Drop the series of a server that left the configuration.
    pub(crate) fn forget_server(&self, backend: &str, server: &str) {
        let (b, s) = (backend.to_string(), server.to_string());
        let l = ServerLabel {
            backend: b.clone(),
            server: s.clone(),
        };
        self.server_up.remove(&l);
        self.server_inflight.remove(&l);
        for class in CLASSES {
            self.server_requests.remove(&ServerClass {
                backend: b.clone(),
                server: s.clone(),
                class: class.into(),
            });
        }
        for result in ["passed", "failed"] {
            self.checks.remove(&ServerResult {
                backend: b.clone(),
                server: s.clone(),
                result: result.into(),
            });
        }
        for to in ["up", "down"] {
            self.transitions.remove(&ServerTo {
                backend: b.clone(),
                server: s.clone(),
                to: to.into(),
            });
        }
    }

    /// Drop the series of a frontend that left the configuration.
    pub(crate) fn forget_frontend(&self, frontend: &str) {
        for class in CLASSES {
            self.frontend_requests.remove(&FrontendClass {
                frontend: frontend.into(),
                class: class.into(),
            });
        }
        self.frontend_connections.remove(&FrontendLabel {
            frontend: frontend.into(),
        });
    }

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }
}

/// Handles for one server.
#[derive(Clone)]
pub(crate) struct ServerMetrics {
    pub(crate) up: Gauge,
    pub(crate) inflight: Gauge,
    pub(crate) requests: [Counter; 5],
    pub(crate) check_passed: Counter,
    pub(crate) check_failed: Counter,
    pub(crate) went_up: Counter,
    pub(crate) went_down: Counter,
}

/// Handles for one backend.
#[derive(Clone)]
pub(crate) struct BackendMetrics {
    name: String,
    pub(crate) retries: Counter,
    pub(crate) duration: Histogram,
    errors: Family<BackendKind, Counter>,
}

impl BackendMetrics {
    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&BackendKind {
                backend: self.name.clone(),
                kind: kind.as_str().into(),
            })
            .inc();
    }
}

/// Handles for one frontend.
#[derive(Clone)]
pub(crate) struct FrontendMetrics {
    pub(crate) requests: [Counter; 5],
    pub(crate) connections: Gauge,
}

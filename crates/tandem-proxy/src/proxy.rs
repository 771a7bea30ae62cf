//! The proxy as a whole: binds listeners, builds backends, applies a new configuration without
//! dropping connections (reload), answers status and operator requests, and drains on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tandem_core::{EventBus, Shutdown};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, BackendStatus};
use crate::config::{self, BackendConfig, FrontendConfig, Mode};
use crate::http::FrontendRuntime;
use crate::metrics::ProxyMetrics;
use crate::server::AdminState;
use crate::{tcp, ProxyError};

/// State shared by a listener's accept loop and its connections.
struct FrontendShared {
    cfg: FrontendConfig,
    bound: SocketAddr,
    runtime: ArcSwap<FrontendRuntime>,
    /// Client connections allowed at once; resized by reloads.
    limit: Arc<Semaphore>,
    max_connections: std::sync::atomic::AtomicUsize,
}

impl FrontendShared {
    fn resize(&self, max: usize) {
        use std::sync::atomic::Ordering;
        let old = self.max_connections.swap(max, Ordering::Relaxed);
        if max > old {
            self.limit.add_permits(max - old);
        } else if old > max {
            // Only idle permits can be taken back; busy ones return to a smaller pool later.
            let _ = self.limit.forget_permits(old - max);
        }
    }
}

fn client_builder(cfg: &FrontendConfig) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.client_timeout.get())
        .max_buf_size(cfg.max_header_size)
        .half_close(true)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    Arc::new(builder)
}

struct Listener {
    shared: Arc<FrontendShared>,
    stop: Shutdown,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    listeners: Vec<Listener>,
    backends: HashMap<String, Arc<Backend>>,
}

/// The running load balancer.
pub struct Proxy {
    inner: Mutex<Inner>,
    metrics: ProxyMetrics,
    events: EventBus,
}

/// A frontend as shown by the status API.
#[derive(Clone, Debug, Serialize)]
pub struct FrontendStatus {
    pub name: String,
    pub listen: String,
    pub bound: String,
    pub mode: Mode,
    pub backend: String,
}

/// The whole proxy as shown by the status API.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    pub frontends: Vec<FrontendStatus>,
    pub backends: Vec<BackendStatus>,
}

impl Proxy {
    pub fn new(metrics: ProxyMetrics, events: EventBus) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            metrics,
            events,
        }
    }

    /// Apply a configuration: the first call starts the proxy, later ones reload it. Nothing
    /// changes unless the whole new configuration is valid and every new address binds;
    /// established connections and requests in flight are never cut.
    pub fn apply(
        &self,
        frontends: &[FrontendConfig],
        backends: &[BackendConfig],
    ) -> Result<(), ProxyError> {
        self.try_apply(frontends, backends)
    }

    /// Count a reload attempt (the caller knows about failures before `apply`, such as a file
    /// that does not parse).
    pub fn record_reload(&self, ok: bool) {
        self.metrics.reload(ok);
    }

    fn try_apply(
        &self,
        frontends: &[FrontendConfig],
        backends: &[BackendConfig],
    ) -> Result<(), ProxyError> {
        let issues = config::validate(frontends, backends);
        if !issues.is_empty() {
            return Err(ProxyError::Invalid(issues));
        }
        let mut inner = self.lock();
        let mut new_backends = HashMap::new();
        for b in backends {
            let built = Backend::build(
                b.clone(),
                inner.backends.get(&b.name).map(|a| a.as_ref()),
                &self.metrics,
                &self.events,
            )?;
            new_backends.insert(b.name.clone(), built);
        }
        // Bind every new address before touching anything that serves.
        let mut fresh = Vec::new();
        for fe in frontends {
            if let Some(l) = inner
                .listeners
                .iter()
                .find(|l| l.shared.cfg.listen == fe.listen)
            {
                if l.shared.cfg.mode != fe.mode {
                    return Err(ProxyError::NeedsRestart(format!(
                        "frontend {}: changing the mode of {} needs a restart",
                        fe.name, fe.listen
                    )));
                }
            } else {
                fresh.push((fe, bind(&fe.listen)?));
            }
        }
        let runtime = |fe: &FrontendConfig| -> Result<FrontendRuntime, ProxyError> {
            let backend = new_backends.get(&fe.backend).cloned().ok_or_else(|| {
                ProxyError::InvalidConfig {
                    path: format!("frontend {}", fe.name),
                    message: format!("no backend named {:?}", fe.backend),
                }
            })?;
            Ok(FrontendRuntime {
                name: fe.name.clone(),
                backend,
                access_log: fe.access_log,
                metrics: self.metrics.frontend(&fe.name),
                builder: client_builder(fe),
            })
        };
        // Commit: from here on nothing fails.
        let mut kept = Vec::new();
        for l in std::mem::take(&mut inner.listeners) {
            match frontends.iter().find(|f| f.listen == l.shared.cfg.listen) {
                Some(fe) => {
                    let rt = runtime(fe)?;
                    let old_name = l.shared.runtime.load().name.clone();
                    if old_name != fe.name {
                        self.metrics.forget_frontend(&old_name);
                    }
                    l.shared.runtime.store(Arc::new(rt));
                    l.shared.resize(fe.max_connections);
                    kept.push(l);
                }
                None => {
                    self.metrics.forget_frontend(&l.shared.runtime.load().name);
                    tracing::info!(listen = %l.shared.cfg.listen, "frontend removed: draining its connections");
                    l.stop.trigger();
                }
            }
        }
        for (fe, listener) in fresh {
            let bound = listener.local_addr().map_err(|source| ProxyError::Bind {
                addr: fe.listen.clone(),
                source,
            })?;
            let shared = Arc::new(FrontendShared {
                cfg: fe.clone(),
                bound,
                runtime: ArcSwap::from_pointee(runtime(fe)?),
                limit: Arc::new(Semaphore::new(fe.max_connections)),
                max_connections: std::sync::atomic::AtomicUsize::new(fe.max_connections),
            });
            let stop = Shutdown::new();
            let task = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
            tracing::info!(frontend = %fe.name, addr = %bound, mode = ?fe.mode, "listening");
            kept.push(Listener { shared, stop, task });
        }
        inner.listeners = kept;
        for old in inner.backends.values() {
            old.stop_checks();
            // Series of servers that are gone would otherwise stay in /metrics.
            for s in old.servers() {
                let kept = new_backends
                    .get(&old.name)
                    .is_some_and(|b| b.servers().iter().any(|n| n.name == s.name));
                if !kept {
                    self.metrics.forget_server(&old.name, &s.name);
                }
            }
        }
        for b in new_backends.values() {
            b.start_checks();
        }
        inner.backends = new_backends;
        Ok(())
    }

    pub fn status(&self) -> ProxyStatus {
        let inner = self.lock();
        let mut backends: Vec<BackendStatus> =
            inner.backends.values().map(|b| b.status()).collect();
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        ProxyStatus {
            frontends: inner
                .listeners
                .iter()
                .map(|l| FrontendStatus {
                    name: l.shared.runtime.load().name.clone(),
                    listen: l.shared.cfg.listen.clone(),
                    bound: l.shared.bound.to_string(),
                    mode: l.shared.cfg.mode,
                    backend: l.shared.runtime.load().backend.name.clone(),
                })
                .collect(),
            backends,
        }
    }

    /// Set a server `ready`, `drain` or `maint`.
    pub fn set_server_state(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), ProxyError> {
        let b = self
            .lock()
            .backends
            .get(backend)
            .cloned()
            .ok_or_else(|| ProxyError::NotFound {
                what: format!("backend {backend:?}"),
            })?;
        b.set_admin(server, state)
    }

    /// Stop accepting, let connections finish their requests, and give up after `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        let listeners = {
            let mut inner = self.lock();
            for b in inner.backends.values() {
                b.stop_checks();
            }
            std::mem::take(&mut inner.listeners)
        };
        for l in &listeners {
            l.stop.trigger();
        }
        let all = futures_join(listeners.into_iter().map(|l| l.task).collect());
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "drain deadline passed: closing remaining connections"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

fn bind(listen: &str) -> Result<TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind {
        addr: listen.to_string(),
        source,
    };
    let addr: SocketAddr = listen.parse().map_err(|_| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an address:port",
        ))
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Accept until stopped, then drain: HTTP connections finish the request in flight and close;
/// TCP relays run to their end. The caller bounds the drain with a deadline.
async fn accept_loop(listener: TcpListener, fe: Arc<FrontendShared>, stop: Shutdown) {
    let graceful = GracefulShutdown::new();
    let limit = fe.limit.clone();
    let tcp_conns = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(frontend = %fe.cfg.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let rt = fe.runtime.load_full();
        match fe.cfg.mode {
            Mode::Http => serve_http(&rt.builder, &graceful, stream, peer, fe.clone(), permit),
            Mode::Tcp => {
                let conns = tcp_conns.clone();
                let gauge = rt.metrics.connections.clone();
                gauge.inc();
                conns.spawn(async move {
                    tcp::serve(stream, peer, rt).await;
                    gauge.dec();
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    tcp_conns.close();
    tcp_conns.wait().await;
}

fn serve_http(
    builder: &Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    fe: Arc<FrontendShared>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let gauge = fe.runtime.load().metrics.connections.clone();
    let svc = service_fn(move |req| {
        // Each request reads the frontend's current runtime, so a reload applies to the next
        // request on an established connection.
        let rt = fe.runtime.load_full();
        crate::http::handle(req, peer, rt)
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .into_owned();
    let conn = graceful.watch(conn);
    gauge.inc();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
        }
        gauge.dec();
        drop(permit);
    });
}

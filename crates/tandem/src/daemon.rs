//! `tandem run`: wires the configured components together, serves until SIGTERM/SIGINT,
//! reloads on SIGHUP or `POST /reload`, and drains with a deadline on the way out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use prometheus_client::registry::Registry;
use tandem_core::{EventBus, Shutdown};
use tandem_proxy::{Proxy, ProxyMetrics};
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{self, AdminCtx};
use crate::cluster::ClusterRuntime;
use crate::config::Config;

/// Re-reads the config file and applies what can change without a restart.
pub struct Reloader {
    path: PathBuf,
    proxy: Arc<Proxy>,
    current: Mutex<Config>,
    token: Mutex<Option<String>>,
    events: EventBus,
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn drain_timeout(&self) -> Option<std::time::Duration> {
        self.current
            .lock()
            .ok()
            .map(|c| c.runtime.drain_timeout.get())
    }

    pub fn token(&self) -> Option<String> {
        self.token.lock().map(|t| t.clone()).unwrap_or(None)
    }

    /// Load, validate and apply the config file; on any error the running config stays.
    pub async fn reload(&self, why: &str) -> Result<(), String> {
        let _one_at_a_time = self.serial.lock().await;
        let result = self.try_reload();
        self.proxy.record_reload(result.is_ok());
        match &result {
            Ok(()) => self.events.emit(
                "config_reloaded",
                "daemon",
                &self.path.display().to_string(),
                why,
            ),
            Err(e) => {
                tracing::error!(error = %e, trigger = why, "reload rejected: the running configuration stays");
                self.events.emit(
                    "config_rejected",
                    "daemon",
                    &self.path.display().to_string(),
                    e.clone(),
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), String> {
        let new = Config::load(&self.path).map_err(|e| e.to_string())?;
        let token = new.admin_token(&self.path)?;
        {
            let current = self
                .current
                .lock()
                .map_err(|_| "internal: config lock poisoned".to_string())?;
            if new.admin.as_ref().map(|a| &a.listen) != current.admin.as_ref().map(|a| &a.listen) {
                return Err("[admin] listen changed: that needs a restart".to_string());
            }
            if new.runtime.threads != current.runtime.threads {
                return Err("[runtime] threads changed: that needs a restart".to_string());
            }
            if new.vip != current.vip {
                return Err("[[vip]] changed: that needs a restart".to_string());
            }
            if new.notify != current.notify {
                return Err("[[notify]] changed: that needs a restart".to_string());
            }
            if (&new.node, &new.cluster, &new.service)
                != (&current.node, &current.cluster, &current.service)
            {
                return Err(
                    "[node], [cluster] or [service] changed: that needs a restart".to_string(),
                );
            }
        }
        self.proxy
            .apply(&new.frontend, &new.backend)
            .map_err(|e| e.to_string())?;
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
        if let Ok(mut c) = self.current.lock() {
            *c = new;
        }
        Ok(())
    }
}

/// Run the daemon until a stop signal; `Err` means it could not start.
pub fn run(path: &Path, config: Config) -> anyhow::Result<()> {
    // One thread: a current-thread runtime, without the work-stealing scheduler's overhead.
    let mut rt = match config.runtime.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt
        .enable_all()
        .thread_name("tandem")
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(path, config))
}

async fn serve(path: &Path, config: Config) -> anyhow::Result<()> {
    let started = tandem_core::clock::now();
    let mut registry = Registry::with_prefix("tandem");
    // With a data dir, events are kept across restarts.
    let events = match &config.node {
        Some(n) => {
            let path = n.data_dir.join("events.jsonl");
            EventBus::with_log(&path)
                .with_context(|| format!("opening the event log {}", path.display()))?
        }
        None => EventBus::new(),
    };
    let log_dropped = prometheus_client::metrics::counter::Counter::<u64>::default();
    registry.sub_registry_with_prefix("events").register(
        "log_dropped",
        "Events not written to the event log file because its writer was behind (kept in memory and sent on)",
        log_dropped.clone(),
    );
    events.on_log_drop(Arc::new(move || {
        log_dropped.inc();
    }));
    let proxy = Arc::new(Proxy::new(
        ProxyMetrics::register(&mut registry),
        events.clone(),
    ));
    let notify_metrics = crate::notify::NotifyMetrics::register(&mut registry);
    let _notifiers = crate::notify::start(&config.notify, &events, &notify_metrics);
    let token = config.admin_token(path).map_err(anyhow::Error::msg)?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    proxy
        .apply(&config.frontend, &config.backend)
        .context("starting the proxy")?;
    let reloader = Arc::new(Reloader {
        path: path.to_path_buf(),
        proxy: proxy.clone(),
        current: Mutex::new(config.clone()),
        token: Mutex::new(token),
        events: events.clone(),
        serial: tokio::sync::Mutex::new(()),
    });
    let admin_listener = match &config.admin {
        Some(a) => {
            let addr: SocketAddr = a.listen.parse().context("admin.listen")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the admin API"))?;
            Some((addr, listener))
        }
        None => None,
    };
    let api_addr = match &admin_listener {
        Some((_, l)) => Some(l.local_addr()?),
        None => None,
    };
    let vrrp_metrics = tandem_vrrp::VrrpMetrics::register(&mut registry);
    let cluster = ClusterRuntime::start(&config, api_addr, &events, &mut registry).await?;
    let vips = crate::vip::VipRuntime::start(
        &config.vip,
        cluster.as_ref().map(|c| c.handle.clone()),
        &events,
        &vrrp_metrics,
    )
    .await?;
    let stop = Shutdown::new();
    let admin_task = match admin_listener {
        Some((addr, listener)) => {
            tracing::info!(component = "admin", addr = %listener.local_addr()?, "listening");
            let ctx = AdminCtx {
                proxy: proxy.clone(),
                cluster: cluster.as_ref().map(|c| c.handle.clone()),
                registry: Arc::new(registry),
                events: events.clone(),
                reloader: reloader.clone(),
                loopback: addr.ip().is_loopback(),
                allow_faults: config.admin.as_ref().is_some_and(|a| a.allow_faults),
                started,
            };
            Some(tokio::spawn(admin::serve(listener, ctx, stop.clone())))
        }
        None => None,
    };
    events.emit(
        "started",
        "daemon",
        &path.display().to_string(),
        "tandem run",
    );

    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = reloader.reload("SIGHUP").await;
            }
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
        }
    }
    // The drain deadline of the configuration running now (a reload may have changed it).
    let deadline = reloader
        .drain_timeout()
        .unwrap_or(config.runtime.drain_timeout.get());
    // Virtual addresses go first (a master sends priority 0 for a fast takeover), then the
    // lease, so another node can take over while this one drains.
    vips.stop().await;
    if let Some(c) = cluster {
        c.stop().await;
    }
    proxy.shutdown(deadline).await;
    stop.trigger();
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(deadline, t).await;
    }
    // The last events (the demotion, the release) reach the file before the process ends.
    let ev = events.clone();
    let _ = tokio::task::spawn_blocking(move || ev.flush(std::time::Duration::from_secs(2))).await;
    tracing::info!("stopped");
    Ok(())
}

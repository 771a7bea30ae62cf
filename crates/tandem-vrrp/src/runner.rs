//! One VIP instance in `vrrp` mode: the engine (`fsm::Instance`) with its I/O around it.
//! Packets, timers, tracking results and the interface's state come in as events; the engine's
//! actions go out as adverts, netlink address changes, gratuitous ARPs, metrics, bus events and
//! the notify command.

use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_core::clock::{self, Instant};
use tandem_core::{EventBus, Shutdown, TaskHandle};
use tokio::sync::mpsc;

use crate::config::{VipAddr, VipConfig};
use crate::fsm::{self, Action, Event, Instance, State};
use crate::metrics::{state_label, VrrpMetrics};
use crate::net::{accept, GarpSocket, RxFilter, VrrpSocket};
use crate::netlink::{Link, NetError, Netlink};
use crate::packet::{Advert, ChecksumMode};
use crate::track::{self, TrackUpdate};

/// What every VIP instance of a node shares.
#[derive(Clone)]
pub struct VipContext {
    pub events: EventBus,
    pub metrics: VrrpMetrics,
    pub netlink: Netlink,
}

/// Why a VIP could not start.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("vip {name}: {source}")]
    Net { name: String, source: NetError },
    #[error("vip {name}: interface {iface} has no IPv4 address of its own to send from")]
    NoSource { name: String, iface: String },
    #[error(
        "vip {name}: opening the raw sockets on {iface}: {source} (needs root or CAP_NET_RAW)"
    )]
    Socket {
        name: String,
        iface: String,
        source: std::io::Error,
    },
}

/// The interface a VIP lives on, as found at startup.
pub(crate) struct Iface {
    pub link: Link,
    pub name: String,
    pub addrs: Vec<VipAddr>,
}

/// Everything that acts on the outside world for one instance.
pub(crate) struct Outputs {
    pub name: String,
    pub cfg: VipConfig,
    pub ctx: VipContext,
    pub ifindex: u32,
    pub addrs: Vec<VipAddr>,
    pub garp: GarpSocket,
    garp_task: Option<TaskHandle>,
    /// The kernel drops the addresses this long after their last refresh (see `lifetime`).
    pub lifetime: Duration,
    notify: Option<mpsc::UnboundedSender<(State, State, String)>>,
    _notify_task: Option<TaskHandle>,
}

impl Outputs {
    pub(crate) fn new(
        name: String,
        cfg: VipConfig,
        ctx: VipContext,
        iface: &Iface,
    ) -> Result<Outputs, VipError> {
        let garp =
            GarpSocket::open(iface.link.index, iface.link.mac).map_err(|e| VipError::Socket {
                name: name.clone(),
                iface: iface.name.clone(),
                source: e,
            })?;
        let (notify, notify_task) = match &cfg.notify {
            Some(cmd) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let task =
                    TaskHandle::spawn(notify_worker(cmd.clone(), name.clone(), cfg.addrs(), rx));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        Ok(Outputs {
            lifetime: lifetime(&cfg),
            addrs: cfg.addrs(),
            ifindex: iface.link.index,
            name,
            cfg,
            ctx,
            garp,
            garp_task: None,
            notify,
            _notify_task: notify_task,
        })
    }

    /// Add (or refresh) the addresses, valid for `self.lifetime` without a refresh.
    pub(crate) async fn add_addresses(&self) {
        for a in &self.addrs {
            let life = Some(self.lifetime.as_secs() as u32);
            if let Err(e) = self.ctx.netlink.add(self.ifindex, *a, life).await {
                tracing::error!(vip = %self.name, addr = %a.ip, error = %e, "cannot add the virtual address");
                self.ctx.metrics.address_error(&self.name);
            }
        }
    }

    pub(crate) async fn remove_addresses(&self) {
        for a in &self.addrs {
            if let Err(e) = self.ctx.netlink.del(self.ifindex, *a).await {
                tracing::error!(vip = %self.name, addr = %a.ip, error = %e, "cannot remove the virtual address");
                self.ctx.metrics.address_error(&self.name);
            }
        }
    }

    /// `garp_repeat` rounds of gratuitous ARPs, `garp_interval` apart, in the background (a
    /// new burst replaces one still running).
    pub(crate) fn garp_burst(&mut self, rounds: u32) {
        let interval = self.cfg.garp_interval.get();
        let addrs: Vec<Ipv4Addr> = self.addrs.iter().map(|a| a.ip).collect();
        let Ok(sock) = GarpSocket::open(self.ifindex, self.garp.mac()) else {
            tracing::warn!(vip = %self.name, "cannot open a packet socket for gratuitous ARP");
            return;
        };
        let (metrics, name) = (self.ctx.metrics.clone(), self.name.clone());
        self.garp_task = Some(TaskHandle::spawn(async move {
            for i in 0..rounds {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                for ip in &addrs {
                    match sock.send(*ip) {
                        Ok(()) => metrics.garp(&name),
                        Err(e) => {
                            tracing::warn!(vip = %name, addr = %ip, error = %e, "gratuitous ARP not sent")
                        }
                    }
                }
            }
        }));
    }

    pub(crate) fn garp_running(&self) -> bool {
        self.garp_task.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub(crate) fn stop_garp(&mut self) {
        self.garp_task = None;
    }

    /// Log, count, publish and notify one state change.
    pub(crate) fn changed(&self, from: State, to: State, reason: &str) {
        tracing::info!(vip = %self.name, from = state_label(from), to = state_label(to), reason, "vip state changed");
        self.ctx.metrics.set_state(&self.name, from, to);
        let kind = match to {
            State::Master => "vip_master",
            State::Backup => "vip_backup",
            State::Initialize => "vip_stopped",
        };
        self.ctx.events.emit(
            kind,
            "vrrp",
            &self.name,
            format!("{} -> {}: {reason}", state_label(from), state_label(to)),
        );
        if let Some(n) = &self.notify {
            let _ = n.send((from, to, reason.to_string()));
        }
    }
}

/// How long a virtual address outlives its last refresh: a master refreshes it every quarter of
/// that, so several refreshes can be late, and a tandem that is killed or hangs leaves it for
/// seconds, not until it runs again. Whole seconds (the kernel's unit), at least 2: three
/// advertisement intervals plus one second in vrrp mode, 2 s in leader mode (the lease deadline
/// removes it much sooner while tandem runs).
pub fn lifetime(cfg: &VipConfig) -> Duration {
    let secs = match cfg.mode {
        crate::config::VipMode::Vrrp => {
            (cfg.advert_int.get().as_secs_f64() * 3.0).ceil() as u64 + 1
        }
        crate::config::VipMode::Leader => 2,
    };
    Duration::from_secs(secs.max(2))
}

/// Runs the notify command for each change, in order, one at a time (30 s at most each).
async fn notify_worker(
    cmd: String,
    name: String,
    addrs: Vec<VipAddr>,
    mut rx: mpsc::UnboundedReceiver<(State, State, String)>,
) {
    let list = addrs
        .iter()
        .map(|a| format!("{}/{}", a.ip, a.prefix))
        .collect::<Vec<_>>()
        .join(" ");
    while let Some((from, to, reason)) = rx.recv().await {
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .env("TANDEM_VIP", &name)
            .env("TANDEM_VIP_STATE", state_label(to))
            .env("TANDEM_VIP_FROM", state_label(from))
            .env("TANDEM_VIP_REASON", &reason)
            .env("TANDEM_VIP_ADDRESSES", &list)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match child {
            Err(e) => tracing::warn!(vip = %name, error = %e, "cannot run the notify command"),
            Ok(mut c) => match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
                Ok(Ok(st)) if !st.success() => {
                    tracing::warn!(vip = %name, status = %st, "the notify command failed")
                }
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(vip = %name, "the notify command ran for 30s: killed");
                    let _ = c.kill().await;
                }
            },
        }
    }
}

/// Find the interface and our own address on it; remove virtual addresses a crashed run may
/// have left (a node starts as backup, or in leader mode as not primary).
pub(crate) async fn prepare(
    name: &str,
    cfg: &VipConfig,
    netlink: &Netlink,
) -> Result<Iface, VipError> {
    let net = |source| VipError::Net {
        name: name.to_string(),
        source,
    };
    let link = netlink.link(&cfg.interface).await.map_err(net)?;
    let vips = cfg.addrs();
    let present = netlink.ipv4_addrs(link.index).await.map_err(net)?;
    for a in vips.iter().filter(|a| present.iter().any(|p| p.ip == a.ip)) {
        tracing::warn!(vip = %name, addr = %a.ip, "removing a virtual address left behind by an earlier run");
        netlink.del(link.index, *a).await.map_err(net)?;
    }
    let own: Vec<VipAddr> = present
        .into_iter()
        .filter(|p| !vips.iter().any(|v| v.ip == p.ip))
        .collect();
    Ok(Iface {
        link,
        name: cfg.interface.clone(),
        addrs: own,
    })
}

/// A prepared `vrrp` instance, ready to run.
pub struct VrrpInstance {
    out: Outputs,
    sock: VrrpSocket,
    filter: RxFilter,
    src: Ipv4Addr,
}

impl VrrpInstance {
    /// Look up the interface, clean up, open the sockets. Errors here stop `tandem run`.
    pub async fn prepare(
        name: String,
        cfg: VipConfig,
        ctx: VipContext,
    ) -> Result<VrrpInstance, VipError> {
        let iface = prepare(&name, &cfg, &ctx.netlink).await?;
        let src = iface
            .addrs
            .first()
            .map(|a| a.ip)
            .ok_or_else(|| VipError::NoSource {
                name: name.clone(),
                iface: cfg.interface.clone(),
            })?;
        let sock = VrrpSocket::open(&cfg.interface, iface.link.index, src, &cfg.unicast_peers)
            .map_err(|e| VipError::Socket {
                name: name.clone(),
                iface: cfg.interface.clone(),
                source: e,
            })?;
        let filter = RxFilter {
            vrid: cfg.vrid.unwrap_or(0),
            version: cfg.protocol_version(),
            interval_cs: cfg.interval_cs(),
            own: src,
            peers: cfg.unicast_peers.clone(),
        };
        ctx.metrics.init(&name);
        let out = Outputs::new(name, cfg, ctx, &iface)?;
        Ok(VrrpInstance {
            out,
            sock,
            filter,
            src,
        })
    }

    /// Run until `stop`; on the way out a master sends priority 0 and removes its addresses.
    pub async fn run(self, stop: Shutdown) {
        let VrrpInstance {
            mut out,
            sock,
            filter,
            src,
        } = self;
        let cfg = out.cfg.clone();
        let mut inst = Instance::new(fsm::Config {
            vrid: filter.vrid,
            priority: cfg.priority,
            interval_cs: cfg.interval_cs(),
            preempt: cfg.preempt && cfg.preempt_delay.get().is_zero(),
            version: cfg.protocol_version(),
            primary_ip: src,
        });
        let mode: ChecksumMode = cfg.v3_checksum.into();
        let started = clock::now();
        let preempt_at = (cfg.preempt && !cfg.preempt_delay.get().is_zero())
            .then(|| started + cfg.preempt_delay.get());
        let (track_tx, mut track_rx) = mpsc::unbounded_channel::<TrackUpdate>();
        let _tracks = track::start(&cfg.track, out.ctx.netlink.clone(), track_tx);
        let mut track_ok: Vec<Option<bool>> = vec![None; cfg.track.len()];
        let mut link_up = true;
        let mut next_link_poll = started;
        let mut next_refresh: Option<Instant> = None;
        let mut next_renew: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        out.ctx.metrics.set_priority(&out.name, cfg.priority);

        let mut ex = Exec {
            out: &mut out,
            sock: &sock,
            mode,
            cfg: &cfg,
        };
        ex.apply(inst.handle(started, Event::Startup), None).await;
        loop {
            let now = clock::now();
            let mut wake = next_link_poll;
            for t in [inst.next_deadline(), preempt_at, next_refresh, next_renew]
                .into_iter()
                .flatten()
            {
                wake = wake.min(t);
            }
            tokio::select! {
                _ = stop.wait() => break,
                r = sock.recv(&mut buf) => {
                    let n = match r {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(vip = %ex.out.name, error = %e, "reading the VRRP socket");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    match accept(&buf[..n], &filter) {
                        Ok(None) => {}
                        Err(why) => {
                            tracing::debug!(vip = %ex.out.name, reason = %why, "VRRP packet dropped");
                            ex.out.ctx.metrics.drop(&ex.out.name, why);
                        }
                        Ok(Some((from, adv))) => {
                            ex.out.ctx.metrics.received(&ex.out.name);
                            check_addresses(&ex.out.name, &adv, &ex.out.addrs);
                            let ev = Event::Advert { from, priority: adv.priority, interval_cs: adv.interval_cs };
                            let acts = inst.handle(clock::now(), ev);
                            ex.apply(acts, None).await;
                        }
                    }
                }
                Some(u) = track_rx.recv() => {
                    if let Some(slot) = track_ok.get_mut(u.index) {
                        *slot = Some(u.ok);
                    }
                    let what = cfg.track.get(u.index).map(track::describe).unwrap_or_default();
                    tracing::info!(vip = %ex.out.name, track = %what, ok = u.ok, "tracked check changed");
                    ex.retrack(&mut inst, &track_ok, link_up, &what).await;
                }
                _ = tokio::time::sleep_until(wake.max(now)) => {
                    let now = clock::now();
                    if now >= next_link_poll {
                        next_link_poll = now + Duration::from_millis(100);
                        if let Ok(l) = ex.out.ctx.netlink.link(&cfg.interface).await {
                            if l.up != link_up {
                                link_up = l.up;
                                let what = format!("interface {} {}", cfg.interface, if l.up { "up" } else { "down" });
                                ex.retrack(&mut inst, &track_ok, link_up, &what).await;
                            }
                        }
                    }
                    if preempt_at.is_some_and(|t| now >= t) {
                        inst.set_preempt(true);
                    }
                    ex.apply(inst.handle(now, Event::Tick), None).await;
                    if inst.state() == State::Master {
                        // Keep the addresses' lifetime ahead (see `lifetime`).
                        let every = ex.out.lifetime / 4;
                        match next_renew {
                            Some(t) if now >= t => {
                                ex.out.add_addresses().await;
                                next_renew = Some(now + every);
                            }
                            None => next_renew = Some(now + every),
                            _ => {}
                        }
                        let period = cfg.garp_refresh.get();
                        if !period.is_zero() {
                            match next_refresh {
                                Some(t) if now >= t => {
                                    ex.out.garp_burst(1);
                                    next_refresh = Some(now + period);
                                }
                                None => next_refresh = Some(now + period),
                                _ => {}
                            }
                        }
                    } else {
                        next_refresh = None;
                        next_renew = None;
                    }
                }
            }
        }
        let acts = inst.handle(clock::now(), Event::Shutdown);
        ex.apply(acts, Some("stopping (priority 0 sent)")).await;
        ex.out.stop_garp();
    }
}

/// RFC 5798 6.4.2: a mismatched address list is logged (not dropped: the VRID decides).
fn check_addresses(name: &str, adv: &Advert, ours: &[VipAddr]) {
    let theirs: std::collections::BTreeSet<Ipv4Addr> = adv.addresses.iter().copied().collect();
    let mine: std::collections::BTreeSet<Ipv4Addr> = ours.iter().map(|a| a.ip).collect();
    if theirs != mine {
        tracing::debug!(vip = %name, ?theirs, ?mine, "advertised addresses differ from ours");
    }
}

/// Carries out the engine's actions.
struct Exec<'a> {
    out: &'a mut Outputs,
    sock: &'a VrrpSocket,
    mode: ChecksumMode,
    cfg: &'a VipConfig,
}

impl Exec<'_> {
    async fn apply(&mut self, actions: Vec<Action>, reason: Option<&str>) {
        for a in actions {
            match a {
                Action::Send { priority } => {
                    let adv = Advert {
                        version: self.cfg.protocol_version(),
                        vrid: self.cfg.vrid.unwrap_or(0),
                        priority,
                        interval_cs: self.cfg.interval_cs(),
                        addresses: self.out.addrs.iter().map(|a| a.ip).collect(),
                    };
                    match self.sock.send(&adv, self.mode) {
                        Ok(()) => self.out.ctx.metrics.sent(&self.out.name),
                        Err(e) => {
                            tracing::warn!(vip = %self.out.name, error = %e, "advertisement not sent")
                        }
                    }
                }
                Action::AddAddresses => self.out.add_addresses().await,
                Action::RemoveAddresses => {
                    self.out.stop_garp();
                    self.out.remove_addresses().await
                }
                Action::Garp => {
                    // A master that keeps hearing a lower master (one-way loss) would ask for a
                    // burst per advertisement: one burst at a time is enough.
                    if !self.out.garp_running() {
                        let rounds = self.cfg.garp_repeat;
                        self.out.garp_burst(rounds)
                    }
                }
                Action::Changed {
                    from,
                    to,
                    reason: r,
                } => self.out.changed(from, to, reason.unwrap_or(&r)),
            }
        }
    }

    /// Recompute the effective priority and the out-of-service condition after tracking or
    /// the interface changed; `what` is the change, for the reason.
    async fn retrack(
        &mut self,
        inst: &mut Instance,
        track_ok: &[Option<bool>],
        link_up: bool,
        what: &str,
    ) {
        let (prio, fault) = track::effective(self.cfg.priority, &self.cfg.track, track_ok, link_up);
        let now = clock::now();
        if fault && inst.state() != State::Initialize {
            let why = format!("out of service: {what}");
            let acts = inst.handle(now, Event::Shutdown);
            self.apply(acts, Some(&why)).await;
        } else if !fault && inst.state() == State::Initialize {
            let why = format!("back in service: {what}");
            let acts = inst.handle(now, Event::Startup);
            self.apply(acts, Some(&why)).await;
        }
        if prio != inst.priority() {
            tracing::info!(vip = %self.out.name, priority = prio, reason = %what, "effective priority changed");
            self.out.ctx.metrics.set_priority(&self.out.name, prio);
            let acts = inst.handle(now, Event::Priority(prio));
            self.apply(acts, None).await;
        }
    }
}

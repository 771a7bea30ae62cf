//! What a VIP instance does to the outside world, in either mode: the interface lookup and
//! cleanup at start, virtual addresses (with their kernel lifetime), gratuitous ARP bursts, and
//! the log line, metrics, bus event and notify command of every state change.

use std::time::Duration;

use tandem_core::{EventBus, TaskHandle};
use tokio::sync::mpsc;

use crate::config::{VipAddr, VipConfig};
use crate::fsm::State;
use crate::metrics::{state_label, VrrpMetrics};
use crate::net::GarpSocket;
use crate::netlink::{Link, NetError, Netlink};
use std::net::Ipv4Addr;

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
    /// Its own addresses (not virtual), primary first.
    pub addrs: Vec<VipAddr>,
    /// Virtual addresses an address owner (priority 255) already had: its own, never removed.
    pub owned: Vec<VipAddr>,
}

/// Everything that acts on the outside world for one instance.
pub(crate) struct Outputs {
    pub name: String,
    pub cfg: VipConfig,
    pub ctx: VipContext,
    pub ifindex: u32,
    /// Every virtual address (advertised, announced by gratuitous ARP).
    pub addrs: Vec<VipAddr>,
    /// Those that tandem adds and removes (an address owner's own addresses are left alone).
    pub managed: Vec<VipAddr>,
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
            managed: cfg
                .addrs()
                .into_iter()
                .filter(|a| !iface.owned.contains(a))
                .collect(),
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
        for a in &self.managed {
            let life = Some(self.lifetime.as_secs() as u32);
            if let Err(e) = self.ctx.netlink.add(self.ifindex, *a, life).await {
                tracing::error!(vip = %self.name, addr = %a.ip, error = %e, "cannot add the virtual address");
                self.ctx.metrics.address_error(&self.name);
            }
        }
    }

    pub(crate) async fn remove_addresses(&self) {
        for a in &self.managed {
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
    let on_link: Vec<VipAddr> = vips
        .iter()
        .filter(|a| present.iter().any(|p| p.ip == a.ip))
        .copied()
        .collect();
    // RFC 5798 3: the owner (priority 255) has the virtual addresses as real ones.
    let owner = cfg.mode == crate::config::VipMode::Vrrp && cfg.priority == 255;
    let mut owned = Vec::new();
    for a in on_link {
        if owner {
            tracing::info!(vip = %name, addr = %a.ip, "address owner: the address is this router's own, never removed");
            owned.push(a);
        } else {
            tracing::warn!(vip = %name, addr = %a.ip, "removing a virtual address left behind by an earlier run");
            netlink.del(link.index, a).await.map_err(net)?;
        }
    }
    let mut own: Vec<VipAddr> = present
        .into_iter()
        .filter(|p| !vips.iter().any(|v| v.ip == p.ip))
        .collect();
    // An owner may have nothing else to send from.
    own.extend(owned.iter().copied());
    Ok(Iface {
        link,
        name: cfg.interface.clone(),
        addrs: own,
        owned,
    })
}

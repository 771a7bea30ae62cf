//! One VIP instance in `vrrp` mode: the engine (`fsm::Instance`) with its I/O around it.
//! Packets, timers, tracking results and the interface's state come in as events; the engine's
//! actions go out through `Outputs` (adverts on the socket, addresses, gratuitous ARPs, metrics,
//! bus events and the notify command).

use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_core::clock::{self, Instant};
use tandem_core::Shutdown;
use tokio::sync::mpsc;

use crate::config::{VipAddr, VipConfig};
use crate::fsm::{self, Action, Event, Instance, State};
use crate::net::{accept, RxFilter, VrrpSocket};
use crate::netlink::NetError;
use crate::outputs::{prepare, Outputs, VipContext, VipError};
use crate::packet::{Advert, ChecksumMode};
use crate::track::{self, TrackUpdate};

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
        let started = clock::protocol_now();
        let delayed = cfg.preempt && !cfg.preempt_delay.get().is_zero();
        let inst = Instance::new(fsm::Config {
            vrid: filter.vrid,
            priority: cfg.priority,
            interval_cs: cfg.interval_cs(),
            // With a preempt delay, preemption is switched on once the delay has passed.
            preempt: cfg.preempt && !delayed,
            version: cfg.protocol_version(),
            primary_ip: src,
        });
        let (track_tx, mut track_rx) = mpsc::unbounded_channel::<TrackUpdate>();
        let _tracks = track::start(&cfg.track, out.ctx.netlink.clone(), track_tx);
        out.ctx.metrics.set_priority(&out.name, cfg.priority);
        let mut r = Running {
            ex: Exec {
                out: &mut out,
                sock: &sock,
                mode: cfg.v3_checksum.into(),
                cfg: &cfg,
            },
            inst,
            track_ok: vec![None; cfg.track.len()],
            link_up: true,
            preempt_at: delayed.then(|| started + cfg.preempt_delay.get()),
            next_link_poll: started,
            next_garp_refresh: None,
            next_renew: None,
        };
        let acts = r.inst.handle(started, Event::Startup);
        r.ex.apply(acts, None).await;
        let mut buf = vec![0u8; 2048];
        loop {
            let wake = r.next_wake();
            tokio::select! {
                _ = stop.wait() => break,
                got = sock.recv(&mut buf) => match got {
                    Ok(n) => r.on_packet(&buf[..n], &filter).await,
                    Err(e) => {
                        tracing::warn!(vip = %r.ex.out.name, error = %e, "reading the VRRP socket");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(u) = track_rx.recv() => r.on_track(u).await,
                _ = clock::protocol_sleep_until(wake) => r.on_tick().await,
            }
        }
        let why = if r.inst.state() == State::Master {
            "stopping (priority 0 sent)"
        } else {
            "stopping"
        };
        let acts = r.inst.handle(clock::protocol_now(), Event::Shutdown);
        r.ex.apply(acts, Some(why)).await;
        r.ex.out.stop_garp();
    }
}

/// The state of a running instance around its engine: tracking results, the link, timers.
struct Running<'a> {
    ex: Exec<'a>,
    inst: Instance,
    track_ok: Vec<Option<bool>>,
    link_up: bool,
    preempt_at: Option<Instant>,
    next_link_poll: Instant,
    next_garp_refresh: Option<Instant>,
    next_renew: Option<Instant>,
}

/// How often the interface's link state is read.
const LINK_POLL: Duration = Duration::from_millis(100);

impl Running<'_> {
    fn next_wake(&self) -> Instant {
        let timers = [
            self.inst.next_deadline(),
            self.preempt_at,
            self.next_garp_refresh,
            self.next_renew,
        ];
        let wake = timers
            .into_iter()
            .flatten()
            .fold(self.next_link_poll, Instant::min);
        wake.max(clock::protocol_now())
    }

    async fn on_packet(&mut self, pkt: &[u8], filter: &RxFilter) {
        let name = &self.ex.out.name;
        match accept(pkt, filter) {
            Ok(None) => {}
            Err(why) => {
                tracing::debug!(vip = %name, reason = %why, "VRRP packet dropped");
                self.ex.out.ctx.metrics.drop(name, why);
            }
            Ok(Some((from, adv))) => {
                self.ex.out.ctx.metrics.received(name);
                check_addresses(name, &adv, &self.ex.out.addrs);
                let ev = Event::Advert {
                    from,
                    priority: adv.priority,
                    interval_cs: adv.interval_cs,
                };
                let acts = self.inst.handle(clock::protocol_now(), ev);
                self.ex.apply(acts, None).await;
            }
        }
    }

    async fn on_track(&mut self, u: TrackUpdate) {
        if let Some(slot) = self.track_ok.get_mut(u.index) {
            *slot = Some(u.ok);
        }
        let cfg = self.ex.cfg;
        let what = cfg
            .track
            .get(u.index)
            .map(track::describe)
            .unwrap_or_default();
        tracing::info!(vip = %self.ex.out.name, track = %what, ok = u.ok, "tracked check changed");
        self.ex
            .retrack(&mut self.inst, &self.track_ok, self.link_up, &what)
            .await;
    }

    async fn on_tick(&mut self) {
        let now = clock::protocol_now();
        let cfg = self.ex.cfg;
        if now >= self.next_link_poll {
            self.next_link_poll = now + LINK_POLL;
            // A removed interface is down; another netlink error changes nothing.
            let up = match self.ex.out.ctx.netlink.link(&cfg.interface).await {
                Ok(l) => Some(l.up),
                Err(NetError::NoInterface(_)) => Some(false),
                Err(e) => {
                    tracing::warn!(vip = %self.ex.out.name, error = %e, "cannot read the interface state");
                    None
                }
            };
            if let Some(up) = up.filter(|&u| u != self.link_up) {
                self.link_up = up;
                let state = if up { "up" } else { "down" };
                let what = format!("interface {} {state}", cfg.interface);
                self.ex
                    .retrack(&mut self.inst, &self.track_ok, self.link_up, &what)
                    .await;
            }
        }
        if self.preempt_at.is_some_and(|t| now >= t) {
            self.preempt_at = None;
            self.inst.set_preempt(true);
        }
        let acts = self.inst.handle(now, Event::Tick);
        self.ex.apply(acts, None).await;
        if self.inst.state() != State::Master {
            self.next_garp_refresh = None;
            self.next_renew = None;
            return;
        }
        // Keep the addresses' kernel lifetime ahead (see `outputs::lifetime`).
        if due(&mut self.next_renew, now, self.ex.out.lifetime / 4) {
            self.ex.out.add_addresses().await;
        }
        let period = cfg.garp_refresh.get();
        if !period.is_zero() && due(&mut self.next_garp_refresh, now, period) {
            self.ex.out.garp_burst(1);
        }
    }
}

/// A periodic timer: armed on first use, then true (and re-armed) each time it has passed.
fn due(at: &mut Option<Instant>, now: Instant, every: Duration) -> bool {
    match *at {
        Some(t) if now >= t => {
            *at = Some(now + every);
            true
        }
        None => {
            *at = Some(now + every);
            false
        }
        Some(_) => false,
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
        let now = clock::protocol_now();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_timers_arm_then_fire_and_rearm() {
        let t0 = clock::protocol_now();
        let every = Duration::from_millis(100);
        let mut at = None;
        assert!(!due(&mut at, t0, every), "the first call only arms");
        assert!(!due(&mut at, t0 + Duration::from_millis(99), every));
        assert!(due(&mut at, t0 + every, every));
        assert_eq!(at, Some(t0 + 2 * every));
    }
}

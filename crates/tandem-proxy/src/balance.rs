//! Server selection. A `Selection` is an immutable snapshot of the servers that may take new
//! traffic, rebuilt whenever a server's health or operator state changes and read lock-free by
//! the request path; the policies pick from it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Balance;
use crate::server::{AdminState, Server};

/// Servers eligible for new traffic, and the weighted round-robin order over them.
#[derive(Default)]
pub(crate) struct Selection {
    pub(crate) servers: Vec<Arc<Server>>,
    /// Indexes into `servers`, each appearing `weight` times, smoothly interleaved.
    wrr: Vec<u16>,
    /// True when `servers` are backups (no primary server is available).
    pub(crate) on_backup: bool,
}

impl Selection {
    /// Non-backup servers that are up and ready; if none, backups that are up and ready.
    pub(crate) fn build(all: &[Arc<Server>]) -> Self {
        let usable = |s: &&Arc<Server>| s.is_up() && s.admin() == AdminState::Ready;
        let mut servers: Vec<Arc<Server>> = all
            .iter()
            .filter(|s| !s.cfg.backup)
            .filter(usable)
            .cloned()
            .collect();
        let mut on_backup = false;
        if servers.is_empty() {
            servers = all
                .iter()
                .filter(|s| s.cfg.backup)
                .filter(usable)
                .cloned()
                .collect();
            on_backup = !servers.is_empty();
        }
        let wrr = smooth_wrr(
            &servers
                .iter()
                .map(|s| s.cfg.weight.max(1))
                .collect::<Vec<_>>(),
        );
        Self {
            servers,
            wrr,
            on_backup,
        }
    }
}

/// Nginx-style smooth weighted round-robin order: weights 5,1,1 give a,a,b,a,c,a,a rather than
/// a,a,a,a,a,b,c.
fn smooth_wrr(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u16);
    }
    order
}

/// What a policy may use to choose.
pub(crate) struct PickContext<'a> {
    pub(crate) client: IpAddr,
    pub(crate) hash_key: Option<&'a [u8]>,
    /// Servers already tried for this request; avoided while others remain.
    pub(crate) tried: &'a [Arc<Server>],
}

/// Per-backend selection counters.
pub(crate) struct Picker {
    pub(crate) policy: Balance,
    rr: AtomicUsize,
    rng: AtomicU64,
}

impl Picker {
    pub(crate) fn new(policy: Balance, seed: u64) -> Self {
        Self {
            policy,
            rr: AtomicUsize::new(0),
            rng: AtomicU64::new(seed),
        }
    }

    pub(crate) fn pick(&self, sel: &Selection, ctx: &PickContext<'_>) -> Option<Arc<Server>> {
        if sel.servers.is_empty() {
            return None;
        }
        let fresh = |s: &Arc<Server>| !s.is_full() && !ctx.tried.iter().any(|t| Arc::ptr_eq(t, s));
        self.pick_with(sel, ctx, &fresh).or_else(|| {
            // Every usable server was tried: a retry may go back to one that is not full.
            self.pick_with(sel, ctx, &|s: &Arc<Server>| !s.is_full())
        })
    }

    fn pick_with(
        &self,
        sel: &Selection,
        ctx: &PickContext<'_>,
        ok: &dyn Fn(&Arc<Server>) -> bool,
    ) -> Option<Arc<Server>> {
        let servers = &sel.servers;
        match self.policy {
            Balance::RoundRobin => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                let n = sel.wrr.len();
                (0..n)
                    .map(|k| &servers[sel.wrr[(start + k) % n] as usize])
                    .find(|s| ok(s))
                    .cloned()
            }
            Balance::LeastConn => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                let n = servers.len();
                (0..n)
                    .map(|k| &servers[(start + k) % n])
                    .filter(|s| ok(s))
                    .min_by(|a, b| {
                        // inflight/weight compared without division.
                        let la = a.inflight() as u64 * u64::from(b.cfg.weight);
                        let lb = b.inflight() as u64 * u64::from(a.cfg.weight);
                        la.cmp(&lb)
                    })
                    .cloned()
            }
            Balance::P2c => self.p2c(servers, ok),
            Balance::Hash => {
                let key: Vec<u8>;
                let key = match ctx.hash_key {
                    Some(k) => k,
                    None => {
                        key = ip_bytes(ctx.client);
                        &key
                    }
                };
                rendezvous(servers, key, ok)
            }
        }
    }

    /// Power of two choices over (in-flight + 1) x latency EWMA / weight.
    fn p2c(
        &self,
        servers: &[Arc<Server>],
        ok: &dyn Fn(&Arc<Server>) -> bool,
    ) -> Option<Arc<Server>> {
        let n = servers.len();
        if n == 1 {
            return servers.first().filter(|s| ok(s)).cloned();
        }
        let r = splitmix64(self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        let a = (r % n as u64) as usize;
        let mut b = ((r >> 32) % (n as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (sa, sb) = (&servers[a], &servers[b]);
        let chosen = match (ok(sa), ok(sb)) {
            (true, true) => Some(if p2c_cost(sa) <= p2c_cost(sb) { sa } else { sb }),
            (true, false) => Some(sa),
            (false, true) => Some(sb),
            (false, false) => None,
        };
        chosen.cloned().or_else(|| {
            servers
                .iter()
                .filter(|s| ok(s))
                .min_by(|x, y| p2c_cost(x).total_cmp(&p2c_cost(y)))
                .cloned()
        })
    }
}

fn p2c_cost(s: &Server) -> f64 {
    // An unmeasured server gets a small latency so it is tried, not starved or flooded.
    let latency = s.ewma_us().max(1) as f64;
    (s.inflight() as f64 + 1.0) * latency / f64::from(s.cfg.weight.max(1))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Weighted rendezvous (highest random weight) hashing: a key moves only when the server it
/// was on leaves the set.
fn rendezvous(
    servers: &[Arc<Server>],
    key: &[u8],
    ok: &dyn Fn(&Arc<Server>) -> bool,
) -> Option<Arc<Server>> {
    let key_hash = fnv1a(key, 0xcbf2_9ce4_8422_2325);
    servers
        .iter()
        .filter(|s| ok(s))
        .map(|s| {
            let h = splitmix64(fnv1a(s.name.as_bytes(), key_hash));
            // Uniform in (0, 1]; score = -w / ln(u) keeps a weight-proportional share.
            let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            (-(f64::from(s.cfg.weight.max(1))) / u.ln(), s)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s.clone())
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;

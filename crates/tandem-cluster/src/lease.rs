//! The leader lease engine: decides, from observations of the cluster record and the results
//! of its own requests, when this node takes, renews, gives up or loses the lease. No I/O and no
//! clock of its own: every call gets `now`; the agent around it does the DCS requests and hooks.
//!
//! Safety rule (docs/design/lease.md): a primary's lease is valid until the moment it *sent* its
//! last confirmed renewal plus `ttl - margin`, by its own clock (`tandem_core::clock`, which
//! counts time the host spent suspended); another node takes the lease only after it has seen
//! the record's version stay unchanged for a full `ttl` by its own clock, and then only by
//! compare-and-set on that version.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_core::clock::Instant;

use crate::state::ClusterState;

/// Static settings of the engine.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub me: String,
    pub ttl: Duration,
    /// Time kept back from `ttl` for clock drift and for the demotion to take effect.
    pub margin: Duration,
    /// How often the primary renews.
    pub renew_every: Duration,
    pub priority: u32,
    pub nofailover: bool,
}

/// This node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Replica,
    Primary { token: u64, valid_until: Instant },
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Time passed (the agent ticks at least every `ttl / 10`).
    Tick,
    /// A read of the cluster record.
    Observed(ClusterState),
    /// An `Acquire` request, sent at `sent_at`, won the lease.
    Acquired { token: u64, sent_at: Instant },
    /// An `Acquire` request lost or failed.
    AcquireFailed(String),
    /// A `Renew` request sent at `sent_at` was confirmed.
    Renewed { sent_at: Instant },
    /// A `Renew` request failed or was refused.
    RenewFailed(String),
    /// A `Release` request finished (either way).
    ReleaseDone,
    /// The managed service's health changed.
    Health(bool),
    /// (Failsafe mode) this member confirmed the lease holder's claim at this instant: it
    /// counts as a renewal seen.
    FailsafeConfirmed(Instant),
}

/// What the agent must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Acquire {
        expected_version: u64,
    },
    Renew {
        token: u64,
    },
    Release {
        token: u64,
        reason: String,
    },
    /// Act as primary with this fencing token.
    Promote {
        token: u64,
        reason: String,
    },
    /// Stop acting as primary.
    Demote {
        token: u64,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Acquire,
    Renew,
    Release,
}

/// The version of the record this node last saw change, and when (by its clock).
#[derive(Clone, Copy, Debug)]
struct Observed {
    version: u64,
    since: Instant,
}

/// The lease engine of one node.
#[derive(Debug)]
pub struct LeaseEngine {
    cfg: LeaseSettings,
    role: Role,
    healthy: bool,
    view: Option<ClusterState>,
    observed: Option<Observed>,
    pending: Option<Pending>,
    last_renew_sent: Option<Instant>,
    /// Heartbeat counters of members and when each last changed.
    seen: BTreeMap<String, (u64, Instant)>,
    /// A compare-and-set lost: our view is stale, wait for a fresh read before trying again.
    stale_view: bool,
    /// Last failsafe confirmation this member gave the lease holder.
    failsafe_seen: Option<Instant>,
    /// After a failed renewal, the next one is tried this soon rather than a full interval later.
    renew_retry_at: Option<Instant>,
}

impl LeaseEngine {
    pub fn new(cfg: LeaseSettings) -> Self {
        Self {
            cfg,
            role: Role::Replica,
            healthy: true,
            view: None,
            observed: None,
            pending: None,
            last_renew_sent: None,
            seen: BTreeMap::new(),
            stale_view: false,
            failsafe_seen: None,
            renew_retry_at: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.cfg
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The fencing token if this node holds a lease that is valid at `now` by its own clock.
    pub fn primary_token(&self, now: Instant) -> Option<u64> {
        match self.role {
            Role::Primary { token, valid_until } if now < valid_until => Some(token),
            _ => None,
        }
    }

    /// The last cluster record seen.
    pub fn view(&self) -> Option<&ClusterState> {
        self.view.as_ref()
    }

    /// When each member's heartbeat last changed (by this node's clock).
    pub fn last_seen(&self, member: &str) -> Option<Instant> {
        self.seen.get(member).map(|&(_, at)| at)
    }

    /// True when `member` sent a heartbeat within the last `ttl`.
    pub fn is_alive(&self, member: &str, now: Instant) -> bool {
        self.last_seen(member)
            .is_some_and(|at| now.duration_since(at) < self.cfg.ttl)
    }

    /// The latest time the agent must call `handle(Tick)` again.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let tick = now + (self.cfg.ttl / 10).max(Duration::from_millis(10));
        match self.role {
            // A renewal goes out when it is due, not at the next tick after (the timing
            // argument in docs/design/lease.md counts on one every `renew_every`).
            Role::Primary { valid_until, .. } => {
                // (Not while a request is under way: its answer wakes the agent anyway.)
                let idle = self.pending.is_none();
                let renew = self
                    .last_renew_sent
                    .map(|t| t + self.cfg.renew_every)
                    .filter(|_| idle);
                let retry = self.renew_retry_at.filter(|_| idle);
                [Some(tick), Some(valid_until), renew, retry]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(tick)
                    .max(now)
            }
            Role::Replica => tick,
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Tick => {}
            Event::Observed(state) => self.observe(now, state),
            Event::Acquired { token, sent_at } => {
                self.pending = None;
                self.role = Role::Primary {
                    token,
                    valid_until: sent_at + self.validity(),
                };
                self.last_renew_sent = Some(sent_at);
                actions.push(Action::Promote {
                    token,
                    reason: "lease acquired".into(),
                });
            }
            Event::AcquireFailed(_) => {
                self.pending = None;
                self.stale_view = true;
            }
            Event::RenewFailed(_) => {
                self.pending = None;
                self.renew_retry_at = Some(now + crate::timing::renew_retry_after(self.cfg.ttl));
            }
            Event::ReleaseDone => {
                self.pending = None;
                // Whether or not it went through, act again only on a fresh read.
                self.stale_view = true;
            }
            Event::Renewed { sent_at } => {
                self.pending = None;
                if let Role::Primary { token, valid_until } = self.role {
                    let extended = sent_at + self.validity();
                    self.role = Role::Primary {
                        token,
                        valid_until: valid_until.max(extended),
                    };
                }
            }
            Event::Health(h) => self.healthy = h,
            Event::FailsafeConfirmed(at) => {
                self.failsafe_seen = Some(self.failsafe_seen.map_or(at, |t| t.max(at)));
            }
        }
        self.step(now, &mut actions);
        actions
    }

    fn validity(&self) -> Duration {
        self.cfg.ttl.saturating_sub(self.cfg.margin)
    }

    fn observe(&mut self, now: Instant, state: ClusterState) {
        self.stale_view = false;
        if self.observed.is_none_or(|o| o.version != state.version) {
            self.observed = Some(Observed {
                version: state.version,
                since: now,
            });
        }
        for (name, m) in &state.members {
            match self.seen.get(name) {
                Some(&(seq, _)) if seq == m.seq => {}
                _ => {
                    self.seen.insert(name.clone(), (m.seq, now));
                }
            }
        }
        self.view = Some(state);
    }

    fn step(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match self.role {
            Role::Primary { token, valid_until } => {
                self.step_primary(now, token, valid_until, actions)
            }
            Role::Replica => self.step_replica(now, actions),
        }
    }

    fn demote(&mut self, token: u64, reason: String, release: bool, actions: &mut Vec<Action>) {
        self.role = Role::Replica;
        self.last_renew_sent = None;
        actions.push(Action::Demote {
            token,
            reason: reason.clone(),
        });
        if release && self.pending.is_none() {
            self.pending = Some(Pending::Release);
            actions.push(Action::Release { token, reason });
        }
    }

    fn step_primary(
        &mut self,
        now: Instant,
        token: u64,
        valid_until: Instant,
        actions: &mut Vec<Action>,
    ) {
        if now >= valid_until {
            let reason = format!(
                "lease not renewed within ttl - margin ({}ms)",
                self.validity().as_millis()
            );
            return self.demote(token, reason, false, actions);
        }
        let view = self.view.as_ref();
        let paused = view.is_some_and(|v| v.paused);
        if let Some(l) = view.and_then(|v| v.lease.as_ref()) {
            // Our lease is never taken while valid; if the record says otherwise, trust it.
            if l.token > token {
                let reason = format!("the record shows lease {} held by {}", l.token, l.holder);
                return self.demote(token, reason, false, actions);
            }
        }
        if let Some(target) = view.and_then(|v| v.switchover.clone()) {
            if target != self.cfg.me {
                return self.demote(token, format!("switchover to {target}"), true, actions);
            }
        }
        if !self.healthy && !paused {
            return self.demote(token, "service health check failing".into(), true, actions);
        }
        let due = self
            .last_renew_sent
            .is_none_or(|t| now >= t + self.cfg.renew_every)
            || self.renew_retry_at.is_some_and(|t| now >= t);
        if due && self.pending.is_none() {
            self.pending = Some(Pending::Renew);
            self.renew_retry_at = None;
            self.last_renew_sent = Some(now);
            actions.push(Action::Renew { token });
        }
    }

    fn step_replica(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let (Some(view), Some(obs)) = (self.view.as_ref(), self.observed) else {
            return;
        };
        if self.pending.is_some() || self.stale_view {
            return;
        }
        // A lease in our name that we do not act on (left from before a restart): give it up
        // so that failover need not wait for it to expire.
        if let Some(l) = view.lease.as_ref().filter(|l| l.holder == self.cfg.me) {
            self.pending = Some(Pending::Release);
            actions.push(Action::Release {
                token: l.token,
                reason: "lease left from a previous run".into(),
            });
            return;
        }
        // A switchover to a member that is gone does not hold the cluster hostage.
        let switchover = view
            .switchover
            .as_deref()
            .filter(|t| *t == self.cfg.me || self.is_alive(t, now));
        let switchover_to_me = switchover == Some(self.cfg.me.as_str());
        let eligible = self.healthy
            && !self.cfg.nofailover
            && (switchover_to_me || (!view.paused && switchover.is_none()));
        if !eligible {
            return;
        }
        // When the lease became free by this node's judgement.
        let free_since = match &view.lease {
            None => obs.since,
            Some(_) => obs.since.max(self.failsafe_seen.unwrap_or(obs.since)) + self.cfg.ttl,
        };
        if now < free_since {
            return;
        }
        // Better candidates that are alive get a head start of half a ttl each.
        let rank = if switchover_to_me {
            0
        } else {
            self.better_candidates(now)
        };
        if now >= free_since + (self.cfg.ttl / 2) * rank {
            self.pending = Some(Pending::Acquire);
            actions.push(Action::Acquire {
                expected_version: obs.version,
            });
        }
    }

    fn better_candidates(&self, now: Instant) -> u32 {
        let Some(view) = &self.view else { return 0 };
        let me = (self.cfg.priority, std::cmp::Reverse(self.cfg.me.as_str()));
        view.members
            .iter()
            .filter(|(name, m)| {
                *name != &self.cfg.me
                    && m.info.healthy
                    && !m.info.nofailover
                    && self.is_alive(name, now)
                    && (m.info.priority, std::cmp::Reverse(name.as_str())) > me
            })
            .count() as u32
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl LeaseEngine {
    /// The last instant this node may act as primary, if it is one.
    fn last_valid_for_tests(&self) -> Option<Instant> {
        match self.role {
            Role::Primary { valid_until, .. } => Some(valid_until),
            Role::Replica => None,
        }
    }
}

//! The cluster agent: runs the lease engine against a DCS, executes its actions (store
//! requests, hooks), heartbeats, checks the managed service, and publishes the node's status
//! for the admin API. One task owns the engine; everything else talks to it by messages.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tandem_core::clock::{self, Instant};
use tandem_core::health::{Hysteresis, Input, Status};
use tandem_core::probe::{probe, Probe, StatusSet};
use tandem_core::{EventBus, Shutdown, TaskHandle};
use tokio::sync::mpsc;

use crate::config::{ClusterConfig, NodeConfig, ServiceConfig};
use crate::dcs::{Dcs, DcsError};
use crate::hooks::{self, Hook};
use crate::lease::{Action, Event, LeaseEngine, LeaseSettings, Role};
use crate::metrics::{ClusterMetrics, ReasonLabel, ResultLabel};
use crate::state::{ClusterState, Command, MemberInfo, Outcome};

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object-safe view of a `Dcs`, so the handle needs no type parameter.
pub(crate) trait DynDcs: Send + Sync {
    fn write_dyn(&self, cmd: Command) -> BoxFut<'_, Result<Outcome, DcsError>>;
    fn read_dyn(&self) -> BoxFut<'_, Result<ClusterState, DcsError>>;
}

impl<D: Dcs> DynDcs for D {
    fn write_dyn(&self, cmd: Command) -> BoxFut<'_, Result<Outcome, DcsError>> {
        Box::pin(self.write(cmd))
    }
    fn read_dyn(&self) -> BoxFut<'_, Result<ClusterState, DcsError>> {
        Box::pin(self.read())
    }
}

/// What the admin API shows about the cluster, as seen from this node.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub node: String,
    pub role: &'static str,
    pub healthy: bool,
    pub has_quorum: bool,
    /// With the embedded Raft: the member that leads the Raft group, as this node knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_leader: Option<String>,
    /// With the embedded Raft: the Raft term this node is in (changes with every election).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_term: Option<u64>,
    pub lease_holder: Option<String>,
    pub fencing_token: Option<u64>,
    /// The store's lease version (changes on every lease write).
    pub lease_version: u64,
    pub paused: bool,
    pub switchover: Option<String>,
    /// (PostgreSQL) the synchronous set: the members that may be promoted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<String>,
    pub members: Vec<MemberStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub role: &'static str,
    pub healthy: bool,
    pub alive: bool,
    /// Milliseconds since this node saw the member's last heartbeat.
    pub last_seen_ms: Option<u64>,
    pub priority: u32,
    pub nofailover: bool,
    pub api: String,
    /// What the member last reported about its PostgreSQL (`kind = "postgres"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<crate::state::PgMember>,
}

/// State shared with the API: written by the agent task only.
struct Shared {
    role: Role,
    /// The token the promote hook succeeded for (`/primary` needs it to match the lease).
    promoted: Option<u64>,
    healthy: bool,
    quorum: bool,
    status: Option<ClusterStatus>,
}

impl Shared {
    /// The lease's token and end while it is valid by the clock read now: every answer about
    /// the primary goes through here, so a loop that has not yet woken after a suspend (or a
    /// stop) cannot make an expired lease look valid.
    fn valid_lease(&self) -> Option<(u64, Instant)> {
        match self.role {
            Role::Primary { token, valid_until } if clock::now() < valid_until => {
                Some((token, valid_until))
            }
            _ => None,
        }
    }

    /// The fencing token while the lease is valid and the service promoted and healthy.
    fn primary(&self) -> Option<u64> {
        let (token, _) = self.valid_lease()?;
        (self.healthy && self.promoted == Some(token)).then_some(token)
    }
}

/// Handle on a running agent.
#[derive(Clone)]
pub struct AgentHandle {
    shared: Arc<Mutex<Shared>>,
    pg: Option<crate::postgres::PgHandle>,
    dcs: Arc<dyn DynDcs>,
    me: String,
    ttl: Duration,
    task: Arc<Mutex<Option<TaskHandle>>>,
}

/// Errors of operator requests.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Dcs(#[from] DcsError),
    #[error("{0}")]
    Timeout(String),
}

impl AgentHandle {
    /// The fencing token if this node holds a valid lease and its service is healthy.
    pub fn primary(&self) -> Option<u64> {
        self.shared.lock().ok()?.primary()
    }

    /// Until when this node may act as primary (by its clock, which counts a host suspend),
    /// whether or not its service is healthy: whatever acts for the primary (a virtual IP, a
    /// database) must have stopped by then, because the lease can pass on soon after.
    pub fn lease_deadline(&self) -> Option<Instant> {
        self.shared
            .lock()
            .ok()?
            .valid_lease()
            .map(|(_, until)| until)
    }

    /// The managed PostgreSQL, for `kind = "postgres"` services.
    pub fn postgres(&self) -> Option<&crate::postgres::PgHandle> {
        self.pg.as_ref()
    }

    pub fn status(&self) -> Option<ClusterStatus> {
        let s = self.shared.lock().ok()?;
        let mut st = s.status.clone()?;
        // The role is judged now, by the clock, not when the status was built.
        st.role = match s.valid_lease() {
            Some(_) => "primary",
            None => "replica",
        };
        st.healthy = s.healthy;
        st.has_quorum = s.quorum;
        if let Some(m) = st.members.iter_mut().find(|m| m.name == self.me) {
            m.role = st.role;
            m.healthy = s.healthy;
        }
        Some(st)
    }

    /// Hand the lease to `target`: the current primary demotes first, then `target` promotes.
    pub async fn switchover(&self, target: &str) -> Result<ClusterStatus, RequestError> {
        let st = self
            .status()
            .ok_or_else(|| RequestError::Invalid("the cluster state is not known yet".into()))?;
        let Some(m) = st.members.iter().find(|m| m.name == target) else {
            return Err(RequestError::Invalid(format!("{target:?} is not a member")));
        };
        if !m.alive || !m.healthy || m.nofailover {
            return Err(RequestError::Invalid(format!(
                "{target:?} cannot take the lease (alive, healthy, not nofailover needed)"
            )));
        }
        if st.lease_holder.as_deref() == Some(target) {
            return Err(RequestError::Invalid(format!(
                "{target:?} is already the primary"
            )));
        }
        self.dcs
            .write_dyn(Command::SetSwitchover {
                target: Some(target.to_string()),
            })
            .await?;
        let deadline = clock::now() + self.ttl * 4;
        while clock::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(st) = self.status() {
                if st.lease_holder.as_deref() == Some(target) && st.switchover.is_none() {
                    return Ok(st);
                }
            }
        }
        // Do not leave the cluster blocked on a target that never came.
        let _ = self
            .dcs
            .write_dyn(Command::SetSwitchover { target: None })
            .await;
        Err(RequestError::Timeout(format!(
            "{target} did not take the lease in time; switchover cancelled"
        )))
    }

    /// Wait for the agent to finish after its shutdown signal (a primary demotes and releases
    /// its lease first).
    pub async fn stopped(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            t.join().await;
        }
    }

    /// Stop (or restart) automatic failover cluster-wide.
    pub async fn set_paused(&self, paused: bool) -> Result<(), RequestError> {
        self.dcs.write_dyn(Command::SetPaused { paused }).await?;
        Ok(())
    }
}

/// Everything an agent needs.
pub struct AgentParts<D> {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub service: Option<ServiceConfig>,
    pub dcs: Arc<D>,
    pub api: Option<SocketAddr>,
    pub events: EventBus,
    pub metrics: ClusterMetrics,
    pub shutdown: Shutdown,
    /// Failsafe confirmations this member gives (always) and asks for (`failsafe = true`).
    pub board: Arc<crate::failsafe::Board>,
    /// The cluster secret, for failsafe confirmation requests.
    pub secret: Arc<str>,
}

/// The agent task.
pub struct Agent<D> {
    engine: LeaseEngine,
    parts: AgentParts<D>,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<Msg>,
    hooks: mpsc::UnboundedSender<Job>,
    hook_runner: tokio::task::JoinHandle<()>,
    reading: bool,
    last_holder: Option<String>,
    /// The last node seen holding the lease (not cleared by a release).
    previous_primary: Option<String>,
    pg: Option<crate::postgres::PgHandle>,
    /// The PostgreSQL manager's supervisor and the task forwarding its eligibility: owned
    /// here, so they end with the agent.
    _pg_tasks: Vec<TaskHandle>,
    view_tx: tokio::sync::watch::Sender<crate::postgres::View>,
}

enum Msg {
    Read(Result<ClusterState, DcsError>),
    Engine(Event),
    Health(bool),
    /// (PostgreSQL) whether this node may take the lease; the manager reports its own events.
    Eligible(bool),
}

impl<D: Dcs> Agent<D> {
    /// Start the agent; it runs until `parts.shutdown` is triggered.
    pub fn start(parts: AgentParts<D>) -> AgentHandle {
        let c = &parts.cluster;
        let settings = LeaseSettings {
            me: parts.node.name.clone(),
            ttl: c.lease_ttl.get(),
            margin: c.margin(),
            renew_every: crate::timing::renew_every(c.lease_ttl.get()),
            priority: parts.node.priority,
            nofailover: parts.node.nofailover,
        };
        let is_pg = parts
            .service
            .as_ref()
            .is_some_and(|s| s.kind == crate::config::ServiceKind::Postgres);
        let healthy_at_start = !is_pg
            && parts
                .service
                .as_ref()
                .and_then(|s| s.health.as_ref())
                .is_none();
        let shared = Arc::new(Mutex::new(Shared {
            role: Role::Replica,
            promoted: None,
            healthy: healthy_at_start,
            quorum: false,
            status: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let handle_dcs: Arc<dyn DynDcs> = parts.dcs.clone();
        let (view_tx, view_rx) = tokio::sync::watch::channel(crate::postgres::View::default());
        let (pg, pg_tasks) = if is_pg {
            match start_postgres(
                &parts,
                shared.clone(),
                handle_dcs.clone(),
                view_rx,
                tx.clone(),
            ) {
                Some((h, tasks)) => (Some(h), tasks),
                None => (None, Vec::new()),
            }
        } else {
            (None, Vec::new())
        };
        let (hooks, hook_runner) =
            spawn_hook_runner(&parts, shared.clone(), tx.clone(), pg.clone());
        let me = parts.node.name.clone();
        let ttl = c.lease_ttl.get();
        let mut engine = LeaseEngine::new(settings);
        engine.handle(clock::now(), Event::Health(healthy_at_start));
        let agent = Agent {
            engine,
            parts,
            shared: shared.clone(),
            tx,
            hooks,
            hook_runner,
            reading: false,
            last_holder: None,
            previous_primary: None,
            pg: pg.clone(),
            _pg_tasks: pg_tasks,
            view_tx,
        };
        let task = TaskHandle::spawn(agent.run(rx));
        AgentHandle {
            shared,
            pg,
            dcs: handle_dcs,
            me,
            ttl,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        // Member heartbeats: four per ttl (liveness is judged over a whole ttl).
        let every = self.parts.cluster.lease_ttl.get() / 4;
        let me = self.parts.node.name.clone();
        let _heartbeat = TaskHandle::spawn(heartbeat(
            self.parts.dcs.clone(),
            self.shared.clone(),
            me,
            self.member_info_base(),
            every,
            self.pg.clone(),
        ));
        let _health = self
            .parts
            .service
            .as_ref()
            .and_then(|s| s.health.clone())
            .map(|h| TaskHandle::spawn(check_service(h, self.tx.clone())));
        let _ = self.hooks.send(Job::Hook(Hook::Start, None, false));
        // Reads and ticks follow a fixed schedule, whatever else arrives meanwhile.
        let tick = (self.parts.cluster.lease_ttl.get() / 10).max(Duration::from_millis(10));
        let mut next_tick = clock::now();
        let mut last_confirmed = None;
        loop {
            let now = clock::now();
            let deadline = self.engine.next_deadline(now).min(next_tick);
            let event = tokio::select! {
                _ = clock::sleep_until(deadline) => {
                    if clock::now() >= next_tick {
                        next_tick = clock::now() + tick;
                        self.start_read();
                    }
                    match self.parts.board.confirmed() {
                        Some(at) if Some(at) != last_confirmed => {
                            last_confirmed = Some(at);
                            Event::FailsafeConfirmed(at)
                        }
                        _ => Event::Tick,
                    }
                }
                msg = rx.recv() => match msg {
                    Some(Msg::Read(Ok(state))) => {
                        self.reading = false;
                        self.set_quorum(self.parts.dcs.has_quorum());
                        Event::Observed(state)
                    }
                    Some(Msg::Read(Err(e))) => {
                        self.reading = false;
                        self.set_quorum(false);
                        tracing::debug!(error = %e, "reading the cluster record failed");
                        Event::Tick
                    }
                    Some(Msg::Engine(e)) => e,
                    Some(Msg::Health(h)) => {
                        if let Ok(mut s) = self.shared.lock() { s.healthy = h; }
                        self.parts.events.emit(if h { "service_healthy" } else { "service_unhealthy" }, "cluster", &self.parts.node.name, "service health check");
                        Event::Health(h)
                    }
                    Some(Msg::Eligible(e)) => {
                        if let Ok(mut s) = self.shared.lock() { s.healthy = e; }
                        Event::Health(e)
                    }
                    None => break,
                },
                _ = self.parts.shutdown.wait() => break,
            };
            let now = clock::now();
            let actions = self.engine.handle(now, event);
            for a in actions {
                self.execute(now, a);
            }
            self.publish(now);
        }
        self.stop().await;
    }

    /// On shutdown a primary demotes and releases at once, so failover need not wait a ttl;
    /// then the stop hook runs and the queued hooks get their timeout to finish.
    async fn stop(mut self) {
        if let Role::Primary { token, .. } = self.engine.role() {
            self.set_role(Role::Replica);
            // Demote hook first, then the release, in the runner's order.
            self.on_demote(token, "node stopping");
            let _ = self.hooks.send(Job::Release { token });
        }
        let _ = self.hooks.send(Job::Hook(Hook::Stop, None, false));
        let wait = self
            .parts
            .service
            .as_ref()
            .map(|s| {
                if self.pg.is_some() {
                    // A fast shutdown of PostgreSQL, with time for the standbys to take the
                    // last WAL.
                    Duration::from_secs(20)
                } else {
                    s.hook_timeout.get() * 2
                }
            })
            .unwrap_or_default();
        let Agent {
            hooks, hook_runner, ..
        } = self;
        drop(hooks);
        let _ = tokio::time::timeout(wait, hook_runner).await;
    }

    fn start_read(&mut self) {
        if self.reading {
            return;
        }
        self.reading = true;
        let (dcs, tx) = (self.parts.dcs.clone(), self.tx.clone());
        let limit = self.parts.cluster.lease_ttl.get() / 2;
        tokio::spawn(async move {
            let r = match tokio::time::timeout(limit, dcs.read()).await {
                Ok(r) => r,
                Err(_) => Err(DcsError::Timeout),
            };
            let _ = tx.send(Msg::Read(r));
        });
    }

    fn execute(&mut self, now: Instant, action: Action) {
        let me = self.parts.node.name.clone();
        let limit = self
            .parts
            .cluster
            .lease_ttl
            .get()
            .saturating_sub(self.parts.cluster.margin());
        match action {
            Action::Acquire { expected_version } => {
                let (dcs, tx) = (self.parts.dcs.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let cmd = Command::Acquire {
                        node: me.clone(),
                        expected_version,
                    };
                    let ev = match tokio::time::timeout(limit, dcs.write(cmd)).await {
                        Ok(Ok(o)) if o.ok => match o.lease {
                            Some(l) if l.holder == me => Event::Acquired {
                                token: l.token,
                                sent_at: now,
                            },
                            _ => Event::AcquireFailed("lease not ours after acquire".into()),
                        },
                        Ok(Ok(_)) => {
                            Event::AcquireFailed("another node changed the lease first".into())
                        }
                        Ok(Err(e)) => Event::AcquireFailed(e.to_string()),
                        Err(_) => Event::AcquireFailed("timeout".into()),
                    };
                    let _ = tx.send(Msg::Engine(ev));
                });
            }
            Action::Renew { token } => {
                let (dcs, tx, m) = (
                    self.parts.dcs.clone(),
                    self.tx.clone(),
                    self.parts.metrics.clone(),
                );
                let failsafe = self.parts.cluster.failsafe.then(|| {
                    (
                        self.parts.cluster.peers.clone(),
                        self.parts.secret.clone(),
                        self.parts.cluster.lease_ttl.get(),
                    )
                });
                // In failsafe mode a store that does not answer is noticed within one renewal
                // interval, leaving time to ask the members instead.
                let limit = match &failsafe {
                    Some((_, _, ttl)) => *ttl / 4,
                    None => limit,
                };
                tokio::spawn(async move {
                    let started = clock::now();
                    let r = tokio::time::timeout(
                        limit,
                        dcs.write(Command::Renew {
                            node: me.clone(),
                            token,
                        }),
                    )
                    .await;
                    let (mut result, mut ev) = match r {
                        Ok(Ok(o)) if o.ok => ("ok", Event::Renewed { sent_at: now }),
                        Ok(Ok(_)) => (
                            "refused",
                            Event::RenewFailed("the lease is no longer ours".into()),
                        ),
                        Ok(Err(e)) => ("error", Event::RenewFailed(e.to_string())),
                        Err(_) => ("timeout", Event::RenewFailed("timeout".into())),
                    };
                    if let (Some((peers, secret, ttl)), "error" | "timeout") = (&failsafe, result) {
                        let sent = clock::now();
                        let claim = crate::failsafe::Claim {
                            leader: me.clone(),
                            token,
                        };
                        if crate::failsafe::confirm_all(peers, &me, secret, &claim, *ttl / 8).await
                        {
                            result = "failsafe";
                            ev = Event::Renewed { sent_at: sent };
                        }
                    }
                    m.renewals
                        .get_or_create(&ResultLabel {
                            result: result.into(),
                        })
                        .inc();
                    if result == "ok" {
                        m.renewal_latency
                            .observe(clock::since(started).as_secs_f64());
                    }
                    let _ = tx.send(Msg::Engine(ev));
                });
            }
            Action::Release { token, reason } => {
                // Queued behind the demote hook: released only once this node stopped acting.
                tracing::info!(token, %reason, "releasing the lease after the demote hook");
                let _ = self.hooks.send(Job::Release { token });
            }
            Action::Promote { token, reason } => {
                // Planned (a switchover to us was pending) or a failover from another holder.
                let planned = self
                    .engine
                    .view()
                    .is_some_and(|v| v.switchover.as_deref() == Some(me.as_str()));
                let took_over = self.previous_primary.as_deref().is_some_and(|p| p != me);
                self.set_role(self.engine.role());
                self.parts.metrics.fencing_token.set(token as i64);
                if planned {
                    self.parts.metrics.switchovers.inc();
                } else if took_over {
                    self.parts.metrics.failovers.inc();
                }
                let reason = if planned {
                    format!("{reason} (switchover)")
                } else {
                    reason
                };
                let why = format!("{reason}; fencing token {token}");
                self.parts.events.emit("promoted", "cluster", &me, why);
                let _ = self
                    .hooks
                    .send(Job::Hook(Hook::Promote, Some(token), planned));
            }
            Action::Demote { token, reason } => {
                self.set_role(Role::Replica);
                self.on_demote(token, &reason);
            }
        }
    }

    fn on_demote(&mut self, token: u64, reason: &str) {
        let me = self.parts.node.name.clone();
        self.parts
            .metrics
            .demotions
            .get_or_create(&ReasonLabel {
                reason: demotion_kind(reason).into(),
            })
            .inc();
        self.parts.events.emit(
            "demoted",
            "cluster",
            &me,
            format!("{reason}; fencing token {token}"),
        );
        let planned = reason.contains("switchover");
        let _ = self
            .hooks
            .send(Job::Hook(Hook::Demote, Some(token), planned));
    }

    fn set_role(&self, role: Role) {
        if let Ok(mut s) = self.shared.lock() {
            s.role = role;
            if !matches!(role, Role::Primary { token, .. } if s.promoted == Some(token)) {
                s.promoted = None;
            }
        }
        let holder = self
            .engine
            .view()
            .and_then(|v| v.lease.as_ref().map(|l| (l.holder.clone(), l.token)));
        self.parts
            .board
            .update(matches!(role, Role::Primary { .. }), holder);
        self.parts
            .metrics
            .is_primary
            .set(i64::from(matches!(role, Role::Primary { .. })));
    }

    fn set_quorum(&self, q: bool) {
        let changed = match self.shared.lock() {
            Ok(mut s) => std::mem::replace(&mut s.quorum, q) != q,
            Err(_) => false,
        };
        if changed {
            let (kind, why) = if q {
                ("quorum_regained", "the store answers with a quorum again")
            } else {
                ("quorum_lost", "the store cannot be reached with a quorum")
            };
            self.parts
                .events
                .emit(kind, "cluster", &self.parts.node.name, why);
        }
        self.parts.metrics.has_quorum.set(i64::from(q));
    }

    fn member_info_base(&self) -> MemberInfo {
        MemberInfo {
            healthy: true,
            priority: self.parts.node.priority,
            nofailover: self.parts.node.nofailover,
            api: self.parts.api.map(|a| a.to_string()).unwrap_or_default(),
            pg: None,
        }
    }

    /// Rebuild the status the API shows from the engine's view.
    fn publish(&mut self, now: Instant) {
        self.set_role(self.engine.role());
        let Some(view) = self.engine.view().cloned() else {
            return;
        };
        let holder = view.lease.as_ref().map(|l| l.holder.clone());
        if holder != self.last_holder {
            // Every member records the change, not only the node that was promoted.
            let (subject, reason) = match (&holder, view.lease.as_ref()) {
                (Some(h), Some(l)) => (
                    h.clone(),
                    format!("{h} holds the lease, fencing token {}", l.token),
                ),
                _ => ("-".to_string(), "the lease is free".to_string()),
            };
            self.parts
                .events
                .emit("lease_holder_changed", "cluster", &subject, reason);
            self.last_holder = holder.clone();
            // A release in between does not make the next acquisition less of a failover.
            if holder.is_some() {
                self.previous_primary = holder.clone();
            }
        }
        if let Some(l) = &view.lease {
            self.parts.metrics.fencing_token.set(l.token as i64);
        }
        let members: Vec<MemberStatus> = view
            .members
            .iter()
            .map(|(name, m)| {
                let seen = self.engine.last_seen(name);
                MemberStatus {
                    name: name.clone(),
                    role: if holder.as_deref() == Some(name) {
                        "primary"
                    } else {
                        "replica"
                    },
                    healthy: m.info.healthy,
                    alive: self.engine.is_alive(name, now),
                    last_seen_ms: seen.map(|s| now.duration_since(s).as_millis() as u64),
                    priority: m.info.priority,
                    nofailover: m.info.nofailover,
                    api: m.info.api.clone(),
                    postgres: m.info.pg.clone(),
                }
            })
            .collect();
        let healthy = members.iter().filter(|m| m.alive && m.healthy).count();
        self.parts.metrics.healthy_members.set(healthy as i64);
        let status = ClusterStatus {
            cluster: self.parts.cluster.name.clone(),
            node: self.parts.node.name.clone(),
            role: "replica",
            healthy: true,
            has_quorum: false,
            store_leader: self.parts.dcs.store_leader(),
            store_term: self.parts.dcs.store_term(),
            lease_holder: holder,
            fencing_token: view.lease.as_ref().map(|l| l.token),
            lease_version: view.version,
            paused: view.paused,
            switchover: view.switchover.clone(),
            sync: view.sync.clone(),
            members,
        };
        if self.pg.is_some() {
            let alive = status
                .members
                .iter()
                .filter(|m| m.alive)
                .map(|m| m.name.clone())
                .collect();
            self.view_tx.send_replace(crate::postgres::View {
                state: view.clone(),
                alive,
            });
        }
        if let Ok(mut s) = self.shared.lock() {
            s.status = Some(status);
        }
    }
}

/// Start the PostgreSQL manager of a `kind = "postgres"` service, under its supervisor
/// (`postgres::supervise`: a failed manager is fenced, reported not eligible, and restarted).
fn start_postgres<D: Dcs>(
    parts: &AgentParts<D>,
    shared: Arc<Mutex<Shared>>,
    dcs: Arc<dyn DynDcs>,
    view: tokio::sync::watch::Receiver<crate::postgres::View>,
    tx: mpsc::UnboundedSender<Msg>,
) -> Option<(crate::postgres::PgHandle, Vec<TaskHandle>)> {
    let svc = parts.service.as_ref()?;
    let settings = match svc.postgres(&parts.node, &parts.cluster) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(component = "postgres", error = %e, "PostgreSQL not managed");
            return None;
        }
    };
    let (eligible, mut eligible_rx) = mpsc::unbounded_channel();
    let lease = Arc::new(move || shared.lock().ok()?.valid_lease().map(|(_, until)| until));
    let mparts = crate::postgres::manager::ManagerParts {
        settings,
        me: parts.node.name.clone(),
        dcs,
        view,
        lease,
        eligible,
        events: parts.events.clone(),
        metrics: parts.metrics.pg.clone(),
        ttl: parts.cluster.lease_ttl.get(),
        margin: parts.cluster.margin(),
        watchdog_exe: crate::postgres::watchdog_exe(),
    };
    match crate::postgres::manager::start(mparts) {
        Ok((handle, supervisor)) => {
            let forward = TaskHandle::spawn(async move {
                while let Some(e) = eligible_rx.recv().await {
                    if tx.send(Msg::Eligible(e)).is_err() {
                        return;
                    }
                }
            });
            Some((handle, vec![supervisor, forward]))
        }
        Err(e) => {
            tracing::error!(component = "postgres", error = %e, "PostgreSQL not managed");
            parts
                .events
                .emit("postgres_error", "postgres", &parts.node.name, e);
            None
        }
    }
}

fn demotion_kind(reason: &str) -> &'static str {
    if reason.contains("not renewed") {
        "lease_expired"
    } else if reason.contains("health") {
        "unhealthy"
    } else if reason.contains("switchover") {
        "switchover"
    } else if reason.contains("stopping") {
        "shutdown"
    } else {
        "lease_lost"
    }
}

/// Work for the hook runner, done strictly in order: a release queued after a demote hook
/// goes out only once that hook has finished, so the next primary never promotes while this
/// node still acts as one.
enum Job {
    /// The hook, the fencing token, and whether it is part of a planned switchover.
    Hook(Hook, Option<u64>, bool),
    Release {
        token: u64,
    },
}

/// Hooks (and releases that must follow them) run one after the other.
fn spawn_hook_runner<D: Dcs>(
    parts: &AgentParts<D>,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<Msg>,
    pg: Option<crate::postgres::PgHandle>,
) -> (mpsc::UnboundedSender<Job>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let service = parts.service.clone();
    let node = parts.node.name.clone();
    let metrics = parts.metrics.clone();
    let dcs = parts.dcs.clone();
    let limit = parts
        .cluster
        .lease_ttl
        .get()
        .saturating_sub(parts.cluster.margin());
    let runner = tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let (hook, token) = match job {
                Job::Release { token } => {
                    let cmd = Command::Release {
                        node: node.clone(),
                        token,
                    };
                    let _ = tokio::time::timeout(limit, dcs.write(cmd)).await;
                    let _ = events.send(Msg::Engine(Event::ReleaseDone));
                    continue;
                }
                Job::Hook(hook, token, planned) => {
                    if let Some(pg) = &pg {
                        let ok = match (hook, token) {
                            (Hook::Promote, Some(t)) => match pg.promote(t, planned).await {
                                Ok(()) => true,
                                Err(e) => {
                                    metrics
                                        .hook_failures
                                        .get_or_create(&ReasonLabel {
                                            reason: "promote".into(),
                                        })
                                        .inc();
                                    tracing::error!(component = "postgres", error = %e, "promotion refused or failed");
                                    false
                                }
                            },
                            (Hook::Demote, _) => {
                                pg.demote(planned).await;
                                true
                            }
                            (Hook::Stop, _) => {
                                pg.stop().await;
                                true
                            }
                            _ => true,
                        };
                        if hook == Hook::Promote && ok {
                            if let Ok(mut s) = shared.lock() {
                                if matches!(s.role, Role::Primary { token: t, .. } if Some(t) == token)
                                {
                                    s.promoted = token;
                                }
                            }
                        }
                        continue;
                    }
                    (hook, token)
                }
            };
            let cmd = service.as_ref().and_then(|svc| match hook {
                Hook::Start => svc.start.clone(),
                Hook::Stop => svc.stop.clone(),
                Hook::Promote => svc.promote.clone(),
                Hook::Demote => svc.demote.clone(),
            });
            let ok = match (&cmd, &service) {
                (Some(cmd), Some(svc)) => {
                    let role = if hook == Hook::Promote {
                        "primary"
                    } else {
                        "replica"
                    };
                    match hooks::run(hook, cmd, &node, role, token, svc.hook_timeout.get()).await {
                        Ok(()) => {
                            tracing::info!(hook = hook.as_str(), ?token, "hook done");
                            true
                        }
                        Err(e) => {
                            metrics
                                .hook_failures
                                .get_or_create(&ReasonLabel {
                                    reason: hook.as_str().into(),
                                })
                                .inc();
                            tracing::error!(error = %e, "hook failed");
                            false
                        }
                    }
                }
                _ => true,
            };
            // `/primary` answers 200 only once the service was promoted under this token.
            if hook == Hook::Promote && ok {
                if let Ok(mut s) = shared.lock() {
                    if matches!(s.role, Role::Primary { token: t, .. } if Some(t) == token) {
                        s.promoted = token;
                    }
                }
            }
        }
    });
    (tx, runner)
}

/// Report this member's health and presence every `every`.
async fn heartbeat<D: Dcs>(
    dcs: Arc<D>,
    shared: Arc<Mutex<Shared>>,
    me: String,
    base: MemberInfo,
    every: Duration,
    pg: Option<crate::postgres::PgHandle>,
) {
    loop {
        let healthy = shared.lock().map(|s| s.healthy).unwrap_or(false);
        let cmd = Command::Heartbeat {
            node: me.clone(),
            info: MemberInfo {
                healthy,
                pg: pg.as_ref().and_then(|p| p.member()),
                ..base.clone()
            },
        };
        match tokio::time::timeout(every * 2, dcs.write(cmd)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not stored"),
            Err(_) => tracing::debug!("heartbeat timed out"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Probe the managed service and report up/down changes.
async fn check_service(h: crate::config::ServiceHealth, tx: mpsc::UnboundedSender<Msg>) {
    // Validation has checked both; a failure here is logged, and the service stays down.
    let (Ok((addr, path)), Ok(expect)) = (h.target(), StatusSet::parse(&h.expect)) else {
        tracing::error!("invalid [service.health] settings: the service is reported down");
        return;
    };
    let mut engine = Hysteresis::new(h.rise, h.fall, Status::Down);
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        let kind = match &path {
            Some(p) => Probe::Http {
                path: p,
                expect: &expect,
            },
            None => Probe::Tcp,
        };
        let input = match probe(kind, addr, h.timeout.get()).await {
            Ok(()) => Input::Passed,
            Err(why) => Input::Failed(why),
        };
        if let Some(t) = engine.handle(input) {
            tracing::info!(reason = %t.reason, up = t.to == Status::Up, "service health changed");
            if tx.send(Msg::Health(t.to == Status::Up)).is_err() {
                return;
            }
        }
        delay = engine.next_interval(h.interval.get());
    }
}

/// Start an agent whose lease lives in etcd (`dcs = "etcd"`), with the peer listener that
/// failsafe confirmations use. Builds without the `etcd` feature answer with an error, and so
/// does validation, so the two always agree.
#[allow(clippy::too_many_arguments)]
pub async fn start_on_etcd(
    node: NodeConfig,
    cluster: ClusterConfig,
    service: Option<ServiceConfig>,
    api: Option<SocketAddr>,
    events: EventBus,
    metrics: ClusterMetrics,
    shutdown: Shutdown,
    secret: Arc<str>,
) -> Result<(AgentHandle, TaskHandle), String> {
    #[cfg(feature = "etcd")]
    {
        // Short enough that a request lost with a dying etcd leader is given up and tried again
        // while the lease lasts (timing::min_safe_ttl_etcd).
        let timeout = crate::timing::etcd_request_timeout(cluster.lease_ttl.get());
        let dcs = crate::etcd::EtcdDcs::connect(&cluster.etcd_endpoints, &cluster.name, timeout)
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        let board = Arc::new(crate::failsafe::Board::default());
        let listen: SocketAddr = cluster
            .listen
            .parse()
            .map_err(|_| "cluster.listen is not an address".to_string())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} for peers: {e}"))?;
        tracing::info!(component = "cluster", addr = %listen, "listening");
        let app = crate::failsafe::router(board.clone(), secret.clone(), metrics.clone());
        let stop = shutdown.clone();
        let server = TaskHandle::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
        });
        let dcs = Arc::new(dcs);
        let handle = Agent::start(AgentParts {
            node,
            cluster,
            service,
            dcs,
            api,
            events,
            metrics,
            shutdown,
            board,
            secret,
        });
        Ok((handle, server))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (
            node, cluster, service, api, events, metrics, shutdown, secret,
        );
        Err("this build has no etcd backend (build with --features etcd)".to_string())
    }
}

#[cfg(test)]
mod tests;

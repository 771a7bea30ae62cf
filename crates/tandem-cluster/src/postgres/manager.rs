//! The PostgreSQL manager: one task that owns the postmaster, observes it every tick, keeps it
//! in the role the lease gives this node, and answers the agent's promote and demote requests
//! in order. It runs under `supervise`, which fences PostgreSQL and restarts it should it fail.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tandem_core::clock::{self, Instant};
use tandem_core::{EventBus, TaskHandle};
use tokio::sync::{mpsc, oneshot, watch};

use super::metrics::{PgMetrics, ReplicaLabel, ResultLabel};
use super::pg::{ConfRole, Pg, Postmaster};
use super::repair::{start_repair, StartRepair};
use super::watchdog::{Feed, Watchdog};
use super::{candidacy, parse_lsn, slot_name, PgSettings, SyncMode, View};
use crate::agent::DynDcs;
use crate::state::{Command, PgMember};

/// `synchronous_standby_names` that no standby matches: commits wait (strict mode).
const NO_STANDBY: &str = "\"tandem_no_standby\"";

/// What the API shows about this node's PostgreSQL.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PgStatus {
    /// The postmaster's process id while it runs.
    pub pid: Option<i32>,
    pub running: bool,
    pub primary: bool,
    pub streaming: bool,
    pub timeline: u32,
    /// WAL position in bytes (`lsn_text` as PostgreSQL writes it).
    pub lsn: u64,
    pub lsn_text: String,
    /// (replica) bytes behind the primary's last reported position.
    pub lag_bytes: Option<u64>,
    /// In the cluster record's synchronous set.
    pub sync_standby: bool,
    /// What the manager is doing or waiting for.
    pub state: String,
    /// Why this node may not be promoted now, if it may not.
    pub not_candidate: Option<String>,
    pub error: Option<String>,
    /// (primary) the replicas streaming from it.
    pub replicas: Vec<ReplicaStat>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaStat {
    pub name: String,
    pub state: String,
    pub sync_state: String,
    pub lag_bytes: u64,
    pub replay_lag_seconds: Option<f64>,
}

pub(crate) enum Request {
    Promote {
        token: u64,
        planned: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Demote {
        planned: bool,
        reply: oneshot::Sender<()>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// The agent's and the API's handle on the manager.
#[derive(Clone)]
pub struct PgHandle {
    pub(crate) status: Arc<Mutex<PgStatus>>,
    pub(crate) member: Arc<Mutex<Option<PgMember>>>,
    /// The running manager's requests (replaced when the supervisor restarts it; the handles
    /// are its only owners, so the manager sees the agent go when they are all dropped).
    pub(crate) tx: Arc<Mutex<mpsc::UnboundedSender<Request>>>,
    /// The postmaster the manager started, kept here so that it can be fenced when the
    /// manager itself is gone.
    pub(crate) pm: Arc<Mutex<Option<Postmaster>>>,
    /// Set once the node stops: a failed manager is then not restarted.
    pub(crate) stopping: Arc<AtomicBool>,
    /// `host:port` of this node's PostgreSQL.
    pub(crate) addr: String,
}

/// The lock's data even if a thread panicked while holding it (the poison is cleared, so a
/// restarted manager can write again).
pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => {
            m.clear_poison();
            p.into_inner()
        }
    }
}

impl PgHandle {
    /// A handle with no manager yet (requests fail until the supervisor starts one).
    pub(crate) fn new(addr: String) -> PgHandle {
        let (tx, _) = mpsc::unbounded_channel();
        PgHandle {
            status: Arc::new(Mutex::new(PgStatus {
                state: "starting".into(),
                ..Default::default()
            })),
            member: Arc::new(Mutex::new(None)),
            tx: Arc::new(Mutex::new(tx)),
            pm: Arc::new(Mutex::new(None)),
            stopping: Arc::new(AtomicBool::new(false)),
            addr,
        }
    }

    pub fn status(&self) -> PgStatus {
        locked(&self.status).clone()
    }

    fn send(&self, r: Request) -> bool {
        locked(&self.tx).send(r).is_ok()
    }

    /// Stop the postmaster the manager started, whatever the manager's state: SIGINT, then
    /// SIGQUIT and SIGKILL to its group, each after `step`. Returns once it is gone.
    pub(crate) async fn fence(&self, step: Duration) {
        let pm = locked(&self.pm).clone();
        if let Some(pm) = pm.filter(|p| p.running()) {
            tracing::warn!(
                component = "postgres",
                pid = pm.pid,
                "stopping PostgreSQL without its manager"
            );
            pm.stop(step).await;
        }
    }

    pub(crate) fn member(&self) -> Option<PgMember> {
        self.member.lock().ok().and_then(|m| m.clone())
    }

    /// Promote (or bootstrap) under `token`; `Err` says why this node must not be primary.
    pub(crate) async fn promote(&self, token: u64, planned: bool) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let gone = || "the PostgreSQL manager is gone".to_string();
        if !self.send(Request::Promote {
            token,
            planned,
            reply,
        }) {
            return Err(gone());
        }
        rx.await.map_err(|_| gone())?
    }

    /// Stop accepting writes: returns once PostgreSQL is stopped (by the manager, or here
    /// when the manager is gone or fails meanwhile).
    pub(crate) async fn demote(&self, planned: bool) {
        let (reply, rx) = oneshot::channel();
        if !self.send(Request::Demote { planned, reply }) || rx.await.is_err() {
            self.fence(Duration::from_secs(2)).await;
        }
    }

    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let (reply, rx) = oneshot::channel();
        if !self.send(Request::Stop { reply }) || rx.await.is_err() {
            self.fence(Duration::from_secs(5)).await;
        }
    }
}

/// Everything the manager needs from the agent.
#[derive(Clone)]
pub(crate) struct ManagerParts {
    pub settings: PgSettings,
    pub me: String,
    pub dcs: Arc<dyn DynDcs>,
    pub view: watch::Receiver<View>,
    /// Until when this node may act as primary (the agent's lease).
    pub lease: Arc<dyn Fn() -> Option<Instant> + Send + Sync>,
    /// Whether this node may take the lease (sent on change).
    pub eligible: mpsc::UnboundedSender<bool>,
    pub events: EventBus,
    pub metrics: PgMetrics,
    pub ttl: Duration,
    pub margin: Duration,
    /// The tandem binary, for the watchdog process.
    pub watchdog_exe: Option<PathBuf>,
}

/// One observation of the local PostgreSQL.
#[derive(Clone, Debug, Default)]
struct Obs {
    running: bool,
    primary: bool,
    lsn: u64,
    lsn_text: String,
    streaming: bool,
    timeline: u32,
    sysid: String,
}

/// Start the manager task under its supervisor (`supervise`): the returned task owns both.
pub(crate) fn start(parts: ManagerParts) -> Result<(PgHandle, TaskHandle), String> {
    // The settings are checked once here: a restart meets the same ones.
    Pg::new(parts.settings.clone(), parts.me.clone())?;
    let handle = PgHandle::new(parts.settings.listen.to_string());
    let ctx = super::supervise::Ctx {
        me: parts.me.clone(),
        handle: handle.clone(),
        eligible: parts.eligible.clone(),
        events: parts.events.clone(),
        metrics: parts.metrics.clone(),
        lease: parts.lease.clone(),
    };
    let weak_tx = Arc::downgrade(&handle.tx);
    let shared = handle.clone_parts();
    let spawn = move || {
        let pg = Pg::new(parts.settings.clone(), parts.me.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        // All handles gone: the agent is gone, nothing to run for.
        let slot = weak_tx
            .upgrade()
            .ok_or_else(|| "the agent is gone".to_string())?;
        *locked(&slot) = tx;
        let m = Manager::new(parts.clone(), pg, &shared);
        Ok(tokio::spawn(m.run(rx)))
    };
    let task = TaskHandle::spawn(super::supervise::supervise(
        ctx,
        super::supervise::POLICY,
        spawn,
    ));
    Ok((handle, task))
}

/// The parts of a handle the manager writes (not the request sender: holding it would keep the
/// manager's channel open after the agent is gone).
pub(crate) struct SharedParts {
    status: Arc<Mutex<PgStatus>>,
    member: Arc<Mutex<Option<PgMember>>>,
    pm: Arc<Mutex<Option<Postmaster>>>,
}

impl PgHandle {
    fn clone_parts(&self) -> SharedParts {
        SharedParts {
            status: self.status.clone(),
            member: self.member.clone(),
            pm: self.pm.clone(),
        }
    }
}

/// A standby on its way into the synchronous set: `since` is the primary's position taken
/// once it was seen synchronous; it joins once it has flushed past it.
struct Pending {
    name: String,
    since: Option<u64>,
}

struct Manager {
    p: ManagerParts,
    pg: Pg,
    tick: Duration,
    pm: Option<Postmaster>,
    client: Option<tokio_postgres::Client>,
    /// The fencing token this node's PostgreSQL was promoted under.
    acting: Option<u64>,
    /// (replica) the upstream written into primary_conninfo.
    upstream: Option<String>,
    upstream_since: Instant,
    need_rewind: bool,
    /// The bootstrap recorded its database in the cluster record (never remove it then).
    recorded: bool,
    /// The highest WAL position seen replayed: progress, when it moves.
    progress_lsn: u64,
    /// The newest timeline this data directory received WAL on while streaming.
    streamed_tli: u32,
    /// Rewinds since this replica last streamed: a second one in a row clones instead.
    rewinds_in_row: u32,
    /// (primary) the synchronous_standby_names in force.
    sync_names: String,
    /// (primary) the standby in synchronous_standby_names on its way into the record's
    /// synchronous set.
    pending_sync: Option<Pending>,
    watchdog: Option<Watchdog>,
    watched_pid: Option<i32>,
    last_eligible: Option<bool>,
    ineligible_until: Option<Instant>,
    error: Option<String>,
    state: String,
    /// Consecutive failed observations of a primary.
    fails: u32,
    slots: std::collections::BTreeSet<String>,
    replicas: Vec<ReplicaStat>,
    retry_at: Option<Instant>,
    status: Arc<Mutex<PgStatus>>,
    member: Arc<Mutex<Option<PgMember>>>,
    /// The handle's copy of `pm`, for fencing without this task.
    pm_slot: Arc<Mutex<Option<Postmaster>>>,
    /// Starts of a replica in a row that did not lead to a PostgreSQL that answers.
    start_failures: u32,
    last_obs: Obs,
}

impl Manager {
    fn new(p: ManagerParts, pg: Pg, shared: &SharedParts) -> Manager {
        Manager {
            tick: (p.ttl / 10).max(Duration::from_millis(20)),
            p,
            pg,
            pm: None,
            client: None,
            acting: None,
            upstream: None,
            upstream_since: clock::now(),
            need_rewind: false,
            rewinds_in_row: 0,
            progress_lsn: 0,
            streamed_tli: 0,
            recorded: false,
            sync_names: String::new(),
            pending_sync: None,
            watchdog: None,
            watched_pid: None,
            last_eligible: None,
            ineligible_until: None,
            error: None,
            state: String::new(),
            fails: 0,
            slots: Default::default(),
            replicas: Vec::new(),
            retry_at: None,
            status: shared.status.clone(),
            member: shared.member.clone(),
            pm_slot: shared.pm.clone(),
            start_failures: 0,
            last_obs: Obs::default(),
        }
    }

    /// Returns once asked to stop (or the agent is gone); an error is a failure the
    /// supervisor acts on.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) -> Result<(), String> {
        self.start_watchdog();
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(Request::Promote { token, planned, reply }) => {
                        let r = self.promote(token, planned).await;
                        if let Err(e) = &r {
                            self.event("postgres_promote_failed", e.clone());
                            self.ineligible_until = Some(clock::now() + self.p.ttl * 2);
                            self.set_eligible(false);
                        }
                        let _ = reply.send(r);
                    }
                    Some(Request::Demote { planned, reply }) => {
                        self.demote(planned).await;
                        let _ = reply.send(());
                    }
                    Some(Request::Stop { reply }) => {
                        self.acting = None;
                        self.stop_postgres("the node is stopping").await;
                        let _ = reply.send(());
                        return Ok(());
                    }
                    None => {
                        self.stop_postgres("the agent is gone").await;
                        return Ok(());
                    }
                },
                _ = tokio::time::sleep(self.tick) => {}
            }
            self.step().await;
        }
    }

    fn event(&self, kind: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::info!(component = "postgres", kind, %reason);
        self.p.events.emit(kind, "postgres", &self.p.me, reason);
    }

    fn fail(&mut self, what: String) {
        if self.error.as_deref() != Some(what.as_str()) {
            tracing::error!(component = "postgres", error = %what);
            self.p
                .events
                .emit("postgres_error", "postgres", &self.p.me, what.clone());
        }
        self.error = Some(what);
        self.retry_at = Some(clock::now() + self.p.ttl.max(Duration::from_secs(1)));
    }

    fn view(&self) -> View {
        self.p.view.borrow().clone()
    }

    // ----- watchdog -----

    fn start_watchdog(&mut self) {
        let Some(exe) = &self.p.watchdog_exe else {
            tracing::warn!(
                component = "postgres",
                "no watchdog: a hung agent is not fenced"
            );
            return;
        };
        match Watchdog::start(exe, (self.p.margin / 2).max(Duration::from_millis(50))) {
            Ok(w) => self.watchdog = Some(w),
            Err(e) => self.fail(format!("cannot start the watchdog: {e}")),
        }
    }

    fn feed(&mut self, f: Feed) {
        let restart = match &mut self.watchdog {
            Some(w) => w.send(f).is_err() || !w.running(),
            None => false,
        };
        if restart {
            self.watchdog = None;
            self.watched_pid = None;
            self.start_watchdog();
            if let Some(w) = &mut self.watchdog {
                let _ = w.send(f);
            }
        }
    }

    /// Tell the watchdog about the postmaster and until when it may accept writes.
    fn feed_watchdog(&mut self) {
        let pid = self.pm.as_ref().filter(|p| p.running()).map(|p| p.pid);
        if let Some(pid) = pid {
            if self.watched_pid != Some(pid) {
                self.feed(Feed::Watch(pid));
                self.watched_pid = Some(pid);
            }
        }
        if self.acting.is_some() {
            self.arm();
        } else if pid.is_none() || (self.last_obs.running && !self.last_obs.primary) {
            self.feed(Feed::NoDeadline);
        }
    }

    /// Deadline = the lease's end; nothing is sent once the lease is gone, so the last
    /// deadline stands.
    fn arm(&mut self) {
        match (self.p.lease)() {
            Some(until) => {
                let left = until.saturating_duration_since(clock::now());
                let at = clock::boottime_ns() + left.as_nanos() as u64;
                self.feed(Feed::Deadline(at));
            }
            // Acting as primary without a lease: the deadline is now.
            None if self.acting.is_some() => self.feed(Feed::Deadline(clock::boottime_ns())),
            None => {}
        }
    }

    // ----- observation -----

    async fn observe(&mut self) -> Obs {
        let running = self.pm.as_ref().is_some_and(|p| p.running());
        if !running {
            self.client = None;
            return Obs::default();
        }
        let limit = (self.p.ttl / 2).max(Duration::from_millis(500));
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            match self.pg.connect(limit).await {
                Ok(c) => self.client = Some(c),
                Err(_) => return Obs::default(),
            }
        }
        let Some(c) = &self.client else {
            return Obs::default();
        };
        let q = "SELECT pg_is_in_recovery(), \
            (CASE WHEN pg_is_in_recovery() \
               THEN coalesce(greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0') \
               ELSE pg_current_wal_lsn() END)::text, \
            coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false), \
            (CASE WHEN pg_is_in_recovery() \
               THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                             (SELECT timeline_id FROM pg_control_checkpoint())) \
               ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END), \
            (SELECT system_identifier::text FROM pg_control_system())";
        match tokio::time::timeout(limit, c.query_one(q, &[])).await {
            Ok(Ok(row)) => {
                let mut obs = match obs_from_row(&row) {
                    Ok(o) => o,
                    Err(e) => {
                        self.fail(format!("unexpected answer from PostgreSQL: {e}"));
                        self.client = None;
                        return Obs::default();
                    }
                };
                // Once the stream ends (its primary stopped), PostgreSQL only tells the last
                // checkpoint's timeline, older than the WAL it received after a promotion:
                // keep the newest timeline it streamed on, or it would look behind replicas
                // whose last report was made while streaming (and refuse to be promoted).
                if !obs.primary {
                    if obs.streaming {
                        self.streamed_tli = self.streamed_tli.max(obs.timeline);
                    }
                    obs.timeline = obs.timeline.max(self.streamed_tli);
                }
                obs
            }
            _ => {
                self.client = None;
                Obs::default()
            }
        }
    }

    // ----- the periodic step -----

    async fn step(&mut self) {
        let view = self.view();
        let obs = self.observe().await;
        self.last_obs = obs.clone();
        self.feed_watchdog();
        if self.acting.is_some() {
            self.step_primary(&view, &obs).await;
        } else {
            self.step_replica(&view, &obs).await;
        }
        self.publish(&view);
    }

    async fn step_primary(&mut self, view: &View, obs: &Obs) {
        if obs.running && obs.primary {
            self.fails = 0;
            self.error = None;
            self.state = "running as primary".into();
            self.set_eligible(true);
            self.ensure_slots(view).await;
            self.replication(view).await;
            return;
        }
        self.fails += 1;
        let dead = !self.pm.as_ref().is_some_and(|p| p.running());
        // A live postmaster that does not answer (a slow machine) is given a few seconds.
        let patience = (Duration::from_secs(3).max(self.p.ttl * 3).as_millis()
            / self.tick.as_millis().max(1)) as u32;
        if dead || self.fails >= patience.max(3) {
            let why = if dead {
                let from = self.pm.as_ref().map_or(0, |p| p.log_from);
                format!("PostgreSQL exited: {}", self.pg.log_report(from))
            } else {
                "PostgreSQL does not answer as a primary".to_string()
            };
            if self.last_eligible != Some(false) {
                self.event("postgres_failed", why.clone());
            }
            self.state = why;
            // The agent demotes (and releases the lease) on this.
            self.set_eligible(false);
        }
    }

    async fn step_replica(&mut self, view: &View, obs: &Obs) {
        let me = self.p.me.clone();
        if obs.running && obs.primary {
            // Writable without the lease: never, whatever brought it here.
            self.p.metrics.fenced.inc();
            self.event(
                "postgres_fenced",
                "PostgreSQL ran as primary without the lease: stopped",
            );
            self.stop_postgres("fenced").await;
            self.need_rewind = true;
            return;
        }
        let running = self.pm.as_ref().is_some_and(|p| p.running());
        if !running {
            self.client = None;
            if self.retry_at.is_some_and(|t| clock::now() < t) {
                self.update_eligibility(view, obs);
                return;
            }
            self.bring_up_replica(view).await;
            let obs = self.observe().await;
            self.last_obs = obs.clone();
            self.update_eligibility(view, &obs);
            return;
        }
        if !obs.running {
            self.state = "PostgreSQL does not answer yet".into();
            // A standby that never reaches a consistent state with a live primary to stream
            // from cannot follow it: start over.
            if self.upstream.is_some()
                && clock::now().duration_since(self.upstream_since) > Duration::from_secs(120)
            {
                self.event(
                    "postgres_diverged",
                    "the replica does not become consistent: starting over",
                );
                self.stop_postgres("not consistent").await;
                self.need_rewind = true;
            }
            self.update_eligibility(view, obs);
            return;
        }
        // It answers: whatever failed to start before is behind it.
        self.start_failures = 0;
        // Follow the current primary.
        let upstream = view.primary(&me).map(|(_, m)| m.addr.clone());
        if upstream != self.upstream {
            let role = ConfRole::Standby {
                upstream: upstream.clone(),
            };
            match self.pg.write_conf(&role, false) {
                Ok(()) => {
                    self.reload().await;
                    self.event(
                        "postgres_following",
                        match &upstream {
                            Some(u) => format!("streaming from {u}"),
                            None => "no primary: replaying what it has".into(),
                        },
                    );
                    self.upstream = upstream.clone();
                    self.upstream_since = clock::now();
                }
                Err(e) => self.fail(e),
            }
        }
        self.state = match (&self.upstream, obs.streaming) {
            (Some(u), true) => format!("streaming from {u}"),
            (Some(u), false) => format!("connecting to {u}"),
            (None, _) => "waiting for a primary".into(),
        };
        // The clock for "cannot follow" runs from the last moment it streamed (or started to
        // follow); replay that moves forward (a standby working through local WAL before it
        // streams) is progress, not divergence.
        if obs.streaming {
            self.upstream_since = clock::now();
        }
        if obs.lsn > self.progress_lsn {
            self.progress_lsn = obs.lsn;
            if !obs.streaming {
                self.upstream_since = clock::now();
            }
        }
        // A replica that cannot stream from a live primary for long has most likely diverged
        // (it had WAL the new primary never got): rewind it.
        let stuck = Duration::from_secs(3).max(self.p.ttl * 3);
        if self.upstream.is_some()
            && !obs.streaming
            && clock::now().duration_since(self.upstream_since) > stuck
        {
            // Unreachable is not diverged: wait, and touch nothing.
            let up = self.upstream.clone().unwrap_or_default();
            if let Err(e) = reachable(&up).await {
                self.state = format!("cannot reach the primary at {up}: {e}");
                self.error = Some(self.state.clone());
                self.update_eligibility(view, obs);
                return;
            }
            self.event(
                "postgres_diverged",
                "cannot stream from the primary: rewinding",
            );
            self.stop_postgres("rewind").await;
            self.need_rewind = true;
            return;
        }
        if obs.streaming {
            self.rewinds_in_row = 0;
        }
        self.error = None;
        self.update_eligibility(view, obs);
    }

    /// Start PostgreSQL as a replica: clone, rewind or just start, as the data dir needs.
    async fn bring_up_replica(&mut self, view: &View) {
        let me = self.p.me.clone();
        let upstream = view
            .primary(&me)
            .map(|(n, m)| (n.to_string(), m.addr.clone()));
        if !self.pg.has_data() {
            if view.state.initialized.is_none() {
                self.state = "waiting for the cluster to be bootstrapped".into();
                return;
            }
            let Some((name, addr)) = upstream.clone() else {
                self.state = "no data directory: waiting for a primary to clone".into();
                return;
            };
            self.state = format!("cloning {name} ({addr})");
            self.before_long_operation();
            self.event("postgres_basebackup", format!("cloning {name} at {addr}"));
            if let Some(e) = self.pg.not_empty() {
                return self.fail(e);
            }
            self.streamed_tli = 0;
            let r = self.pg.basebackup(&addr).await;
            let label = ResultLabel {
                result: if r.is_ok() { "ok" } else { "failed" }.into(),
            };
            self.p.metrics.basebackups.get_or_create(&label).inc();
            if let Err(e) = r {
                // A half-written clone is worth nothing.
                if let Err(rm) = remove_dir(self.pg.s.data_dir.clone()).await {
                    tracing::warn!(component = "postgres", error = %rm, "cannot remove a failed clone");
                }
                return self.fail(format!("cloning {name} failed: {e}"));
            }
        }
        // Failed starts in a row: set the data aside and clone afresh (never on the holder,
        // never without a primary to clone from).
        match start_repair(
            &me,
            self.start_failures,
            self.pg.s.max_start_failures,
            self.acting.is_some(),
            view,
        ) {
            StartRepair::Retry => {}
            StartRepair::SetAside { from } => return self.set_aside_failed(&from).await,
            StartRepair::Keep(why) => {
                tracing::warn!(component = "postgres", failures = self.start_failures, %why, "PostgreSQL keeps failing to start; its data directory is kept");
            }
        }
        if let Err(e) = self.pg.prepare_dir() {
            return self.fail(e);
        }
        let ctrl = match self.pg.controldata().await {
            Ok(c) => c,
            Err(e) => {
                self.count_start_failure();
                self.p.metrics.start_failures.inc();
                return self.fail(e);
            }
        };
        if let Some(sysid) = &view.state.initialized {
            if &ctrl.sysid != sysid {
                return self.fail(format!(
                    "{} holds database {} but the cluster runs {sysid}: not started (move it away to clone the primary)",
                    self.pg.s.data_dir.display(),
                    ctrl.sysid
                ));
            }
        }
        // A fresh clone (backup_label present) starts from the primary's own checkpoint.
        let fresh_clone = self.pg.s.data_dir.join("backup_label").exists();
        if let Some((name, addr)) = &upstream {
            if (ctrl.was_primary() || self.need_rewind)
                && !fresh_clone
                && !self.rejoin(name, addr).await
            {
                return;
            }
        }
        self.need_rewind = false;
        let up = upstream.as_ref().map(|(_, a)| a.clone());
        if let Err(e) = self.pg.write_conf(
            &ConfRole::Standby {
                upstream: up.clone(),
            },
            true,
        ) {
            self.count_start_failure();
            self.p.metrics.start_failures.inc();
            return self.fail(e);
        }
        self.state = "starting as replica".into();
        // Counted before the start and forgiven once PostgreSQL answers (`step_replica`).
        self.count_start_failure();
        if self.start_postgres(Duration::from_secs(10)).await {
            self.upstream = up;
            self.upstream_since = clock::now();
            self.event("postgres_started", "running as replica");
        }
    }

    fn count_start_failure(&mut self) {
        self.start_failures += 1;
    }

    /// Move a data directory whose PostgreSQL failed to start `start_failures` times aside
    /// (`<data_dir>.failed-<unix seconds>`, the newest two kept): the next step clones `from`.
    async fn set_aside_failed(&mut self, from: &str) {
        let n = self.start_failures;
        let last = self.error.clone().unwrap_or_default();
        self.state = format!("setting the data directory aside to clone {from}");
        self.before_long_operation();
        let data = self.pg.s.data_dir.clone();
        let secs = clock::unix_millis() / 1000;
        let r = tokio::task::spawn_blocking(move || super::pg::set_aside_failed(&data, secs))
            .await
            .map_err(|e| format!("setting the data directory aside: {e}"))
            .and_then(|r| r);
        match r {
            Ok(aside) => {
                self.start_failures = 0;
                self.streamed_tli = 0;
                self.rewinds_in_row = 0;
                self.need_rewind = false;
                self.p.metrics.set_aside.inc();
                self.event(
                    "postgres_set_aside",
                    format!(
                        "PostgreSQL failed to start {n} times in a row (last: {last}); data directory kept at {}; cloning {from}",
                        aside.display()
                    ),
                );
            }
            Err(e) => self.fail(e),
        }
    }

    /// Make an old primary's data follow `name` again: pg_rewind, or a fresh clone when that
    /// is impossible. False when nothing can start this round.
    async fn rejoin(&mut self, name: &str, addr: &str) -> bool {
        // Neither a rewind nor a clone can work without the primary: wait for it rather than
        // set the data aside.
        if let Err(e) = reachable(addr).await {
            self.fail(format!("cannot reach the primary {name} at {addr}: {e}"));
            return false;
        }
        self.rewinds_in_row += 1;
        if self.pg.s.use_rewind && self.rewinds_in_row <= 1 {
            self.state = format!("rewinding to follow {name}");
            self.before_long_operation();
            self.event(
                "postgres_rewind",
                format!("pg_rewind from {name} at {addr}"),
            );
            let r = self.pg.rewind(addr).await;
            let label = ResultLabel {
                result: if r.is_ok() { "ok" } else { "failed" }.into(),
            };
            self.p.metrics.rewinds.get_or_create(&label).inc();
            match r {
                Ok(_) => return true,
                Err(e) => self.event(
                    "postgres_rewind_failed",
                    format!("{e}; cloning {name} instead"),
                ),
            }
        }
        let data = self.pg.s.data_dir.clone();
        let r = tokio::task::spawn_blocking(move || super::pg::set_aside(&data))
            .await
            .map_err(|e| format!("setting the data directory aside: {e}"))
            .and_then(|r| r);
        match r {
            Ok(aside) => {
                self.streamed_tli = 0;
                self.rewinds_in_row = 0;
                self.event(
                    "postgres_reclone",
                    format!("old data kept at {}; cloning {name}", aside.display()),
                );
                // The next step clones.
                self.need_rewind = false;
                false
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// Clones and rewinds take long and the manager answers nothing meanwhile: first tell the
    /// others this node is neither running nor a candidate.
    fn before_long_operation(&mut self) {
        self.set_eligible(false);
        self.last_obs = Obs::default();
        if let Ok(mut m) = self.member.lock() {
            *m = Some(PgMember {
                addr: self.pg.s.listen.to_string(),
                ..Default::default()
            });
        }
        if let Ok(mut st) = self.status.lock() {
            st.running = false;
            st.state = self.state.clone();
        }
    }

    /// Spawn the postmaster and wait (up to `wait`) until it answers. True while it runs.
    async fn start_postgres(&mut self, wait: Duration) -> bool {
        let pm = match self.pg.spawn() {
            Ok(pm) => pm,
            Err(e) => {
                self.fail(e);
                return false;
            }
        };
        let deadline = clock::now() + wait;
        let pid = pm.pid;
        self.set_pm(Some(pm));
        self.feed(Feed::Watch(pid));
        self.watched_pid = Some(pid);
        loop {
            if !self.pm.as_ref().is_some_and(|p| p.running()) {
                let from = self.pm.as_ref().map_or(0, |p| p.log_from);
                let report = self.pg.log_report(from);
                self.set_pm(None);
                self.p.metrics.start_failures.inc();
                self.fail(format!("PostgreSQL exited at start: {report}"));
                return false;
            }
            if let Ok(c) = self.pg.connect(Duration::from_secs(1)).await {
                if c.simple_query("SELECT 1").await.is_ok() {
                    self.client = Some(c);
                    self.error = None;
                    return true;
                }
            }
            if clock::now() > deadline {
                // Still recovering: the periodic step watches it from here.
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The postmaster, here and in the handle (for fencing without this task).
    fn set_pm(&mut self, pm: Option<Postmaster>) {
        *locked(&self.pm_slot) = pm.clone();
        self.pm = pm;
    }

    async fn stop_postgres(&mut self, why: &str) {
        self.client = None;
        if let Some(pm) = self.pm.clone() {
            if pm.running() {
                tracing::info!(component = "postgres", why, "stopping PostgreSQL");
                pm.stop(Duration::from_secs(5)).await;
            }
            // Cleared once stopped: until then the handle can still fence it.
            self.set_pm(None);
        }
        self.upstream = None;
        self.feed(Feed::NoDeadline);
    }

    async fn reload(&mut self) {
        // SIGHUP to the postmaster: what pg_reload_conf() does, without needing a connection.
        if let Some(pm) = self.pm.as_ref().filter(|p| p.running()) {
            let _ = super::sys::kill(pm.pid, libc::SIGHUP);
        } else if let Some(c) = &self.client {
            let _ = c.simple_query("SELECT pg_reload_conf()").await;
        }
    }

    // ----- eligibility -----

    fn mine(&self, obs: &Obs) -> Option<PgMember> {
        obs.running.then(|| PgMember {
            addr: self.pg.s.listen.to_string(),
            running: true,
            primary: obs.primary,
            lsn: obs.lsn,
            timeline: obs.timeline,
            streaming: obs.streaming,
            sysid: obs.sysid.clone(),
        })
    }

    fn update_eligibility(&mut self, view: &View, obs: &Obs) {
        let mine = self.mine(obs);
        let mut r = candidacy(
            &self.p.me,
            mine.as_ref(),
            self.pg.has_data(),
            view,
            self.pg.s.synchronous,
            self.pg.s.maximum_lag_on_failover,
        );
        if r.is_ok() && self.error.is_some() && view.state.initialized.is_none() {
            r = Err(self.error.clone().unwrap_or_default());
        }
        if self.ineligible_until.is_some_and(|t| clock::now() < t) {
            r = Err("a promotion failed moments ago".into());
        }
        if let Ok(mut s) = self.status.lock() {
            s.not_candidate = r.as_ref().err().cloned();
        }
        self.set_eligible(r.is_ok());
    }

    fn set_eligible(&mut self, e: bool) {
        if self.last_eligible != Some(e) {
            self.last_eligible = Some(e);
            let _ = self.p.eligible.send(e);
        }
    }

    // ----- promotion and demotion -----

    async fn promote(&mut self, token: u64, planned: bool) -> Result<(), String> {
        // A fresh, linearizable read: the others' positions and the synchronous set as they
        // stand now. Without one, no promotion.
        let mut view = self.view();
        let limit = (self.p.ttl / 2).max(Duration::from_millis(200));
        match tokio::time::timeout(limit, self.p.dcs.read_dyn()).await {
            Ok(Ok(state)) => view.state = state,
            Ok(Err(e)) => return Err(format!("cannot read the cluster record: {e}")),
            Err(_) => return Err("reading the cluster record timed out".into()),
        }
        if (self.p.lease)().is_none() {
            return Err("the lease ran out before the promotion".into());
        }
        if view.state.initialized.is_none() {
            return self.bootstrap(token).await;
        }
        let obs = self.observe().await;
        if !obs.running || obs.primary {
            return Err("PostgreSQL is not running as a replica".into());
        }
        let mut obs = obs;
        if planned {
            // The old primary shut down cleanly after sending its last WAL: wait until the
            // stream ends so that everything it sent is here before promoting.
            let deadline = clock::now() + self.p.ttl * 5;
            loop {
                let o = self.observe().await;
                if o.running {
                    obs = o.clone();
                }
                if !o.streaming || clock::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // A planned switchover must be as safe as a failover (its target may have stopped
        // streaming and left the synchronous set meanwhile).
        let mine = self.mine(&obs);
        candidacy(
            &self.p.me,
            mine.as_ref(),
            true,
            &view,
            self.pg.s.synchronous,
            self.pg.s.maximum_lag_on_failover,
        )?;
        // Commits wait for a standby that does not exist until the record says who may be
        // promoted after this node: nothing is acknowledged in between, so the old
        // synchronous set stays valid should this promotion fail.
        self.sync_names = if self.pg.s.synchronous == SyncMode::Off {
            String::new()
        } else {
            NO_STANDBY.to_string()
        };
        self.pending_sync = None;
        self.pg.write_conf(
            &ConfRole::Primary {
                sync_names: self.sync_names.clone(),
            },
            false,
        )?;
        self.reload().await;
        if (self.p.lease)().is_none() {
            return Err("the lease ran out before the promotion".into());
        }
        self.acting = Some(token);
        self.arm();
        let r = match &self.client {
            None => Err("lost the connection to PostgreSQL".to_string()),
            Some(c) => match tokio::time::timeout(
                Duration::from_secs(60),
                c.query_one("SELECT pg_promote(true, 60)", &[]),
            )
            .await
            {
                Ok(Ok(row)) => match row.try_get::<_, bool>(0) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("pg_promote did not finish in 60s".to_string()),
                    Err(e) => Err(format!("unexpected answer from pg_promote: {e}")),
                },
                Ok(Err(e)) => Err(format!("pg_promote failed: {e}")),
                Err(_) => Err("pg_promote timed out".to_string()),
            },
        };
        if let Err(e) = r {
            // The promotion may still complete on its own: stop PostgreSQL (the watchdog stays
            // armed until it is down) before giving the lease up.
            self.stop_postgres("promotion failed").await;
            self.acting = None;
            self.need_rewind = true;
            return Err(e);
        }
        if self.pg.s.synchronous != SyncMode::Off {
            // Now nobody but this node may be promoted, then (mode "on") commits stop waiting.
            if let Err(e) = self.set_sync(token, Vec::new()).await {
                self.stop_postgres("the synchronous set could not be recorded")
                    .await;
                self.acting = None;
                self.need_rewind = true;
                return Err(e);
            }
            if self.pg.s.synchronous == SyncMode::On {
                self.sync_names = String::new();
                self.apply_sync_names().await;
            }
        }
        self.upstream = None;
        self.slots.clear();
        self.ensure_slots(&view).await;
        self.p.metrics.promotions.inc();
        if planned {
            self.p.metrics.switchovers.inc();
        } else {
            self.p.metrics.failovers.inc();
        }
        self.event(
            "postgres_promoted",
            format!(
                "promoted at {} ({}), fencing token {token}",
                obs.lsn_text,
                if planned { "switchover" } else { "failover" }
            ),
        );
        Ok(())
    }

    /// The first primary: initdb (or adopt the data dir's database), start, create the
    /// replication user, and record the database in the cluster record.
    async fn bootstrap(&mut self, token: u64) -> Result<(), String> {
        self.stop_postgres("bootstrap").await;
        let fresh = !self.pg.has_data();
        if fresh {
            self.state = "initdb".into();
            self.event("postgres_initdb", "bootstrapping the cluster");
            self.pg.initdb().await?;
        }
        self.recorded = false;
        let r = self.bootstrap_start(token).await;
        if r.is_err() {
            self.acting = None;
            self.stop_postgres("bootstrap failed").await;
            // The record may have taken the database although the answer was lost.
            let named = match tokio::time::timeout(self.p.ttl, self.p.dcs.read_dyn()).await {
                Ok(Ok(st)) => st.initialized.is_some(),
                _ => true,
            };
            if fresh && !self.recorded && !named {
                // Nobody ever wrote to it and the record does not name it: a later attempt
                // (here or on another node) starts clean.
                if let Err(e) = remove_dir(self.pg.s.data_dir.clone()).await {
                    tracing::warn!(component = "postgres", error = %e, "cannot remove the failed bootstrap's data directory");
                }
            }
        }
        r
    }

    async fn bootstrap_start(&mut self, token: u64) -> Result<(), String> {
        self.pg.prepare_dir()?;
        self.sync_names = match self.pg.s.synchronous {
            SyncMode::Strict => NO_STANDBY.to_string(),
            _ => String::new(),
        };
        self.pending_sync = None;
        self.pg.write_conf(
            &ConfRole::Primary {
                sync_names: self.sync_names.clone(),
            },
            true,
        )?;
        self.acting = Some(token);
        self.arm();
        if !self.start_postgres(Duration::from_secs(60)).await || self.client.is_none() {
            self.acting = None;
            return Err(self.error.clone().unwrap_or_else(|| "start failed".into()));
        }
        let Some(c) = &self.client else {
            self.acting = None;
            return Err("lost the connection to PostgreSQL".into());
        };
        let user = self.pg.s.replication_user.replace('"', "\"\"");
        let create = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{}') THEN CREATE ROLE \"{user}\" WITH REPLICATION LOGIN; END IF; END $$",
            self.pg.s.replication_user.replace('\'', "''")
        );
        c.batch_execute(&create)
            .await
            .map_err(|e| format!("creating the replication user: {e}"))?;
        let obs = self.observe().await;
        if !obs.primary || obs.sysid.is_empty() {
            self.acting = None;
            return Err("PostgreSQL did not come up as a primary".into());
        }
        let cmd = Command::SetInitialized {
            node: self.p.me.clone(),
            token,
            sysid: obs.sysid.clone(),
        };
        let out = self.write_retrying(cmd).await?;
        if !out.ok {
            return Err("the cluster record names another database or another primary".into());
        }
        self.recorded = true;
        if self.pg.s.synchronous != SyncMode::Off {
            self.set_sync(token, Vec::new()).await?;
        }
        self.p.metrics.promotions.inc();
        self.event(
            "postgres_bootstrapped",
            format!("database {} running as primary", obs.sysid),
        );
        Ok(())
    }

    async fn demote(&mut self, planned: bool) {
        let was = self.acting.take();
        if planned {
            if let Some(c) = &self.client {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.simple_query("CHECKPOINT"))
                    .await;
            }
        }
        if was.is_some() || self.last_obs.primary {
            self.stop_postgres("demoted").await;
            self.need_rewind = true;
            self.event(
                "postgres_demoted",
                if planned {
                    "stopped for the switchover"
                } else {
                    "stopped: the lease is gone"
                },
            );
        }
    }

    /// A store write, retried on errors (not on refusals) while the lease lasts.
    async fn write_retrying(&self, cmd: Command) -> Result<crate::state::Outcome, String> {
        let limit = (self.p.ttl / 2).max(Duration::from_millis(200));
        let mut last = String::new();
        for _ in 0..5 {
            if (self.p.lease)().is_none() {
                break;
            }
            match tokio::time::timeout(limit, self.p.dcs.write_dyn(cmd.clone())).await {
                Ok(Ok(o)) => return Ok(o),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
            tokio::time::sleep(self.p.ttl / 20).await;
        }
        Err(format!("the store did not take the write: {last}"))
    }

    async fn set_sync(&mut self, token: u64, sync: Vec<String>) -> Result<(), String> {
        let cmd = Command::SetSync {
            node: self.p.me.clone(),
            token,
            sync: sync.clone(),
        };
        match self.write_retrying(cmd).await.map_err(|e| (true, e)) {
            Ok(o) if o.ok => {
                self.event(
                    "postgres_sync_set",
                    format!("synchronous set: [{}]", sync.join(", ")),
                );
                Ok(())
            }
            Ok(_) => Err("the lease is no longer ours".into()),
            Err((_, e)) => Err(format!("recording the synchronous set: {e}")),
        }
    }

    // ----- primary duties -----

    async fn ensure_slots(&mut self, view: &View) {
        let Some(c) = &self.client else { return };
        let wanted: Vec<String> = view
            .state
            .members
            .keys()
            .filter(|n| **n != self.p.me)
            .map(|n| slot_name(n))
            .filter(|s| !self.slots.contains(s))
            .collect();
        for slot in wanted {
            let q = "SELECT pg_create_physical_replication_slot($1) \
                     WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)";
            if c.execute(q, &[&slot]).await.is_ok() {
                self.slots.insert(slot);
            }
        }
    }

    /// Observe the replicas and keep synchronous_standby_names and the record's synchronous
    /// set in step (see docs/design/postgres.md for the order of the two writes).
    async fn replication(&mut self, view: &View) {
        let Some(c) = &self.client else { return };
        let q = "SELECT application_name, state, coalesce(sync_state, ''), \
                 coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn), 0)::float8, \
                 extract(epoch from replay_lag)::float8, coalesce(flush_lsn, '0/0')::text, \
                 pg_current_wal_lsn()::text \
                 FROM pg_stat_replication";
        let Ok(Ok(rows)) = tokio::time::timeout(self.p.ttl / 2, c.query(q, &[])).await else {
            return;
        };
        let mut reps = Vec::new();
        let mut flush = std::collections::BTreeMap::new();
        let mut current = None;
        for r in &rows {
            let (rep, f, cur) = match replica_from_row(r) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(component = "postgres", error = %e, "unexpected row in pg_stat_replication: skipped");
                    continue;
                }
            };
            current = parse_lsn(&cur);
            if rep.state == "streaming" {
                flush.insert(
                    rep.name.clone(),
                    (parse_lsn(&f).unwrap_or(0), rep.sync_state.clone()),
                );
            }
            reps.push(rep);
        }
        for rep in &reps {
            let l = ReplicaLabel {
                replica: rep.name.clone(),
            };
            self.p
                .metrics
                .lag_bytes
                .get_or_create(&l)
                .set(rep.lag_bytes as f64);
            self.p
                .metrics
                .lag_seconds
                .get_or_create(&l)
                .set(rep.replay_lag_seconds.unwrap_or(0.0));
            self.p
                .metrics
                .sync_standby
                .get_or_create(&l)
                .set(i64::from(rep.sync_state == "sync"));
        }
        self.replicas = reps;
        if self.pg.s.synchronous == SyncMode::Off {
            return;
        }
        let Some(token) = self.acting else { return };
        let members = &view.state.members;
        let current_name = unquote(&self.sync_names).filter(|n| members.contains_key(n));
        let set = view.state.sync.clone();
        if let Some(t) = current_name.as_ref().filter(|t| flush.contains_key(*t)) {
            // The standby in force streams: it joins (alone) the set once it holds everything.
            if set != [t.clone()] {
                let (lsn, sync_state) = flush.get(t).cloned().unwrap_or_default();
                // The primary's position is taken one tick after the standby was first seen
                // synchronous (every walsender has applied the new names by then): every
                // commit acknowledged from that point on waited for it, and once it has
                // flushed past that point it holds the earlier ones too.
                let since = match (&self.pending_sync, sync_state == "sync") {
                    (Some(Pending { name, since }), true) if name == t => match since {
                        Some(at) => Some(*at),
                        None => {
                            self.pending_sync = Some(Pending {
                                name: t.clone(),
                                since: Some(current.unwrap_or(u64::MAX)),
                            });
                            None
                        }
                    },
                    (_, true) => {
                        self.pending_sync = Some(Pending {
                            name: t.clone(),
                            since: None,
                        });
                        None
                    }
                    (_, false) => None,
                };
                if since.is_some_and(|at| lsn >= at)
                    && self.set_sync(token, vec![t.clone()]).await.is_ok()
                {
                    self.pending_sync = None;
                }
            }
            return;
        }
        // No standby in force streams: pick one that does.
        let mut candidates: Vec<(&String, u64)> = flush
            .iter()
            .filter(|(n, _)| members.contains_key(*n) && **n != self.p.me)
            .map(|(n, (l, _))| (n, *l))
            .collect();
        candidates.sort_by_key(|(n, l)| (!set.contains(n), std::cmp::Reverse(*l)));
        if let Some((b, _)) = candidates.first() {
            let b = (*b).clone();
            // Whoever holds the commits acknowledged so far stays in the set until `b` has
            // them all; `b` joins it first, as commits will wait for it alone. An empty set
            // (only this primary holds them) stays empty until `b` has caught up.
            if !set.is_empty() && !set.contains(&b) {
                let mut wider = set.clone();
                wider.push(b.clone());
                if self.set_sync(token, wider).await.is_err() {
                    return;
                }
            }
            self.sync_names = quote(&b);
            self.pending_sync = None;
            self.apply_sync_names().await;
            self.event(
                "postgres_sync_standby",
                format!("{b} is the synchronous standby"),
            );
        } else if self.pg.s.synchronous == SyncMode::On
            && (!set.is_empty() || !self.sync_names.is_empty())
        {
            // Nobody to wait for: first nobody may be promoted, then commits stop waiting.
            if self.set_sync(token, Vec::new()).await.is_ok() {
                self.sync_names = String::new();
                self.pending_sync = None;
                self.apply_sync_names().await;
                self.event(
                    "postgres_sync_standby",
                    "no standby streams: commits are acknowledged without one (no failover until one catches up)",
                );
            }
        }
    }

    async fn apply_sync_names(&mut self) {
        let role = ConfRole::Primary {
            sync_names: self.sync_names.clone(),
        };
        match self.pg.write_conf(&role, false) {
            Ok(()) => self.reload().await,
            Err(e) => self.fail(e),
        }
    }

    // ----- publishing -----

    fn publish(&mut self, view: &View) {
        let obs = &self.last_obs;
        let member = self.mine(obs).or_else(|| {
            Some(PgMember {
                addr: self.pg.s.listen.to_string(),
                ..Default::default()
            })
        });
        let m = &self.p.metrics;
        m.up.set(i64::from(obs.running));
        m.primary.set(i64::from(obs.running && obs.primary));
        m.timeline.set(obs.timeline as i64);
        m.lsn.set(obs.lsn);
        let primary_lsn = view
            .state
            .members
            .iter()
            .filter(|(n, _)| **n != self.p.me)
            .filter_map(|(_, m)| m.info.pg.as_ref())
            .filter(|p| p.primary && p.running)
            .map(|p| p.lsn)
            .max();
        if let Ok(mut s) = self.status.lock() {
            s.pid = self.pm.as_ref().filter(|p| p.running()).map(|p| p.pid);
            s.running = obs.running;
            s.primary = obs.running && obs.primary;
            s.streaming = obs.streaming;
            s.timeline = obs.timeline;
            s.lsn = obs.lsn;
            s.lsn_text = obs.lsn_text.clone();
            s.lag_bytes = (!obs.primary && obs.running)
                .then(|| primary_lsn.map(|p| p.saturating_sub(obs.lsn)))
                .flatten();
            s.sync_standby = view.state.sync.contains(&self.p.me);
            s.state = self.state.clone();
            s.error = self.error.clone();
            s.replicas = if s.primary {
                self.replicas.clone()
            } else {
                Vec::new()
            };
            if self.acting.is_some() {
                s.not_candidate = None;
            }
        }
        if let Ok(mut mm) = self.member.lock() {
            *mm = member;
        }
    }
}

/// One observation from the observation query's row (`try_get`: a NULL or a changed type is
/// an error, not a panic).
fn obs_from_row(row: &tokio_postgres::Row) -> Result<Obs, tokio_postgres::Error> {
    let lsn_text: String = row.try_get(1)?;
    Ok(Obs {
        running: true,
        primary: !row.try_get::<_, bool>(0)?,
        lsn: parse_lsn(&lsn_text).unwrap_or(0),
        lsn_text,
        streaming: row.try_get(2)?,
        timeline: row.try_get::<_, i32>(3)?.max(0) as u32,
        sysid: row.try_get(4)?,
    })
}

/// A row of `pg_stat_replication` as queried in `replication`: the replica, its flush
/// position and the primary's current position (as PostgreSQL writes them).
fn replica_from_row(
    r: &tokio_postgres::Row,
) -> Result<(ReplicaStat, String, String), tokio_postgres::Error> {
    // application_name and state are NULL for a walsender still starting up.
    let name: Option<String> = r.try_get(0)?;
    let state: Option<String> = r.try_get(1)?;
    let rep = ReplicaStat {
        name: name.unwrap_or_default(),
        state: state.unwrap_or_default(),
        sync_state: r.try_get(2)?,
        lag_bytes: r.try_get::<_, f64>(3)?.max(0.0) as u64,
        replay_lag_seconds: r.try_get(4)?,
    };
    Ok((rep, r.try_get(5)?, r.try_get(6)?))
}

/// Remove a directory tree on the blocking pool (it can take long; the runtime renews the
/// lease meanwhile).
async fn remove_dir(path: PathBuf) -> Result<(), String> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|e| format!("cannot remove {shown}: {e}"))
}

/// A TCP connection to `addr` opens within a second.
async fn reachable(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection timed out".into()),
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\"\"", "\""))
}

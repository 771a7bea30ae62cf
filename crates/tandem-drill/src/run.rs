//! One drill run: workload, role watch, fault at its time, then the measures.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::clock::{self, Instant};

use crate::chaos::{self, converge, PgWatch};
use crate::client::{self, Conn, Outcome};
use crate::fault;
use crate::invariants::Sample;
use crate::measure::{self, build, holders};
use crate::report::{Objective, RunReport};
use crate::scenario::{FaultKind, RequestKind, Scenario};
use crate::target::{prepare_target, read_back};
use crate::workload::{self, Progress};
use crate::writes;
use crate::DrillError;

type Samples = Arc<Mutex<BTreeMap<String, Vec<Sample>>>>;
/// Per node: when a `/primary` probe that got any answer was sent (ms since start).
type Alive = Arc<Mutex<BTreeMap<String, Vec<f64>>>>;

/// Run `s` once. `progress` prints a live line on stderr.
pub async fn run_scenario(s: &Scenario, progress: bool) -> Result<RunReport, DrillError> {
    let target_kind = s.target().map_err(DrillError::Refused)?;
    prepare_target(&target_kind, s.workload.kind).await?;
    for (name, a) in &s.watch.nodes {
        if client::get_json(a, "/health", Duration::from_secs(2))
            .await
            .is_none()
        {
            return Err(DrillError::Refused(format!(
                "node {name} ({a}) does not answer GET /health"
            )));
        }
    }
    let token = match &s.watch.token_file {
        Some(f) => std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| DrillError::Refused(format!("watch.token_file {f}: {e}")))?,
        None => String::new(),
    };
    // Resolve the fault's target before starting anything: an impossible fault is refused.
    let mut target = None;
    let named = s.fault.node != "primary"
        || s.fault.pid_file.is_some()
        || s.fault.kind == FaultKind::DiskFull;
    if s.fault.kind != FaultKind::None && named {
        target = Some(
            fault::resolve(&s.fault, &s.watch.nodes)
                .await
                .map_err(DrillError::Refused)?,
        );
    }

    let chaos_plan = match &s.chaos {
        Some(c) => Some(chaos::prepare(s, c).await?),
        None => None,
    };

    let start = clock::now();
    let pg_watch = chaos_plan
        .as_ref()
        .filter(|_| !s.watch.postgres.is_empty())
        .map(|_| PgWatch::start(&s.watch.postgres));
    let wall_start = tandem_core::clock::unix_millis();
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Progress::default());
    // Sequence numbers unique to this run (the store keeps earlier runs' writes).
    let seq_from = wall_start.saturating_mul(1000);
    let load = tokio::spawn(workload::run(
        target_kind.clone(),
        s.workload.clone(),
        start,
        live.clone(),
        stop.clone(),
        seq_from,
    ));
    let samples: Samples = Arc::new(Mutex::new(BTreeMap::new()));
    let alive: Alive = Arc::new(Mutex::new(BTreeMap::new()));
    let watchers: Vec<_> = s
        .watch
        .nodes
        .iter()
        .map(|(n, a)| {
            tokio::spawn(watch_role(
                n.clone(),
                a.clone(),
                samples.clone(),
                alive.clone(),
                start,
                stop.clone(),
            ))
        })
        .collect();
    let ticker = progress.then(|| {
        tokio::spawn(progress_line(
            live.clone(),
            samples.clone(),
            start,
            stop.clone(),
        ))
    });

    let mut fault_ms = None;
    let mut faulted = None;
    let mut undo = None;
    if s.fault.kind != FaultKind::None {
        clock::sleep_until(start + s.fault.at.get()).await;
        let t = match target.take() {
            Some(t) => t,
            None => match fault::resolve(&s.fault, &s.watch.nodes).await {
                Ok(t) => t,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DrillError::Failed(e));
                }
            },
        };
        let at = clock::now();
        match fault::inject(&s.fault, &t, &s.watch, &token).await {
            Ok(u) => undo = Some(u),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(DrillError::Failed(e));
            }
        }
        fault_ms = Some(at.duration_since(start).as_secs_f64() * 1000.0);
        faulted = Some(t.node);
        if let (
            FaultKind::Sigstop
            | FaultKind::LinkDown
            | FaultKind::Netem
            | FaultKind::Partition
            | FaultKind::DiskFull,
            Some(d),
        ) = (s.fault.kind, s.fault.duration)
        {
            tokio::time::sleep(d.get()).await;
            if let Some(u) = undo.as_mut() {
                u.now();
            }
        }
    }
    let mut chaos_done = None;
    if let (Some(c), Some((seed, plan))) = (&s.chaos, &chaos_plan) {
        let (faults, last_undo, restarts) = chaos::run_faults(s, c, plan, start, &token).await;
        let convergence = converge::wait(
            &s.watch.nodes,
            &s.watch.postgres,
            last_undo.unwrap_or_else(clock::now),
            c.converge_timeout.get(),
        )
        .await;
        // The nodes the drill started again keep running, as under a service manager.
        drop(restarts);
        chaos_done = Some((*seed, faults, convergence));
    }
    let output = load.await.unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        let _ = w.await;
    }
    if let Some(t) = ticker {
        let _ = t.await;
        eprintln!();
    }
    let mut fault_error = None;
    if let Some(mut u) = undo.take() {
        if let Some(h) = u.switchover.take() {
            if let Ok(Err(e)) = h.await {
                fault_error = Some(e);
            }
        }
    }

    // Recovery: the faulted node answers again (after the stop ends, for sigstop), measured
    // during the run; if it is not back by the end, wait for it a little longer.
    let back_from = fault_ms.map(|f| {
        f + s
            .fault
            .duration
            .map_or(0.0, |d| d.get().as_secs_f64() * 1000.0)
    });
    let recovery_ms = match (&faulted, fault_ms, back_from) {
        (Some(n), Some(f), Some(from))
            if s.fault.kind != FaultKind::Switchover && s.watch.nodes.contains_key(n) =>
        {
            let seen = alive
                .lock()
                .ok()
                .and_then(|a| a.get(n).and_then(|v| v.iter().copied().find(|&t| t > from)));
            match (seen, s.watch.nodes.get(n)) {
                (Some(t), _) => Some(t - f),
                (None, Some(addr)) => {
                    let wait = s.fault.recovery_timeout.get();
                    if !wait.is_zero() {
                        eprintln!(
                            "  waiting up to {} for {n} to answer again (recovery)",
                            s.fault.recovery_timeout
                        );
                    }
                    recovery(addr, start, wait).await.map(|r| r - f)
                }
                (None, None) => None,
            }
        }
        _ => None,
    };
    let detection_ms = match fault_ms {
        Some(f) => {
            let all: Vec<&String> = s
                .watch
                .nodes
                .values()
                .chain(s.watch.observers.iter())
                .collect();
            detection(&all, wall_start + f as u64).await
        }
        None => None,
    };
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let written = if s.workload.kind == RequestKind::Writes {
        let holders = holders(&samples, start);
        let wait = s.workload.read_back_timeout.get();
        let seen = read_back(&target_kind, output.seq_from, output.seq_to, wait).await;
        Some(writes::analyse(
            &output.acks,
            seen.as_deref().map_err(Clone::clone),
            (output.seq_from, output.seq_to),
            fault_ms,
            &holders,
            &s.watch.served_by,
        ))
    } else {
        None
    };
    let pg_invariant = match pg_watch {
        Some(w) => Some(w.finish(start).await),
        None => None,
    };
    let first_fault = chaos_done
        .as_ref()
        .and_then(|(_, f, _)| f.iter().find_map(|x| x.injected_ms));
    let fault_ms = fault_ms.or(first_fault);
    let mut report = build(
        s,
        output.requests,
        written,
        &samples,
        start,
        fault_ms,
        faulted,
        detection_ms,
        recovery_ms,
    );
    if let Some((seed, faults, convergence)) = chaos_done {
        report.fault = "chaos".into();
        report.chaos = Some(chaos::report(
            seed,
            faults,
            convergence,
            &samples,
            start,
            pg_invariant,
            report.writes.as_ref(),
        ));
    }
    if let Some(e) = fault_error {
        report.objectives.push(Objective {
            name: "fault".into(),
            wanted: "injected".into(),
            got: e,
            met: false,
        });
    }
    Ok(report)
}

async fn watch_role(
    node: String,
    addr: String,
    samples: Samples,
    alive: Alive,
    start: Instant,
    stop: Arc<AtomicBool>,
) {
    let mut conn = Conn::new(&addr);
    let mut next = clock::now();
    while !stop.load(Ordering::Relaxed) {
        let sent = clock::now();
        let r = conn
            .request("GET", "/primary", None, Duration::from_millis(300))
            .await;
        let answered = clock::now();
        if let Outcome::Status(..) = r {
            if let Ok(mut a) = alive.lock() {
                a.entry(node.clone())
                    .or_default()
                    .push(sent.duration_since(start).as_secs_f64() * 1000.0);
            }
        }
        if let Outcome::Status(200, body) = r {
            let token = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["fencing_token"].as_u64())
                .unwrap_or(0);
            if let Ok(mut s) = samples.lock() {
                s.entry(node.clone()).or_default().push(Sample {
                    sent: sent.into_std(),
                    answered: answered.into_std(),
                    token,
                });
            }
        }
        next += Duration::from_millis(10);
        clock::sleep_until(next.max(clock::now())).await;
    }
}

async fn progress_line(
    live: Arc<Progress>,
    samples: Samples,
    start: Instant,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let primary = samples
            .lock()
            .ok()
            .and_then(|s| {
                s.iter()
                    .filter_map(|(n, v)| v.last().map(|x| (x.answered, n.clone())))
                    .max()
                    .map(|x| x.1)
            })
            .unwrap_or_else(|| "-".into());
        eprint!(
            "\r  t={:>5.1}s  ok={:<7} failed={:<6} primary={:<8}",
            clock::since(start).as_secs_f64(),
            live.ok.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
            primary
        );
        let _ = std::io::stderr().flush();
    }
}

/// Time (ms since start) the node answers `/health` again, waiting up to `wait`.
async fn recovery(addr: &str, start: Instant, wait: Duration) -> Option<f64> {
    let deadline = clock::now() + wait;
    while clock::now() < deadline {
        if client::get_json(addr, "/health", Duration::from_millis(300))
            .await
            .is_some()
        {
            return Some(clock::since(start).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The first event any node logged after the fault that shows it noticed, in ms after it
/// ([`measure::detection`]).
async fn detection(apis: &[&String], fault_wall_ms: u64) -> Option<f64> {
    let mut events = Vec::new();
    for addr in apis {
        if let Some(serde_json::Value::Array(list)) =
            client::get_json(addr, "/events", Duration::from_secs(2)).await
        {
            events.extend(list);
        }
    }
    measure::detection(&events, fault_wall_ms)
}

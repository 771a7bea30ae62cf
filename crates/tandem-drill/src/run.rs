//! One drill run: workload, role watch, fault at its time, then the measures.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::clock::{self, Instant};

use crate::client::{self, Conn, Outcome};
use crate::fault;
use crate::invariants::{analyse, Sample};
use crate::report::{Latency, Objective, RunReport, Timeline};
use crate::scenario::{FaultKind, RequestKind, Scenario, TargetKind};
use crate::workload::{self, Progress, Request};
use crate::writes::{self, WriteReport};
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

    let start = clock::now();
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
        tokio::time::sleep_until(start + s.fault.at.get()).await;
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
                (None, Some(addr)) => recovery(addr, start).await.map(|r| r - f),
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

/// Check the target before anything runs: PostgreSQL gets its table; an HTTP target taking
/// writes must list them.
async fn prepare_target(t: &TargetKind, kind: RequestKind) -> Result<(), DrillError> {
    match (t, kind) {
        (TargetKind::Postgres(cfg), _) => {
            crate::pg::prepare(cfg).await.map_err(DrillError::Refused)
        }
        (TargetKind::Http(addr, path), RequestKind::Writes) => {
            let p = format!("{}?from={}", workload::writes_path(path), u64::MAX);
            match Conn::new(addr)
                .request("GET", &p, None, Duration::from_secs(2))
                .await
            {
                Outcome::Status(200, _) => Ok(()),
                other => Err(DrillError::Refused(format!(
                    "target.http: GET {p} on {addr} answered {other:?}; sequenced writes need a target that stores POST {}/N and lists them",
                    workload::writes_path(path)
                ))),
            }
        }
        (TargetKind::Http(..) | TargetKind::Tcp(_), _) => Ok(()),
    }
}

/// The sequence numbers in `[from, to)` the target holds, retrying for up to `wait` (the
/// target may still be failing over).
async fn read_back(t: &TargetKind, from: u64, to: u64, wait: Duration) -> Result<Vec<u64>, String> {
    match t {
        TargetKind::Postgres(cfg) => crate::pg::read_back(cfg, from, to, wait).await,
        TargetKind::Tcp(_) => Err("a TCP target has no writes to read back".into()),
        TargetKind::Http(addr, path) => {
            let p = format!("{}?from={from}", workload::writes_path(path));
            let deadline = clock::now() + wait;
            let mut conn = Conn::new(addr);
            loop {
                let last = match conn.request("GET", &p, None, Duration::from_secs(5)).await {
                    Outcome::Status(200, body) => {
                        return String::from_utf8_lossy(&body)
                            .lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(|l| {
                                l.trim()
                                    .parse::<u64>()
                                    .map_err(|_| format!("GET {p}: {l:?} is not a sequence number"))
                            })
                            .collect();
                    }
                    other => format!("GET {p} on {addr}: {other:?}"),
                };
                if clock::now() >= deadline {
                    return Err(last);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Each node's first answer 200 with each fencing token, by when it was answered.
fn holders(samples: &BTreeMap<String, Vec<Sample>>, start: Instant) -> Vec<writes::Holder> {
    let std_start = start.into_std();
    let mut out = Vec::new();
    for (node, list) in samples {
        let mut last = None;
        for x in list {
            if last != Some(x.token) {
                let ms = x
                    .answered
                    .saturating_duration_since(std_start)
                    .as_secs_f64()
                    * 1000.0;
                out.push((ms, node.clone(), x.token));
                last = Some(x.token);
            }
        }
    }
    out
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
        tokio::time::sleep_until(next.max(clock::now())).await;
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
            start.elapsed().as_secs_f64(),
            live.ok.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
            primary
        );
        let _ = std::io::stderr().flush();
    }
}

/// Time (ms since start) the node answers `/health` again, waiting up to 20 s.
async fn recovery(addr: &str, start: Instant) -> Option<f64> {
    let deadline = clock::now() + Duration::from_secs(20);
    while clock::now() < deadline {
        if client::get_json(addr, "/health", Duration::from_millis(300))
            .await
            .is_some()
        {
            return Some(start.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The first event any node logged after the fault, in ms after it.
async fn detection(apis: &[&String], fault_wall_ms: u64) -> Option<f64> {
    let mut first: Option<u64> = None;
    for addr in apis {
        if let Some(serde_json::Value::Array(events)) =
            client::get_json(addr, "/events", Duration::from_secs(2)).await
        {
            for e in events {
                let at = e["at_ms"].as_u64().unwrap_or(0);
                let kind = e["kind"].as_str().unwrap_or("");
                if at >= fault_wall_ms && kind != "started" {
                    first = Some(first.map_or(at, |f| f.min(at)));
                }
            }
        }
    }
    first.map(|f| (f - fault_wall_ms) as f64)
}

#[allow(clippy::too_many_arguments)]
fn build(
    s: &Scenario,
    requests: Vec<Request>,
    written: Option<WriteReport>,
    samples: &BTreeMap<String, Vec<Sample>>,
    start: Instant,
    fault_ms: Option<f64>,
    faulted: Option<String>,
    detection_ms: Option<f64>,
    recovery_ms: Option<f64>,
) -> RunReport {
    let fault_at = fault_ms.unwrap_or(0.0);
    // Longest gap between successful completions that ends after the fault.
    let mut done: Vec<f64> = requests
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.start_ms + r.latency_ms)
        .collect();
    done.sort_by(f64::total_cmp);
    let mut rto = (0.0, fault_at, fault_at);
    let mut prev = done
        .iter()
        .copied()
        .rfind(|&t| t <= fault_at)
        .unwrap_or(0.0);
    for &t in done.iter().filter(|&&t| t > fault_at) {
        if t - prev > rto.0 {
            rto = (t - prev, prev, t);
        }
        prev = t;
    }
    let end = s.workload.duration.get().as_secs_f64() * 1000.0;
    if done.last().is_none_or(|&l| l <= fault_at) && fault_ms.is_some() {
        rto = (end - prev, prev, end);
    }
    let mut failures = BTreeMap::new();
    for r in requests.iter().filter(|r| !r.ok) {
        *failures.entry(r.what.to_string()).or_insert(0) += 1;
    }
    let window = |from: f64, to: f64| -> Vec<&Request> {
        requests
            .iter()
            .filter(|r| r.start_ms >= from && r.start_ms < to)
            .collect()
    };
    let (during_from, during_to) = if fault_ms.is_some() {
        (fault_at, rto.2.max(fault_at + 1.0))
    } else {
        (0.0, 0.0)
    };
    let analysis = analyse(samples);
    let std_start = start.into_std();
    let ms_of =
        |t: std::time::Instant| t.saturating_duration_since(std_start).as_secs_f64() * 1000.0;
    let mut primaries: Vec<(f64, String, u64)> = Vec::new();
    for (node, list) in samples {
        let mut last = None;
        for x in list {
            if last != Some(x.token) {
                primaries.push((ms_of(x.sent), node.clone(), x.token));
                last = Some(x.token);
            }
        }
    }
    primaries.sort_by(|a, b| a.0.total_cmp(&b.0));
    let failover_ms = fault_ms.and_then(|f| {
        primaries
            .iter()
            .find(|(ms, node, _)| *ms > f && Some(node) != faulted.as_ref())
            .map(|(ms, _, _)| ms - f)
    });
    let timeline = timeline(&requests, end, primaries);
    let failed = requests.iter().filter(|r| !r.ok).count();
    let mut objectives = Vec::new();
    if let Some(want) = s.objectives.rto {
        let w = want.get().as_secs_f64() * 1000.0;
        objectives.push(Objective {
            name: "rto".into(),
            wanted: format!("<= {want}"),
            got: format!("{:.0}ms", rto.0),
            met: rto.0 <= w,
        });
    }
    if let Some(want) = s.objectives.failed_requests {
        objectives.push(Objective {
            name: "failed_requests".into(),
            wanted: format!("<= {want}"),
            got: failed.to_string(),
            met: failed as u64 <= want,
        });
    }
    if let Some(w) = &written {
        write_objectives(s, w, &mut objectives);
    }
    RunReport {
        writes: written,
        scenario: s.name.clone(),
        fault: format!("{:?}", s.fault.kind).to_lowercase(),
        faulted_node: faulted,
        fault_ms,
        requests: requests.len(),
        ok: requests.len() - failed,
        failed,
        failures,
        rto_ms: if fault_ms.is_some() { rto.0 } else { 0.0 },
        detection_ms,
        failover_ms,
        recovery_ms,
        split_brain: analysis.violations,
        latency_before: Latency::of(&window(0.0, fault_ms.unwrap_or(end))),
        latency_during: Latency::of(&window(during_from, during_to)),
        latency_after: Latency::of(&window(during_to.max(fault_ms.unwrap_or(end)), end + 1.0)),
        objectives,
        timeline,
    }
}

fn timeline(requests: &[Request], end_ms: f64, primaries: Vec<(f64, String, u64)>) -> Timeline {
    let bucket = 10u32;
    let n = (end_ms / f64::from(bucket)).ceil() as usize + 1;
    let mut t = Timeline {
        bucket_ms: bucket,
        ok: vec![0; n],
        failed: vec![0; n],
        max_latency_ms: vec![0.0; n],
        primaries,
    };
    for r in requests {
        let i = ((r.start_ms / f64::from(bucket)) as usize).min(n - 1);
        if r.ok {
            t.ok[i] += 1;
        } else {
            t.failed[i] += 1;
        }
        t.max_latency_ms[i] = t.max_latency_ms[i].max(r.latency_ms as f32);
    }
    t
}

/// The objectives about writes: lost writes, RPO, acknowledgements by an old primary.
fn write_objectives(s: &Scenario, w: &WriteReport, out: &mut Vec<Objective>) {
    let o = &s.objectives;
    let unknown = w
        .read_back_error
        .as_ref()
        .map(|e| format!("read-back failed: {e}"));
    if let Some(want) = o.lost_writes {
        out.push(Objective {
            name: "lost_writes".into(),
            wanted: format!("<= {want}"),
            got: unknown.clone().unwrap_or_else(|| w.lost.to_string()),
            met: unknown.is_none() && w.lost as u64 <= want,
        });
    }
    if let Some(rpo) = o.rpo {
        let want = rpo.0.as_secs_f64() * 1000.0;
        let got = match (&unknown, w.rpo_ms) {
            (Some(u), _) => u.clone(),
            (None, None) => "0 (no acknowledged write lost)".into(),
            (None, Some(ms)) => format!("{} writes lost over {ms:.0}ms", w.lost),
        };
        let met = unknown.is_none()
            && (w.lost == 0 || (want > 0.0 && w.rpo_ms.is_some_and(|ms| ms <= want)));
        out.push(Objective {
            name: "rpo".into(),
            wanted: String::from(rpo),
            got,
            met,
        });
    }
    if let Some(want) = o.old_primary_acks {
        out.push(Objective {
            name: "old_primary_acks".into(),
            wanted: format!("<= {want}"),
            got: w.old_primary_acks.to_string(),
            met: w.old_primary_acks as u64 <= want,
        });
    }
}

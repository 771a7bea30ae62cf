//! From what a run recorded to its report: RTO, failures by kind, latency windows, failover
//! time, the timeline, and the objectives. Pure functions, no I/O.

use std::collections::BTreeMap;

use tandem_core::clock::Instant;

use crate::invariants::{analyse, Sample};
use crate::report::{Latency, Objective, RunReport, Timeline};
use crate::scenario::Scenario;
use crate::workload::Request;
use crate::writes::{self, WriteReport};

/// Each node's first answer 200 with each fencing token, by when it was answered.
pub(crate) fn holders(
    samples: &BTreeMap<String, Vec<Sample>>,
    start: Instant,
) -> Vec<writes::Holder> {
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

/// Event kinds that show the cluster noticed a failure: a server taken down, a lease that moved,
/// was taken or given up, a lost quorum, an unhealthy service, a VIP that changed hands,
/// PostgreSQL failing or changing role. Not the drill's own `fault_injected`, nor starts,
/// recoveries, reloads or operator actions: those happen whether or not anything noticed.
pub(crate) const DETECTION_KINDS: &[&str] = &[
    "server_down",
    "backup_active",
    "promoted",
    "demoted",
    "lease_holder_changed",
    "quorum_lost",
    "service_unhealthy",
    "vip_master",
    "vip_backup",
    "postgres_failed",
    "postgres_error",
    "postgres_promoted",
    "postgres_demoted",
    "postgres_fenced",
    "postgres_promote_failed",
];

/// Detection time: from the fault (wall clock, ms since the epoch) to the earliest event among
/// `events` (as `GET /events` returns them, from any number of nodes) of a kind in
/// [`DETECTION_KINDS`] at or after it; `None` when nothing noticed.
pub(crate) fn detection<'a>(
    events: impl IntoIterator<Item = &'a serde_json::Value>,
    fault_wall_ms: u64,
) -> Option<f64> {
    events
        .into_iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| DETECTION_KINDS.contains(&k))
        })
        .filter_map(|e| e["at_ms"].as_u64())
        .filter(|&at| at >= fault_wall_ms)
        .min()
        .map(|at| (at - fault_wall_ms) as f64)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
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
        chaos: None,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::detection;

    fn event(at_ms: u64, kind: &str) -> serde_json::Value {
        json!({"seq": 1, "at_ms": at_ms, "kind": kind, "component": "x", "subject": "n1", "reason": ""})
    }

    #[test]
    fn the_drills_own_fault_event_is_not_detection() {
        let fault = 1_000_000;
        let events = [
            event(fault - 500, "server_down"), // before the fault: not this failure
            event(fault + 2, "fault_injected"),
            event(fault + 5, "started"),
            event(fault + 40, "config_reloaded"),
            event(fault + 300, "server_down"),
            event(fault + 900, "promoted"),
        ];
        assert_eq!(detection(&events, fault), Some(300.0));
        // Nothing but the drill's own event and unrelated ones: nothing noticed the fault.
        assert_eq!(detection(&events[..4], fault), None);
    }

    #[test]
    fn the_earliest_detection_on_any_node_counts() {
        let fault = 5_000;
        let a = [
            event(fault + 700, "promoted"),
            event(fault + 720, "vip_master"),
        ];
        let b = [
            event(fault, "fault_injected"),
            event(fault + 450, "lease_holder_changed"),
        ];
        assert_eq!(detection(a.iter().chain(&b), fault), Some(450.0));
        assert_eq!(detection(&[event(fault, "quorum_lost")], fault), Some(0.0));
    }
}

//! Drill reports: per-run measures, a summary over repeats (min/median/max), JSON, a text
//! table, and a self-contained HTML page with a timeline chart.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::workload::Request;
use crate::writes::WriteReport;

/// Latency percentiles of a window, in ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub requests: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(reqs: &[&Request]) -> Latency {
        let mut l: Vec<f64> = reqs.iter().map(|r| r.latency_ms).collect();
        if l.is_empty() {
            return Latency::default();
        }
        l.sort_by(f64::total_cmp);
        let at = |q: f64| l[((l.len() as f64 - 1.0) * q).round() as usize];
        Latency {
            requests: l.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One objective and whether it was met.
#[derive(Clone, Debug, Serialize)]
pub struct Objective {
    pub name: String,
    pub wanted: String,
    pub got: String,
    pub met: bool,
}

/// Requests per 10 ms bucket, and role changes, for the chart.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    pub bucket_ms: u32,
    pub ok: Vec<u32>,
    pub failed: Vec<u32>,
    pub max_latency_ms: Vec<f32>,
    /// (ms, node) when a node was first seen primary (with a new token).
    pub primaries: Vec<(f64, String, u64)>,
}

/// Everything measured in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub fault: String,
    pub faulted_node: Option<String>,
    pub fault_ms: Option<f64>,
    pub requests: usize,
    pub ok: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// Longest time after the fault with no successful request.
    pub rto_ms: f64,
    /// Fault to the first event a node logged about it.
    pub detection_ms: Option<f64>,
    /// Fault to another node answering 200 on `/primary`.
    pub failover_ms: Option<f64>,
    /// Fault to the faulted node answering `/health` again.
    pub recovery_ms: Option<f64>,
    /// Proven moments with two primaries (must be empty).
    pub split_brain: Vec<String>,
    pub latency_before: Latency,
    pub latency_during: Latency,
    pub latency_after: Latency,
    /// Sequenced writes read back after the run (workload kind "writes").
    pub writes: Option<WriteReport>,
    pub objectives: Vec<Objective>,
    pub timeline: Timeline,
    /// A chaos run: its seed, schedule, invariants and convergence.
    pub chaos: Option<crate::chaos::ChaosReport>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.split_brain.is_empty()
            && self.objectives.iter().all(|o| o.met)
            && self.chaos.as_ref().is_none_or(|c| c.passed())
    }
}

/// min / median / max of a measure over repeats.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stat {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        })
    }
}

/// All runs of a drill.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub runs: Vec<RunReport>,
    pub rto_ms: Option<Stat>,
    pub failed: Option<Stat>,
    pub failover_ms: Option<Stat>,
    pub detection_ms: Option<Stat>,
    /// Acknowledged writes lost, over the runs that read them back.
    pub lost_writes: Option<Stat>,
    pub passed: bool,
}

impl Summary {
    pub fn new(scenario: &str, runs: Vec<RunReport>) -> Summary {
        Summary {
            scenario: scenario.to_string(),
            rto_ms: Stat::of(runs.iter().map(|r| r.rto_ms).collect()),
            failed: Stat::of(runs.iter().map(|r| r.failed as f64).collect()),
            failover_ms: Stat::of(runs.iter().filter_map(|r| r.failover_ms).collect()),
            detection_ms: Stat::of(runs.iter().filter_map(|r| r.detection_ms).collect()),
            lost_writes: Stat::of(
                runs.iter()
                    .filter_map(|r| r.writes.as_ref())
                    .filter(|w| w.read_back_error.is_none())
                    .map(|w| w.lost as f64)
                    .collect(),
            ),
            passed: runs.iter().all(RunReport::passed),
            runs,
        }
    }

    /// The table printed at the end of a drill.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drill {}: {} run(s), {}",
            self.scenario,
            self.runs.len(),
            if self.passed { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>10}",
            "measure", "min", "median", "max"
        );
        let row = |out: &mut String, name: &str, s: &Option<Stat>, unit: &str| match s {
            Some(s) => writeln!(
                out,
                "{name:<28} {:>8.0}{unit} {:>8.0}{unit} {:>8.0}{unit}",
                s.min, s.median, s.max
            ),
            None => writeln!(out, "{name:<28} {:>10} {:>10} {:>10}", "-", "-", "-"),
        };
        let _ = row(&mut out, "time without service (RTO)", &self.rto_ms, "ms");
        let _ = row(&mut out, "failed requests", &self.failed, "  ");
        let _ = row(&mut out, "failover (new primary)", &self.failover_ms, "ms");
        let _ = row(
            &mut out,
            "detection (first event)",
            &self.detection_ms,
            "ms",
        );
        if self.runs.iter().any(|r| r.writes.is_some()) {
            let _ = row(
                &mut out,
                "lost writes (acknowledged)",
                &self.lost_writes,
                "  ",
            );
        }
        for (i, r) in self.runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "run {}: fault {} on {}; {} requests, {} failed {:?}; p99 before/during/after {:.1}/{:.1}/{:.1} ms; two primaries seen: {}",
                i + 1,
                r.fault,
                r.faulted_node.as_deref().unwrap_or("-"),
                r.requests,
                r.failed,
                r.failures,
                r.latency_before.p99,
                r.latency_during.p99,
                r.latency_after.p99,
                if r.split_brain.is_empty() { "no" } else { "YES" }
            );
            if let Some(w) = &r.writes {
                match &w.read_back_error {
                    Some(e) => {
                        let _ = writeln!(
                            out,
                            "  writes: {} acknowledged; read-back FAILED: {e}",
                            w.acked
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  writes: {} acknowledged, {} read back, {} lost{}; {} acknowledged by an old primary",
                            w.acked,
                            w.found,
                            w.lost,
                            w.rpo_ms
                                .map(|ms| format!(
                                    " (over {ms:.0}ms, first {:?})",
                                    &w.lost_seqs[..w.lost_seqs.len().min(3)]
                                ))
                                .unwrap_or_default(),
                            w.old_primary_acks
                        );
                    }
                }
                if !w.acked_by.is_empty() {
                    let by: Vec<String> =
                        w.acked_by.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    let _ = writeln!(out, "    acknowledged by: {}", by.join(", "));
                }
                for e in &w.old_primary_examples {
                    let _ = writeln!(out, "    {e}");
                }
            }
            if let Some(c) = &r.chaos {
                chaos_lines(&mut out, c);
            }
            for o in &r.objectives {
                let _ = writeln!(
                    out,
                    "  objective {}: wanted {}, got {}: {}",
                    o.name,
                    o.wanted,
                    o.got,
                    if o.met { "met" } else { "MISSED" }
                );
            }
        }
        out
    }

    /// A self-contained HTML report (no external assets).
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <title>tandem drill</title><style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
             pre{background:#f4f4f4;padding:1em;overflow:auto}svg{width:100%;height:auto;border:1px solid #ddd}\
             .legend span{margin-right:1.5em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}</style></head><body>",
        );
        let _ = write!(
            out,
            "<h1>Drill: {}</h1><pre>{}</pre>",
            esc(&self.scenario),
            esc(&self.table())
        );
        for (i, r) in self.runs.iter().enumerate() {
            let _ = write!(out, "<h2>Run {}</h2>{}", i + 1, chart(r));
            if let Some(c) = &r.chaos {
                out.push_str(&chaos_table(c));
            }
        }
        out.push_str(
            "<p class=\"legend\"><span style=\"color:#2a2\">&#9632; successful requests</span>\
             <span style=\"color:#d22\">&#9632; failed requests</span><span style=\"color:#36c\">&#9473; max latency</span>\
             <span style=\"color:#d22\">&#9475; fault</span><span style=\"color:#a6c\">&#9475; new primary</span>\
             <span style=\"color:#e80\">&#9475; acknowledged write lost</span></p></body></html>",
        );
        out
    }
}

/// The chaos part of a run's lines in the table.
fn chaos_lines(out: &mut String, c: &crate::chaos::ChaosReport) {
    let failed = c.schedule.iter().filter(|f| f.error.is_some()).count();
    let _ = writeln!(
        out,
        "  chaos seed {}: {} faults injected of {} planned{}; {} invariant violations",
        c.seed,
        c.injected,
        c.schedule.len(),
        if failed > 0 {
            format!(" ({failed} could not be made or undone)")
        } else {
            String::new()
        },
        c.violations()
    );
    for i in &c.invariants {
        let _ = writeln!(
            out,
            "    invariant {}: {} checks, {} violations",
            i.name,
            i.checks,
            i.violations.len()
        );
        for v in i.violations.iter().take(5) {
            let _ = writeln!(out, "      at {:.3}s: {}", v.at_ms / 1000.0, v.what);
        }
    }
    let conv = &c.convergence;
    let _ = match (conv.converged, conv.after_ms) {
        (true, Some(ms)) => writeln!(
            out,
            "    converged {ms:.0}ms after the last fault (allowed {:.0}ms)",
            conv.timeout_ms
        ),
        _ => writeln!(
            out,
            "    NOT converged {:.0}ms after the last fault: {}",
            conv.timeout_ms,
            conv.missing.as_deref().unwrap_or("?")
        ),
    };
    for f in c.schedule.iter().filter(|f| f.error.is_some()).take(5) {
        let _ = writeln!(
            out,
            "    fault at {:.3}s {} on {}: {}",
            f.at_ms as f64 / 1000.0,
            f.kind,
            f.node.as_deref().unwrap_or(&f.target),
            f.error.as_deref().unwrap_or_default()
        );
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chaos schedule and invariant checks of a run, as HTML tables.
fn chaos_table(c: &crate::chaos::ChaosReport) -> String {
    let mut t = format!(
        "<h3>Chaos seed {}: {} faults, {} invariant violations</h3><table class=\"invariants\"><tr><th>invariant</th><th>checks</th><th>violations</th></tr>",
        c.seed,
        c.injected,
        c.violations()
    );
    for i in &c.invariants {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.name),
            i.checks,
            i.violations.len()
        );
    }
    let conv = match c.convergence.after_ms {
        Some(ms) if c.convergence.converged => format!("converged after {ms:.0} ms"),
        _ => format!(
            "NOT converged: {}",
            esc(c.convergence.missing.as_deref().unwrap_or("?"))
        ),
    };
    let _ = write!(
        t,
        "</table><p>{conv}</p><table class=\"schedule\"><tr><th>planned</th><th>kind</th><th>target</th><th>node</th><th>injected</th><th>undone</th><th>error</th></tr>"
    );
    let secs = |ms: Option<f64>| {
        ms.map(|m| format!("{:.3}s", m / 1000.0))
            .unwrap_or_default()
    };
    for f in &c.schedule {
        let _ = write!(
            t,
            "<tr><td>{:.3}s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.at_ms as f64 / 1000.0,
            esc(&f.kind),
            esc(&f.target),
            esc(f.node.as_deref().unwrap_or("")),
            secs(f.injected_ms),
            secs(f.undone_ms),
            esc(f.error.as_deref().unwrap_or(""))
        );
    }
    t.push_str("</table>");
    t
}

/// An SVG timeline: requests per bucket (success up, failure down), max latency, markers.
fn chart(r: &RunReport) -> String {
    let t = &r.timeline;
    let n = t.ok.len().max(1);
    let (w, h) = (1000.0, 240.0);
    let mid = 150.0;
    let bw = w / n as f64;
    let peak =
        t.ok.iter()
            .chain(t.failed.iter())
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
    let lat_peak = t.max_latency_ms.iter().copied().fold(1.0f32, f32::max) as f64;
    let mut s = format!("<svg viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"timeline\">");
    let _ = write!(
        s,
        "<line x1=\"0\" y1=\"{mid}\" x2=\"{w}\" y2=\"{mid}\" stroke=\"#999\"/>"
    );
    for i in 0..n {
        let x = i as f64 * bw;
        let ok = f64::from(t.ok.get(i).copied().unwrap_or(0));
        let bad = f64::from(t.failed.get(i).copied().unwrap_or(0));
        if ok > 0.0 {
            let hh = ok / peak * 130.0;
            let _ = write!(s, "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{bw:.2}\" height=\"{hh:.2}\" fill=\"#2a2\"/>", mid - hh);
        }
        if bad > 0.0 {
            let hh = bad / peak * 80.0;
            let _ = write!(s, "<rect class=\"failed\" x=\"{x:.2}\" y=\"{mid}\" width=\"{bw:.2}\" height=\"{hh:.2}\" fill=\"#d22\"/>");
        }
    }
    let pts: Vec<String> = t
        .max_latency_ms
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * bw,
                mid - f64::from(*l) / lat_peak * 130.0
            )
        })
        .collect();
    let _ = write!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#36c\" stroke-width=\"1\"/>",
        pts.join(" ")
    );
    let x_of = |ms: f64| ms / f64::from(t.bucket_ms.max(1)) * bw;
    if let Some(f) = r.fault_ms {
        let x = x_of(f);
        let _ = write!(s, "<line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{h}\" stroke=\"#d22\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"14\" fill=\"#d22\">{}</text>", x + 3.0, esc(&r.fault));
    }
    for (ms, node, token) in &t.primaries {
        let x = x_of(*ms);
        let _ = write!(s, "<line x1=\"{x:.1}\" y1=\"20\" x2=\"{x:.1}\" y2=\"{h}\" stroke=\"#a6c\" stroke-dasharray=\"4\"/><text x=\"{:.1}\" y=\"{}\" fill=\"#a6c\">{} (token {token})</text>", x + 3.0, h - 6.0, esc(node));
    }
    // Chaos: each fault as a shaded span with its kind and node, each violation as a black tick.
    if let Some(c) = &r.chaos {
        for f in &c.schedule {
            let Some(from) = f.injected_ms else { continue };
            let to = f.undone_ms.unwrap_or(from + 1.0);
            let (x0, x1) = (x_of(from), x_of(to));
            let _ = write!(
                s,
                "<rect class=\"chaos-fault\" x=\"{x0:.1}\" y=\"20\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d22\" fill-opacity=\"0.12\"><title>{} on {} {:.1}-{:.1}s</title></rect><text x=\"{x0:.1}\" y=\"32\" font-size=\"9\" fill=\"#d22\">{} {}</text>",
                (x1 - x0).max(1.0),
                h - 40.0,
                esc(&f.kind),
                esc(f.node.as_deref().unwrap_or(&f.target)),
                from / 1000.0,
                to / 1000.0,
                esc(&f.kind),
                esc(f.node.as_deref().unwrap_or(&f.target))
            );
        }
        for i in &c.invariants {
            for v in &i.violations {
                let x = x_of(v.at_ms);
                let _ = write!(s, "<line class=\"violation\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{h}\" stroke=\"#000\" stroke-width=\"2\"><title>{}: {}</title></line>", esc(&i.name), esc(&v.what));
            }
        }
    }
    // Acknowledged writes that were lost, as ticks under the chart.
    if let Some(w) = &r.writes {
        for ms in &w.lost_at_ms {
            let x = x_of(*ms);
            let _ = write!(s, "<line class=\"lost\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{h}\" stroke=\"#e80\"/>", h - 18.0);
        }
    }
    let secs = n as f64 * f64::from(t.bucket_ms) / 1000.0;
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#666\">{secs:.1} s</text></svg>",
        w - 4.0,
        mid + 14.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Failure;

    #[test]
    fn percentiles_and_summary() {
        let reqs: Vec<Request> = (1..=100)
            .map(|i| Request {
                start_ms: f64::from(i),
                latency_ms: f64::from(i),
                ok: true,
                what: Failure::None,
            })
            .collect();
        let refs: Vec<&Request> = reqs.iter().collect();
        let l = Latency::of(&refs);
        assert_eq!((l.p50.round(), l.p99, l.max), (51.0, 99.0, 100.0));
        let run = RunReport {
            rto_ms: 1200.0,
            failed: 3,
            ..Default::default()
        };
        let s = Summary::new(
            "x",
            vec![
                run.clone(),
                RunReport {
                    rto_ms: 800.0,
                    ..run
                },
            ],
        );
        let st = s.rto_ms.clone().unwrap_or(Stat {
            min: 0.0,
            median: 0.0,
            max: 0.0,
        });
        assert_eq!((st.min, st.max), (800.0, 1200.0));
        assert!(s.table().contains("time without service"));
        let html = s.html();
        assert!(
            html.starts_with("<!doctype html>")
                && html.contains("<svg")
                && !html.contains("http://cdn")
        );
        assert!(!html.contains("class=\"lost\""));
        let lossy = RunReport {
            writes: Some(WriteReport {
                lost: 2,
                lost_at_ms: vec![100.0, 200.0],
                ..Default::default()
            }),
            ..Default::default()
        };
        let html = Summary::new("y", vec![lossy]).html();
        assert_eq!(html.matches("class=\"lost\"").count(), 2);
    }
}

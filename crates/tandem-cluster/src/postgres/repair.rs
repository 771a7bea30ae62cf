//! Decisions about a PostgreSQL that cannot start, apart from I/O: which lines of its log say
//! why (`failure_lines`, `start_report`), and whether a replica's data directory is set aside
//! and cloned afresh after repeated failed starts (`start_repair`), as Patroni does.

use super::View;

/// At most this many FATAL/PANIC/ERROR lines are reported (the last ones).
const MAX_FAILURE_LINES: usize = 5;
/// Each reported line is cut to this many characters.
const MAX_LINE_CHARS: usize = 300;
/// Lines of plain log tail reported besides the FATAL/PANIC/ERROR lines.
const TAIL_LINES: usize = 3;

fn cut(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// The last few lines of PostgreSQL's log text that carry `FATAL:`, `PANIC:` or `ERROR:`,
/// each cut to a bounded length.
pub fn failure_lines(text: &str) -> Vec<String> {
    let mut hits: Vec<String> = text
        .lines()
        .filter(|l| ["FATAL:", "PANIC:", "ERROR:"].iter().any(|k| l.contains(k)))
        .map(cut)
        .collect();
    let drop = hits.len().saturating_sub(MAX_FAILURE_LINES);
    hits.drain(..drop);
    hits
}

/// What an error about a failed start says: PostgreSQL's FATAL/PANIC/ERROR lines, then the
/// last lines of its log (often the `LOG:` line that names the culprit) not already listed.
pub fn start_report(text: &str) -> String {
    let mut out = failure_lines(text);
    let tail: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(TAIL_LINES)
        .map(cut)
        .collect();
    for l in tail.into_iter().rev() {
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.is_empty() {
        return "(PostgreSQL's log says nothing)".into();
    }
    out.join(" | ")
}

/// What to do with a replica's data directory after failed starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartRepair {
    /// Fewer failures in a row than the limit: start it again.
    Retry,
    /// Move the data directory aside and clone the primary `from` afresh.
    SetAside { from: String },
    /// The data must stay where it is (the reason); start it again.
    Keep(String),
}

/// After `failures` failed starts in a row (limit `max`), may this node's data directory be
/// set aside? Never on the node that holds the lease or acts as primary (a primary's data is
/// the cluster's), never before the cluster is bootstrapped, and never without a running
/// primary whose agent is alive to clone from.
pub fn start_repair(me: &str, failures: u32, max: u32, acting: bool, view: &View) -> StartRepair {
    if failures < max {
        return StartRepair::Retry;
    }
    let holder = view.state.lease.as_ref().map(|l| l.holder.as_str());
    if acting || holder == Some(me) {
        return StartRepair::Keep(
            "this node holds the lease: a primary's data directory is never set aside".into(),
        );
    }
    if view.state.initialized.is_none() {
        return StartRepair::Keep("the cluster is not bootstrapped yet".into());
    }
    match view.primary(me) {
        Some((name, _)) => StartRepair::SetAside {
            from: name.to_string(),
        },
        None => StartRepair::Keep("no running primary to clone from".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ClusterState, LeaseRecord, MemberInfo, MemberRecord, PgMember};

    const LOG: &str = "\
2024-05-01 10:00:00.000 UTC [10] LOG:  starting PostgreSQL 15.6
2024-05-01 10:00:00.001 UTC [10] LOG:  listening on IPv4 address \"127.0.0.1\", port 5433
2024-05-01 10:00:00.002 UTC [11] LOG:  database system was shut down in recovery
2024-05-01 10:00:00.003 UTC [11] FATAL:  requested timeline 11 does not contain minimum recovery point 0/5000100 on timeline 9
2024-05-01 10:00:00.004 UTC [10] LOG:  startup process (PID 11) exited with exit code 1
2024-05-01 10:00:00.005 UTC [10] LOG:  aborting startup due to startup process failure
2024-05-01 10:00:00.006 UTC [10] LOG:  database system is shut down
";

    #[test]
    fn fatal_lines_are_found_beyond_the_last_three() {
        let lines = failure_lines(LOG);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("FATAL:  requested timeline 11"),
            "{lines:?}"
        );
        let report = start_report(LOG);
        assert!(report.starts_with("2024-05-01 10:00:00.003 UTC [11] FATAL:"));
        assert!(report.ends_with("database system is shut down"), "{report}");
        assert_eq!(report.matches(" | ").count(), 3, "{report}");
    }

    #[test]
    fn failure_lines_are_bounded_in_number_and_length() {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!("ERROR:  number {i}\n"));
        }
        text.push_str(&format!("PANIC:  {}\n", "é".repeat(1000)));
        let lines = failure_lines(&text);
        assert_eq!(lines.len(), MAX_FAILURE_LINES);
        assert_eq!(lines[0], "ERROR:  number 16");
        assert!(lines[4].starts_with("PANIC:"));
        assert_eq!(lines[4].chars().count(), MAX_LINE_CHARS + 3);
        assert_eq!(start_report(""), "(PostgreSQL's log says nothing)");
        // A line cut in the middle of a multi-byte character does not panic, nor does junk.
        assert!(failure_lines("\u{0}FATAL:\u{fffd}\n\n").len() == 1);
    }

    fn pg(primary: bool) -> PgMember {
        PgMember {
            addr: "127.0.0.1:5432".into(),
            running: true,
            primary,
            sysid: "42".into(),
            ..Default::default()
        }
    }

    fn view(holder: &str, holder_running_primary: bool) -> View {
        let mut state = ClusterState {
            initialized: Some("42".into()),
            lease: Some(LeaseRecord {
                holder: holder.into(),
                token: 7,
            }),
            ..Default::default()
        };
        for n in ["a", "b"] {
            let info = MemberInfo {
                pg: Some(pg(n == holder && holder_running_primary)),
                ..Default::default()
            };
            state
                .members
                .insert(n.into(), MemberRecord { info, seq: 1 });
        }
        View {
            state,
            alive: ["a".to_string(), "b".to_string()].into(),
        }
    }

    #[test]
    fn a_replica_is_set_aside_only_after_the_limit_and_with_a_primary() {
        let v = view("a", true);
        assert_eq!(start_repair("b", 2, 3, false, &v), StartRepair::Retry);
        assert_eq!(
            start_repair("b", 3, 3, false, &v),
            StartRepair::SetAside { from: "a".into() }
        );
        // No running primary: nothing to clone from.
        let v = view("a", false);
        assert!(matches!(
            start_repair("b", 5, 3, false, &v),
            StartRepair::Keep(_)
        ));
        // The primary's agent is gone.
        let mut v = view("a", true);
        v.alive.remove("a");
        assert!(matches!(
            start_repair("b", 5, 3, false, &v),
            StartRepair::Keep(_)
        ));
        // Not bootstrapped.
        let mut v = view("a", true);
        v.state.initialized = None;
        assert!(matches!(
            start_repair("b", 5, 3, false, &v),
            StartRepair::Keep(_)
        ));
    }

    #[test]
    fn the_lease_holder_never_sets_its_data_aside() {
        let v = view("b", true);
        assert!(matches!(
            start_repair("b", 10, 3, false, &v),
            StartRepair::Keep(_)
        ));
        let v = view("a", true);
        assert!(matches!(
            start_repair("b", 10, 3, true, &v),
            StartRepair::Keep(_)
        ));
    }

    #[test]
    fn set_aside_directories_are_kept_and_bounded() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = root.path().join("pg1");
        let mut kept = Vec::new();
        for secs in [100, 100, 200] {
            std::fs::create_dir_all(data.join("global")).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(data.join("PG_VERSION"), "15").unwrap_or_else(|e| panic!("{e}"));
            let aside = crate::postgres::pg::set_aside_failed(&data, secs)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(aside.join("PG_VERSION").exists() && !data.exists());
            kept.push(aside);
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(root.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .filter_map(|d| d.ok())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names,
            ["pg1.failed-100.1", "pg1.failed-200"],
            "the newest {} are kept",
            crate::postgres::pg::KEEP_FAILED
        );
    }
}

//! Running a chaos schedule: each planned fault resolved to a node at its time, injected with
//! the single-fault injectors of [`crate::fault`], and undone after `fault_duration` (a killed
//! or gracefully stopped node is started again with its `restart` argv). Every undo also runs
//! when the run is dropped midway.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_core::clock::{self, Instant};

use super::{Chaos, ChaosFault, ChaosKind, Pick, Planned};
use crate::fault;
use crate::scenario::{Fault, Scenario};

/// Processes the drill started again. They are left running when the drill ends (as a service
/// manager would have restarted them); the ones that exit meanwhile are reaped.
#[derive(Default)]
pub struct Restarts {
    children: Vec<Child>,
}

impl Restarts {
    fn reap(&mut self) {
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    /// Pids of the restarted processes still running.
    pub fn pids(&mut self) -> Vec<u32> {
        self.reap();
        self.children.iter().map(Child::id).collect()
    }
}

/// Starts a node again when dropped, unless it already was: a killed node comes back also when
/// the drill is interrupted.
struct PendingRestart<'a> {
    node: String,
    argv: &'a [String],
    log: Option<&'a str>,
    done: bool,
}

impl PendingRestart<'_> {
    fn start(&mut self) -> Result<Child, String> {
        self.done = true;
        spawn(self.argv, self.log).map_err(|e| format!("restarting {}: {e}", self.node))
    }
}

impl Drop for PendingRestart<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.start() {
                tracing::error!(error = %e, "restart after an interrupted chaos fault failed");
            }
        }
    }
}

/// Run `argv` (no shell) in its own process group, output appended to `log` or discarded.
fn spawn(argv: &[String], log: Option<&str>) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv.split_first().ok_or("empty argv")?;
    let out = |log: Option<&str>| -> Result<Stdio, String> {
        match log {
            Some(f) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .map(Stdio::from)
                .map_err(|e| format!("chaos.restart_log {f}: {e}")),
            None => Ok(Stdio::null()),
        }
    };
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out(log)?)
        .stderr(out(log)?)
        // A Ctrl-C meant for the drill does not reach the nodes it restarted.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))
}

/// The process is gone (or a zombie), waiting up to `wait`.
async fn gone(pid: i32, wait: Duration) -> bool {
    let deadline = clock::now() + wait;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let dead = match stat {
            Err(_) => true,
            // "pid (comm) S ...": the state follows the last parenthesis.
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        };
        if dead {
            return true;
        }
        if clock::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node a planned fault hits, at its time.
async fn target(pick: &Pick, nodes: &BTreeMap<String, String>) -> Result<String, String> {
    match pick {
        Pick::Node(n) => Ok(n.clone()),
        Pick::Primary => {
            // A failover may be under way: wait for one primary, a bounded while.
            let deadline = clock::now() + Duration::from_secs(10);
            loop {
                if let Some(p) = fault::current_primary(nodes).await {
                    return Ok(p);
                }
                if clock::now() >= deadline {
                    return Err("no node is primary: nothing to fault".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Pick::Replica(k) => {
            let primary = fault::current_primary(nodes).await;
            let others: Vec<&String> = nodes
                .keys()
                .filter(|n| Some(*n) != primary.as_ref())
                .collect();
            if others.is_empty() {
                return Err("no node but the primary".into());
            }
            Ok(others[*k as usize % others.len()].clone())
        }
    }
}

/// The single fault that makes a planned one on `node`.
fn as_fault(c: &Chaos, p: &Planned, node: &str) -> Fault {
    let mut f = Fault::none();
    f.kind = p.kind.fault_kind();
    f.node = node.to_string();
    f.duration = Some(c.fault_duration);
    if p.kind == ChaosKind::Loss {
        f.loss = Some(c.loss.clone());
    }
    if p.kind == ChaosKind::DiskFull {
        f.path = c.disks.get(node).cloned();
    }
    f
}

/// Inject every planned fault at its time and undo it; returns what happened, the last undo's
/// time, and the processes started again.
pub async fn run(
    s: &Scenario,
    c: &Chaos,
    plan: &[Planned],
    start: Instant,
    token: &str,
) -> (Vec<ChaosFault>, Option<Instant>, Restarts) {
    let ms = |t: Instant| t.duration_since(start).as_secs_f64() * 1000.0;
    let mut done = Vec::with_capacity(plan.len());
    let mut last_undo = None;
    let mut restarts = Restarts::default();
    for p in plan {
        clock::sleep_until(start + Duration::from_millis(p.at_ms)).await;
        let mut rec = ChaosFault {
            at_ms: p.at_ms,
            kind: p.kind.name().into(),
            target: p.target.to_string(),
            ..ChaosFault::default()
        };
        match one(s, c, p, token, &mut rec, &mut restarts, &ms).await {
            Ok(undone) => {
                last_undo = Some(undone);
                rec.undone_ms = Some(ms(undone));
            }
            Err(e) => {
                tracing::warn!(fault = %rec.kind, target = %rec.target, error = %e, "chaos fault");
                if rec.injected_ms.is_some() {
                    last_undo = Some(clock::now());
                }
                rec.error = Some(e);
            }
        }
        restarts.reap();
        done.push(rec);
    }
    (done, last_undo, restarts)
}

/// One fault: resolve, inject, wait, undo. Returns when it was undone.
async fn one(
    s: &Scenario,
    c: &Chaos,
    p: &Planned,
    token: &str,
    rec: &mut ChaosFault,
    restarts: &mut Restarts,
    ms: &impl Fn(Instant) -> f64,
) -> Result<Instant, String> {
    let node = target(&p.target, &s.watch.nodes).await?;
    rec.node = Some(node.clone());
    let f = as_fault(c, p, &node);
    let resolved = fault::resolve(&f, &s.watch.nodes).await?;
    let mut pending = p.kind.needs_restart().then(|| PendingRestart {
        node: node.clone(),
        argv: c.restart.get(&node).map(Vec::as_slice).unwrap_or_default(),
        log: c.restart_log.as_deref(),
        done: false,
    });
    let mut undo = fault::inject(&f, &resolved, &s.watch, token).await?;
    rec.injected_ms = Some(ms(clock::now()));
    let hold = Duration::from_millis(p.duration_ms);
    match (p.kind, pending.as_mut(), resolved.pid) {
        (ChaosKind::Kill, Some(r), Some(pid)) => {
            tokio::time::sleep(hold).await;
            if !gone(pid, Duration::from_secs(5)).await {
                return Err(format!("{node}: process {pid} still runs after SIGKILL"));
            }
            restarts.children.push(r.start()?);
        }
        (ChaosKind::Restart, Some(r), Some(pid)) => {
            // A graceful stop drains first: give it the fault's time, at least 10 s.
            if !gone(pid, hold.max(Duration::from_secs(10))).await {
                let _ = fault::kill(pid);
                if !gone(pid, Duration::from_secs(5)).await {
                    return Err(format!("{node}: process {pid} did not stop"));
                }
            }
            restarts.children.push(r.start()?);
        }
        _ => {
            tokio::time::sleep(hold).await;
            undo.now();
        }
    }
    Ok(clock::now())
}

/// Before anything runs: every restart program exists.
pub fn check_programs(c: &Chaos) -> Result<(), String> {
    for (node, argv) in &c.restart {
        let program = argv.first().map(String::as_str).unwrap_or_default();
        let found = if program.contains('/') {
            Path::new(program).is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|d| d.join(program).is_file())
            })
        };
        if !found {
            return Err(format!(
                "chaos.restart.{node}: program {program:?} not found"
            ));
        }
    }
    Ok(())
}

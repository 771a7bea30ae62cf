//! Fault injection into local tandem processes (found through their admin API) or a process
//! named by a pid file, planned switchovers, link faults and partitions between network
//! namespaces, and a full disk on a tmpfs. Every fault that must be undone (a stopped process,
//! a link, routes, a filling file) is undone when its guard drops, also when the drill is
//! interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{self, Conn, Outcome};
use crate::scenario::{Fault, FaultKind, Via, Watch};

mod disk;
mod net;
#[cfg(test)]
mod tests;

use disk::fill;
pub use disk::tmpfs_size;
use net::{netns_addrs, nft_loss};

/// A fault about to be injected: which node and process.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub node: String,
    pub pid: Option<i32>,
}

/// Find the node a fault targets, and its process, checking it exists.
pub async fn resolve(fault: &Fault, nodes: &BTreeMap<String, String>) -> Result<Resolved, String> {
    if let Some(file) = &fault.pid_file {
        let pid = read_pid_file(Path::new(file))?;
        // `node` only names the process in the report.
        let node = if fault.node == "primary" {
            format!("pid {pid}")
        } else {
            fault.node.clone()
        };
        return Ok(Resolved {
            node,
            pid: Some(pid),
        });
    }
    if fault.kind == FaultKind::DiskFull {
        let path = fault.path.as_deref().unwrap_or_default();
        tmpfs_size(Path::new(path))?;
        let node = if fault.node == "primary" {
            path.to_string()
        } else {
            fault.node.clone()
        };
        return Ok(Resolved { node, pid: None });
    }
    let node = if fault.node == "primary" {
        // A failover may be under way at the fault's time: give the cluster a few seconds.
        let deadline = tandem_core::clock::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = current_primary(nodes).await {
                break p;
            }
            if tandem_core::clock::now() > deadline {
                return Err("no node is primary: nothing to fault".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        fault.node.clone()
    };
    let addr = nodes
        .get(&node)
        .ok_or_else(|| format!("{node} is not watched"))?;
    let pid = match fault.kind {
        // Through the node's API: it finds its own process.
        _ if fault.via == Via::Api => None,
        FaultKind::Sigkill | FaultKind::Sigstop | FaultKind::Graceful => {
            let st = client::get_json(addr, "/status", Duration::from_secs(2))
                .await
                .ok_or_else(|| format!("{node}: GET /status failed"))?;
            let pid = st["pid"]
                .as_i64()
                .ok_or_else(|| format!("{node}: /status shows no pid"))?
                as i32;
            check_local_tandem(pid)?;
            Some(pid)
        }
        _ => None,
    };
    Ok(Resolved { node, pid })
}

/// The node answering 200 on `/primary`, if exactly one does.
pub async fn current_primary(nodes: &BTreeMap<String, String>) -> Option<String> {
    let mut found = Vec::new();
    for (name, addr) in nodes {
        if let Outcome::Status(200, _) = Conn::new(addr)
            .request("GET", "/primary", None, Duration::from_millis(500))
            .await
        {
            found.push(name.clone());
        }
    }
    (found.len() == 1).then(|| found.remove(0))
}

/// The pid on the first line of `file` (as in `postmaster.pid`), of a running process of this
/// host other than the drill itself and init.
fn read_pid_file(file: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("fault.pid_file {}: {e}", file.display()))?;
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&p| p > 1)
        .ok_or_else(|| {
            format!(
                "fault.pid_file {}: the first line is not a pid",
                file.display()
            )
        })?;
    if pid == std::process::id() as i32 {
        return Err(format!(
            "fault.pid_file {}: names the drill itself",
            file.display()
        ));
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!(
            "fault.pid_file {}: process {pid} does not exist on this host",
            file.display()
        ));
    }
    Ok(pid)
}

/// A pid must be a running tandem process on this host.
fn check_local_tandem(pid: i32) -> Result<(), String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|_| {
        format!("process {pid} does not exist on this host (remote faults go through POST /faults)")
    })?;
    if !String::from_utf8_lossy(&cmdline).contains("tandem") {
        return Err(format!("process {pid} is not a tandem process"));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) -> Result<(), String> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// SIGKILL a process (a graceful stop that did not end).
pub fn kill(pid: i32) -> Result<(), String> {
    signal(pid, libc::SIGKILL)
}

/// Undoes a fault on drop (SIGCONT for a stopped process, link up, qdisc removed).
pub struct Undo {
    pid: Option<i32>,
    /// (netns, address) of prohibit routes making a partition.
    routes: Vec<(String, String)>,
    /// The file filling a disk.
    fill: Option<PathBuf>,
    /// (netns, interface, what to undo) of a link fault.
    link: Option<(String, String, LinkUndo)>,
    /// The outcome of a switchover running beside the workload.
    pub switchover: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

#[derive(Clone, Debug)]
enum LinkUndo {
    Up,
    DeleteQdisc,
    /// An nftables table dropping packets (kernels without netem).
    DeleteTable(String),
}

impl Undo {
    pub fn now(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = signal(pid, libc::SIGCONT);
        }
        if let Some((ns, iface, what)) = self.link.take() {
            let r = match what {
                LinkUndo::Up => run("ip", &["-n", &ns, "link", "set", &iface, "up"]),
                LinkUndo::DeleteQdisc => {
                    run("tc", &["-n", &ns, "qdisc", "del", "dev", &iface, "root"])
                }
                LinkUndo::DeleteTable(table) => run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "nft", "delete", "table", "netdev", &table,
                    ],
                ),
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "undoing a link fault failed");
            }
        }
        for (ns, addr) in std::mem::take(&mut self.routes) {
            let dst = format!("{addr}/32");
            if let Err(e) = run("ip", &["-n", &ns, "route", "del", "prohibit", &dst]) {
                tracing::error!(error = %e, "undoing a partition failed");
            }
        }
        if let Some(f) = self.fill.take() {
            if let Err(e) = std::fs::remove_file(&f) {
                tracing::error!(error = %e, file = %f.display(), "removing the disk-full file failed");
            }
        }
    }
}

/// Run a network tool (iproute2) and report its error output.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn link_of(links: &BTreeMap<String, String>, node: &str) -> Result<(String, String), String> {
    let l = links
        .get(node)
        .ok_or_else(|| format!("watch.links has no link for {node}"))?;
    let (ns, iface) = l
        .split_once(':')
        .ok_or_else(|| format!("{l:?} is not NETNS:INTERFACE"))?;
    Ok((ns.to_string(), iface.to_string()))
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.now();
    }
}

/// Inject the fault; the returned guard undoes it.
pub async fn inject(
    fault: &Fault,
    target: &Resolved,
    watch: &Watch,
    token: &str,
) -> Result<Undo, String> {
    let (nodes, links) = (&watch.nodes, &watch.links);
    let mut undo = Undo {
        routes: Vec::new(),
        fill: None,
        pid: None,
        link: None,
        switchover: None,
    };
    if fault.via == Via::Api {
        // The node injects it and undoes it itself, after `duration`.
        let addr = nodes
            .get(&target.node)
            .ok_or_else(|| format!("{} is not watched", target.node))?;
        let body = serde_json::json!({
            "kind": fault.kind,
            "duration": fault.duration,
            "interface": fault.interface,
            "loss": fault.loss,
            "delay": fault.delay,
        })
        .to_string();
        return match Conn::new(addr)
            .request(
                "POST",
                "/faults",
                Some((token, &body)),
                Duration::from_secs(5),
            )
            .await
        {
            Outcome::Status(s, _) if (200..300).contains(&s) => Ok(undo),
            Outcome::Status(s, b) => Err(format!(
                "{}: POST /faults answered {s}: {}",
                target.node,
                String::from_utf8_lossy(&b).trim()
            )),
            Outcome::Error(e) => Err(format!("{}: POST /faults: {e}", target.node)),
        };
    }
    match (fault.kind, target.pid) {
        (FaultKind::Sigkill, Some(pid)) => signal(pid, libc::SIGKILL)?,
        (FaultKind::Graceful, Some(pid)) => signal(pid, libc::SIGTERM)?,
        (FaultKind::Sigstop, Some(pid)) => {
            signal(pid, libc::SIGSTOP)?;
            undo.pid = Some(pid);
        }
        (FaultKind::Switchover, _) => {
            let to = fault.to.clone().unwrap_or_default();
            let addr = nodes.get(&target.node).ok_or("no admin address")?.clone();
            let body = serde_json::json!({ "to": to }).to_string();
            // The switchover call waits for the handover: run it beside the workload.
            let token = token.to_string();
            tokio::spawn(async move {
                let r = Conn::new(&addr)
                    .request(
                        "POST",
                        "/switchover",
                        Some((&token, &body)),
                        Duration::from_secs(30),
                    )
                    .await;
                if !matches!(r, Outcome::Status(200, _)) {
                    tracing::warn!(result = ?r, "switchover request did not succeed");
                }
            });
        }
        (FaultKind::LinkDown, _) => {
            let (ns, iface) = link_of(links, &target.node)?;
            run("ip", &["-n", &ns, "link", "set", &iface, "down"])?;
            undo.link = Some((ns, iface, LinkUndo::Up));
        }
        (FaultKind::Netem, _) => {
            let (ns, iface) = link_of(links, &target.node)?;
            let mut args: Vec<String> = ["-n", &ns, "qdisc", "add", "dev", &iface, "root", "netem"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if let Some(d) = fault.delay {
                args.extend(["delay".to_string(), format!("{}ms", d.get().as_millis())]);
            }
            if let Some(l) = &fault.loss {
                args.extend(["loss".to_string(), l.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match run("tc", &args) {
                Ok(()) => undo.link = Some((ns, iface, LinkUndo::DeleteQdisc)),
                // A kernel built without netem: loss alone can still be made with nftables.
                Err(e) if e.contains("qdisc kind is unknown") => {
                    let loss = match (&fault.loss, fault.delay) {
                        (Some(l), None) => l,
                        _ => {
                            return Err(format!(
                                "{e} (this kernel has no netem: delay cannot be added; loss alone is made with nftables)"
                            ))
                        }
                    };
                    let table = nft_loss(&ns, &iface, loss)?;
                    undo.link = Some((ns, iface, LinkUndo::DeleteTable(table)));
                }
                Err(e) => return Err(e),
            }
        }
        (FaultKind::Partition, _) => {
            let mine = watch
                .hosts
                .get(&target.node)
                .ok_or_else(|| format!("watch.hosts has no namespace for {}", target.node))?;
            let my_addrs = netns_addrs(mine)?;
            for (other, ns) in &watch.hosts {
                if other == &target.node || !nodes.contains_key(other) {
                    continue;
                }
                // Both ways: this node cannot reach the other, nor the other this node.
                for (from, addrs) in [(mine, netns_addrs(ns)?), (ns, my_addrs.clone())] {
                    for a in addrs {
                        let dst = format!("{a}/32");
                        run("ip", &["-n", from, "route", "add", "prohibit", &dst])?;
                        undo.routes.push((from.clone(), a));
                    }
                }
            }
        }
        (FaultKind::DiskFull, _) => {
            let dir = PathBuf::from(fault.path.as_deref().unwrap_or_default());
            let size = tmpfs_size(&dir)?;
            undo.fill = Some(fill(&dir, size)?);
        }
        (FaultKind::None, _) => {}
        (kind, None) => return Err(format!("{kind:?} needs a process")),
    }
    Ok(undo)
}

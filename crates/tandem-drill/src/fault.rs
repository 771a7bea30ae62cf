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

/// The largest tmpfs a disk-full fault fills (it lives in memory).
const MAX_FILL_BYTES: u64 = 1 << 30;

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
        current_primary(nodes)
            .await
            .ok_or("no node is primary: nothing to fault")?
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

/// The size of the tmpfs mounted exactly at `path`, which must have a `size=` of at most 1 GiB.
pub fn tmpfs_size(path: &Path) -> Result<u64, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("fault.path {}: {e}", path.display()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    // The last mount at a path is the visible one.
    let mount = info
        .lines()
        .filter_map(parse_mountinfo)
        .rfind(|m| Path::new(&m.0) == real)
        .ok_or_else(|| {
            format!(
                "fault.path {}: not a mount point; disk-full fills only a tmpfs mounted there (mount -t tmpfs -o size=16m tmpfs PATH)",
                path.display()
            )
        })?;
    if mount.1 != "tmpfs" {
        return Err(format!(
            "fault.path {}: a {} file system; disk-full fills only a tmpfs",
            path.display(),
            mount.1
        ));
    }
    let size = mount
        .2
        .split(',')
        .find_map(|o| o.strip_prefix("size="))
        .and_then(parse_size)
        .ok_or_else(|| {
            format!(
                "fault.path {}: the tmpfs has no size= option",
                path.display()
            )
        })?;
    if size > MAX_FILL_BYTES {
        return Err(format!(
            "fault.path {}: the tmpfs is {size} bytes; disk-full fills at most 1 GiB",
            path.display()
        ));
    }
    Ok(size)
}

/// (mount point, file system type, super options) of one `/proc/self/mountinfo` line.
fn parse_mountinfo(line: &str) -> Option<(String, String, String)> {
    let (left, right) = line.split_once(" - ")?;
    let point = left.split(' ').nth(4)?;
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let _source = r.next()?;
    let opts = r.next().unwrap_or("");
    // Spaces and such are written as octal escapes.
    let mut out = String::new();
    let b = point.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(c) = u8::from_str_radix(&point[i + 1..i + 4], 8) {
                out.push(c as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    Some((out, fstype.to_string(), opts.to_string()))
}

/// `4096k`, `16m`, `1g` or bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Fill the file system at `dir` with one file until it is full; returns the file.
fn fill(dir: &Path, limit: u64) -> Result<PathBuf, String> {
    use std::io::Write;
    let file = dir.join(format!(".tandem-drill-fill-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&file)
        .map_err(|e| format!("disk-full: creating {}: {e}", file.display()))?;
    let mut written = 0u64;
    // Large chunks, then small ones for the rest; bounded by the file system's size.
    for chunk in [1usize << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        while written <= limit {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    return Err(format!("disk-full: writing {}: {e}", file.display()));
                }
            }
        }
    }
    let _ = f.sync_all();
    Ok(file)
}

/// Drop `loss` ("30%") of the packets leaving `iface` in `ns`, as netem's loss does, with an
/// nftables table of its own (`nft`, Debian package nftables); returns the table's name.
fn nft_loss(ns: &str, iface: &str, loss: &str) -> Result<String, String> {
    let pct: f64 = loss
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("loss {loss:?} is not a percentage"))?;
    let per_10k = (pct * 100.0).round().clamp(0.0, 10_000.0) as u32;
    let rule = if per_10k >= 10_000 {
        "drop".to_string()
    } else {
        format!("numgen random mod 10000 < {per_10k} drop")
    };
    let table = format!("tandem_drill_{}", std::process::id());
    let script = format!(
        "table netdev {table} {{\n  chain loss {{\n    type filter hook egress device \"{iface}\" priority 0;\n    {rule}\n  }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{table}.nft"));
    std::fs::write(&file, script).map_err(|e| format!("{}: {e}", file.display()))?;
    let file_arg = file.display().to_string();
    let r = run("ip", &["netns", "exec", ns, "nft", "-f", &file_arg]);
    let _ = std::fs::remove_file(&file);
    match r {
        Err(e) if e.contains("exec of") => {
            Err(format!("{e} (nft is in the Debian package nftables)"))
        }
        r => r.map(|()| table),
    }
}

/// The IPv4 addresses of a namespace's interfaces (global scope).
fn netns_addrs(ns: &str) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} addr: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet")?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_lines_and_sizes() {
        let line =
            "36 25 0:32 / /tmp/a\\040b rw,relatime shared:1 - tmpfs tmpfs rw,size=4096k,mode=755";
        assert_eq!(
            parse_mountinfo(line),
            Some((
                "/tmp/a b".into(),
                "tmpfs".into(),
                "rw,size=4096k,mode=755".into()
            ))
        );
        assert_eq!(parse_size("4096k"), Some(4 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn disk_full_refuses_what_is_not_a_small_tmpfs() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let e = tmpfs_size(dir.path()).err().unwrap_or_default();
        assert!(e.contains("not a mount point"), "{e}");
        let e = tmpfs_size(Path::new("/no/such/dir"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("/no/such/dir"), "{e}");
        let e = tmpfs_size(Path::new("/proc")).err().unwrap_or_default();
        assert!(e.contains("proc file system"), "{e}");
    }

    #[test]
    fn pid_files_are_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("pid");
        std::fs::write(&f, "abc\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(read_pid_file(&f).is_err_and(|e| e.contains("not a pid")));
        std::fs::write(&f, format!("{}\n/data\n", std::process::id()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(read_pid_file(&f).is_err_and(|e| e.contains("drill itself")));
        std::fs::write(&f, "999999999\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(read_pid_file(&f).is_err_and(|e| e.contains("does not exist")));
        assert!(read_pid_file(&dir.path().join("none")).is_err());
    }
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

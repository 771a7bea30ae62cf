//! The checks a scenario passes before anything runs: addresses inside loopback or
//! `allow_targets`, numbers in range, and faults that fit their target.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{FaultKind, RequestKind, Scenario, TargetKind, Via};

impl Scenario {
    pub(super) fn check(&self) -> Result<(), String> {
        self.check_addresses()?;
        self.check_workload()?;
        self.check_fault_target()?;
        self.check_fault_kind()?;
        self.check_chaos()
    }

    /// The target and every watched address.
    fn check_addresses(&self) -> Result<(), String> {
        match self.target()? {
            TargetKind::Http(addr, _) => self.allowed(&addr, "target.http")?,
            TargetKind::Tcp(addr) => {
                self.allowed(&addr, "target.tcp")?;
                if self.workload.kind == RequestKind::Writes {
                    return Err("target.tcp takes reads only (writes need http or postgres)".into());
                }
            }
            TargetKind::Postgres(cfg) => {
                for addr in crate::pg::addresses(&cfg)? {
                    self.allowed(&addr, "target.postgres")?;
                }
            }
        }
        for (name, addr) in &self.watch.nodes {
            self.allowed(addr, &format!("watch.nodes.{name}"))?;
        }
        for addr in &self.watch.observers {
            self.allowed(addr, "watch.observers")?;
        }
        for (name, dsn) in &self.watch.postgres {
            if !self.watch.nodes.contains_key(name) {
                return Err(format!("watch.postgres.{name}: not in [watch] nodes"));
            }
            let cfg = crate::pg::parse(dsn).map_err(|e| format!("watch.postgres.{name}: {e}"))?;
            for addr in
                crate::pg::addresses(&cfg).map_err(|e| format!("watch.postgres.{name}: {e}"))?
            {
                self.allowed(&addr, &format!("watch.postgres.{name}"))?;
            }
        }
        for (value, node) in &self.watch.served_by {
            if !self.watch.nodes.contains_key(node) {
                return Err(format!(
                    "watch.served_by.{value}: {node:?} is not in [watch] nodes"
                ));
            }
        }
        Ok(())
    }

    /// Numbers in range, and objectives that fit the requests.
    fn check_workload(&self) -> Result<(), String> {
        let w = &self.workload;
        if w.concurrency == 0 || w.concurrency > 1000 {
            return Err("workload.concurrency must be between 1 and 1000".into());
        }
        if w.rate == 0 || w.rate > 100_000 {
            return Err("workload.rate must be between 1 and 100000 requests/s".into());
        }
        if self.fault.recovery_timeout.get() > Duration::from_secs(600) {
            return Err("fault.recovery_timeout must be at most 10m".into());
        }
        if w.read_back_timeout.get() > Duration::from_secs(600) {
            return Err("workload.read_back_timeout must be at most 10m".into());
        }
        // A chaos run may go on for a day (its own check); one fault's workload for an hour.
        if self.chaos.is_none()
            && (w.duration.get() > Duration::from_secs(3600) || w.duration.get().is_zero())
        {
            return Err("workload.duration must be between 1ms and 1h".into());
        }
        let o = &self.objectives;
        let writes_only =
            o.lost_writes.is_some() || o.rpo.is_some() || o.old_primary_acks.is_some();
        if writes_only && w.kind != RequestKind::Writes {
            return Err(
                "objectives lost_writes, rpo and old_primary_acks need workload.kind = \"writes\""
                    .into(),
            );
        }
        Ok(())
    }

    /// What the fault acts on: a watched node, a pid file or a path, found on this host or
    /// through the node's API.
    fn check_fault_target(&self) -> Result<(), String> {
        let (f, w) = (&self.fault, &self.workload);
        if f.kind != FaultKind::None {
            if f.at.get() >= w.duration.get() {
                return Err("fault.at must fall inside workload.duration".into());
            }
            let standalone = f.pid_file.is_some() || f.kind == FaultKind::DiskFull;
            if !standalone {
                if f.node != "primary" && !self.watch.nodes.contains_key(&f.node) {
                    return Err(format!("fault.node {:?} is not in [watch] nodes", f.node));
                }
                if self.watch.nodes.is_empty() {
                    return Err("a fault needs [watch] nodes to find its target".into());
                }
            }
        }
        if f.pid_file.is_some() {
            if !matches!(
                f.kind,
                FaultKind::Sigkill | FaultKind::Sigstop | FaultKind::Graceful
            ) {
                return Err("fault.pid_file goes with sigkill, sigstop or graceful".into());
            }
            if f.via == Via::Api {
                return Err(
                    "fault.pid_file names a process of this host: not with via = \"api\"".into(),
                );
            }
        }
        if f.kind == FaultKind::DiskFull {
            if f.via == Via::Api {
                return Err("disk-full is injected on this host: not with via = \"api\"".into());
            }
            if f.path.is_none() || f.duration.is_none() {
                return Err(
                    "disk-full needs fault.path (a tmpfs mount point) and fault.duration".into(),
                );
            }
        } else if f.path.is_some() {
            return Err("fault.path goes with disk-full".into());
        }
        if f.kind == FaultKind::Partition && f.via == Via::Local {
            self.check_hosts()?;
        }
        if f.via == Via::Api {
            if !matches!(
                f.kind,
                FaultKind::Sigkill | FaultKind::Sigstop | FaultKind::LinkDown | FaultKind::Netem
            ) {
                if f.kind == FaultKind::Partition {
                    return Err("a partition is made between namespaces of this host: not with via = \"api\"".into());
                }
                return Err("via = \"api\" takes sigkill, sigstop, link-down or netem".into());
            }
            if self.watch.token_file.is_none() {
                return Err("via = \"api\" needs watch.token_file".into());
            }
            if matches!(f.kind, FaultKind::LinkDown | FaultKind::Netem) && f.interface.is_none() {
                return Err("a link fault via the api needs fault.interface".into());
            }
        } else if matches!(f.kind, FaultKind::LinkDown | FaultKind::Netem) {
            self.check_links()?;
        }
        Ok(())
    }

    /// The settings each kind of fault needs.
    fn check_fault_kind(&self) -> Result<(), String> {
        let f = &self.fault;
        if f.kind == FaultKind::Netem && f.loss.is_none() && f.delay.is_none() {
            return Err("a netem fault needs loss and/or delay".into());
        }
        if let Some(l) = &f.loss {
            let ok = l
                .strip_suffix('%')
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|n| (0.0..=100.0).contains(&n));
            if !ok {
                return Err(format!(
                    "fault.loss {l:?} must be a percentage like \"30%\""
                ));
            }
        }
        match f.kind {
            FaultKind::Sigstop if f.duration.is_none() => {
                return Err("fault.duration is needed for sigstop".into())
            }
            FaultKind::Switchover => {
                let to = f.to.as_deref().ok_or("fault.to is needed for switchover")?;
                if !self.watch.nodes.contains_key(to) {
                    return Err(format!("fault.to {to:?} is not in [watch] nodes"));
                }
                if self.watch.token_file.is_none() {
                    return Err("a switchover needs watch.token_file".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Link faults need, for every node they may hit, an existing namespace and a valid
    /// interface name, and a duration.
    fn check_links(&self) -> Result<(), String> {
        let f = &self.fault;
        let needed: Vec<&String> = if f.node == "primary" {
            self.watch.nodes.keys().collect()
        } else {
            vec![&f.node]
        };
        self.check_links_of(&needed)?;
        if f.duration.is_none() {
            return Err("fault.duration is needed for link faults".into());
        }
        Ok(())
    }

    /// `watch.links` of each of `needed`: an existing namespace and an interface name.
    pub(super) fn check_links_of(&self, needed: &[&String]) -> Result<(), String> {
        for &n in needed {
            let link = self
                .watch
                .links
                .get(n)
                .ok_or_else(|| format!("watch.links has no link for {n}"))?;
            let (ns, iface) = link
                .split_once(':')
                .ok_or_else(|| format!("watch.links.{n}: {link:?} is not NETNS:INTERFACE"))?;
            if !netns_exists(ns) {
                return Err(format!(
                    "watch.links.{n}: network namespace {ns:?} does not exist"
                ));
            }
            if iface.is_empty()
                || iface.len() > 15
                || !iface
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "watch.links.{n}: {iface:?} is not an interface name"
                ));
            }
        }
        Ok(())
    }

    /// A partition needs every node's namespace, existing, and a duration.
    fn check_hosts(&self) -> Result<(), String> {
        self.check_hosts_exist()?;
        if self.fault.duration.is_none() {
            return Err("fault.duration is needed for a partition".into());
        }
        Ok(())
    }

    /// `watch.hosts` of every node, existing, and at least two nodes.
    pub(super) fn check_hosts_exist(&self) -> Result<(), String> {
        for n in self.watch.nodes.keys() {
            let ns = self.watch.hosts.get(n).ok_or_else(|| {
                format!("a partition needs watch.hosts for every node; {n} has none")
            })?;
            if !netns_exists(ns) {
                return Err(format!(
                    "watch.hosts.{n}: network namespace {ns:?} does not exist"
                ));
            }
        }
        if self.watch.nodes.len() < 2 {
            return Err("a partition needs at least two [watch] nodes".into());
        }
        Ok(())
    }

    /// Loopback always; anything else only inside `allow_targets`.
    pub(super) fn allowed(&self, addr: &str, key: &str) -> Result<(), String> {
        let a: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{key}: {addr:?} must be IP:PORT"))?;
        if a.ip().is_loopback() {
            return Ok(());
        }
        for net in &self.allow_targets {
            if in_cidr(a.ip(), net)? {
                return Ok(());
            }
        }
        Err(format!("{key}: {a} is outside loopback and allow_targets"))
    }
}

/// A named network namespace of this host (`ip netns add`).
pub fn netns_exists(ns: &str) -> bool {
    !ns.is_empty()
        && !ns.contains('/')
        && ns != "."
        && ns != ".."
        && Path::new("/run/netns").join(ns).exists()
}

fn in_cidr(ip: IpAddr, cidr: &str) -> Result<bool, String> {
    let (net, bits) = cidr
        .split_once('/')
        .ok_or_else(|| format!("allow_targets: {cidr:?} is not a CIDR"))?;
    let net: IpAddr = net
        .parse()
        .map_err(|_| format!("allow_targets: {cidr:?} is not a CIDR"))?;
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("allow_targets: {cidr:?} is not a CIDR"))?;
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            Ok(u32::from(a) & mask == u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            Ok(u128::from(a) & mask == u128::from(n) & mask)
        }
        _ => Ok(false),
    }
}

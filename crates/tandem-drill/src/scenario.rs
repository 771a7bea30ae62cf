//! Scenario files: the target, the workload, the fault, the nodes to watch, and the objectives.
//! Parsed with unknown keys refused, then checked before any fault is injected.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_core::HumanDuration;

use crate::DrillError;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub target: Target,
    #[serde(default)]
    pub workload: Workload,
    pub fault: Fault,
    #[serde(default)]
    pub watch: Watch,
    #[serde(default)]
    pub objectives: Objectives,
    /// Networks beyond loopback that this scenario may touch, e.g. `["10.0.0.0/24"]`.
    #[serde(default)]
    pub allow_targets: Vec<String>,
}

/// What clients use: exactly one of `http`, `postgres` and `tcp`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://IP:PORT/path`
    pub http: Option<String>,
    /// A PostgreSQL connection string, URL (`postgres://user@host:port/db`) or key-value
    /// (`host=a,b port=x,y user=u dbname=d target_session_attrs=read-write`); no TLS.
    pub postgres: Option<String>,
    /// `IP:PORT`: each request opens a TCP connection (reads only).
    pub tcp: Option<String>,
}

/// The target, checked.
#[derive(Clone, Debug)]
pub enum TargetKind {
    /// Address and path.
    Http(String, String),
    Postgres(Box<tokio_postgres::Config>),
    /// Address.
    Tcp(String),
}

/// What each request does.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// Idempotent reads: `GET` of the target URL, or `SELECT 1`.
    #[default]
    Reads,
    /// Sequenced writes read back after the run: `POST PATH/writes/N`, or one `INSERT` per
    /// transaction into the table `tandem_drill`.
    Writes,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Reads or sequenced writes.
    #[serde(default)]
    pub kind: RequestKind,
    /// Clients, each with one keep-alive connection.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per second over all clients.
    #[serde(default = "default_rate")]
    pub rate: u32,
    #[serde(default = "default_duration")]
    pub duration: HumanDuration,
    /// A request slower than this counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Writes: how long to keep trying to read them back after the run.
    #[serde(default = "default_read_back")]
    pub read_back_timeout: HumanDuration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            kind: RequestKind::Reads,
            concurrency: default_concurrency(),
            rate: default_rate(),
            duration: default_duration(),
            timeout: default_timeout(),
            read_back_timeout: default_read_back(),
        }
    }
}

fn default_concurrency() -> usize {
    8
}
fn default_rate() -> u32 {
    400
}
fn default_duration() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_read_back() -> HumanDuration {
    HumanDuration::from_secs(15)
}
fn default_at() -> HumanDuration {
    HumanDuration::from_secs(3)
}
fn default_node() -> String {
    "primary".into()
}

/// The fault and when it happens.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    /// Time after the workload starts.
    #[serde(default = "default_at")]
    pub at: HumanDuration,
    /// A watched node by name, or "primary" (whichever node holds the lease at `at`).
    #[serde(default = "default_node")]
    pub node: String,
    /// How long the fault lasts (sigstop, link-down, netem).
    pub duration: Option<HumanDuration>,
    /// Switchover target.
    pub to: Option<String>,
    /// netem: packet loss, e.g. "30%".
    pub loss: Option<String>,
    /// netem: added delay, e.g. "200ms".
    pub delay: Option<HumanDuration>,
    /// "local" (signals and namespaces of this host) or "api" (the node's `POST /faults`,
    /// which needs `[admin] allow_faults = true` there and `watch.token_file` here).
    #[serde(default)]
    pub via: Via,
    /// With `via = "api"`, the node's interface for link faults.
    pub interface: Option<String>,
    /// Signal faults on a process that is not a tandem node (e.g. a postmaster): a file whose
    /// first line is its pid, such as `postmaster.pid`.
    pub pid_file: Option<String>,
    /// disk-full: a tmpfs mount point to fill for `duration`.
    pub path: Option<String>,
}

/// Where a fault is injected from.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Local,
    Api,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of the node's tandem process.
    Sigkill,
    /// SIGSTOP, then SIGCONT after `duration`.
    Sigstop,
    /// SIGTERM: a graceful stop.
    Graceful,
    /// A planned switchover through the admin API.
    Switchover,
    /// The node's link (from `[watch] links`) set down, then up after `duration`.
    LinkDown,
    /// Packet loss and/or delay on the node's link (tc netem) for `duration`.
    Netem,
    /// The node's network namespace cut off from the other nodes' namespaces (prohibit
    /// routes both ways) for `duration`; clients still reach it.
    Partition,
    /// A tmpfs at `path` filled up for `duration`.
    DiskFull,
    /// No fault: a baseline run.
    None,
}

/// Nodes whose admin APIs are sampled through the drill.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Name -> admin API address (`IP:PORT`).
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
    /// Bearer token file for mutating calls (switchover).
    pub token_file: Option<String>,
    /// Other admin APIs (e.g. load balancers) whose events count for detection time.
    #[serde(default)]
    pub observers: Vec<String>,
    /// Name -> "NETNS:INTERFACE" carrying that node's traffic, for link faults. The drill only
    /// touches network namespaces that exist on this host.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// Name -> network namespace the node runs in, for partitions.
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    /// Value of the `x-served-by` answer header -> node name, for writes acknowledged by an
    /// old primary (a value that is itself a node name needs no entry).
    #[serde(default)]
    pub served_by: BTreeMap<String, String>,
}

/// What must hold for the drill to pass (exit status 1 otherwise).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Longest time without a successful request.
    pub rto: Option<HumanDuration>,
    /// Most failed requests allowed.
    pub failed_requests: Option<u64>,
    /// Most acknowledged writes allowed to be missing when read back.
    pub lost_writes: Option<u64>,
    /// `0`: no acknowledged write lost; a duration: no lost write was acknowledged longer than
    /// this before the fault.
    pub rpo: Option<Rpo>,
    /// Most writes allowed to be acknowledged by a node after the lease had moved away from it.
    pub old_primary_acks: Option<u64>,
}

/// A recovery point objective: `0` or a duration.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(into = "String")]
pub struct Rpo(pub Duration);

impl From<Rpo> for String {
    fn from(r: Rpo) -> String {
        if r.0.is_zero() {
            "0".into()
        } else {
            HumanDuration(r.0).to_string()
        }
    }
}

impl<'de> Deserialize<'de> for Rpo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Ok(Rpo(Duration::ZERO)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "rpo {n}: write 0 (no acknowledged write lost) or a duration such as \"500ms\""
            ))),
            Raw::Text(t) if t.trim() == "0" => Ok(Rpo(Duration::ZERO)),
            Raw::Text(t) => t
                .parse::<HumanDuration>()
                .map(|h| Rpo(h.get()))
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, DrillError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DrillError::Scenario {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let mut s = Self::parse(&file, &text)?;
        // Files named in a scenario are relative to it.
        if let Some(dir) = path.parent() {
            for f in [
                &mut s.watch.token_file,
                &mut s.fault.pid_file,
                &mut s.fault.path,
            ] {
                if let Some(t) = f.as_ref().filter(|t| Path::new(t).is_relative()) {
                    *f = Some(dir.join(t).display().to_string());
                }
            }
        }
        Ok(s)
    }

    pub fn parse(file: &str, text: &str) -> Result<Scenario, DrillError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
            let message = match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            };
            DrillError::Scenario {
                file: file.to_string(),
                message,
            }
        })?;
        s.check().map_err(|message| DrillError::Scenario {
            file: file.to_string(),
            message,
        })?;
        Ok(s)
    }

    /// The target, checked: an HTTP address and path, or a PostgreSQL configuration.
    pub fn target(&self) -> Result<TargetKind, String> {
        let t = &self.target;
        match (&t.http, &t.postgres, &t.tcp) {
            (Some(url), None, None) => {
                let (addr, path) = tandem_core::probe::parse_http_url(url)
                    .map_err(|e| format!("target.http: {e}"))?;
                Ok(TargetKind::Http(addr.to_string(), path))
            }
            (None, Some(dsn), None) => {
                crate::pg::parse(dsn).map(|c| TargetKind::Postgres(Box::new(c)))
            }
            (None, None, Some(addr)) => addr
                .parse::<SocketAddr>()
                .map(|a| TargetKind::Tcp(a.to_string()))
                .map_err(|_| format!("target.tcp: {addr:?} must be IP:PORT")),
            _ => Err("[target] needs exactly one of http, postgres and tcp".into()),
        }
    }

    fn check(&self) -> Result<(), String> {
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
        for (value, node) in &self.watch.served_by {
            if !self.watch.nodes.contains_key(node) {
                return Err(format!(
                    "watch.served_by.{value}: {node:?} is not in [watch] nodes"
                ));
            }
        }
        let w = &self.workload;
        if w.concurrency == 0 || w.concurrency > 1000 {
            return Err("workload.concurrency must be between 1 and 1000".into());
        }
        if w.rate == 0 || w.rate > 100_000 {
            return Err("workload.rate must be between 1 and 100000 requests/s".into());
        }
        if w.read_back_timeout.get() > Duration::from_secs(600) {
            return Err("workload.read_back_timeout must be at most 10m".into());
        }
        if w.duration.get() > Duration::from_secs(3600) || w.duration.get().is_zero() {
            return Err("workload.duration must be between 1ms and 1h".into());
        }
        let f = &self.fault;
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
        let writes = self.workload.kind == RequestKind::Writes;
        let o = &self.objectives;
        if !writes && (o.lost_writes.is_some() || o.rpo.is_some() || o.old_primary_acks.is_some()) {
            return Err(
                "objectives lost_writes, rpo and old_primary_acks need workload.kind = \"writes\""
                    .into(),
            );
        }
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
        for n in needed {
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
        if f.duration.is_none() {
            return Err("fault.duration is needed for link faults".into());
        }
        Ok(())
    }

    /// A partition needs every node's namespace, existing, and a duration.
    fn check_hosts(&self) -> Result<(), String> {
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
        if self.fault.duration.is_none() {
            return Err("fault.duration is needed for a partition".into());
        }
        Ok(())
    }

    /// Loopback always; anything else only inside `allow_targets`.
    fn allowed(&self, addr: &str, key: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "kill-primary"
[target]
http = "http://127.0.0.1:8080/"
[fault]
kind = "sigkill"
at = "2s"
[watch]
nodes = { n1 = "127.0.0.1:9101", n2 = "127.0.0.1:9102" }
[objectives]
rto = "3s"
"#;

    fn err(text: &str) -> String {
        match Scenario::parse("s.toml", text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn files_named_in_a_scenario_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.toml");
        let text = "name = \"x\"\n[target]\nhttp = \"http://127.0.0.1:1/\"\n[fault]\nkind = \"sigkill\"\npid_file = \"run/app.pid\"\n";
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.fault.pid_file.map(std::path::PathBuf::from),
            Some(dir.path().join("run/app.pid"))
        );
        let abs = text.replace("run/app.pid", "/run/app.pid");
        std::fs::write(&path, abs).unwrap_or_else(|e| panic!("{e}"));
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.fault.pid_file.as_deref(), Some("/run/app.pid"));
    }

    #[test]
    fn a_scenario_parses_with_defaults() {
        let s = Scenario::parse("s.toml", OK).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.workload.concurrency, 8);
        assert_eq!(s.fault.node, "primary");
        assert_eq!(s.objectives.rto.map(|d| d.get().as_secs()), Some(3));
    }

    #[test]
    fn bad_scenarios_are_refused_before_anything_runs() {
        assert!(
            err(&OK.replace("kind = \"sigkill\"", "kind = \"sigkill\"\ncolour = 1"))
                .contains("line 7")
        );
        assert!(err(&OK.replace("127.0.0.1:8080", "10.1.1.1:8080")).contains("outside loopback"));
        assert!(
            err(&OK.replace("at = \"2s\"", "at = \"20s\"")).contains("inside workload.duration")
        );
        assert!(err(&OK.replace("kind = \"sigkill\"", "kind = \"sigstop\""))
            .contains("duration is needed"));
        assert!(
            err(&OK.replace("at = \"2s\"", "at = \"2s\"\nnode = \"n9\""))
                .contains("not in [watch]")
        );
        let link = |extra: &str| {
            OK.replace(
                "kind = \"sigkill\"",
                &format!("kind = \"link-down\"\nduration = \"1s\"{extra}"),
            )
        };
        assert!(err(&link("")).contains("watch.links has no link"));
        let missing_ns = link("").replace(
            "[objectives]",
            "links = { n1 = \"no-such-ns:eth0\", n2 = \"no-such-ns:eth0\" }\n[objectives]",
        );
        assert!(
            err(&missing_ns).contains("does not exist"),
            "{}",
            err(&missing_ns)
        );
        let netem = OK.replace(
            "kind = \"sigkill\"",
            "kind = \"netem\"\nduration = \"1s\"\nloss = \"lots\"",
        );
        assert!(err(&netem).contains("watch.links") || err(&netem).contains("percentage"));
        let api = OK.replace(
            "kind = \"sigkill\"",
            "kind = \"sigstop\"\nduration = \"1s\"\nvia = \"api\"",
        );
        assert!(err(&api).contains("needs watch.token_file"));
        let api_link = OK
            .replace(
                "kind = \"sigkill\"",
                "kind = \"link-down\"\nduration = \"1s\"\nvia = \"api\"",
            )
            .replace("[objectives]", "token_file = \"t\"\n[objectives]");
        assert!(err(&api_link).contains("fault.interface"));
        assert!(Scenario::parse(
            "s.toml",
            &api_link.replace("via = \"api\"", "via = \"api\"\ninterface = \"eth0\"")
        )
        .is_ok());
        // Targets: exactly one; PostgreSQL hosts checked like HTTP ones; TCP takes reads only.
        let pg = |dsn: &str| {
            OK.replace(
                "http = \"http://127.0.0.1:8080/\"",
                &format!("postgres = \"{dsn}\""),
            )
        };
        assert!(Scenario::parse("s.toml", &pg("postgres://app@127.0.0.1:5432/db")).is_ok());
        assert!(err(&pg("host=10.9.9.9 user=app")).contains("outside loopback"));
        assert!(
            err(&OK.replace("[target]", "[target]\ntcp = \"127.0.0.1:1\"")).contains("exactly one")
        );
        let tcp = OK.replace(
            "http = \"http://127.0.0.1:8080/\"",
            "tcp = \"127.0.0.1:5432\"",
        );
        assert!(Scenario::parse("s.toml", &tcp).is_ok());
        assert!(
            err(&tcp.replace("[fault]", "[workload]\nkind = \"writes\"\n[fault]"))
                .contains("reads only")
        );
        // Write objectives need writes; rpo is 0 or a duration.
        assert!(err(&OK.replace("rto = \"3s\"", "rpo = 0")).contains("kind = \"writes\""));
        let writes = |obj: &str| {
            OK.replace("[fault]", "[workload]\nkind = \"writes\"\n[fault]")
                .replace("rto = \"3s\"", obj)
        };
        let rpo = |obj: &str| Scenario::parse("s.toml", &writes(obj)).map(|s| s.objectives.rpo);
        assert_eq!(rpo("rpo = 0").ok().flatten(), Some(Rpo(Duration::ZERO)));
        assert_eq!(
            rpo("rpo = \"500ms\"").ok().flatten(),
            Some(Rpo(Duration::from_millis(500)))
        );
        assert!(err(&writes("rpo = 3")).contains("write 0"));
        assert!(err(&writes("rpo = \"soon\"")).contains("invalid duration"));
        // pid_file and disk-full faults need no watched nodes; partitions need hosts.
        let standalone = |fault: &str| {
            format!("name = \"x\"\n[target]\nhttp = \"http://127.0.0.1:1/\"\n[fault]\n{fault}\n")
        };
        assert!(Scenario::parse(
            "s.toml",
            &standalone("kind = \"sigkill\"\npid_file = \"p\"")
        )
        .is_ok());
        assert!(err(&standalone(
            "kind = \"netem\"\npid_file = \"p\"\nloss = \"1%\""
        ))
        .contains("pid_file goes with"));
        assert!(err(&standalone("kind = \"disk-full\"\nduration = \"1s\"")).contains("fault.path"));
        assert!(Scenario::parse(
            "s.toml",
            &standalone("kind = \"disk-full\"\nduration = \"1s\"\npath = \"/x\"")
        )
        .is_ok());
        let part = OK.replace(
            "kind = \"sigkill\"",
            "kind = \"partition\"\nduration = \"1s\"",
        );
        assert!(err(&part).contains("watch.hosts"));
        assert!(err(&part.replace(
            "[objectives]",
            "hosts = { n1 = \"no-such-ns\", n2 = \"no-such-ns\" }\n[objectives]"
        ))
        .contains("does not exist"));
        assert!(
            err(&OK.replace("[objectives]", "served_by = { svc = \"n7\" }\n[objectives]"))
                .contains("not in [watch] nodes")
        );
        let allowed = OK
            .replace("127.0.0.1:8080", "10.1.1.1:8080")
            .replace("name = ", "allow_targets = [\"10.1.1.0/24\"]\nname = ");
        assert!(Scenario::parse("s.toml", &allowed).is_ok());
    }
}

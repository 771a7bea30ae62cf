//! Scenario files: the target, the workload, the fault, the nodes to watch, and the objectives.
//! Parsed with unknown keys refused, then checked before any fault is injected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    /// One fault; a scenario has exactly one of `[fault]` and `[chaos]`.
    #[serde(default = "Fault::none")]
    pub fault: Fault,
    /// Many faults in a row on a seeded schedule, with invariants checked all along.
    pub chaos: Option<crate::chaos::Chaos>,
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
fn default_recovery() -> HumanDuration {
    HumanDuration::from_secs(20)
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
    /// How long after the workload to wait for the faulted node to answer again, if it has
    /// not yet (a killed node restarted by its service manager); 0 does not wait.
    #[serde(default = "default_recovery")]
    pub recovery_timeout: HumanDuration,
}

impl Fault {
    /// No fault: what a scenario with `[chaos]` has in place of `[fault]`.
    pub fn none() -> Fault {
        Fault {
            kind: FaultKind::None,
            at: default_at(),
            node: default_node(),
            duration: None,
            to: None,
            loss: None,
            delay: None,
            via: Via::Local,
            interface: None,
            pid_file: None,
            path: None,
            recovery_timeout: default_recovery(),
        }
    }
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
    /// Name -> connection string of that node's PostgreSQL server, asked from outside whether
    /// it is in recovery and whether it takes a write (chaos runs).
    #[serde(default)]
    pub postgres: BTreeMap<String, String>,
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
            if let Some(c) = s.chaos.as_mut() {
                for p in c.disks.values_mut().chain(c.restart_log.iter_mut()) {
                    if Path::new(p.as_str()).is_relative() {
                        *p = dir.join(&*p).display().to_string();
                    }
                }
            }
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
        // `[fault]` has a default (none) for chaos scenarios: whether it was written is known
        // from the text only.
        let given =
            |key: &str| toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key(key));
        let workload_duration = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("workload")?.get("duration").cloned());
        let mut s = s;
        s.check_sections(given("fault"), workload_duration.is_some())
            .map_err(|message| DrillError::Scenario {
                file: file.to_string(),
                message,
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
}

mod check;
mod check_chaos;
#[cfg(test)]
mod tests;

pub use check::netns_exists;

//! `[node]`, `[cluster]` and `[service]` (kind = "command"): parsed with unknown keys refused,
//! validated before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_core::probe::StatusSet;
use tandem_core::validate::Issue;
use tandem_core::HumanDuration;

/// `[node]`: this node's identity and preferences.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Preferred primary among healthy candidates (higher wins).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Never take the lease.
    #[serde(default)]
    pub nofailover: bool,
}

/// `[cluster]`: the members and the store the lease lives in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// This node's peer address (Raft traffic).
    pub listen: String,
    /// Every member, this node included: name -> peer address.
    pub peers: BTreeMap<String, String>,
    #[serde(default)]
    pub dcs: DcsKind,
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// With etcd: the etcd cluster's `--election-timeout` (default etcd's own, 1s). The lease
    /// must outlast an etcd leader election, so validation derives the shortest ttl from it.
    pub etcd_election_timeout: Option<HumanDuration>,
    /// The primary's lease; renewed eight times per ttl.
    #[serde(default = "default_ttl")]
    pub lease_ttl: HumanDuration,
    /// Time kept back from the ttl for clock drift and demotion (default: a quarter of the ttl).
    pub safety_margin: Option<HumanDuration>,
    /// File with the shared secret that authenticates peer traffic.
    pub secret_file: PathBuf,
    /// Keep the primary through a store outage while every other member confirms it directly.
    #[serde(default)]
    pub failsafe: bool,
}

/// Which consensus store holds the lease.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DcsKind {
    #[default]
    Raft,
    Etcd,
}

/// `[service]`: the service kept available, active-passive.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub promote: Option<String>,
    pub demote: Option<String>,
    /// Each hook is killed after this long.
    #[serde(default = "default_hook_timeout")]
    pub hook_timeout: HumanDuration,
    pub health: Option<ServiceHealth>,
    // ----- kind = "postgres" -----
    /// Directory with postgres, initdb, pg_basebackup, pg_rewind and pg_controldata.
    pub bin_dir: Option<PathBuf>,
    /// PostgreSQL's data directory (created, owned by `os_user`).
    pub data_dir: Option<PathBuf>,
    /// `IP:PORT` PostgreSQL listens on.
    pub listen: Option<String>,
    /// The OS user PostgreSQL runs as (it refuses to run as root).
    pub os_user: Option<String>,
    pub replication_user: Option<String>,
    pub synchronous: Option<crate::postgres::SyncMode>,
    pub maximum_lag_on_failover: Option<String>,
    pub use_rewind: Option<bool>,
    /// Failed starts of a replica's PostgreSQL in a row before its data directory is set
    /// aside and cloned afresh from the primary.
    pub max_start_failures: Option<u32>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Command,
    Postgres,
}

/// `[service.health]`: the same settings as a proxy backend's checks, aimed at one service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceHealth {
    #[serde(default = "default_check")]
    pub check: ServiceCheck,
    /// For `check = "http"`: `http://IP:PORT/path`.
    pub url: Option<String>,
    /// For `check = "tcp"`: `IP:PORT`.
    pub address: Option<String>,
    #[serde(default = "default_expect")]
    pub expect: String,
    #[serde(default = "d1s")]
    pub interval: HumanDuration,
    #[serde(default = "d500ms")]
    pub timeout: HumanDuration,
    #[serde(default = "two")]
    pub rise: u32,
    #[serde(default = "two")]
    pub fall: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceCheck {
    Http,
    Tcp,
}

fn default_priority() -> u32 {
    100
}
fn default_ttl() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_hook_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_check() -> ServiceCheck {
    ServiceCheck::Http
}
fn default_expect() -> String {
    "200-399".into()
}
fn d1s() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn d500ms() -> HumanDuration {
    HumanDuration::from_millis(500)
}
fn two() -> u32 {
    2
}

impl ClusterConfig {
    pub fn margin(&self) -> Duration {
        self.safety_margin
            .map(|m| m.get())
            .unwrap_or(self.lease_ttl.get() / 4)
    }

    /// The etcd cluster's election timeout, as stated or etcd's default.
    pub fn etcd_election_timeout(&self) -> Duration {
        self.etcd_election_timeout
            .map(|e| e.get())
            .unwrap_or(crate::timing::ETCD_DEFAULT_ELECTION_TIMEOUT)
    }
}

impl ServiceHealth {
    /// The probe target: address and (for HTTP) path.
    pub fn target(&self) -> Result<(SocketAddr, Option<String>), String> {
        match self.check {
            ServiceCheck::Tcp => {
                let a = self
                    .address
                    .as_deref()
                    .ok_or("check = \"tcp\" needs address = \"IP:PORT\"")?;
                a.parse()
                    .map(|a| (a, None))
                    .map_err(|_| format!("{a:?} is not IP:PORT"))
            }
            ServiceCheck::Http => {
                let u = self
                    .url
                    .as_deref()
                    .ok_or("check = \"http\" needs url = \"http://IP:PORT/path\"")?;
                tandem_core::probe::parse_http_url(u).map(|(a, p)| (a, Some(p)))
            }
        }
    }
}

/// Read the cluster secret: one word of at least 16 characters.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let s = text.trim().to_string();
    if s.len() < 16 || s.contains(char::is_whitespace) {
        return Err(format!(
            "{}: the secret must be one word of at least 16 characters",
            path.display()
        ));
    }
    Ok(s)
}

/// Check `[node]`, `[cluster]` and `[service]` together.
pub fn validate(
    node: Option<&NodeConfig>,
    cluster: Option<&ClusterConfig>,
    service: Option<&ServiceConfig>,
) -> Vec<Issue> {
    let mut issues = Vec::new();
    match (node, cluster) {
        (Some(n), Some(c)) => validate_cluster(n, c, &mut issues),
        (None, Some(_)) => issues.push(Issue::new("cluster", "[cluster] needs a [node] section")),
        (Some(_), None) => issues.push(Issue::new("node", "[node] is only used with [cluster]")),
        (None, None) => {}
    }
    if let Some(s) = service {
        if cluster.is_none() {
            issues.push(Issue::new(
                "service",
                "[service] needs [node] and [cluster]: the lease decides where it is primary",
            ));
        }
        validate_service(s, &mut issues);
        if let (ServiceKind::Postgres, Some(c)) = (s.kind, cluster) {
            // Member names become application_name and replication slot names.
            let mut slots = std::collections::BTreeMap::new();
            for name in c.peers.keys() {
                if name.len() > 63 {
                    issues.push(Issue::new(
                        "cluster.peers",
                        format!("{name}: at most 63 characters with kind = \"postgres\""),
                    ));
                }
                if let Some(other) = slots.insert(crate::postgres::slot_name(name), name) {
                    issues.push(Issue::new(
                        "cluster.peers",
                        format!("{other} and {name} would share a replication slot: rename one"),
                    ));
                }
            }
        }
    }
    issues
}

fn validate_cluster(n: &NodeConfig, c: &ClusterConfig, issues: &mut Vec<Issue>) {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !name_ok(&n.name) {
        issues.push(Issue::new(
            "node.name",
            format!("{:?} is not a name (1-64 letters, digits, - _ .)", n.name),
        ));
    }
    if !name_ok(&c.name) {
        issues.push(Issue::new(
            "cluster.name",
            format!("{:?} is not a name", c.name),
        ));
    }
    if c.listen.parse::<SocketAddr>().is_err() {
        issues.push(Issue::new(
            "cluster.listen",
            format!("{:?} is not an address:port", c.listen),
        ));
    }
    if !c.peers.contains_key(&n.name) {
        issues.push(Issue::new(
            "cluster.peers",
            format!("this node ({:?}) is not among the peers", n.name),
        ));
    }
    let mut addrs = std::collections::HashSet::new();
    for (name, addr) in &c.peers {
        if !name_ok(name) {
            issues.push(Issue::new(
                "cluster.peers",
                format!("{name:?} is not a name"),
            ));
        }
        match addr.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => issues.push(Issue::new(
                "cluster.peers",
                format!("{name}: port 0 cannot be reached"),
            )),
            Ok(a) if !addrs.insert(a) => issues.push(Issue::new(
                "cluster.peers",
                format!("{a} is given to two peers"),
            )),
            Ok(_) => {}
            Err(_) => issues.push(Issue::new(
                "cluster.peers",
                format!("{name}: {addr:?} is not an address:port"),
            )),
        }
    }
    if c.peers.len() > 9 {
        issues.push(Issue::new("cluster.peers", "at most 9 members"));
    }
    let ttl = c.lease_ttl.get();
    if ttl < Duration::from_millis(300) || ttl > Duration::from_secs(300) {
        issues.push(Issue::new(
            "cluster.lease_ttl",
            "must be between 300ms and 300s",
        ));
    }
    if let Some(m) = c.safety_margin {
        if m.get() < ttl / 20 || m.get() > ttl / 2 {
            issues.push(Issue::new(
                "cluster.safety_margin",
                "must be between ttl/20 and ttl/2",
            ));
        }
    }
    if let Err(e) = read_secret(&c.secret_file) {
        issues.push(Issue::new("cluster.secret_file", e));
    }
    match c.dcs {
        DcsKind::Etcd if c.etcd_endpoints.is_empty() => issues.push(Issue::new(
            "cluster.etcd_endpoints",
            "dcs = \"etcd\" needs at least one endpoint",
        )),
        DcsKind::Etcd if !cfg!(feature = "etcd") => issues.push(Issue::new(
            "cluster.dcs",
            "this build has no etcd backend (build with --features etcd, which needs protoc)",
        )),
        DcsKind::Raft if !c.etcd_endpoints.is_empty() => issues.push(Issue::new(
            "cluster.etcd_endpoints",
            "only used with dcs = \"etcd\"",
        )),
        _ => {}
    }
    crate::timing::validate_etcd(c, issues);
}

impl ServiceConfig {
    /// The resolved settings of a `kind = "postgres"` service.
    pub fn postgres(
        &self,
        node: &NodeConfig,
        cluster: &ClusterConfig,
    ) -> Result<crate::postgres::PgSettings, String> {
        use crate::postgres::{parse_size, PgSettings};
        let bin_dir = self
            .bin_dir
            .clone()
            .ok_or("kind = \"postgres\" needs bin_dir")?;
        let data_dir = self
            .data_dir
            .clone()
            .ok_or("kind = \"postgres\" needs data_dir")?;
        let listen = self
            .listen
            .as_deref()
            .ok_or("kind = \"postgres\" needs listen = \"IP:PORT\"")?;
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| format!("listen: {listen:?} is not IP:PORT"))?;
        let maximum_lag_on_failover =
            parse_size(self.maximum_lag_on_failover.as_deref().unwrap_or("1MB"))?;
        let peer_ips = cluster
            .peers
            .values()
            .filter_map(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .collect();
        Ok(PgSettings {
            bin_dir,
            data_dir,
            listen,
            os_user: self.os_user.clone().unwrap_or_else(|| "postgres".into()),
            replication_user: self
                .replication_user
                .clone()
                .unwrap_or_else(|| "replicator".into()),
            synchronous: self.synchronous.unwrap_or_default(),
            maximum_lag_on_failover,
            use_rewind: self.use_rewind.unwrap_or(true),
            max_start_failures: self
                .max_start_failures
                .unwrap_or(crate::postgres::DEFAULT_MAX_START_FAILURES),
            parameters: self.parameters.clone(),
            peer_ips,
            log_file: node.data_dir.join("postgresql.log"),
        })
    }

    fn postgres_keys(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut has = |set: bool, k: &'static str| {
            if set {
                v.push(k)
            }
        };
        has(self.bin_dir.is_some(), "bin_dir");
        has(self.data_dir.is_some(), "data_dir");
        has(self.listen.is_some(), "listen");
        has(self.os_user.is_some(), "os_user");
        has(self.replication_user.is_some(), "replication_user");
        has(self.synchronous.is_some(), "synchronous");
        has(
            self.maximum_lag_on_failover.is_some(),
            "maximum_lag_on_failover",
        );
        has(self.use_rewind.is_some(), "use_rewind");
        has(self.max_start_failures.is_some(), "max_start_failures");
        has(!self.parameters.is_empty(), "parameters");
        v
    }
}

fn validate_postgres(s: &ServiceConfig, issues: &mut Vec<Issue>) {
    for (set, key) in [
        (s.start.is_some(), "start"),
        (s.stop.is_some(), "stop"),
        (s.promote.is_some(), "promote"),
        (s.demote.is_some(), "demote"),
        (s.health.is_some(), "health"),
    ] {
        if set {
            issues.push(Issue::new(
                format!("service.{key}"),
                "not used with kind = \"postgres\": tandem runs and checks PostgreSQL itself",
            ));
        }
    }
    match &s.bin_dir {
        None => issues.push(Issue::new(
            "service.bin_dir",
            "kind = \"postgres\" needs bin_dir (e.g. \"/usr/lib/postgresql/15/bin\")",
        )),
        Some(b) => {
            let missing: Vec<&str> = crate::postgres::PROGRAMS
                .iter()
                .copied()
                .filter(|p| !b.join(p).is_file())
                .collect();
            if !missing.is_empty() {
                issues.push(Issue::new(
                    "service.bin_dir",
                    format!("{} has no {}", b.display(), missing.join(", ")),
                ));
            }
        }
    }
    let user = s.os_user.as_deref().unwrap_or("postgres");
    let os_user = match crate::postgres::sys::lookup_user(user) {
        Ok(u) => Some(u),
        Err(e) => {
            issues.push(Issue::new("service.os_user", e));
            None
        }
    };
    if os_user.as_ref().is_some_and(|u| u.uid == 0) {
        issues.push(Issue::new(
            "service.os_user",
            "PostgreSQL refuses to run as root: name an unprivileged user",
        ));
    }
    match &s.data_dir {
        None => issues.push(Issue::new(
            "service.data_dir",
            "kind = \"postgres\" needs data_dir",
        )),
        Some(d) if !d.is_absolute() => {
            issues.push(Issue::new("service.data_dir", "must be an absolute path"))
        }
        Some(d) => {
            use std::os::unix::fs::MetadataExt;
            if let (Ok(meta), Some(u)) = (std::fs::metadata(d), &os_user) {
                if meta.uid() != u.uid {
                    issues.push(Issue::new(
                        "service.data_dir",
                        format!(
                            "{} is owned by uid {}, not by {} (uid {})",
                            d.display(),
                            meta.uid(),
                            u.name,
                            u.uid
                        ),
                    ));
                }
            }
        }
    }
    match s.listen.as_deref().map(str::parse::<SocketAddr>) {
        None => issues.push(Issue::new(
            "service.listen",
            "kind = \"postgres\" needs listen = \"IP:PORT\"",
        )),
        Some(Ok(a)) if a.port() == 0 => {
            issues.push(Issue::new("service.listen", "port 0 cannot be reached"))
        }
        Some(Ok(_)) => {}
        Some(Err(_)) => issues.push(Issue::new("service.listen", "not IP:PORT")),
    }
    for (k, u) in [
        ("replication_user", s.replication_user.as_deref()),
        ("os_user", s.os_user.as_deref()),
    ] {
        if let Some(u) = u {
            if u.is_empty() || !u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                issues.push(Issue::new(
                    format!("service.{k}"),
                    format!("{u:?}: use letters, digits and _"),
                ));
            }
        }
    }
    if let Some(l) = &s.maximum_lag_on_failover {
        if let Err(e) = crate::postgres::parse_size(l) {
            issues.push(Issue::new("service.maximum_lag_on_failover", e));
        }
    }
    if s.max_start_failures == Some(0) {
        issues.push(Issue::new(
            "service.max_start_failures",
            "must be at least 1",
        ));
    }
    for (k, v) in &s.parameters {
        if crate::postgres::MANAGED_PARAMETERS.contains(&k.as_str()) {
            issues.push(Issue::new(
                format!("service.parameters.{k}"),
                "tandem sets this itself",
            ));
        } else if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            issues.push(Issue::new(
                format!("service.parameters.{k}"),
                "not a parameter name",
            ));
        } else if v.contains('\n') {
            issues.push(Issue::new(
                format!("service.parameters.{k}"),
                "a value cannot span lines",
            ));
        }
    }
}

fn validate_service(s: &ServiceConfig, issues: &mut Vec<Issue>) {
    if s.kind == ServiceKind::Postgres {
        validate_postgres(s, issues);
    } else {
        for k in s.postgres_keys() {
            issues.push(Issue::new(
                format!("service.{k}"),
                "only used with kind = \"postgres\"",
            ));
        }
    }
    if s.hook_timeout.get().is_zero() {
        issues.push(Issue::new("service.hook_timeout", "must be more than 0"));
    }
    if let Some(h) = &s.health {
        if let Err(e) = h.target() {
            issues.push(Issue::new("service.health", e));
        }
        if let Err(e) = StatusSet::parse(&h.expect) {
            issues.push(Issue::new("service.health.expect", e));
        }
        if h.rise == 0 || h.fall == 0 {
            issues.push(Issue::new(
                "service.health",
                "rise and fall must be at least 1",
            ));
        }
        if h.interval.get() < Duration::from_millis(10) || h.timeout.get().is_zero() {
            issues.push(Issue::new(
                "service.health.interval",
                "interval must be at least 10ms and timeout more than 0",
            ));
        }
    }
}

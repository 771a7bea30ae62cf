//! The proxy's configuration: `[[frontend]]` and `[[backend]]` tables as written by operators,
//! with their defaults, and the validation that runs before anything is bound.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
pub use tandem_core::probe::StatusSet;
use tandem_core::validate::Issue;
use tandem_core::HumanDuration;

/// `[[frontend]]`: a listening address and the backend it sends traffic to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    pub name: String,
    pub listen: String,
    #[serde(default)]
    pub mode: Mode,
    pub backend: String,
    /// One structured log line per request (HTTP) or connection (TCP).
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Idle time allowed on a client connection, and the time a client has to send its headers.
    #[serde(default = "d30s")]
    pub client_timeout: HumanDuration,
    /// Largest request head accepted (bytes); more gets 431.
    #[serde(default = "default_max_header")]
    pub max_header_size: usize,
    /// Concurrent client connections; further ones wait in the kernel's accept queue.
    #[serde(default = "default_max_conn")]
    pub max_connections: usize,
}

/// How a frontend speaks to its clients.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

/// `[[backend]]`: a pool of servers, how to choose among them and how to check them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    #[serde(default)]
    pub balance: Balance,
    /// With `balance = "hash"`: hash this request header instead of the client address.
    #[serde(default)]
    pub hash_header: Option<String>,
    /// Further attempts on another server for a request not yet answered.
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "d1s")]
    pub connect_timeout: HumanDuration,
    /// Time to the first response byte; past it an idempotent request goes elsewhere.
    #[serde(default = "d5s")]
    pub try_timeout: HumanDuration,
    /// How long an idle pooled connection to a server is kept.
    #[serde(default = "d30s")]
    pub server_idle_timeout: HumanDuration,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub server: Vec<ServerConfig>,
}

/// Server selection policy.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    P2c,
    Hash,
}

/// `[backend.health]`: active checks and the rise/fall hysteresis shared with passive checks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default)]
    pub check: CheckKind,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_expect")]
    pub expect: String,
    #[serde(default = "d1s")]
    pub interval: HumanDuration,
    #[serde(default = "d500ms")]
    pub timeout: HumanDuration,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check: CheckKind::default(),
            path: default_path(),
            expect: default_expect(),
            interval: d1s(),
            timeout: d500ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

/// Active check kind.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    #[default]
    Tcp,
    Http,
    None,
}

/// `[[backend.server]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: String,
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Takes traffic only while no non-backup server is up.
    #[serde(default)]
    pub backup: bool,
    /// Concurrent requests (HTTP) or connections (TCP) sent to this server; 0 = no limit.
    #[serde(default)]
    pub maxconn: u32,
    /// Send active health checks here instead of `address`, e.g. a tandem node's admin API
    /// with `path = "/primary"`, so that only the cluster primary takes traffic.
    #[serde(default)]
    pub check_address: Option<String>,
}

fn yes() -> bool {
    true
}
fn d30s() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn d5s() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn d1s() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn d500ms() -> HumanDuration {
    HumanDuration::from_millis(500)
}
fn default_max_header() -> usize {
    16 * 1024
}
fn default_max_conn() -> usize {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_path() -> String {
    "/".to_string()
}
fn default_expect() -> String {
    "200-399".to_string()
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_weight() -> u32 {
    1
}

/// Check the proxy sections together: names unique, references resolve, addresses parse,
/// numbers in range. Returns every problem found, not just the first.
pub fn validate(frontends: &[FrontendConfig], backends: &[BackendConfig]) -> Vec<Issue> {
    let mut issues = Vec::new();
    let backend_names: HashSet<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut listens = HashSet::new();
    for (i, fe) in frontends.iter().enumerate() {
        let at = |k: &str| format!("frontend[{i}].{k}");
        check_name(&fe.name, &at("name"), &mut seen, &mut issues);
        match fe.listen.parse::<SocketAddr>() {
            Err(_) => issues.push(Issue::new(
                at("listen"),
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:8080\")",
                    fe.listen
                ),
            )),
            Ok(a) if a.port() != 0 && !listens.insert(a) => issues.push(Issue::new(
                at("listen"),
                format!("{a} is used by another frontend"),
            )),
            Ok(_) => {}
        }
        if !backend_names.contains(fe.backend.as_str()) {
            issues.push(Issue::new(
                at("backend"),
                format!("no [[backend]] named {:?}", fe.backend),
            ));
        }
        if fe.max_header_size < 8192 {
            issues.push(Issue::new(
                at("max_header_size"),
                "must be at least 8192 bytes",
            ));
        }
        if fe.max_connections == 0 {
            issues.push(Issue::new(at("max_connections"), "must be at least 1"));
        }
        if fe.client_timeout.get().is_zero() {
            issues.push(Issue::new(at("client_timeout"), "must be more than 0"));
        }
    }
    let mut seen = HashSet::new();
    for (i, be) in backends.iter().enumerate() {
        validate_backend(i, be, &mut seen, &mut issues);
    }
    issues
}

fn validate_backend(
    i: usize,
    be: &BackendConfig,
    seen: &mut HashSet<String>,
    issues: &mut Vec<Issue>,
) {
    let at = |k: &str| format!("backend[{i}].{k}");
    check_name(&be.name, &at("name"), seen, issues);
    if be.server.is_empty() {
        issues.push(Issue::new(
            at("server"),
            "a backend needs at least one [[backend.server]]",
        ));
    }
    if be.retries > 10 {
        issues.push(Issue::new(at("retries"), "at most 10"));
    }
    for (key, d) in [
        ("connect_timeout", be.connect_timeout),
        ("try_timeout", be.try_timeout),
    ] {
        if d.get().is_zero() {
            issues.push(Issue::new(at(key), "must be more than 0"));
        }
    }
    if be.hash_header.is_some() && be.balance != Balance::Hash {
        issues.push(Issue::new(
            at("hash_header"),
            "only used with balance = \"hash\"",
        ));
    }
    if let Some(h) = &be.hash_header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            issues.push(Issue::new(
                at("hash_header"),
                format!("{h:?} is not a header name"),
            ));
        }
    }
    let h = &be.health;
    if let Err(e) = StatusSet::parse(&h.expect) {
        issues.push(Issue::new(at("health.expect"), e));
    }
    if !h.path.starts_with('/') || h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        issues.push(Issue::new(
            at("health.path"),
            "must start with / and contain no spaces",
        ));
    }
    if h.rise == 0 || h.fall == 0 {
        issues.push(Issue::new(at("health"), "rise and fall must be at least 1"));
    }
    if h.interval.get() < std::time::Duration::from_millis(10) {
        issues.push(Issue::new(at("health.interval"), "must be at least 10ms"));
    }
    if h.timeout.get().is_zero() {
        issues.push(Issue::new(at("health.timeout"), "must be more than 0"));
    }
    let mut names = HashSet::new();
    for (j, s) in be.server.iter().enumerate() {
        let at = |k: &str| format!("backend[{i}].server[{j}].{k}");
        check_name(&s.name, &at("name"), &mut names, issues);
        if s.address.parse::<SocketAddr>().is_err() {
            issues.push(Issue::new(
                at("address"),
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:9001\")",
                    s.address
                ),
            ));
        }
        if let Some(c) = &s.check_address {
            if c.parse::<SocketAddr>().is_err() {
                issues.push(Issue::new(
                    at("check_address"),
                    format!("{c:?} is not an address:port"),
                ));
            }
        }
        if !(1..=256).contains(&s.weight) {
            issues.push(Issue::new(at("weight"), "must be between 1 and 256"));
        }
    }
}

fn check_name(name: &str, path: &str, seen: &mut HashSet<String>, issues: &mut Vec<Issue>) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        issues.push(Issue::new(
            path,
            format!("{name:?} is not a name (1-64 letters, digits, - _ .)"),
        ));
    } else if !seen.insert(name.to_string()) {
        issues.push(Issue::new(path, format!("{name:?} is used twice")));
    }
}

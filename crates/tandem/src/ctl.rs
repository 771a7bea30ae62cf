//! `tandem ctl`: a client of a running node's admin API.

use std::path::PathBuf;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::{read_token, Config};

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show the node's status as tables (cluster members, backends, servers).
    Status {
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Show the cluster as this node sees it (JSON).
    Cluster,
    /// Planned switchover: the primary demotes, then TARGET promotes.
    Switchover {
        #[arg(long)]
        to: String,
    },
    /// Stop automatic failover cluster-wide (maintenance).
    Pause,
    /// Resume automatic failover.
    Resume,
    /// Check that the node answers.
    Health,
    /// Show recent events.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Re-read the node's config file and apply it without dropping connections.
    Reload,
    /// Set a server `ready`, `drain` (no new requests) or `maint` (out of rotation, unchecked).
    Server {
        /// BACKEND/SERVER, e.g. app/a
        target: String,
        #[arg(value_parser = ["ready", "drain", "maint"])]
        state: String,
    },
}

/// Where the admin API is and how to authenticate.
pub struct Endpoint {
    pub addr: String,
    pub token: Option<String>,
}

impl Endpoint {
    pub fn resolve(
        admin: Option<String>,
        token_file: Option<PathBuf>,
        config: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut addr = admin;
        let mut token = match &token_file {
            Some(p) => Some(read_token(p).map_err(anyhow::Error::msg)?),
            None => None,
        };
        if let Some(path) = config {
            let cfg = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(a) = &cfg.admin else {
                bail!("{}: no [admin] section", path.display())
            };
            addr.get_or_insert_with(|| a.listen.clone());
            if token.is_none() {
                token = cfg.admin_token(&path).map_err(anyhow::Error::msg)?;
            }
        }
        let addr = addr.unwrap_or_else(|| "127.0.0.1:9000".to_string());
        let addr = addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Ok(Self { addr, token })
    }
}

pub async fn run(ep: Endpoint, cmd: CtlCommand) -> anyhow::Result<()> {
    let (method, path, body) = match &cmd {
        CtlCommand::Status { .. } => ("GET", "/status".to_string(), None),
        CtlCommand::Cluster => ("GET", "/cluster".to_string(), None),
        CtlCommand::Switchover { to } => (
            "POST",
            "/switchover".to_string(),
            Some(serde_json::json!({ "to": to }).to_string()),
        ),
        CtlCommand::Pause => ("POST", "/pause".to_string(), Some(String::new())),
        CtlCommand::Resume => ("POST", "/resume".to_string(), Some(String::new())),
        CtlCommand::Health => ("GET", "/health".to_string(), None),
        CtlCommand::Events { since } => ("GET", format!("/events?since={since}"), None),
        CtlCommand::Reload => ("POST", "/reload".to_string(), Some(String::new())),
        CtlCommand::Server { target, state } => {
            let Some((b, s)) = target.split_once('/') else {
                bail!("expected BACKEND/SERVER, got {target:?}");
            };
            (
                "POST",
                format!("/servers/{b}/{s}/state"),
                Some(format!("{{\"state\":\"{state}\"}}")),
            )
        }
    };
    let (status, text) = request(&ep, method, &path, body).await?;
    if status.is_success() && matches!(cmd, CtlCommand::Status { json: false }) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            out(&status_tables(&v));
            return Ok(());
        }
    }
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        out(&format!("{pretty}\n"));
        Ok(())
    } else {
        bail!("{} answered {status}: {pretty}", ep.addr)
    }
}

/// One HTTP/1.1 request to the admin API.
pub async fn request(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, String)> {
    let stream = tokio::net::TcpStream::connect(&ep.addr)
        .await
        .with_context(|| format!("cannot reach the admin API at {}", ep.addr))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &ep.addr);
    if let Some(t) = &ep.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `tandem ctl status` as tables.
fn status_tables(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let yes = |x: &serde_json::Value| {
        if x.as_bool().unwrap_or(false) {
            "yes"
        } else {
            "no"
        }
    };
    let c = &v["cluster"];
    if c.is_object() {
        let _ = writeln!(
            out,
            "cluster {}  node {}  primary {}  fencing token {}  quorum {}  paused {}",
            s(&c["cluster"]),
            s(&c["node"]),
            s(&c["lease_holder"]),
            s(&c["fencing_token"]),
            yes(&c["has_quorum"]),
            yes(&c["paused"])
        );
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:<8} {:<6} {:>10} {:>9}  API",
            "MEMBER", "ROLE", "HEALTHY", "ALIVE", "LAST SEEN", "PRIORITY"
        );
        for m in c["members"].as_array().into_iter().flatten() {
            let seen = m["last_seen_ms"]
                .as_u64()
                .map(|ms| format!("{ms}ms"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<12} {:<8} {:<8} {:<6} {:>10} {:>9}  {}",
                s(&m["name"]),
                s(&m["role"]),
                yes(&m["healthy"]),
                yes(&m["alive"]),
                seen,
                s(&m["priority"]),
                s(&m["api"])
            );
        }
        let pg_members: Vec<&serde_json::Value> = c["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["postgres"].is_object())
            .collect();
        if !pg_members.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<12} {:<9} {:<8} {:>4} {:>14}  {:<9}  SYNC",
                "POSTGRES", "ROLE", "RUNNING", "TL", "WAL", "STREAMING"
            );
            let sync: Vec<&str> = c["sync"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str())
                .collect();
            for m in pg_members {
                let p = &m["postgres"];
                let lsn = p["lsn"].as_u64().unwrap_or(0);
                let name = s(&m["name"]);
                if m["alive"] == false {
                    // Its last report is stale: say so rather than show it.
                    let _ = writeln!(out, "{name:<12} {:<9} (not alive: no current report)", "?");
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{:<12} {:<9} {:<8} {:>4} {:>14}  {:<9}  {}",
                    name,
                    if p["primary"] == true {
                        "primary"
                    } else {
                        "replica"
                    },
                    yes(&p["running"]),
                    s(&p["timeline"]),
                    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
                    yes(&p["streaming"]),
                    if sync.contains(&name.as_str()) {
                        "yes"
                    } else {
                        ""
                    }
                );
            }
        }
        let pg = &v["postgres"];
        if pg.is_object() {
            let _ = writeln!(out, "this node's PostgreSQL: {}", s(&pg["state"]));
            if !pg["error"].is_null() {
                let _ = writeln!(out, "  last error: {}", s(&pg["error"]));
            }
            if !pg["not_candidate"].is_null() {
                let _ = writeln!(
                    out,
                    "  not a failover candidate: {}",
                    s(&pg["not_candidate"])
                );
            }
            for r in pg["replicas"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  replica {:<10} {:<10} {:<6} lag {} bytes",
                    s(&r["name"]),
                    s(&r["state"]),
                    s(&r["sync_state"]),
                    s(&r["lag_bytes"])
                );
            }
        }
        out.push('\n');
    }
    for b in v["proxy"]["backends"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "backend {} ({}, {} available)",
            s(&b["name"]),
            s(&b["balance"]),
            s(&b["available"])
        );
        let _ = writeln!(
            out,
            "{:<12} {:<22} {:<6} {:<6} {:>8} {:>9}",
            "SERVER", "ADDRESS", "STATE", "ADMIN", "INFLIGHT", "LATENCY"
        );
        for sv in b["servers"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:<12} {:<22} {:<6} {:<6} {:>8} {:>7.1}ms",
                s(&sv["name"]),
                s(&sv["address"]),
                s(&sv["state"]),
                s(&sv["admin"]),
                s(&sv["inflight"]),
                sv["latency_ewma_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    out
}

/// Print to stdout; a closed pipe (`tandem ctl status | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

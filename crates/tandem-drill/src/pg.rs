//! PostgreSQL as a drill target: connection strings checked before anything runs, one client
//! connection per workload client (reconnecting after errors), sequenced `INSERT`s one per
//! transaction into `tandem_drill`, and the read-back of what was acknowledged.

use std::time::Duration;

use tandem_core::clock;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

use crate::scenario::RequestKind;

/// The table the drill writes to.
pub const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS tandem_drill(seq bigint primary key, at timestamptz default now())";

/// Parse a connection string (URL or key-value); TLS is refused (not supported).
pub fn parse(dsn: &str) -> Result<Config, String> {
    let mut cfg: Config = dsn
        .parse()
        .map_err(|e| format!("target.postgres: not a connection string: {e}"))?;
    if cfg.get_ssl_mode() == SslMode::Require {
        return Err("target.postgres: sslmode=require is not supported (the drill speaks PostgreSQL without TLS)".into());
    }
    // `prefer` would try TLS first; the drill has none.
    cfg.ssl_mode(SslMode::Disable);
    if cfg.get_hosts().is_empty() && cfg.get_hostaddrs().is_empty() {
        return Err("target.postgres: no host given".into());
    }
    if cfg.get_user().is_none() {
        return Err("target.postgres: no user given".into());
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(2));
    }
    Ok(cfg)
}

/// `IP:PORT` of every TCP host, for the loopback and `allow_targets` check (`localhost` counts
/// as 127.0.0.1; Unix sockets are local and not listed).
pub fn addresses(cfg: &Config) -> Result<Vec<String>, String> {
    let ports = cfg.get_ports();
    let port = |i: usize| match ports.len() {
        0 => 5432,
        1 => ports[0],
        _ => ports.get(i).copied().unwrap_or(5432),
    };
    let mut out = Vec::new();
    if !cfg.get_hostaddrs().is_empty() {
        for (i, a) in cfg.get_hostaddrs().iter().enumerate() {
            out.push(std::net::SocketAddr::new(*a, port(i)).to_string());
        }
        return Ok(out);
    }
    for (i, h) in cfg.get_hosts().iter().enumerate() {
        match h {
            Host::Tcp(name) => {
                let ip: std::net::IpAddr = if name == "localhost" {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    name.parse().map_err(|_| {
                        format!("target.postgres: host {name:?} must be an IP address or localhost")
                    })?
                };
                out.push(std::net::SocketAddr::new(ip, port(i)).to_string());
            }
            Host::Unix(_) => {}
        }
    }
    Ok(out)
}

/// A connection, opened on first use and again after an error.
pub async fn connect(cfg: &Config) -> Result<Client, &'static str> {
    match cfg.connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
        Err(e) => Err(classify(&e, true)),
    }
}

/// What a failed request or connection attempt is called in the report.
fn classify(e: &tokio_postgres::Error, connecting: bool) -> &'static str {
    if let Some(db) = e.as_db_error() {
        return match db.code().code() {
            "25006" => "read-only",
            "57P01" | "57P02" | "57P03" => "shutting down",
            "53100" => "disk full",
            _ => "sql error",
        };
    }
    let refused = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused {
        "refused"
    } else if connecting {
        "connect"
    } else {
        "reset"
    }
}

/// One workload client.
pub struct PgClient {
    cfg: Config,
    client: Option<Client>,
}

impl PgClient {
    pub fn new(cfg: Config) -> Self {
        Self { cfg, client: None }
    }

    /// One request: `SELECT 1`, or the `INSERT` of `seq` in its own transaction. A write
    /// returns the server that committed it, `IP:PORT` (none over a Unix socket).
    pub async fn request(
        &mut self,
        kind: RequestKind,
        seq: u64,
        timeout: Duration,
    ) -> Result<Option<String>, &'static str> {
        let r = tokio::time::timeout(timeout, self.request_inner(kind, seq)).await;
        let r = r.unwrap_or(Err("timeout"));
        if r.is_err() {
            self.client = None;
        }
        r
    }

    async fn request_inner(
        &mut self,
        kind: RequestKind,
        seq: u64,
    ) -> Result<Option<String>, &'static str> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.cfg).await?);
        }
        let Some(c) = self.client.as_ref() else {
            return Err("connect");
        };
        let r = match kind {
            RequestKind::Reads => c.simple_query("SELECT 1").await.map(|_| None),
            RequestKind::Writes => c
                .query_one(
                    "INSERT INTO tandem_drill(seq) VALUES ($1) \
                     RETURNING host(inet_server_addr()), inet_server_port()",
                    &[&(seq as i64)],
                )
                .await
                .and_then(|row| {
                    let addr: Option<String> = row.try_get(0)?;
                    let port: Option<i32> = row.try_get(1)?;
                    Ok(addr.zip(port).map(|(a, p)| {
                        if a.contains(':') {
                            format!("[{a}]:{p}")
                        } else {
                            format!("{a}:{p}")
                        }
                    }))
                }),
        };
        r.map_err(|e| classify(&e, false))
    }
}

/// Create the drill's table; refused before the run when it cannot be.
pub async fn prepare(cfg: &Config) -> Result<(), String> {
    let c = connect(cfg)
        .await
        .map_err(|e| format!("target.postgres: cannot connect ({e})"))?;
    c.batch_execute(CREATE)
        .await
        .map_err(|e| format!("target.postgres: creating table tandem_drill: {e}"))
}

/// The sequence numbers in `[from, to)` found in the table, retrying for up to `wait`.
pub async fn read_back(
    cfg: &Config,
    from: u64,
    to: u64,
    wait: Duration,
) -> Result<Vec<u64>, String> {
    let deadline = clock::now() + wait;
    loop {
        let r = async {
            let c = connect(cfg)
                .await
                .map_err(|e| format!("cannot connect ({e})"))?;
            let rows = c
                .query(
                    "SELECT seq FROM tandem_drill WHERE seq >= $1 AND seq < $2",
                    &[&(from as i64), &(to as i64)],
                )
                .await
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|r| r.try_get::<_, i64>(0).map(|v| v as u64))
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|e| format!("unexpected row in tandem_drill: {e}"))
        }
        .await;
        match r {
            Ok(v) => return Ok(v),
            Err(e) if clock::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_are_checked() {
        let cfg = parse("postgres://app@127.0.0.1:5433/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addresses(&cfg), Ok(vec!["127.0.0.1:5433".to_string()]));
        let multi = parse(
            "host=127.0.0.1,127.0.0.2 port=5433,5434 user=app dbname=db target_session_attrs=read-write",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            addresses(&multi),
            Ok(vec![
                "127.0.0.1:5433".to_string(),
                "127.0.0.2:5434".to_string()
            ])
        );
        let local = parse("postgres://app@localhost/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addresses(&local), Ok(vec!["127.0.0.1:5432".to_string()]));
        assert!(parse("host=db.example.com user=x")
            .and_then(|c| addresses(&c))
            .is_err_and(|e| e.contains("IP address")));
        assert!(parse("postgres://app@127.0.0.1/db?sslmode=require").is_err());
        assert!(parse("host=127.0.0.1").is_err_and(|e| e.contains("no user")));
        assert!(parse("nonsense = = =").is_err());
    }
}

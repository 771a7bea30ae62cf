//! PostgreSQL's programs and files: initdb, pg_basebackup, pg_rewind, pg_controldata, the
//! configuration tandem writes (`tandem.conf`, included from postgresql.conf), and the
//! postmaster itself.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::sys::{self, OsUser};
use super::{slot_name, PgSettings};

/// How PostgreSQL is to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConfRole {
    /// A primary with this `synchronous_standby_names`.
    Primary { sync_names: String },
    /// A standby streaming from `upstream` (`host:port`), or replaying what it has.
    Standby { upstream: Option<String> },
}

/// `pg_controldata`'s answers that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    /// "in production", "shut down", "shut down in recovery", "in archive recovery", ...
    pub state: String,
    pub sysid: String,
    pub timeline: u32,
}

impl Control {
    /// The data directory last ran as a primary (and may hold WAL no standby has).
    pub fn was_primary(&self) -> bool {
        self.state == "in production" || self.state == "shut down"
    }
}

/// A running postmaster (clones share the exit flag: the supervisor keeps one to fence with).
#[derive(Clone, Debug)]
pub(crate) struct Postmaster {
    pub pid: i32,
    exited: Arc<AtomicBool>,
    /// Where PostgreSQL's log file ended when this postmaster started: its own lines follow.
    pub log_from: u64,
}

impl Postmaster {
    /// Watch `child` (a process leading its own process group) from a thread that reaps it.
    pub fn watch(mut child: std::process::Child, log_from: u64) -> Result<Postmaster, String> {
        let pid = child.id() as i32;
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        std::thread::Builder::new()
            .name("tandem-pg-wait".into())
            .spawn(move || {
                let _ = child.wait();
                flag.store(true, Ordering::Release);
            })
            .map_err(|e| format!("cannot watch the postmaster: {e}"))?;
        Ok(Postmaster {
            pid,
            exited,
            log_from,
        })
    }

    pub fn running(&self) -> bool {
        !self.exited.load(Ordering::Acquire)
    }

    /// Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL to the group, each after
    /// `step`; returns once the postmaster is gone.
    pub async fn stop(&self, step: Duration) {
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGKILL] {
            if !self.running() {
                return;
            }
            let target = if sig == libc::SIGKILL {
                -self.pid
            } else {
                self.pid
            };
            let _ = sys::kill(target, sig);
            let deadline = tandem_core::clock::now() + step;
            while self.running() && tandem_core::clock::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The programs, files and connections of one node's PostgreSQL.
pub(crate) struct Pg {
    pub s: PgSettings,
    pub user: OsUser,
    pub me: String,
}

impl Pg {
    pub fn new(s: PgSettings, me: String) -> Result<Pg, String> {
        let user = sys::lookup_user(&s.os_user)?;
        Ok(Pg { s, user, me })
    }

    fn data(&self) -> &Path {
        &self.s.data_dir
    }

    pub fn has_data(&self) -> bool {
        self.data().join("PG_VERSION").exists()
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.s.bin_dir.join(program));
        if sys::euid() == Some(0) {
            c.uid(self.user.uid).gid(self.user.gid);
        }
        c.current_dir("/")
            .env("HOME", &self.user.home)
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Run a program to completion; its stdout, or an error with its stderr.
    pub async fn run(
        &self,
        program: &str,
        args: &[&str],
        limit: Duration,
    ) -> Result<String, String> {
        let mut c = self.command(program);
        c.args(args);
        let out = match tokio::time::timeout(limit, c.output()).await {
            Err(_) => return Err(format!("{program} did not finish within {limit:?}")),
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot run {}: {e}",
                    self.s.bin_dir.join(program).display()
                ))
            }
            Ok(Ok(o)) => o,
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let err: String = err.trim().chars().take(800).collect();
            Err(format!("{program} failed ({}): {err}", out.status))
        }
    }

    /// The data directory exists, belongs to the OS user and is private (0700).
    pub fn prepare_dir(&self) -> Result<(), String> {
        let d = self.data();
        if !d.exists() {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            std::os::unix::fs::chown(d, Some(self.user.uid), Some(self.user.gid))
                .map_err(|e| format!("cannot give {} to {}: {e}", d.display(), self.user.name))?;
        }
        let meta = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if meta.uid() != self.user.uid {
            return Err(format!(
                "{} is owned by uid {}, not by {} (uid {})",
                d.display(),
                meta.uid(),
                self.user.name,
                self.user.uid
            ));
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", d.display()))?;
        Ok(())
    }

    pub async fn initdb(&self) -> Result<(), String> {
        self.prepare_dir()?;
        let d = self.data().display().to_string();
        self.run(
            "initdb",
            &[
                "-D",
                &d,
                "-E",
                "UTF8",
                "--locale=C",
                "--data-checksums",
                "-U",
                &self.user.name,
            ],
            Duration::from_secs(300),
        )
        .await?;
        Ok(())
    }

    pub async fn controldata(&self) -> Result<Control, String> {
        let d = self.data().display().to_string();
        let out = self
            .run("pg_controldata", &["-D", &d], Duration::from_secs(30))
            .await?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        Ok(Control {
            state: field("Database cluster state").unwrap_or_default(),
            sysid: field("Database system identifier").unwrap_or_default(),
            timeline: field("Latest checkpoint's TimeLineID")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        })
    }

    /// Clone the primary at `upstream` (`host:port`) into the (empty) data directory.
    pub async fn basebackup(&self, upstream: &str) -> Result<(), String> {
        self.prepare_dir()?;
        let (host, port) = split_addr(upstream)?;
        let d = self.data().display().to_string();
        self.run(
            "pg_basebackup",
            &[
                "-D",
                &d,
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                &self.s.replication_user,
                "-X",
                "stream",
                "-c",
                "fast",
                "-w",
            ],
            Duration::from_secs(3600),
        )
        .await?;
        Ok(())
    }

    /// Why the data directory cannot receive a clone: it exists and holds files.
    pub fn not_empty(&self) -> Option<String> {
        let d = self.data();
        let n = std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
        (n > 0).then(|| {
            format!(
                "{} is not empty but holds no database (no PG_VERSION): not cloning into it; empty it or name another data_dir",
                d.display()
            )
        })
    }

    /// Make the (stopped) data directory follow the primary at `upstream` again.
    pub async fn rewind(&self, upstream: &str) -> Result<String, String> {
        let (host, port) = split_addr(upstream)?;
        // pg_rewind finishes a crashed server's recovery in single-user mode, which refuses to
        // run in standby mode; the signal is written again before the start.
        let signal = self.data().join("standby.signal");
        if signal.exists() {
            std::fs::remove_file(&signal)
                .map_err(|e| format!("cannot remove {}: {e}", signal.display()))?;
        }
        let d = self.data().display().to_string();
        let source = format!(
            "host={host} port={port} user={} dbname=postgres connect_timeout=5",
            self.user.name
        );
        let out = self
            .run(
                "pg_rewind",
                &["-D", &d, "--source-server", &source, "--progress"],
                Duration::from_secs(3600),
            )
            .await?;
        Ok(out)
    }

    /// Write `tandem.conf` and `pg_hba.conf` for `role`, and (with `signal`, before a start)
    /// create or remove the standby signal to match.
    pub fn write_conf(&self, role: &ConfRole, signal: bool) -> Result<(), String> {
        let d = self.data();
        let main = d.join("postgresql.conf");
        let text = std::fs::read_to_string(&main)
            .map_err(|e| format!("cannot read {}: {e}", main.display()))?;
        if !text.lines().any(|l| l.trim() == "include 'tandem.conf'") {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&main)
                .map_err(|e| format!("cannot write {}: {e}", main.display()))?;
            f.write_all(b"\n# Settings tandem manages (rewritten before every start).\ninclude 'tandem.conf'\n")
                .map_err(|e| format!("cannot write {}: {e}", main.display()))?;
        }
        self.write_owned(&d.join("tandem.conf"), &self.render(role))?;
        self.write_owned(&d.join("pg_hba.conf"), &self.hba())?;
        if !signal {
            return Ok(());
        }
        let signal = d.join("standby.signal");
        match role {
            ConfRole::Standby { .. } => self.write_owned(&signal, "")?,
            ConfRole::Primary { .. } => {
                if signal.exists() {
                    std::fs::remove_file(&signal)
                        .map_err(|e| format!("cannot remove {}: {e}", signal.display()))?;
                }
            }
        }
        Ok(())
    }

    fn write_owned(&self, path: &Path, text: &str) -> Result<(), String> {
        let tmp = path.with_extension("tandem-tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::os::unix::fs::chown(&tmp, Some(self.user.uid), Some(self.user.gid))
            .map_err(|e| format!("cannot chown {}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn render(&self, role: &ConfRole) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let mut out = String::from("# Written by tandem before every start: do not edit.\n# Set other parameters with [service] parameters.\n");
        let mut set = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        set("listen_addresses", q(&self.s.listen.ip().to_string()));
        set("port", self.s.listen.port().to_string());
        set("unix_socket_directories", q(""));
        set("wal_level", "replica".into());
        set("hot_standby", "on".into());
        set("wal_log_hints", "on".into());
        set("synchronous_commit", "on".into());
        set("recovery_target_timeline", q("latest"));
        set("wal_receiver_status_interval", q("1s"));
        set("wal_retrieve_retry_interval", q("200ms"));
        match role {
            ConfRole::Primary { sync_names } => {
                set("synchronous_standby_names", q(sync_names));
                set("primary_conninfo", q(""));
                set("primary_slot_name", q(""));
            }
            ConfRole::Standby { upstream } => {
                set("synchronous_standby_names", q(""));
                match upstream.as_deref().map(split_addr) {
                    Some(Ok((host, port))) => {
                        let conninfo = format!(
                            "host={host} port={port} user={} application_name={} connect_timeout=2",
                            self.s.replication_user, self.me
                        );
                        set("primary_conninfo", q(&conninfo));
                        set("primary_slot_name", q(&slot_name(&self.me)));
                    }
                    _ => {
                        set("primary_conninfo", q(""));
                        set("primary_slot_name", q(""));
                    }
                }
            }
        }
        let defaults = [
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
            ("wal_keep_size", "128MB"),
            ("hot_standby_feedback", "on"),
        ];
        for (k, v) in defaults {
            if !self.s.parameters.contains_key(k) {
                set(k, q(v));
            }
        }
        for (k, v) in &self.s.parameters {
            set(k, q(v));
        }
        out
    }

    fn hba(&self) -> String {
        let mut out = String::from(
            "# Written by tandem before every start.\n# TYPE DATABASE USER ADDRESS METHOD\nlocal all all trust\nlocal replication all trust\n",
        );
        let mut nets: Vec<String> = vec!["127.0.0.1/32".into(), "::1/128".into()];
        for ip in &self.s.peer_ips {
            let n = match ip {
                std::net::IpAddr::V4(v) => format!("{v}/32"),
                std::net::IpAddr::V6(v) => format!("{v}/128"),
            };
            if !nets.contains(&n) {
                nets.push(n);
            }
        }
        for n in &nets {
            // Replication for the replicas, the superuser for pg_rewind, and clients.
            out.push_str(&format!(
                "host replication {} {n} trust\n",
                self.s.replication_user
            ));
            out.push_str(&format!("host all all {n} trust\n"));
        }
        out
    }

    /// Start the postmaster. It shuts down fast (SIGINT) if the agent dies.
    pub fn spawn(&self) -> Result<Postmaster, String> {
        let mut c = std::process::Command::new(self.s.bin_dir.join("postgres"));
        c.arg("-D").arg(self.data());
        if sys::euid() == Some(0) {
            std::os::unix::process::CommandExt::uid(&mut c, self.user.uid);
            std::os::unix::process::CommandExt::gid(&mut c, self.user.gid);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.s.log_file)
            .map_err(|e| format!("cannot open {}: {e}", self.s.log_file.display()))?;
        let log_from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.s.log_file.display()))?;
        c.current_dir("/")
            .env("HOME", &self.user.home)
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = sys::spawn_tied(c, libc::SIGINT).map_err(|e| {
            format!(
                "cannot start {}: {e}",
                self.s.bin_dir.join("postgres").display()
            )
        })?;
        Postmaster::watch(child, log_from)
    }

    /// What PostgreSQL's log says since offset `from` (the start of a postmaster), for error
    /// messages: its FATAL/PANIC/ERROR lines and its last lines (see `repair::start_report`).
    /// At most the last 64 KiB are read.
    pub fn log_report(&self, from: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        const WINDOW: u64 = 64 << 10;
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.s.log_file) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            // A log rotated or truncated since: read its end.
            let from = if from > len { 0 } else { from };
            let _ = f.seek(SeekFrom::Start(from.max(len.saturating_sub(WINDOW))));
            let mut buf = Vec::new();
            let _ = f.take(WINDOW).read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        super::repair::start_report(&text)
    }

    /// Connection settings for this node's own PostgreSQL, as the superuser.
    pub fn local_config(&self, timeout: Duration) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        let ip = match self.s.listen.ip() {
            std::net::IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(v) if v.is_unspecified() => "::1".to_string(),
            ip => ip.to_string(),
        };
        c.host(&ip)
            .port(self.s.listen.port())
            .user(&self.user.name)
            .dbname("postgres")
            .application_name("tandem")
            .connect_timeout(timeout);
        c
    }

    pub async fn connect(&self, timeout: Duration) -> Result<tokio_postgres::Client, String> {
        let cfg = self.local_config(timeout);
        let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// Move a data directory that can no longer follow the primary to `<data_dir>.old` (one kept).
/// Blocking: run it on the blocking pool.
pub(crate) fn set_aside(d: &Path) -> Result<PathBuf, String> {
    let aside = PathBuf::from(format!("{}.old", d.display()));
    if aside.exists() {
        std::fs::remove_dir_all(&aside)
            .map_err(|e| format!("cannot remove {}: {e}", aside.display()))?;
    }
    std::fs::rename(d, &aside).map_err(|e| format!("cannot move {} aside: {e}", d.display()))?;
    Ok(aside)
}

/// How many data directories set aside after failed starts are kept (the newest).
pub(crate) const KEEP_FAILED: usize = 2;

/// Move a data directory whose PostgreSQL cannot start to `<data_dir>.failed-<unix seconds>`
/// (never deleted there), then remove the oldest such directories beyond `KEEP_FAILED`.
/// Blocking: run it on the blocking pool.
pub(crate) fn set_aside_failed(data: &Path, unix_secs: u64) -> Result<PathBuf, String> {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no directory name", data.display()))?;
    let parent = data.parent().unwrap_or(Path::new("/"));
    let prefix = format!("{name}.failed-");
    let mut aside = parent.join(format!("{prefix}{unix_secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = parent.join(format!("{prefix}{unix_secs}.{n}"));
        n += 1;
    }
    std::fs::rename(data, &aside)
        .map_err(|e| format!("cannot move {} aside: {e}", data.display()))?;
    let mut old: Vec<(String, PathBuf)> = std::fs::read_dir(parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?
        .filter_map(|d| d.ok())
        .filter_map(|d| {
            let n = d.file_name().to_string_lossy().into_owned();
            let stamp = n.strip_prefix(&prefix)?.to_string();
            Some((stamp, d.path()))
        })
        .collect();
    // Oldest first: by the number of seconds, then the tie-break suffix.
    old.sort_by_key(|(stamp, _)| {
        let (secs, n) = stamp.split_once('.').unwrap_or((stamp.as_str(), "0"));
        (
            secs.parse::<u64>().unwrap_or(0),
            n.parse::<u64>().unwrap_or(0),
        )
    });
    let excess = old.len().saturating_sub(KEEP_FAILED);
    for (_, p) in old.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_dir_all(&p) {
            tracing::warn!(component = "postgres", path = %p.display(), error = %e, "cannot remove an old set-aside data directory");
        }
    }
    Ok(aside)
}

/// `host:port` into its parts (IPv6 in brackets allowed).
pub(crate) fn split_addr(a: &str) -> Result<(String, String), String> {
    let sa: std::net::SocketAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an address:port"))?;
    Ok((sa.ip().to_string(), sa.port().to_string()))
}

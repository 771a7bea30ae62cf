//! A single PostgreSQL 15 server on loopback (Debian package `postgresql-15`), for drills
//! against a database. Tests run as root and PostgreSQL refuses to, so `initdb` and `postgres`
//! run as the `postgres` user in a temporary directory it owns. Trust authentication, no TLS.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgServer {
    pub proc: Proc,
    pub port: u16,
    /// The data directory (`postmaster.pid` is in it).
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!("no postgres user: run `apt-get install -y postgresql-15` (.ci/run does this)")
        })
}

fn as_postgres(program: &str, uid: u32, gid: u32) -> Command {
    let mut c = Command::new(Path::new(BIN).join(program));
    c.uid(uid).gid(gid).env("LC_ALL", "C.UTF-8");
    c
}

impl PgServer {
    /// initdb and start a server; waits until it accepts connections.
    pub fn start() -> PgServer {
        if !Path::new(BIN).join("postgres").exists() {
            panic!("PostgreSQL 15 is not installed: run `apt-get install -y postgresql-15` (.ci/run does this)");
        }
        let (uid, gid) = postgres_user();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let chown = Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(dir.path())
            .status()
            .unwrap_or_else(|e| panic!("chown: {e}"));
        assert!(chown.success(), "chown of {} failed", dir.path().display());
        let data = dir.path().join("data");
        let out = as_postgres("initdb", uid, gid)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| panic!("initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let mut cmd = as_postgres("postgres", uid, gid);
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()));
        let proc = Proc::spawn("postgres", cmd);
        let ready = proc.wait_line(Duration::from_secs(30), |l| {
            l.contains("ready to accept connections").then_some(())
        });
        assert!(
            ready.is_some(),
            "postgres did not start: {:?}",
            proc.output()
        );
        PgServer {
            proc,
            port,
            data,
            _dir: dir,
        }
    }

    /// A URL connection string for the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.data.join("postmaster.pid")
    }
}

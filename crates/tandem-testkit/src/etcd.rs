//! A single-member etcd on loopback (Debian package `etcd-server`), for tests of the etcd DCS.

use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;

pub struct Etcd {
    pub proc: Proc,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Start etcd and wait until it answers its health endpoint.
    pub fn start() -> Etcd {
        let bin = crate::require_program("etcd", "etcd-server");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let client = crate::free_port();
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{}", crate::free_port());
        let mut cmd = Command::new(bin);
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"));
        let proc = Proc::spawn("etcd", cmd);
        let addr = format!("127.0.0.1:{client}")
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let up = crate::wait_until(Duration::from_secs(30), || {
            crate::http::get(addr, "/health").is_ok_and(|r| r.status == 200)
        });
        assert!(up, "etcd did not start: {:?}", proc.output());
        Etcd {
            proc,
            endpoint,
            _dir: dir,
        }
    }
}

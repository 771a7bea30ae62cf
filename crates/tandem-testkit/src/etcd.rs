//! etcd on loopback (Debian package `etcd-server`) for tests of the etcd DCS: a single member,
//! or a three-member cluster with stated timings whose leader can be found, killed and restarted.

use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;

pub struct Etcd {
    pub proc: Proc,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// The single member's `--heartbeat-interval`.
pub const HEARTBEAT: Duration = Duration::from_millis(10);
/// The single member's `--election-timeout`, short so that tandem's short test ttls pass
/// validation (`etcd_election_timeout` must say it).
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(100);

impl Etcd {
    /// The `[cluster]` keys that put the lease in this etcd.
    pub fn cluster_toml(&self) -> String {
        format!(
            "dcs = \"etcd\"\netcd_endpoints = [\"{}\"]\netcd_election_timeout = \"{}ms\"",
            self.endpoint,
            ELECTION_TIMEOUT.as_millis()
        )
    }

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
            .arg(format!("--initial-cluster=test={peer}"))
            .arg(format!("--heartbeat-interval={}", HEARTBEAT.as_millis()))
            .arg(format!(
                "--election-timeout={}",
                ELECTION_TIMEOUT.as_millis()
            ));
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

// ===== a three-member cluster =====

/// One member of an `EtcdCluster`.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    /// `None` while killed.
    proc: Option<Proc>,
}

/// A three-member etcd cluster on loopback with stated timings, for tests that lose the etcd
/// leader. Members are killed and restarted by index (0..3) on their data directories.
pub struct EtcdCluster {
    members: Vec<Member>,
    heartbeat: Duration,
    election: Duration,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Start three members with `--heartbeat-interval` and `--election-timeout` set to
    /// `heartbeat` and `election`, and wait until they have a leader.
    pub fn start(heartbeat: Duration, election: Duration) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let members = (1..=3)
            .map(|i| Member {
                name: format!("e{i}"),
                client: crate::free_port(),
                peer: crate::free_port(),
                proc: None,
            })
            .collect();
        let mut c = EtcdCluster {
            members,
            heartbeat,
            election,
            dir,
        };
        for i in 0..c.members.len() {
            c.spawn(i, "new");
        }
        for i in 0..c.members.len() {
            c.wait_healthy(i);
        }
        c
    }

    /// Client URLs of all members (killed ones included).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// `etcd_endpoints = [...]` as TOML.
    pub fn endpoints_toml(&self) -> String {
        let list: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// The member that every running member names as leader, if they agree on a running one.
    pub fn leader(&self) -> Option<usize> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].proc.is_some())
            .collect();
        let status: Vec<(usize, String, String)> = running
            .iter()
            .filter_map(|&i| self.status(i).map(|(id, leader)| (i, id, leader)))
            .collect();
        if status.len() != running.len() {
            return None;
        }
        let leader = &status.first()?.2;
        if status.iter().any(|(_, _, l)| l != leader) {
            return None;
        }
        status
            .iter()
            .find(|(_, id, _)| id == leader)
            .map(|&(i, _, _)| i)
    }

    /// Wait until the running members agree on a running leader, and return it.
    pub fn wait_leader(&self, deadline: Duration) -> usize {
        let mut found = None;
        let ok = crate::wait_until(deadline, || {
            found = self.leader();
            found.is_some()
        });
        assert!(ok, "the etcd members agree on no leader: {}", self.tail());
        found.unwrap_or_else(|| unreachable!())
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Start member `i` again on its data directory and wait until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy(i);
    }

    /// `(member_id, leader_id)` from member `i`'s `/v3/maintenance/status` (the JSON gateway).
    fn status(&self, i: usize) -> Option<(String, String)> {
        self.members[i].proc.as_ref()?;
        let addr = format!("127.0.0.1:{}", self.members[i].client)
            .parse()
            .ok()?;
        let mut conn = crate::http::Conn::open(addr, Duration::from_millis(500)).ok()?;
        let r = conn
            .request(
                "POST",
                "/v3/maintenance/status",
                &[
                    ("Connection", "close"),
                    ("content-type", "application/json"),
                ],
                b"{}",
            )
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        // The gateway writes 64-bit ids as strings.
        let id = v["header"]["member_id"].as_str()?.to_string();
        let leader = v["leader"].as_str()?.to_string();
        Some((id, leader))
    }

    fn wait_healthy(&self, i: usize) {
        let addr = format!("127.0.0.1:{}", self.members[i].client)
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let up = crate::wait_until(Duration::from_secs(30), || {
            crate::http::get(addr, "/health").is_ok_and(|r| r.status == 200)
        });
        assert!(
            up,
            "etcd member {i} did not become healthy: {}",
            self.tail()
        );
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let bin = crate::require_program("etcd", "etcd-server");
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--name={}", m.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(&m.name).display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=tandem-test")
            .arg(format!(
                "--heartbeat-interval={}",
                self.heartbeat.as_millis()
            ))
            .arg(format!("--election-timeout={}", self.election.as_millis()));
        let name = format!("etcd {}", m.name);
        self.members[i].proc = Some(Proc::spawn(&name, cmd));
    }

    /// The last lines of every running member's output, for failure messages.
    fn tail(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            if let Some(p) = &m.proc {
                let out = p.output();
                s.push_str(&format!("\n--- {} ---\n", m.name));
                for l in out.iter().rev().take(15).rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }
}

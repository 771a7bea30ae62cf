//! Running the `tandem` binary in tests: a node from a config text, and demo backends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;

/// A `tandem run` process with its config in a temporary directory.
pub struct Node {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Bound addresses: `admin` and each frontend by name.
    pub addrs: HashMap<String, SocketAddr>,
    pub token: Option<String>,
    wrapper: Vec<String>,
}

fn wrapped(wrapper: &[String], bin: &Path, config: &Path) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(config);
    cmd
}

impl Node {
    /// Start `bin run` on `config` (TOML text). `{dir}` in it is replaced by the temp dir, where
    /// `token` (if any) is written as `{dir}/token`. Waits until the admin API and `frontends`
    /// are listening.
    pub fn start(bin: &Path, config: &str, frontends: &[&str], token: Option<&str>) -> Node {
        Self::start_in(bin, config, frontends, token, Vec::new())
    }

    /// As `start`, with the binary run through `wrapper` (e.g. `ip netns exec NS`).
    pub fn start_in(
        bin: &Path,
        config: &str,
        frontends: &[&str],
        token: Option<&str>,
        wrapper: Vec<String>,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        if let Some(t) = token {
            std::fs::write(dir.path().join("token"), t)
                .unwrap_or_else(|e| panic!("writing token: {e}"));
        }
        let token = token.map(str::to_string);
        let path = dir.path().join("tandem.toml");
        let text = config.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing config: {e}"));
        let cmd = wrapped(&wrapper, bin, &path);
        let proc = Proc::spawn("tandem", cmd);
        let mut node = Node {
            proc,
            dir,
            config: path,
            addrs: HashMap::new(),
            token,
            wrapper,
        };
        let mut want: Vec<String> = frontends.iter().map(|s| s.to_string()).collect();
        want.push("admin".into());
        for name in want {
            let addr = node.wait_listening(&name);
            node.addrs.insert(name, addr);
        }
        node
    }

    /// SIGKILL the process and start it again on the same config and data, waiting for the
    /// admin API (its address may change when the config says port 0).
    pub fn restart(&mut self, bin: &Path) {
        self.proc.kill();
        let cmd = wrapped(&self.wrapper, bin, &self.config);
        self.proc = Proc::spawn("tandem", cmd);
        let admin = self.wait_listening("admin");
        self.addrs.insert("admin".into(), admin);
    }

    fn wait_listening(&self, name: &str) -> SocketAddr {
        self.proc
            .wait_line(Duration::from_secs(20), |l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                if v.get("message")?.as_str()? != "listening" {
                    return None;
                }
                let who = v.get("frontend").or_else(|| v.get("component"))?.as_str()?;
                (who == name).then(|| v.get("addr")?.as_str()?.parse().ok())?
            })
            .unwrap_or_else(|| {
                panic!(
                    "tandem did not report {name} listening: {:#?}",
                    self.proc.output()
                )
            })
    }

    pub fn admin(&self) -> SocketAddr {
        self.addrs["admin"]
    }

    pub fn frontend(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// Replace the config file (same `{dir}` substitution) without reloading.
    pub fn write_config(&self, config: &str) {
        let text = config.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&self.config, text).unwrap_or_else(|e| panic!("writing config: {e}"));
    }

    /// GET an admin endpoint and parse it as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let r = crate::http::get(self.admin(), path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.text()))
    }

    /// State (`up`/`down`) of a server as the status API reports it.
    pub fn server_state(&self, backend: &str, server: &str) -> String {
        let st = self.get_json("/status");
        let servers = st["proxy"]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["name"] == backend))
            .and_then(|b| b["servers"].as_array().cloned())
            .unwrap_or_default();
        servers
            .iter()
            .find(|s| s["name"] == server)
            .and_then(|s| s["state"].as_str())
            .unwrap_or("missing")
            .to_string()
    }

    /// Wait until a server reaches `state`.
    pub fn wait_server(&self, backend: &str, server: &str, state: &str, deadline: Duration) {
        let ok = crate::wait_until(deadline, || self.server_state(backend, server) == state);
        assert!(
            ok,
            "{backend}/{server} did not become {state}: {}",
            self.get_json("/status")
        );
    }

    /// POST to the admin API with the node's token (if any).
    pub fn post(&self, path: &str, body: &str) -> crate::http::Response {
        self.try_post(path, body, std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST with the node's token, waiting up to `timeout` for each step; errors returned.
    pub fn try_post(
        &self,
        path: &str,
        body: &str,
        timeout: std::time::Duration,
    ) -> std::io::Result<crate::http::Response> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut h = vec![
            ("content-type", "application/json"),
            ("Connection", "close"),
        ];
        if let Some(a) = &auth {
            h.push(("authorization", a.as_str()));
        }
        crate::http::Conn::open(self.admin(), timeout)?.request("POST", path, &h, body.as_bytes())
    }

    /// The metrics exposition text.
    pub fn metrics(&self) -> String {
        crate::http::get(self.admin(), "/metrics")
            .map(|r| r.text())
            .unwrap_or_default()
    }
}

/// A `tandem demo-backend` process.
pub struct DemoBackend {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub name: String,
}

impl DemoBackend {
    pub fn start(bin: &Path, name: &str) -> DemoBackend {
        Self::start_on(bin, name, "127.0.0.1:0")
    }

    pub fn start_on(bin: &Path, name: &str, listen: &str) -> DemoBackend {
        Self::start_with(bin, name, listen, &[])
    }

    /// As `start_on`, with more arguments (e.g. `--replicate-to`, `--store`).
    pub fn start_with(bin: &Path, name: &str, listen: &str, args: &[String]) -> DemoBackend {
        let mut cmd = Command::new(bin);
        cmd.args(["demo-backend", "--name", name, "--listen", listen])
            .args(args);
        let proc = Proc::spawn(&format!("backend {name}"), cmd);
        let addr = proc
            .wait_line(Duration::from_secs(10), |l| {
                l.strip_prefix("listening on ")?.trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("demo backend {name} did not start: {:?}", proc.output()));
        DemoBackend {
            proc,
            addr,
            name: name.to_string(),
        }
    }
}

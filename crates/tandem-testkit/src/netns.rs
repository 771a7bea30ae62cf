//! Several hosts on one machine: network namespaces joined by veth pairs to a bridge that lives
//! in its own namespace (the "switch"), plus a management link from the test to each host so it
//! can still observe a host whose cluster link was cut. Everything is removed on drop, also
//! when the test fails.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One host of a lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    /// Address on the shared (cluster) network.
    pub ip: Ipv4Addr,
    /// Address on the host's management link, reachable from the test.
    pub mgmt_ip: Ipv4Addr,
    switch_port: String,
}

/// Namespaced hosts on a bridge.
pub struct Lab {
    prefix: String,
    switch: String,
    pub hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Create `n` hosts. Needs root and iproute2 (`apt-get install -y iproute2`).
    pub fn new(n: usize) -> Lab {
        crate::require_program("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let seq = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("td{id}{seq}");
        let subnet = ((id * 7 + seq * 13) % 200) as u8 + 20;
        let mut lab = Lab {
            switch: format!("{prefix}sw"),
            prefix: prefix.clone(),
            hosts: Vec::new(),
        };
        if let Err(e) = lab.build(n, subnet) {
            panic!("building the network lab failed (needs root): {e}");
        }
        lab
    }

    fn build(&mut self, n: usize, subnet: u8) -> Result<(), String> {
        let sw = self.switch.clone();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let p = &self.prefix;
            let ns = format!("{p}n{i}");
            ip(&["netns", "add", &ns])?;
            // Register at once so that drop removes it even if a later step fails.
            let host = Host {
                ns: ns.clone(),
                ip: Ipv4Addr::new(10, 213, subnet, i as u8 + 1),
                mgmt_ip: Ipv4Addr::new(10, 214, subnet, 4 * i as u8 + 2),
                switch_port: format!("{p}s{i}"),
            };
            self.hosts.push(host.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Cluster link: host eth0 <-> switch port on the bridge.
            let (c, s) = (format!("{p}c{i}"), host.switch_port.clone());
            ip(&["link", "add", &c, "type", "veth", "peer", "name", &s])?;
            ip(&["link", "set", &c, "netns", &ns, "name", "eth0"])?;
            ip(&["link", "set", &s, "netns", &sw])?;
            ip(&["-n", &sw, "link", "set", &s, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            // Management link: the test's namespace <-> host, a /30 of its own.
            let (m, h) = (format!("{p}m{i}"), format!("{p}h{i}"));
            ip(&["link", "add", &h, "type", "veth", "peer", "name", &m])?;
            ip(&["link", "set", &m, "netns", &ns, "name", "mgmt"])?;
            let host_side = Ipv4Addr::new(10, 214, subnet, 4 * i as u8 + 1);
            ip(&["addr", "add", &format!("{host_side}/30"), "dev", &h])?;
            ip(&["link", "set", &h, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", host.mgmt_ip),
                "dev",
                "mgmt",
            ])?;
            ip(&["-n", &ns, "link", "set", "mgmt", "up"])?;
        }
        Ok(())
    }

    /// Cut host `i` off the shared network (its switch port goes down).
    pub fn cut(&self, i: usize) {
        self.set_port(i, "down");
    }

    /// Reconnect host `i`.
    pub fn heal(&self, i: usize) {
        self.set_port(i, "up");
    }

    fn set_port(&self, i: usize, state: &str) {
        let r = ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.hosts[i].switch_port,
            state,
        ]);
        r.unwrap_or_else(|e| panic!("{e}"));
    }

    /// (namespace, interface) of host `i`'s port on the switch: setting it down cuts the host.
    pub fn switch_port(&self, i: usize) -> (String, String) {
        (self.switch.clone(), self.hosts[i].switch_port.clone())
    }

    /// Whether host `i`'s switch port is administratively up.
    pub fn is_up(&self, i: usize) -> bool {
        let (ns, port) = self.switch_port(i);
        let Ok(o) = Command::new("ip")
            .args(["-n", &ns, "-o", "link", "show", &port])
            .output()
        else {
            return false;
        };
        // "5: port@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> ..."
        let text = String::from_utf8_lossy(&o.stdout);
        text.split('<')
            .nth(1)
            .and_then(|f| f.split('>').next())
            .is_some_and(|flags| flags.split(',').any(|f| f == "UP"))
    }

    /// The command prefix that runs a program inside host `i`.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.hosts[i].ns.clone(),
        ]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth ends inside it, and with them their peers.
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

//! Virtual IPs end to end, in network namespaces: routers and a client on one bridge. The
//! client probes the VIP over HTTP (each router runs a demo backend answering its name) and
//! the test reads each host's addresses with `ip`.
//!
//! VRRP tests use VRRPv3 with a 100 ms advertisement interval, so each takeover takes well under
//! a second; Keepalived 2.2 (Debian package) is the interoperability peer.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use tandem_testkit::netns::Lab;
use tandem_testkit::proc::Proc;

const T: Duration = Duration::from_secs(15);
const PORT: u16 = 8080;

/// A lab of `routers` hosts plus one client (the last host), each router with a demo backend.
struct VipLab {
    lab: Lab,
    routers: usize,
    vip: Ipv4Addr,
    _backends: Vec<Proc>,
}

impl VipLab {
    fn new(routers: usize) -> VipLab {
        tandem_testkit::require_program("curl", "curl");
        let lab = Lab::new(routers + 1);
        let o = lab.hosts[0].ip.octets();
        let vip = Ipv4Addr::new(o[0], o[1], o[2], 100);
        let backends = (0..routers)
            .map(|i| {
                let mut cmd = wrapped(&lab, i, bin());
                cmd.args(["demo-backend", "--name", &format!("r{i}")])
                    .args(["--listen", &format!("0.0.0.0:{PORT}")]);
                let p = Proc::spawn(&format!("backend r{i}"), cmd);
                p.wait_line(T, |l| l.starts_with("listening on ").then_some(()))
                    .unwrap_or_else(|| panic!("backend r{i} did not start: {:?}", p.output()));
                p
            })
            .collect();
        VipLab {
            lab,
            routers,
            vip,
            _backends: backends,
        }
    }

    fn client(&self) -> usize {
        self.routers
    }

    /// Routers whose eth0 carries the VIP now.
    fn holders(&self) -> Vec<usize> {
        (0..self.routers).filter(|&i| self.holds(i)).collect()
    }

    fn holds(&self, i: usize) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.lab.hosts[i].ns,
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .unwrap_or_else(|e| panic!("ip addr: {e}"));
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {}/", self.vip))
    }

    /// The MAC address of host `i`'s eth0.
    fn mac(&self, i: usize) -> String {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.lab.hosts[i].ns,
                "-o",
                "link",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .unwrap_or_else(|e| panic!("ip link: {e}"));
        // "2: eth0@if3: <...> ... link/ether 5e:1a:... brd ff:ff:ff:ff:ff:ff ..."
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("link/ether ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no MAC address for host {i}: {text}"))
    }

    /// A permanent neighbour entry for the client on every router, so that no router sends an
    /// ARP request for the client (which would carry the VIP as its sender when the router last
    /// answered from the VIP).
    fn pin_client_on_routers(&self) {
        let client = &self.lab.hosts[self.client()];
        let mac = self.mac(self.client());
        for i in 0..self.routers {
            let st = Command::new("ip")
                .args(["-n", &self.lab.hosts[i].ns, "neigh", "replace"])
                .arg(client.ip.to_string())
                .args(["lladdr", &mac, "dev", "eth0", "nud", "permanent"])
                .status();
            assert!(
                st.is_ok_and(|s| s.success()),
                "pinning the client on router {i}"
            );
        }
    }

    /// The MAC address the client's neighbour table holds for the VIP, if any.
    fn client_neighbour(&self) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.lab.hosts[self.client()].ns, "neigh", "show"])
            .arg(self.vip.to_string())
            .args(["dev", "eth0"])
            .output()
            .ok()?;
        // "10.0.0.100 lladdr 5e:1a:... REACHABLE"
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("lladdr ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    }

    /// Which router answers on the VIP, as the client sees it.
    fn probe(&self) -> Option<usize> {
        let out = wrapped(&self.lab, self.client(), Path::new("curl"))
            .args(["-s", "--max-time", "0.5"])
            .arg(format!("http://{}:{PORT}/", self.vip))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().strip_prefix('r')?.parse().ok()
    }

    /// Wait until exactly router `i` holds the VIP and the client reaches it there.
    fn wait_master(&self, i: usize) {
        let ok = wait_until(T, || self.holders() == vec![i] && self.probe() == Some(i));
        assert!(
            ok,
            "router {i} did not become the one master: holders {:?}, client reaches {:?}",
            self.holders(),
            self.probe()
        );
    }

    /// Wait until exactly one router holds the VIP; which.
    fn wait_one_master(&self) -> usize {
        let mut found = None;
        let ok = wait_until(T, || {
            let h = self.holders();
            found = h.first().copied();
            h.len() == 1 && self.probe() == found
        });
        assert!(ok, "no single master: holders {:?}", self.holders());
        found.unwrap_or_else(|| unreachable!())
    }

    /// Start `tandem run` in router `i` with a `[[vip]]` section made by `vip`.
    fn tandem(&self, i: usize, vip: &str) -> Node {
        let cfg = format!(
            "[admin]\nlisten = \"{}:0\"\n\n[[vip]]\ninterface = \"eth0\"\naddress = \"{}/24\"\n{vip}\n",
            self.lab.hosts[i].mgmt_ip, self.vip
        );
        Node::start_in(bin(), &cfg, &[], None, self.lab.wrapper(i))
    }

    /// Keepalived 2.2 in router `i`, VRID 51, VRRPv3, 100 ms adverts.
    fn keepalived(&self, i: usize, priority: u8) -> Keepalived {
        self.keepalived_with(i, priority, 3, "0.1")
    }

    /// Keepalived 2.2 in router `i`, VRID 51, with VRRP `version` and `advert_int` (seconds).
    fn keepalived_with(&self, i: usize, priority: u8, version: u8, advert_int: &str) -> Keepalived {
        let program = tandem_testkit::require_program("keepalived", "keepalived");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = dir.path().join("keepalived.conf");
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id r{i}\n  vrrp_version {version}\n}}\n\
                 vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
                 priority {priority}\n  advert_int {advert_int}\n  virtual_ipaddress {{\n    {}/24\n  }}\n}}\n",
                self.vip
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let vrrp_pid = dir.path().join("vrrp.pid");
        let mut cmd = wrapped(&self.lab, i, &program);
        cmd.args(["-n", "-l", "-D", "-P", "-R", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid);
        let proc = Proc::spawn(&format!("keepalived r{i}"), cmd);
        proc.wait_line(T, |l| l.contains("Startup complete").then_some(()))
            .unwrap_or_else(|| panic!("keepalived did not start: {:?}", proc.output()));
        Keepalived {
            proc,
            vrrp_pid,
            _dir: dir,
        }
    }
}

use std::path::Path;

fn wrapped(lab: &Lab, i: usize, program: &Path) -> Command {
    let w = lab.wrapper(i);
    let mut cmd = Command::new(&w[0]);
    cmd.args(&w[1..]).arg(program);
    cmd
}

struct Keepalived {
    proc: Proc,
    vrrp_pid: PathBuf,
    _dir: tempfile::TempDir,
}

impl Keepalived {
    /// SIGKILL the VRRP process, then its parent: a crash, nothing cleaned up.
    fn kill(&mut self) {
        let pid = std::fs::read_to_string(&self.vrrp_pid).unwrap_or_default();
        let pid = pid.trim();
        assert!(!pid.is_empty(), "no VRRP pid file");
        let st = Command::new("kill").args(["-KILL", pid]).status();
        assert!(st.is_ok_and(|s| s.success()), "kill -KILL {pid}");
        self.proc.kill();
    }
}

fn vrrp(priority: u8, extra: &str) -> String {
    format!("vrid = 51\npriority = {priority}\nadvert_int = \"100ms\"\nversion = 3\n{extra}")
}

/// Metric value of a sample line starting with `prefix` (labels included).
fn metric(node: &Node, prefix: &str) -> Option<f64> {
    node.metrics()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

// ===== tandem with Keepalived =====

#[test]
fn keepalived_interop_tandem_higher_then_tandem_killed() {
    let l = VipLab::new(2);
    let mut t = l.tandem(0, &vrrp(150, ""));
    l.wait_master(0);
    let k = l.keepalived(1, 100);
    // Keepalived accepts tandem's adverts: it stays backup, and tandem master.
    for _ in 0..10 {
        let out = k.proc.output().join("\n");
        assert!(!out.contains("Entering MASTER STATE"), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(k
        .proc
        .output()
        .iter()
        .any(|o| o.contains("Entering BACKUP STATE")));
    assert_eq!(
        metric(&t, "tandem_vrrp_state{vip=\"vrid51\",state=\"master\"}"),
        Some(1.0)
    );
    t.proc.kill();
    // The client follows the gratuitous ARPs of the new master.
    assert!(
        wait_until(T, || l.probe() == Some(1)),
        "client never reached keepalived"
    );
    assert!(l.holds(1));
}

#[test]
fn keepalived_interop_keepalived_higher_then_keepalived_killed() {
    let l = VipLab::new(2);
    let mut k = l.keepalived(0, 150);
    let t = l.tandem(1, &vrrp(100, ""));
    l.wait_master(0);
    assert!(
        wait_until(T, || metric(
            &t,
            "tandem_vrrp_adverts_received_total{vip=\"vrid51\"}"
        )
        .unwrap_or(0.0)
            >= 3.0),
        "{}",
        t.metrics()
    );
    assert_eq!(
        metric(&t, "tandem_vrrp_state{vip=\"vrid51\",state=\"backup\"}"),
        Some(1.0)
    );
    k.kill();
    assert!(
        wait_until(T, || l.probe() == Some(1)),
        "client never reached tandem"
    );
    assert_eq!(
        metric(&t, "tandem_vrrp_state{vip=\"vrid51\",state=\"master\"}"),
        Some(1.0)
    );
}

#[test]
fn keepalived_interop_equal_priorities_elect_one_master() {
    // RFC 5798 6.4.2: a backup accepts a master of equal priority, so whoever became master
    // first stays; only two masters meeting break the tie by address.
    for keepalived_first in [true, false] {
        let l = VipLab::new(2);
        let (_k, _t) = if keepalived_first {
            let k = l.keepalived(0, 100);
            l.wait_master(0);
            (k, l.tandem(1, &vrrp(100, "")))
        } else {
            let t = l.tandem(1, &vrrp(100, ""));
            l.wait_master(1);
            (l.keepalived(0, 100), t)
        };
        let m = if keepalived_first { 0 } else { 1 };
        for _ in 0..15 {
            assert_eq!(l.holders(), vec![m], "keepalived first: {keepalived_first}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ===== tandem routers =====

#[test]
fn sigkill_of_the_master_moves_the_vip_its_address_expires_and_a_restart_preempts() {
    let l = VipLab::new(2);
    // An address left behind by an earlier run that crashed: removed when tandem starts.
    let ns0 = l.lab.hosts[0].ns.clone();
    let st = Command::new("ip")
        .args([
            "-n",
            &ns0,
            "addr",
            "add",
            &format!("{}/24", l.vip),
            "dev",
            "eth0",
        ])
        .status();
    assert!(st.is_ok_and(|s| s.success()));
    let mut a = l.tandem(0, &vrrp(150, ""));
    assert!(wait_until(T, || a
        .proc
        .output()
        .iter()
        .any(|o| o.contains("left behind by an earlier run"))));
    let b = l.tandem(1, &vrrp(100, ""));
    l.wait_master(0);
    a.proc.kill();
    assert!(
        wait_until(T, || l.probe() == Some(1)),
        "the client never reached the backup"
    );
    // Nobody removed the killed master's address, but it was added with a lifetime that only
    // a running tandem renews: the kernel drops it (Keepalived's stays until it runs again).
    assert!(
        wait_until(T, || !l.holds(0)),
        "the dead master keeps the VIP"
    );
    assert_eq!(l.holders(), vec![1]);
    // Restarted, it preempts the lower master.
    a.restart(bin());
    l.wait_master(0);
    let ev = b.get_json("/events");
    let kinds: Vec<&str> = ev
        .as_array()
        .or(ev["events"].as_array())
        .map(|v| v.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"vip_master") && kinds.contains(&"vip_backup"),
        "{ev}"
    );
    let m = b.metrics();
    assert!(
        m.contains("tandem_vrrp_transitions_total{vip=\"vrid51\",from=\"backup\",to=\"master\"} 1"),
        "{m}"
    );
}

#[test]
fn link_down_of_the_master_hands_over_and_preempt_takes_it_back() {
    let l = VipLab::new(2);
    let a = l.tandem(0, &vrrp(150, ""));
    let _b = l.tandem(1, &vrrp(100, ""));
    l.wait_master(0);
    l.lab.cut(0);
    // The backup takes over; the cut-off master sees its link down and removes the address.
    assert!(
        wait_until(T, || l.holders() == vec![1]),
        "holders {:?}",
        l.holders()
    );
    assert!(wait_until(T, || l.probe() == Some(1)));
    assert_eq!(
        metric(&a, "tandem_vrrp_state{vip=\"vrid51\",state=\"initialize\"}"),
        Some(1.0)
    );
    l.lab.heal(0);
    l.wait_master(0);
}

#[test]
fn graceful_stop_sends_priority_zero_for_a_fast_takeover() {
    let l = VipLab::new(2);
    // A long interval: without the priority 0 advertisement the takeover would take 3.6 s.
    let slow = "vrid = 51\nadvert_int = \"1s\"\nversion = 3\n";
    let mut a = l.tandem(0, &format!("{slow}priority = 150\n"));
    let b = l.tandem(1, &format!("{slow}priority = 100\n"));
    l.wait_master(0);
    a.proc.signal(libc::SIGTERM);
    assert!(a.proc.wait_exit(T).is_some_and(|s| s.success()));
    l.wait_master(1);
    let took_over = b
        .proc
        .output()
        .into_iter()
        .find(|line| line.contains("vip state changed") && line.contains("\"to\":\"master\""));
    assert!(
        took_over
            .as_deref()
            .is_some_and(|l| l.contains("priority 0")),
        "{took_over:?}"
    );
}

#[test]
fn without_preempt_a_returning_higher_router_stays_backup() {
    let l = VipLab::new(2);
    let mut a = l.tandem(0, &vrrp(150, "preempt = false\n"));
    l.wait_master(0);
    // b sends RFC 9568 checksums (without the pseudo-header); a accepts them, or it would not
    // hear b and would take the VIP back below.
    let _b = l.tandem(1, &vrrp(100, "v3_checksum = \"rfc9568\"\n"));
    a.proc.kill();
    assert!(wait_until(T, || l.probe() == Some(1)));
    a.restart(bin());
    l.wait_master(1);
    for _ in 0..15 {
        assert_eq!(l.holders(), vec![1], "the higher router took the VIP back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&a, "tandem_vrrp_state{vip=\"vrid51\",state=\"backup\"}"),
        Some(1.0)
    );
}

#[test]
fn preempt_delay_holds_a_returning_higher_router_back_for_a_while() {
    let l = VipLab::new(2);
    let _b = l.tandem(1, &vrrp(100, ""));
    l.wait_master(1);
    let started = std::time::Instant::now();
    let a = l.tandem(0, &vrrp(150, "preempt_delay = \"3s\"\n"));
    // Without the delay it would preempt after Master_Down_Interval (340 ms).
    while started.elapsed() < Duration::from_secs(1) {
        assert_eq!(l.holders(), vec![1], "preempted before preempt_delay");
        std::thread::sleep(Duration::from_millis(50));
    }
    l.wait_master(0);
    assert_eq!(
        metric(&a, "tandem_vrrp_state{vip=\"vrid51\",state=\"master\"}"),
        Some(1.0)
    );
}

/// Routers `ports` stop hearing each other while the client still reaches both (isolated bridge
/// ports talk only to ports that are not isolated).
fn isolate(lab: &Lab, ports: &[usize], on: bool) {
    for &i in ports {
        let (ns, port) = lab.switch_port(i);
        let st = Command::new("ip")
            .args([
                "-n",
                &ns,
                "link",
                "set",
                "dev",
                &port,
                "type",
                "bridge_slave",
                "isolated",
            ])
            .arg(if on { "on" } else { "off" })
            .status();
        assert!(st.is_ok_and(|s| s.success()), "isolating {port}");
    }
}

#[test]
fn vrrp_partition_gives_two_masters_and_the_winner_reclaims_the_clients_after_the_heal() {
    let l = VipLab::new(2);
    // The routers know the client's address for good: otherwise their own neighbour probes of
    // the client ("who has the client, tell the VIP") repoint the client's entry for the VIP
    // now and then, and the client could come back to the winner without any reclaim.
    l.pin_client_on_routers();
    let _a = l.tandem(0, &vrrp(150, ""));
    let _b = l.tandem(1, &vrrp(100, ""));
    l.wait_master(0);
    isolate(&l.lab, &[0, 1], true);
    // Split brain, as with Keepalived: each side sees no master and takes the address.
    assert!(
        wait_until(T, || l.holders() == vec![0, 1]),
        "holders {:?}",
        l.holders()
    );
    // The client hears both; the newer master's gratuitous ARPs take it over, so at the heal
    // the client is on the router that is about to lose.
    let (mac0, mac1) = (l.mac(0), l.mac(1));
    assert!(
        wait_until(T, || l.client_neighbour().as_deref() == Some(mac1.as_str())
            && l.probe() == Some(1)),
        "the client did not follow the second master ({mac1}): neighbour {:?}, reaches {:?}",
        l.client_neighbour(),
        l.probe()
    );
    isolate(&l.lab, &[0, 1], false);
    // The winner reclaims the client at once, not when the client's neighbour entry for the
    // VIP (still pointing at the loser, which drops the traffic) expires and is probed again:
    // that takes the entry's reachable time plus 5 s of delay_first_probe_time, far more than
    // this deadline.
    let healed = std::time::Instant::now();
    let reclaimed = wait_until(Duration::from_secs(5), || {
        l.holders() == vec![0]
            && l.client_neighbour().as_deref() == Some(mac0.as_str())
            && l.probe() == Some(0)
    });
    assert!(
        reclaimed,
        "{:?} after the heal: holders {:?}, client neighbour for the VIP {:?} (winner {mac0}, \
         loser {mac1}), client reaches {:?}",
        healed.elapsed(),
        l.holders(),
        l.client_neighbour(),
        l.probe()
    );
}

#[test]
fn unicast_peers_a_track_script_and_notify() {
    let l = VipLab::new(2);
    let (ip0, ip1) = (l.lab.hosts[0].ip, l.lab.hosts[1].ip);
    // Router 0's priority drops by 60 (to 90) while {dir}/down exists.
    let a = l.tandem(
        0,
        &vrrp(
            150,
            &format!(
                "unicast_peers = [\"{ip1}\"]\n\
                 notify = \"echo $TANDEM_VIP $TANDEM_VIP_FROM $TANDEM_VIP_STATE $TANDEM_VIP_REASON >> {{dir}}/notify.log\"\n\
                 [[vip.track]]\nscript = \"test ! -e {{dir}}/down\"\ninterval = \"50ms\"\nweight = -60\n"
            ),
        ),
    );
    let _b = l.tandem(1, &vrrp(100, &format!("unicast_peers = [\"{ip0}\"]\n")));
    l.wait_master(0);
    let notified = || std::fs::read_to_string(a.dir.path().join("notify.log")).unwrap_or_default();
    assert!(
        wait_until(T, || notified().contains("vrid51 backup master")),
        "{}",
        notified()
    );
    std::fs::write(a.dir.path().join("down"), "").unwrap_or_else(|e| panic!("{e}"));
    l.wait_master(1);
    assert_eq!(
        metric(&a, "tandem_vrrp_priority{vip=\"vrid51\"}"),
        Some(90.0)
    );
    assert!(
        wait_until(T, || notified()
            .contains("vrid51 master backup higher-priority master")),
        "{}",
        notified()
    );
    std::fs::remove_file(a.dir.path().join("down")).unwrap_or_else(|e| panic!("{e}"));
    l.wait_master(0);
    assert_eq!(
        metric(&a, "tandem_vrrp_priority{vip=\"vrid51\"}"),
        Some(150.0)
    );
    // The backup's adverts reached it by unicast: with peers set, it never joins 224.0.0.18.
    assert!(metric(&a, "tandem_vrrp_adverts_received_total{vip=\"vrid51\"}").unwrap_or(0.0) > 0.0);
}

#[test]
fn keepalived_interop_vrrp_v2() {
    let l = VipLab::new(2);
    let _k = l.keepalived_with(0, 150, 2, "1");
    let t = l.tandem(
        1,
        "vrid = 51\npriority = 100\nadvert_int = \"1s\"\nversion = 2\n",
    );
    l.wait_master(0);
    assert!(
        wait_until(T, || metric(
            &t,
            "tandem_vrrp_adverts_received_total{vip=\"vrid51\"}"
        )
        .unwrap_or(0.0)
            >= 2.0),
        "{}",
        t.metrics()
    );
    assert_eq!(
        metric(&t, "tandem_vrrp_state{vip=\"vrid51\",state=\"backup\"}"),
        Some(1.0)
    );
    assert!(
        !t.metrics().contains("tandem_vrrp_packets_dropped_total"),
        "{}",
        t.metrics()
    );
}

#[test]
fn an_address_owner_is_master_at_once_and_keeps_its_own_address() {
    let l = VipLab::new(1);
    let own = l.lab.hosts[0].ip;
    let cfg = format!(
        "[admin]\nlisten = \"{}:0\"\n\n[[vip]]\ninterface = \"eth0\"\naddress = \"{own}/24\"\n{}",
        l.lab.hosts[0].mgmt_ip,
        vrrp(255, "")
    );
    let mut a = Node::start_in(bin(), &cfg, &[], None, l.lab.wrapper(0));
    assert!(wait_until(T, || metric(
        &a,
        "tandem_vrrp_state{vip=\"vrid51\",state=\"master\"}"
    ) == Some(1.0)));
    let out = a.proc.output().join("\n");
    assert!(
        out.contains("address owner (priority 255) starts as master"),
        "{out}"
    );
    a.proc.signal(libc::SIGTERM);
    assert!(a.proc.wait_exit(T).is_some_and(|s| s.success()));
    let addrs = Command::new("ip")
        .args([
            "-n",
            &l.lab.hosts[0].ns,
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    assert!(addrs.contains(&format!("inet {own}/24")), "{addrs}");
}

#[test]
fn a_changed_vip_is_refused_on_reload_and_a_missing_interface_at_start() {
    let l = VipLab::new(1);
    let a = l.tandem(0, &vrrp(100, ""));
    l.wait_master(0);
    let changed = std::fs::read_to_string(&a.config)
        .unwrap_or_default()
        .replace("priority = 100", "priority = 120");
    std::fs::write(&a.config, changed).unwrap_or_else(|e| panic!("{e}"));
    a.proc.signal(libc::SIGHUP);
    assert!(wait_until(T, || a
        .proc
        .output()
        .iter()
        .any(|o| o.contains("[[vip]] changed: that needs a restart"))));
    assert_eq!(l.holders(), vec![0], "the running VIP is untouched");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[vip]]\ninterface = \"tdnone0\"\naddress = \"10.99.0.1/24\"\n{}",
            vrrp(100, "")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = wrapped(&l.lab, 0, bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"tdnone0\" does not exist"), "{err}");
}

// ===== leader mode =====

#[test]
fn leader_mode_one_holder_at_every_sample_through_a_partition() {
    let l = VipLab::new(3);
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = shared.path().join("secret");
    std::fs::write(&secret, "cluster-secret-for-tests-0123").unwrap_or_else(|e| panic!("{e}"));
    let peers = (0..3)
        .map(|i| format!("n{} = \"{}:7100\"", i + 1, l.lab.hosts[i].ip))
        .collect::<Vec<_>>()
        .join(", ");
    let _nodes: Vec<Node> = (0..3)
        .map(|i| {
            let cfg = format!(
                "[admin]\nlisten = \"{}:0\"\n[node]\nname = \"n{}\"\ndata_dir = \"{{dir}}/data\"\n\
                 [cluster]\nname = \"vip\"\nlisten = \"{}:7100\"\npeers = {{ {peers} }}\nlease_ttl = \"1s\"\nsecret_file = \"{}\"\n\
                 [[vip]]\nmode = \"leader\"\ninterface = \"eth0\"\naddress = \"{}/24\"\n",
                l.lab.hosts[i].mgmt_ip,
                i + 1,
                l.lab.hosts[i].ip,
                secret.display(),
                l.vip
            );
            Node::start_in(bin(), &cfg, &[], None, l.lab.wrapper(i))
        })
        .collect();
    let p = l.wait_one_master();
    let mut samples = 0;
    let mut check = |until: &dyn Fn(&[usize]) -> bool| {
        let end = std::time::Instant::now() + T;
        loop {
            let h = l.holders();
            samples += 1;
            assert!(h.len() <= 1, "two nodes hold the VIP: {h:?}");
            if until(&h) || std::time::Instant::now() > end {
                return h;
            }
        }
    };
    l.lab.cut(p);
    // The cut-off primary drops the address when its lease runs out; then a node of the
    // majority takes it. Never two at once.
    let h = check(&|h| h.len() == 1 && h[0] != p);
    assert!(h.len() == 1 && h[0] != p, "no new holder: {h:?}");
    let q = h[0];
    assert!(wait_until(T, || l.probe() == Some(q)));
    // Still one holder while the partition lasts, and after it heals.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    check(&|_| std::time::Instant::now() > until);
    l.lab.heal(p);
    let until = std::time::Instant::now() + Duration::from_secs(2);
    check(&|_| std::time::Instant::now() > until);
    assert!(samples > 50, "too few samples: {samples}");
    l.wait_one_master();
}

// ===== keepalived.conf import =====

#[test]
fn check_keepalived_prints_a_config_that_tandem_accepts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.path().join("keepalived.conf");
    std::fs::write(
        &conf,
        r#"
global_defs {
    router_id edge1
}
vrrp_script chk_nginx {
    script "/usr/bin/pgrep nginx"
    interval 1
    weight -30
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.10.100/24
    }
    track_script {
        chk_nginx
    }
    notify_master "/usr/local/bin/became-master"
}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin())
        .args(["check", "--keepalived"])
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let toml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "[[vip]]",
        "name = \"VI_1\"",
        "vrid = 51",
        "version = 2",
        "priority = 150",
        "addresses = [\"192.168.10.100/24\"]",
        "[[vip.track]]",
        "weight = -30",
    ] {
        assert!(toml.contains(want), "{want} missing:\n{toml}");
    }
    // The output is a config `tandem check` accepts as it is.
    let file = dir.path().join("tandem.toml");
    std::fs::write(&file, &toml).unwrap_or_else(|e| panic!("{e}"));
    let st = Command::new(bin())
        .args(["check", "--config"])
        .arg(&file)
        .status();
    assert!(st.is_ok_and(|s| s.success()));

    // Bad input: exit 2, file and line named, nothing printed on stdout.
    std::fs::write(&conf, "vrrp_instance VI_1 {\n    interface eth0\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin())
        .args(["check", "--keepalived"])
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keepalived.conf:1:") && err.contains("never closed"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

use super::*;
use crate::config::{validate, VipConfig};

/// A keepalived.conf as people write them: two instances, a tracked script and interface,
/// unicast peers, notify scripts, comments in both styles.
const CONF: &str = r#"
! Configuration File for keepalived
global_defs {
   router_id LB1
   vrrp_version 3
   enable_script_security
}

vrrp_script chk_haproxy {
    script "/usr/bin/killall -0 haproxy"   # cheap check
    interval 2
    timeout 1
    weight -20
    fall 2
    rise 3
}

vrrp_instance VI_WEB {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 0.5
    nopreempt
    authentication {
        auth_type PASS
        auth_pass s3cret
    }
    virtual_ipaddress {
        10.0.0.100/24 dev eth0 label eth0:1
        10.0.0.101/24
    }
    track_script {
        chk_haproxy
    }
    track_interface {
        eth1 weight -10
    }
    notify_master "/etc/keepalived/master.sh"
    notify_backup /etc/keepalived/backup.sh
}

vrrp_instance VI_DB
{
    interface eth1
    virtual_router_id 52
    priority 100
    unicast_src_ip 192.168.1.10
    unicast_peer {
        192.168.1.11
        192.168.1.12
    }
    garp_master_repeat 3
    garp_master_refresh 60
    preempt_delay 5
    virtual_ipaddress {
        192.168.1.100/24
    }
    notify /etc/keepalived/notify.sh
}
"#;

#[derive(serde::Deserialize)]
struct Doc {
    vip: Vec<VipConfig>,
}

fn import(text: &str) -> (String, Vec<VipConfig>) {
    let out = keepalived_to_toml(text).unwrap_or_else(|e| panic!("{e}"));
    let doc: Doc = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    (out, doc.vip)
}

#[test]
fn a_realistic_file_becomes_valid_vip_sections() {
    let (out, vips) = import(CONF);
    assert!(
        validate(&vips, false).is_empty(),
        "{:?}\n{out}",
        validate(&vips, false)
    );
    assert_eq!(vips.len(), 2, "{out}");
    let web = &vips[0];
    assert_eq!(web.name.as_deref(), Some("VI_WEB"));
    assert_eq!((web.vrid, web.priority, web.version), (Some(51), 150, 3));
    assert_eq!(web.advert_int.get().as_millis(), 500);
    assert!(!web.preempt);
    assert_eq!(web.addresses, vec!["10.0.0.100/24", "10.0.0.101/24"]);
    assert_eq!(web.track.len(), 2);
    assert_eq!(
        web.track[0].script.as_deref(),
        Some("/usr/bin/killall -0 haproxy")
    );
    assert_eq!(
        (web.track[0].weight, web.track[0].fall, web.track[0].rise),
        (-20, 2, 3)
    );
    assert_eq!(web.track[0].interval.get().as_secs(), 2);
    assert_eq!(web.track[1].interface.as_deref(), Some("eth1"));
    assert_eq!(web.track[1].weight, -10);
    let notify = web.notify.as_deref().unwrap_or("");
    assert!(
        notify.contains("master) /etc/keepalived/master.sh"),
        "{notify}"
    );
    assert!(out.contains("# note: authentication"), "{out}");
    assert!(out.contains("# note: state MASTER"), "{out}");

    let db = &vips[1];
    assert_eq!(db.interface, "eth1");
    assert_eq!(db.unicast_peers.len(), 2);
    assert_eq!(db.advert_int.get().as_secs(), 1, "Keepalived's default");
    assert_eq!(db.garp_repeat, 3);
    assert_eq!(db.garp_refresh.get().as_secs(), 60);
    assert_eq!(db.preempt_delay.get().as_secs(), 5);
    assert!(db
        .notify
        .as_deref()
        .unwrap_or("")
        .contains("notify.sh INSTANCE VI_DB"));
}

#[test]
fn the_default_version_is_keepalived_s() {
    let conf = "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 10.1.1.1\n }\n}\n";
    let (_, vips) = import(conf);
    assert_eq!(vips[0].version, 2);
    assert_eq!(vips[0].priority, 100);
}

#[test]
fn bad_input_is_an_error_with_its_line() {
    let e = |t: &str| {
        keepalived_to_toml(t)
            .err()
            .unwrap_or_else(|| panic!("accepted {t:?}"))
    };
    assert_eq!(e("global_defs {\n router_id x\n").line, 1);
    assert!(e("}\n").message.contains("without a matching"));
    assert!(e("global_defs {\n}\n").message.contains("no vrrp_instance"));
    let missing =
        e("vrrp_instance A {\n virtual_router_id 1\n virtual_ipaddress {\n 10.1.1.1\n }\n}\n");
    assert!(missing.message.contains("no `interface`"), "{missing}");
    let bad_ip = e("vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 10.1.1.300/24\n }\n}\n");
    assert_eq!(bad_ip.line, 5, "{bad_ip}");
    let vmac = e("vrrp_instance A {\n interface eth0\n use_vmac\n}\n");
    assert!(vmac.message.contains("virtual MAC"), "{vmac}");
    let other_dev = e("vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 10.1.1.1/24 dev eth9\n }\n}\n");
    assert!(other_dev.message.contains("eth9"), "{other_dev}");
    let no_script = e(
        "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n track_script {\n nope\n }\n}\n",
    );
    assert!(no_script.message.contains("nope"), "{no_script}");
    assert!(e("vrrp_instance A {\n priority high\n}\n")
        .message
        .contains("not a valid number"));
    assert!(e("vrrp_script x {\n script \"unterminated\n}\n")
        .message
        .contains("unterminated"));
    assert!(e("include /etc/keepalived/more.conf\n")
        .message
        .contains("include"));
}

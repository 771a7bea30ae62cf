//! `[[vip]]`: one virtual IP, held by VRRP election (`mode = "vrrp"`) or by the cluster
//! primary (`mode = "leader"`). Parsed with unknown keys refused, then validated as a whole;
//! every problem names its key (`vip[0].priority`).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_core::validate::Issue;
use tandem_core::HumanDuration;

use crate::packet::{ChecksumMode, Version};

/// How the VIP's holder is chosen.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VipMode {
    /// RFC 5798 election with the other routers of the VRID (Keepalived-compatible).
    #[default]
    Vrrp,
    /// Held by the node holding the cluster lease, removed before the lease can move.
    Leader,
}

/// `v3_checksum`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum V3Checksum {
    #[default]
    PseudoHeader,
    Rfc9568,
}

impl From<V3Checksum> for ChecksumMode {
    fn from(c: V3Checksum) -> Self {
        match c {
            V3Checksum::PseudoHeader => ChecksumMode::PseudoHeader,
            V3Checksum::Rfc9568 => ChecksumMode::Rfc9568,
        }
    }
}

/// `[[vip]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// Name in metrics, events and logs; `vrid<N>` (or `leader<index>`) by default.
    pub name: Option<String>,
    #[serde(default)]
    pub mode: VipMode,
    pub interface: String,
    /// One address with its prefix, e.g. `10.0.0.100/24` (a bare address is a /32).
    pub address: Option<String>,
    /// Several addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Virtual router id, 1-255 (vrrp mode).
    pub vrid: Option<u8>,
    /// 1-254, or 255 for the address owner (vrrp mode).
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default = "default_advert_int")]
    pub advert_int: HumanDuration,
    #[serde(default = "default_version")]
    pub version: u8,
    #[serde(default)]
    pub v3_checksum: V3Checksum,
    #[serde(default = "yes")]
    pub preempt: bool,
    #[serde(default)]
    pub preempt_delay: HumanDuration,
    /// Send adverts to these addresses instead of 224.0.0.18, and accept only theirs.
    #[serde(default)]
    pub unicast_peers: Vec<Ipv4Addr>,
    #[serde(default = "default_garp_repeat")]
    pub garp_repeat: u32,
    #[serde(default = "default_garp_interval")]
    pub garp_interval: HumanDuration,
    /// Send the gratuitous ARPs again this often while master (0s: never).
    #[serde(default)]
    pub garp_refresh: HumanDuration,
    /// Shell command run on every state change.
    pub notify: Option<String>,
    #[serde(default)]
    pub track: Vec<TrackConfig>,
}

/// `[[vip.track]]`: a script or an interface that changes the effective priority.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// Shell command; exit status 0 is success.
    pub script: Option<String>,
    /// Interface whose link state is tracked (up is success).
    pub interface: Option<String>,
    #[serde(default = "default_track_interval")]
    pub interval: HumanDuration,
    /// A script running longer than this has failed.
    #[serde(default = "default_track_timeout")]
    pub timeout: HumanDuration,
    /// Negative: added to the priority while failing; positive: added while succeeding;
    /// 0: failing puts the instance out of service (as Keepalived's FAULT state).
    #[serde(default)]
    pub weight: i32,
    /// Consecutive results needed to change the tracked state.
    #[serde(default = "one")]
    pub rise: u32,
    #[serde(default = "one")]
    pub fall: u32,
}

fn default_priority() -> u8 {
    100
}
fn default_advert_int() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_version() -> u8 {
    3
}
fn yes() -> bool {
    true
}
fn default_garp_repeat() -> u32 {
    5
}
fn default_garp_interval() -> HumanDuration {
    HumanDuration::from_millis(100)
}
fn default_track_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_track_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn one() -> u32 {
    1
}

/// A virtual address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipAddr {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

/// Parse `a.b.c.d[/len]`.
pub fn parse_addr(s: &str) -> Result<VipAddr, String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (
            ip,
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-32"))?,
        ),
        None => (s, 32),
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address (a.b.c.d or a.b.c.d/len)"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!("{s:?} cannot be a virtual address"));
    }
    Ok(VipAddr { ip, prefix })
}

impl VipConfig {
    /// The name used in metrics and events.
    pub fn display_name(&self, index: usize) -> String {
        match (&self.name, self.mode, self.vrid) {
            (Some(n), _, _) => n.clone(),
            (None, VipMode::Vrrp, Some(v)) => format!("vrid{v}"),
            _ => format!("vip{index}"),
        }
    }

    /// Every configured address (validated configs only have good ones).
    pub fn addrs(&self) -> Vec<VipAddr> {
        self.address
            .iter()
            .chain(self.addresses.iter())
            .filter_map(|a| parse_addr(a).ok())
            .collect()
    }

    pub fn protocol_version(&self) -> Version {
        if self.version == 2 {
            Version::V2
        } else {
            Version::V3
        }
    }

    /// The advertisement interval in centiseconds.
    pub fn interval_cs(&self) -> u16 {
        (self.advert_int.get().as_millis() / 10).min(4095) as u16
    }
}

/// Check every `[[vip]]`; `cluster` says whether this node is a cluster member.
pub fn validate(vips: &[VipConfig], cluster: bool) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut names = HashSet::new();
    let mut vrids = HashSet::new();
    let mut all_addrs = HashSet::new();
    for (i, v) in vips.iter().enumerate() {
        let key = |k: &str| format!("vip[{i}].{k}");
        let mut bad = |k: &str, m: String| issues.push(Issue::new(key(k), m));
        if !names.insert(v.display_name(i)) {
            bad("name", format!("{:?} is used twice", v.display_name(i)));
        }
        if v.interface.is_empty() || v.interface.len() > 15 || v.interface.contains('/') {
            bad(
                "interface",
                format!("{:?} is not an interface name", v.interface),
            );
        }
        if v.address.is_none() && v.addresses.is_empty() {
            bad("address", "give `address` or `addresses`".into());
        }
        for (j, a) in v.address.iter().chain(v.addresses.iter()).enumerate() {
            let k = if v.address.is_some() && j == 0 {
                "address".to_string()
            } else {
                format!("addresses[{}]", j - usize::from(v.address.is_some()))
            };
            match parse_addr(a) {
                Err(e) => bad(&k, e),
                Ok(va) => {
                    if !all_addrs.insert(va.ip) {
                        bad(&k, format!("{} is configured twice", va.ip));
                    }
                }
            }
        }
        if v.addrs().len() > 20 {
            bad("addresses", "at most 20 addresses per VIP".into());
        }
        if v.garp_repeat > 100 {
            bad("garp_repeat", "at most 100".into());
        }
        if v.garp_repeat > 0 && v.garp_interval.get() < Duration::from_millis(1) {
            bad("garp_interval", "at least 1ms".into());
        }
        if !v.garp_refresh.get().is_zero() && v.garp_refresh.get() < Duration::from_secs(1) {
            bad("garp_refresh", "0s (off) or at least 1s".into());
        }
        if v.notify.as_deref().is_some_and(|n| n.trim().is_empty()) {
            bad("notify", "empty command".into());
        }
        match v.mode {
            VipMode::Vrrp => validate_vrrp(v, &mut bad, &mut vrids),
            VipMode::Leader => {
                if !cluster {
                    bad(
                        "mode",
                        "\"leader\" needs [node] and [cluster]: the VIP follows the lease".into(),
                    );
                }
                if v.vrid.is_some() || !v.unicast_peers.is_empty() || !v.track.is_empty() {
                    bad(
                        "mode",
                        "vrid, unicast_peers and track belong to mode = \"vrrp\"".into(),
                    );
                }
            }
        }
        for (j, t) in v.track.iter().enumerate() {
            let tk = |k: &str| format!("track[{j}].{k}");
            match (&t.script, &t.interface) {
                (Some(_), Some(_)) | (None, None) => {
                    bad(&tk("script"), "give `script` or `interface`".into())
                }
                (Some(s), None) if s.trim().is_empty() => {
                    bad(&tk("script"), "empty command".into())
                }
                _ => {}
            }
            if t.interval.get() < Duration::from_millis(10) {
                bad(&tk("interval"), "at least 10ms".into());
            }
            if t.timeout.get().is_zero() {
                bad(&tk("timeout"), "must be more than 0".into());
            }
            if !(-254..=254).contains(&t.weight) {
                bad(&tk("weight"), "between -254 and 254".into());
            }
            if t.rise == 0 || t.fall == 0 {
                bad(&tk("rise"), "rise and fall are at least 1".into());
            }
        }
    }
    issues
}

fn validate_vrrp(
    v: &VipConfig,
    bad: &mut impl FnMut(&str, String),
    vrids: &mut HashSet<(String, u8)>,
) {
    match v.vrid {
        None => bad("vrid", "mode = \"vrrp\" needs a vrid (1-255)".into()),
        Some(0) => bad("vrid", "must be 1-255".into()),
        Some(id) => {
            if !vrids.insert((v.interface.clone(), id)) {
                bad(
                    "vrid",
                    format!("vrid {id} is used twice on {}", v.interface),
                );
            }
        }
    }
    if v.priority == 0 {
        bad(
            "priority",
            "must be 1-255 (0 is reserved for a master leaving)".into(),
        );
    }
    let adv = v.advert_int.get();
    match v.version {
        2 => {
            if adv.subsec_nanos() != 0 || adv.as_secs() == 0 || adv.as_secs() > 255 {
                bad(
                    "advert_int",
                    "VRRP version 2 takes whole seconds, 1s-255s".into(),
                );
            }
            if v.v3_checksum != V3Checksum::PseudoHeader {
                bad("v3_checksum", "only for version = 3".into());
            }
        }
        3 => {
            if !adv.as_millis().is_multiple_of(10)
                || adv.as_millis() < 10
                || adv.as_millis() > 40_950
            {
                bad(
                    "advert_int",
                    "VRRP version 3 takes centiseconds, 10ms-40.95s".into(),
                );
            }
        }
        n => bad("version", format!("{n}: VRRP version is 2 or 3")),
    }
    if v.preempt_delay.get() > Duration::from_secs(3600) {
        bad("preempt_delay", "at most 1h".into());
    }
    if v.priority == 255 && !v.track.is_empty() {
        bad(
            "track",
            "the address owner (priority 255) is not tracked".into(),
        );
    }
    for (j, p) in v.unicast_peers.iter().enumerate() {
        if p.is_multicast() || p.is_unspecified() || p.is_broadcast() {
            bad(
                &format!("unicast_peers[{j}]"),
                format!("{p} is not a unicast address"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(text: &str) -> VipConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_and_addresses() {
        let v = vip("interface = \"eth0\"\naddress = \"10.0.0.100/24\"\nvrid = 51\n");
        assert_eq!(v.mode, VipMode::Vrrp);
        assert_eq!((v.priority, v.version, v.garp_repeat), (100, 3, 5));
        assert_eq!(v.interval_cs(), 100);
        assert_eq!(
            v.addrs(),
            vec![VipAddr {
                ip: Ipv4Addr::new(10, 0, 0, 100),
                prefix: 24
            }]
        );
        assert!(validate(&[v], false).is_empty());
    }

    #[test]
    fn problems_name_their_keys() {
        let v = vip(
            "interface = \"eth0\"\naddresses = [\"10.0.0.1/24\", \"nope\"]\nvrid = 0\nversion = 2\nadvert_int = \"100ms\"\n\
             [[track]]\nweight = -300\n",
        );
        let keys: Vec<String> = validate(&[v], false).into_iter().map(|i| i.path).collect();
        for k in [
            "vip[0].addresses[1]",
            "vip[0].vrid",
            "vip[0].advert_int",
            "vip[0].track[0].script",
            "vip[0].track[0].weight",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn leader_mode_needs_a_cluster() {
        let v = vip("mode = \"leader\"\ninterface = \"eth0\"\naddress = \"10.0.0.100/24\"\n");
        assert!(validate(std::slice::from_ref(&v), true).is_empty());
        let e = validate(&[v], false);
        assert_eq!(e[0].path, "vip[0].mode");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<VipConfig, _> =
            toml::from_str("interface = \"eth0\"\naddress = \"10.0.0.1\"\nvrid = 1\nauth = 1\n");
        assert!(r.is_err());
    }
}

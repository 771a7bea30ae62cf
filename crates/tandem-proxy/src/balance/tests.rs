use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use prometheus_client::registry::Registry;

use super::*;
use crate::config::ServerConfig;
use crate::metrics::ProxyMetrics;

fn servers(spec: &[(&str, u32, bool)]) -> Vec<Arc<Server>> {
    let mut reg = Registry::default();
    let m = ProxyMetrics::register(&mut reg);
    spec.iter()
        .enumerate()
        .map(|(i, &(name, weight, backup))| {
            let cfg = ServerConfig {
                name: name.into(),
                address: format!("127.0.0.1:{}", 9000 + i),
                weight,
                backup,
                maxconn: 0,
                check_address: None,
            };
            let addr = cfg.address.parse().unwrap_or_else(|_| unreachable!());
            Arc::new(Server::new(
                "b",
                cfg,
                addr,
                true,
                AdminState::Ready,
                m.server("b", name),
            ))
        })
        .collect()
}

fn ctx<'a>(tried: &'a [Arc<Server>], key: Option<&'a [u8]>) -> PickContext<'a> {
    PickContext {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        hash_key: key,
        tried,
    }
}

fn counts(p: &Picker, sel: &Selection, n: usize) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        if let Some(s) = p.pick(sel, &ctx(&[], None)) {
            *c.entry(s.name.clone()).or_default() += 1;
        }
    }
    c
}

#[test]
fn smooth_wrr_interleaves() {
    assert_eq!(smooth_wrr(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(smooth_wrr(&[1, 1]), vec![0, 1]);
}

#[test]
fn round_robin_follows_weights() {
    let all = servers(&[("a", 3, false), ("b", 1, false)]);
    let sel = Selection::build(&all);
    let c = counts(&Picker::new(Balance::RoundRobin, 1), &sel, 400);
    assert_eq!(c.get("a"), Some(&300));
    assert_eq!(c.get("b"), Some(&100));
}

#[test]
fn backups_only_when_no_primary_is_up() {
    let all = servers(&[("a", 1, false), ("spare", 1, true)]);
    let sel = Selection::build(&all);
    assert!(!sel.on_backup);
    assert_eq!(sel.servers.len(), 1);
    all[0].set_up(false);
    let sel = Selection::build(&all);
    assert!(sel.on_backup);
    assert_eq!(sel.servers[0].name, "spare");
    all[1].set_up(false);
    assert!(Selection::build(&all).servers.is_empty());
}

#[test]
fn drain_and_maint_leave_rotation() {
    let all = servers(&[("a", 1, false), ("b", 1, false)]);
    all[0].set_admin(AdminState::Drain);
    let sel = Selection::build(&all);
    let c = counts(&Picker::new(Balance::RoundRobin, 1), &sel, 10);
    assert_eq!(c.get("a"), None);
    assert_eq!(c.get("b"), Some(&10));
}

#[test]
fn retries_avoid_tried_servers() {
    let all = servers(&[("a", 1, false), ("b", 1, false)]);
    let sel = Selection::build(&all);
    for policy in [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::P2c,
        Balance::Hash,
    ] {
        let p = Picker::new(policy, 7);
        for _ in 0..20 {
            let tried = [all[0].clone()];
            let s = p.pick(&sel, &ctx(&tried, None)).map(|s| s.name.clone());
            assert_eq!(s.as_deref(), Some("b"), "{policy:?}");
        }
        // With every server tried, a retry may go back to one.
        let tried = [all[0].clone(), all[1].clone()];
        assert!(p.pick(&sel, &ctx(&tried, None)).is_some());
    }
}

#[test]
fn least_conn_prefers_idle_server() {
    let all = servers(&[("a", 1, false), ("b", 1, false)]);
    let _busy: Vec<_> = (0..3).map(|_| all[0].inflight_guard()).collect();
    let sel = Selection::build(&all);
    let c = counts(&Picker::new(Balance::LeastConn, 1), &sel, 10);
    assert_eq!(c.get("b"), Some(&10));
}

#[test]
fn p2c_prefers_fast_unloaded_server() {
    let all = servers(&[("slow", 1, false), ("fast", 1, false)]);
    all[0].observe_latency(Duration::from_millis(500));
    all[1].observe_latency(Duration::from_millis(5));
    let sel = Selection::build(&all);
    let c = counts(&Picker::new(Balance::P2c, 3), &sel, 100);
    assert_eq!(c.get("fast"), Some(&100));
}

use std::time::Duration;

#[test]
fn hash_is_stable_and_moves_only_keys_of_a_lost_server() {
    let all = servers(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]);
    let sel = Selection::build(&all);
    let p = Picker::new(Balance::Hash, 1);
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            p.pick(&sel, &ctx(&[], Some(k.as_bytes())))
                .map(|s| s.name.clone())
        })
        .collect();
    let on_b = before.iter().filter(|s| *s == "b").count();
    assert!(on_b > 50 && on_b < 150, "uneven spread: {on_b} of 300 on b");
    all[1].set_up(false);
    let sel = Selection::build(&all);
    for (k, was) in keys.iter().zip(&before) {
        let now = p
            .pick(&sel, &ctx(&[], Some(k.as_bytes())))
            .map(|s| s.name.clone());
        if was != "b" {
            assert_eq!(
                now.as_deref(),
                Some(was.as_str()),
                "key {k} moved without cause"
            );
        } else {
            assert_ne!(now.as_deref(), Some("b"));
        }
    }
}

#[test]
fn maxconn_full_server_is_skipped() {
    let mut all = servers(&[("a", 1, false), ("b", 1, false)]);
    if let Some(a) = Arc::get_mut(&mut all[0]) {
        a.cfg.maxconn = 1;
    }
    let _g = all[0].inflight_guard();
    let sel = Selection::build(&all);
    let c = counts(&Picker::new(Balance::RoundRobin, 1), &sel, 10);
    assert_eq!(c.get("b"), Some(&10));
}

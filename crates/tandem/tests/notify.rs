//! Notifications end to end: a webhook receiver in the test sees each failover once; targets
//! that hang, fail or refuse delay nothing and lose nothing from the event log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

/// A minimal webhook receiver: records each request body and answers per `mode`.
fn receiver(mode: Mode) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        // Bounded: at most 500 requests.
        for s in l.incoming().take(500) {
            let Ok(mut s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                });
                let mut len = 0;
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                if let Ok(mut g) = g.lock() {
                    g.push(String::from_utf8_lossy(&body).into_owned());
                }
                match mode {
                    Mode::Ok => drop(s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")),
                    Mode::Fail => {
                        drop(s.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"))
                    }
                    Mode::Hang => std::thread::sleep(Duration::from_secs(30)),
                }
            });
        }
    });
    (addr, got)
}

fn promotions(got: &Arc<Mutex<Vec<String>>>, token: u64) -> usize {
    let needle = format!("fencing token {token}");
    got.lock()
        .map(|g| {
            g.iter()
                .filter(|b| b.contains("tandem_promoted") && b.contains(&needle))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_webhook_sees_each_failover_exactly_once() {
    let (addr, got) = receiver(Mode::Ok);
    let notify =
        format!("[[notify]]\nurl = \"http://{addr}/api/v2/alerts\"\nformat = \"alertmanager\"\n");
    let mut c = cluster(3, |_| notify.clone());
    let p = c.wait_primary(&[0, 1, 2]);
    assert!(
        wait_until(T, || promotions(&got, 1) == 1),
        "{:?}",
        got.lock().map(|g| g.clone())
    );
    c.nodes[p].proc.kill();
    c.wait_primary(&c.others(p));
    assert!(
        wait_until(T, || promotions(&got, 2) == 1),
        "{:?}",
        got.lock().map(|g| g.clone())
    );
    // Once only: nothing more about this failover arrives in the next second.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(promotions(&got, 2), 1);
    }
    let body: serde_json::Value = got
        .lock()
        .ok()
        .and_then(|g| {
            g.iter()
                .find(|b| b.contains("fencing token 2"))
                .and_then(|b| serde_json::from_str(b).ok())
        })
        .unwrap_or_default();
    assert_eq!(body[0]["labels"]["alertname"], "tandem_promoted", "{body}");
    assert!(
        body[0]["startsAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{body}"
    );
}

#[test]
fn broken_targets_delay_nothing_and_lose_no_event() {
    let (hang, _) = receiver(Mode::Hang);
    let (fail, failed) = receiver(Mode::Fail);
    let refused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("notified.log");
    let notify = format!(
        "[[notify]]\nname = \"hang\"\nurl = \"http://{hang}/\"\ntimeout = \"1s\"\nretries = 1\n\
         [[notify]]\nname = \"fail\"\nurl = \"http://{fail}/\"\nformat = \"json\"\ntimeout = \"1s\"\nretries = 2\n\
         [[notify]]\nname = \"refused\"\nurl = \"http://{refused}/\"\nformat = \"slack\"\nretries = 1\n\
         [[notify]]\nname = \"cmd\"\ncommand = \"echo $TANDEM_EVENT_KIND $TANDEM_EVENT_SUBJECT >> {}\"\n",
        out.display()
    );
    let mut c = cluster(3, |_| notify.clone());
    let p = c.wait_primary(&[0, 1, 2]);
    c.nodes[p].proc.kill();
    let q = c.wait_primary(&c.others(p));
    let nodes = &c.nodes;
    // The event log has the promotion whatever the targets did.
    let events = nodes[q].get_json("/events?kind=promoted");
    assert_eq!(events.as_array().map(|e| e.len()), Some(1), "{events}");
    // The failing target was retried; the command target ran.
    assert!(wait_until(T, || failed
        .lock()
        .map(|g| g.iter().filter(|b| b.contains("\"promoted\"")).count())
        .unwrap_or(0)
        >= 2));
    assert!(wait_until(T, || std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains(&format!("promoted n{}", q + 1))));
    assert!(wait_until(T, || nodes[q].metrics().contains(
        "tandem_notify_sent_total{target=\"refused\",result=\"failed\"}"
    )));
}

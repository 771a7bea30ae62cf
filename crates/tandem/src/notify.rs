//! Notifications: `[[notify]]` targets (webhooks or a shell command) fed from the event bus.
//! Each target has its own bounded queue and sender task with retries and backoff, so a target
//! that hangs, fails or refuses delays nothing else: failover never waits for a notification,
//! and every event stays in the event log whatever the target does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tandem_core::validate::Issue;
use tandem_core::{Event, EventBus, HumanDuration, TaskHandle};
use tokio::sync::Notify;

/// `[[notify]]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Name used in logs and metrics (default: the target's position, `notify0`...).
    pub name: Option<String>,
    /// Webhook: `http://IP:PORT/path`, POSTed one event at a time.
    pub url: Option<String>,
    /// Shell command run per event, with the event JSON on stdin and TANDEM_EVENT_* set.
    pub command: Option<String>,
    #[serde(default)]
    pub format: Format,
    /// Event kinds sent; the default covers failover, demotion, servers, quorum and VIPs.
    #[serde(default = "default_kinds")]
    pub events: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Further attempts after a failure, with exponential backoff.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// Body format of a webhook.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Alertmanager's `POST /api/v2/alerts` body: a list with one alert.
    #[default]
    Alertmanager,
    /// The event itself.
    Json,
    /// `{"text": "..."}` as Slack and Mattermost incoming webhooks take it.
    Slack,
}

fn default_kinds() -> Vec<String> {
    [
        "promoted",
        "demoted",
        "server_down",
        "server_up",
        "backup_active",
        "quorum_lost",
        "quorum_regained",
        "vip_moved",
        "service_unhealthy",
        "config_rejected",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

fn default_retries() -> u32 {
    5
}

const QUEUE: usize = 256;

/// Check `[[notify]]` entries.
pub fn validate(list: &[NotifyConfig]) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let at = |k: &str| format!("notify[{i}].{k}");
        match (&n.url, &n.command) {
            (None, None) => issues.push(Issue::new(format!("notify[{i}]"), "needs url or command")),
            (Some(_), Some(_)) => issues.push(Issue::new(
                format!("notify[{i}]"),
                "takes url or command, not both",
            )),
            (Some(u), None) => {
                if let Err(e) = parse_url(u) {
                    issues.push(Issue::new(at("url"), e));
                }
            }
            (None, Some(_)) => {}
        }
        if n.timeout.get().is_zero() {
            issues.push(Issue::new(at("timeout"), "must be more than 0"));
        }
        if n.retries > 20 {
            issues.push(Issue::new(at("retries"), "at most 20"));
        }
        if n.events.is_empty() {
            issues.push(Issue::new(at("events"), "lists no event kind"));
        }
    }
    issues
}

use tandem_core::probe::parse_http_url as parse_url;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetResult {
    target: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    target: String,
}

/// `tandem_notify_*` metrics.
#[derive(Clone)]
pub struct NotifyMetrics {
    sent: Family<TargetResult, Counter>,
    dropped: Family<Target, Counter>,
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            sent: Family::default(),
            dropped: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("notify");
        r.register(
            "sent",
            "Notifications by target and result (ok, or failed after every retry)",
            m.sent.clone(),
        );
        r.register(
            "dropped",
            "Events not notified because the target's queue was full",
            m.dropped.clone(),
        );
        m
    }
}

/// Start one sender per target; they stop when the handles drop.
pub fn start(list: &[NotifyConfig], events: &EventBus, metrics: &NotifyMetrics) -> Vec<TaskHandle> {
    let mut tasks = Vec::new();
    for (i, cfg) in list.iter().enumerate() {
        let name = cfg.name.clone().unwrap_or_else(|| format!("notify{i}"));
        let queue = Arc::new((Mutex::new(VecDeque::<Event>::new()), Notify::new()));
        // Forwarder: never blocks the bus; a full queue drops its oldest event (counted).
        let mut rx = events.subscribe();
        let (q, kinds, m, n) = (
            queue.clone(),
            cfg.events.clone(),
            metrics.clone(),
            name.clone(),
        );
        tasks.push(TaskHandle::spawn(async move {
            loop {
                let e = match rx.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                        m.dropped
                            .get_or_create(&Target { target: n.clone() })
                            .inc_by(k);
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if !kinds.contains(&e.kind) {
                    continue;
                }
                if let Ok(mut dq) = q.0.lock() {
                    if dq.len() == QUEUE {
                        dq.pop_front();
                        m.dropped.get_or_create(&Target { target: n.clone() }).inc();
                    }
                    dq.push_back(e);
                }
                q.1.notify_one();
            }
        }));
        let (cfg, m) = (cfg.clone(), metrics.clone());
        tasks.push(TaskHandle::spawn(async move {
            loop {
                let next = queue.0.lock().ok().and_then(|mut dq| dq.pop_front());
                let Some(e) = next else {
                    queue.1.notified().await;
                    continue;
                };
                let ok = deliver(&cfg, &name, &e).await;
                let result = if ok { "ok" } else { "failed" };
                m.sent
                    .get_or_create(&TargetResult {
                        target: name.clone(),
                        result: result.into(),
                    })
                    .inc();
            }
        }));
    }
    tasks
}

/// Send one event with retries and exponential backoff; true when it got through.
async fn deliver(cfg: &NotifyConfig, name: &str, e: &Event) -> bool {
    let mut backoff = Duration::from_millis(200);
    for attempt in 0..=cfg.retries {
        let r = match (&cfg.url, &cfg.command) {
            (Some(url), _) => post(url, cfg.format, e, cfg.timeout.get()).await,
            (None, Some(cmd)) => run_command(cmd, e, cfg.timeout.get()).await,
            (None, None) => Err("no target".into()),
        };
        match r {
            Ok(()) => return true,
            Err(why) => {
                tracing::warn!(target_name = name, attempt, kind = %e.kind, error = %why, "notification failed");
                if attempt < cfg.retries {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    false
}

/// The body a webhook gets.
pub fn body(format: Format, e: &Event) -> String {
    let text = format!("tandem: {} {}: {}", e.kind, e.subject, e.reason);
    match format {
        Format::Json => serde_json::to_string(e).unwrap_or_default(),
        Format::Slack => serde_json::json!({ "text": text }).to_string(),
        Format::Alertmanager => {
            let starts = rfc3339(e.at_ms);
            // One-shot events resolve by themselves after five minutes.
            let ends = rfc3339(e.at_ms + 300_000);
            serde_json::json!([{
                "labels": {
                    "alertname": format!("tandem_{}", e.kind),
                    "kind": e.kind,
                    "component": e.component,
                    "subject": e.subject,
                    "severity": if matches!(e.kind.as_str(), "demoted" | "server_down" | "quorum_lost" | "service_unhealthy") { "warning" } else { "info" },
                },
                "annotations": { "summary": text, "description": e.reason },
                "startsAt": starts,
                "endsAt": ends,
            }])
            .to_string()
        }
    }
}

async fn post(url: &str, format: Format, e: &Event, timeout: Duration) -> Result<(), String> {
    let (addr, path) = parse_url(url)?;
    let payload = body(format, e);
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {status}"))
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {}ms", timeout.as_millis())))
}

async fn run_command(cmd: &str, e: &Event, timeout: Duration) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("TANDEM_EVENT_KIND", &e.kind)
        .env("TANDEM_EVENT_SUBJECT", &e.subject)
        .env("TANDEM_EVENT_REASON", &e.reason)
        .env("TANDEM_EVENT_SEQ", e.seq.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the command: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin
            .write_all(serde_json::to_string(e).unwrap_or_default().as_bytes())
            .await;
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!("command exited with {st}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("command timed out".into()),
    }
}

/// Unix milliseconds as an RFC 3339 UTC timestamp (days-from-civil, no calendar crate).
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_703_801_340), "2026-11-26T14:36:41.340Z");
    }

    #[test]
    fn alertmanager_body_is_a_list_of_one_alert() {
        let e = Event {
            seq: 3,
            at_ms: 0,
            kind: "promoted".into(),
            component: "cluster".into(),
            subject: "n2".into(),
            reason: "lease acquired".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&body(Format::Alertmanager, &e)).unwrap_or_default();
        assert_eq!(v[0]["labels"]["alertname"], "tandem_promoted");
        assert_eq!(v[0]["endsAt"], "1970-01-01T00:05:00.000Z");
        let s: serde_json::Value =
            serde_json::from_str(&body(Format::Slack, &e)).unwrap_or_default();
        assert!(s["text"].as_str().unwrap_or("").contains("promoted n2"));
    }

    #[test]
    fn bad_targets_are_refused() {
        let n = |url: Option<&str>, command: Option<&str>| NotifyConfig {
            name: None,
            url: url.map(String::from),
            command: command.map(String::from),
            format: Format::Json,
            events: default_kinds(),
            timeout: default_timeout(),
            retries: 1,
        };
        assert_eq!(validate(&[n(None, None)]).len(), 1);
        assert_eq!(validate(&[n(Some("https://x"), None)]).len(), 1);
        assert_eq!(validate(&[n(Some("http://example.com/x"), None)]).len(), 1);
        assert!(validate(&[n(Some("http://127.0.0.1:9/x"), None)]).is_empty());
        assert!(validate(&[n(None, Some("true"))]).is_empty());
    }
}

//! Tracking, as Keepalived's `track_script` and `track_interface`: checks that run in the
//! background and report when their result changes; `effective` turns the results into the
//! priority and the out-of-service condition.

use tandem_core::TaskHandle;
use tokio::sync::mpsc;

use crate::config::TrackConfig;
use crate::netlink::Netlink;

/// A tracked check changed its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackUpdate {
    pub index: usize,
    pub ok: bool,
}

/// How a check is shown in logs and reasons.
pub fn describe(t: &TrackConfig) -> String {
    match (&t.script, &t.interface) {
        (Some(s), _) => format!("script {s:?}"),
        (None, Some(i)) => format!("interface {i}"),
        _ => "check".into(),
    }
}

/// The effective priority and whether the instance is out of service, from the base priority,
/// the checks' last results (`None`: not known yet, counted as passing) and the link state.
/// Weights follow Keepalived: a negative weight applies while failing, a positive one while
/// passing, 0 takes the instance out of service while failing. The owner (255) is never moved.
pub fn effective(
    base: u8,
    tracks: &[TrackConfig],
    results: &[Option<bool>],
    link_up: bool,
) -> (u8, bool) {
    let mut fault = !link_up;
    let mut p = i32::from(base);
    for (t, r) in tracks.iter().zip(results) {
        let ok = r.unwrap_or(true);
        match t.weight {
            0 if !ok => fault = true,
            w if w < 0 && !ok => p += w,
            w if w > 0 && ok => p += w,
            _ => {}
        }
    }
    if base == 255 {
        return (255, fault);
    }
    (p.clamp(1, 254) as u8, fault)
}

/// Start one task per check; each reports its first result and every change (after `rise`
/// passes or `fall` failures in a row).
pub fn start(
    tracks: &[TrackConfig],
    netlink: Netlink,
    tx: mpsc::UnboundedSender<TrackUpdate>,
) -> Vec<TaskHandle> {
    tracks
        .iter()
        .cloned()
        .enumerate()
        .map(|(index, t)| {
            let (tx, nl) = (tx.clone(), netlink.clone());
            TaskHandle::spawn(async move {
                let mut state: Option<bool> = None;
                let (mut passes, mut fails) = (0u32, 0u32);
                loop {
                    let ok = check(&t, &nl).await;
                    if ok {
                        passes += 1;
                        fails = 0;
                    } else {
                        fails += 1;
                        passes = 0;
                    }
                    let new = match state {
                        None => Some(ok),
                        Some(false) if passes >= t.rise => Some(true),
                        Some(true) if fails >= t.fall => Some(false),
                        s => s,
                    };
                    if new != state {
                        state = new;
                        if tx.send(TrackUpdate { index, ok }).is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(t.interval.get()).await;
                }
            })
        })
        .collect()
}

async fn check(t: &TrackConfig, nl: &Netlink) -> bool {
    if let Some(script) = &t.script {
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut c) = child else {
            tracing::warn!(script, "cannot run the track script");
            return false;
        };
        return match tokio::time::timeout(t.timeout.get(), c.wait()).await {
            Ok(Ok(st)) => st.success(),
            _ => {
                let _ = c.kill().await;
                false
            }
        };
    }
    if let Some(iface) = &t.interface {
        return nl.link(iface).await.is_ok_and(|l| l.up);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::HumanDuration;

    fn t(weight: i32) -> TrackConfig {
        TrackConfig {
            script: Some("true".into()),
            interface: None,
            interval: HumanDuration::from_secs(1),
            timeout: HumanDuration::from_secs(1),
            weight,
            rise: 1,
            fall: 1,
        }
    }

    #[test]
    fn weights_as_keepalived() {
        let tracks = [t(-20), t(10), t(0)];
        assert_eq!(
            effective(100, &tracks, &[None, None, None], true),
            (110, false)
        );
        assert_eq!(
            effective(100, &tracks, &[Some(false), Some(false), Some(true)], true),
            (80, false)
        );
        assert!(effective(100, &tracks, &[Some(true), Some(true), Some(false)], true).1);
        assert!(
            effective(100, &[], &[], false).1,
            "link down is out of service"
        );
        assert_eq!(effective(10, &[t(-50)], &[Some(false)], true).0, 1);
        assert_eq!(effective(255, &[t(-50)], &[Some(false)], true).0, 255);
    }
}

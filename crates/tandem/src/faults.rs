//! `POST /faults`: a drill on another host injects a fault into this node through its admin
//! API. Refused unless `[admin] allow_faults = true`, and always behind the bearer token. The
//! fault is undone by a detached shell (so a stopped node still resumes), after `duration`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tandem_core::HumanDuration;

use crate::admin::AdminCtx;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// "sigkill", "sigstop", "link-down" or "netem".
    kind: String,
    /// How long a sigstop, link-down or netem lasts.
    duration: Option<HumanDuration>,
    /// The interface for link faults.
    interface: Option<String>,
    loss: Option<String>,
    delay: Option<HumanDuration>,
}

fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// What a fault runs: a shell script, started detached, so it outlives a stop of this process.
fn script(req: &FaultRequest, pid: u32) -> Result<String, String> {
    let secs = |d: Option<HumanDuration>| -> Result<f64, String> {
        let d = d.ok_or("duration is needed")?.get();
        if d > Duration::from_secs(600) || d.is_zero() {
            return Err("duration must be between 1ms and 10m".into());
        }
        Ok(d.as_secs_f64())
    };
    let iface = || -> Result<String, String> {
        let i = req.interface.clone().ok_or("interface is needed")?;
        let ok = !i.is_empty()
            && i.len() <= 15
            && i.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(i)
        } else {
            Err(format!("{i:?} is not an interface name"))
        }
    };
    match req.kind.as_str() {
        "sigkill" => Ok(format!("sleep 0.05; kill -KILL {pid}")),
        "sigstop" => Ok(format!(
            "sleep 0.05; kill -STOP {pid}; sleep {}; kill -CONT {pid}",
            secs(req.duration)?
        )),
        "link-down" => {
            let i = iface()?;
            Ok(format!(
                "ip link set {i} down; sleep {}; ip link set {i} up",
                secs(req.duration)?
            ))
        }
        "netem" => {
            let i = iface()?;
            let mut opts = String::new();
            if let Some(d) = req.delay {
                opts.push_str(&format!(" delay {}ms", d.get().as_millis()));
            }
            if let Some(l) = &req.loss {
                let ok = l
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<f64>().ok())
                    .is_some_and(|n| (0.0..=100.0).contains(&n));
                if !ok {
                    return Err(format!("loss {l:?} must be a percentage like \"30%\""));
                }
                opts.push_str(&format!(" loss {l}"));
            }
            if opts.is_empty() {
                return Err("netem needs loss and/or delay".into());
            }
            Ok(format!(
                "tc qdisc add dev {i} root netem{opts}; sleep {}; tc qdisc del dev {i} root",
                secs(req.duration)?
            ))
        }
        other => Err(format!(
            "unknown fault kind {other:?} (sigkill, sigstop, link-down, netem)"
        )),
    }
}

pub async fn inject(
    State(ctx): State<AdminCtx>,
    headers: HeaderMap,
    body: Result<Json<FaultRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !ctx.allow_faults {
        return refuse(
            StatusCode::FORBIDDEN,
            "faults are disabled on this node: set [admin] allow_faults = true",
        );
    }
    if let Err(denied) = crate::admin::authorize(&ctx, &headers) {
        return denied.into_response();
    }
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let script = match script(&req, std::process::id()) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    ctx.events.emit(
        "fault_injected",
        "drill",
        &req.kind,
        format!("POST /faults: {script}"),
    );
    let spawned = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped by a thread; it must outlive a stop (or the death) of this process.
        Ok(mut child) => {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            (
                StatusCode::ACCEPTED,
                Json(json!({ "fault": req.kind, "script": script })),
            )
                .into_response()
        }
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start the fault: {e}"),
        ),
    }
}

//! Active health checks: the task that owns one server's up/down state machine, and the
//! TCP/HTTP probes it runs.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::config::{CheckKind, StatusSet};
use crate::health::{Hysteresis, Input, Status};
use crate::server::{AdminState, Server};

/// Check `server` until the backend goes away or the task is aborted. Passive failures reported
/// by the request path arrive through `server.passive_notify`.
pub(crate) async fn run(backend: Weak<Backend>, server: Arc<Server>) {
    let (health, initial) = match backend.upgrade() {
        Some(b) => (
            b.cfg.health.clone(),
            if server.is_up() {
                Status::Up
            } else {
                Status::Down
            },
        ),
        None => return,
    };
    let mut engine = Hysteresis::new(health.rise, health.fall, initial);
    let interval = health.interval.get();
    // The first check runs at once, so servers come up quickly after start.
    let mut delay = Duration::ZERO;
    loop {
        let input = tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            _ = server.passive_notify.notified() => Some(Input::PassiveDown(server.take_passive_reason())),
        };
        let Some(backend) = backend.upgrade() else {
            return;
        };
        let input = match input {
            Some(i) => Some(i),
            None if server.admin() == AdminState::Maint => None,
            None if health.check == CheckKind::None => Some(Input::Passed),
            None => {
                let result = probe(
                    health.check,
                    server.addr,
                    &health.path,
                    &backend.expect,
                    health.timeout.get(),
                )
                .await;
                match result {
                    Ok(()) => {
                        server.metrics.check_passed.inc();
                        Some(Input::Passed)
                    }
                    Err(why) => {
                        server.metrics.check_failed.inc();
                        tracing::debug!(backend = %backend.name, server = %server.name, %why, "health check failed");
                        Some(Input::Failed(why))
                    }
                }
            }
        };
        if let Some(t) = input.and_then(|i| engine.handle(i)) {
            backend.apply_transition(&server, &t);
        }
        delay = engine.next_interval(interval);
    }
}

/// One probe: TCP connect, or an HTTP GET whose status must be in `expect`.
pub(crate) async fn probe(
    kind: CheckKind,
    addr: SocketAddr,
    path: &str,
    expect: &StatusSet,
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if kind != CheckKind::Http {
            return Ok(());
        }
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tandem-health\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a status line".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_status_line(&buf)? {
                Some(code) if expect.contains(code) => return Ok(()),
                Some(code) => return Err(format!("status {code}")),
                None if buf.len() > 1024 => return Err("status line too long".to_string()),
                None => continue,
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
    }
}

/// Parse `HTTP/1.x NNN ...` at the start of `buf`: `Ok(None)` until a full line is there.
pub fn parse_status_line(buf: &[u8]) -> Result<Option<u16>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..end];
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(|| "not an HTTP/1.x status line".to_string())?;
    let code = rest
        .get(..3)
        .ok_or_else(|| "status line without a code".to_string())?;
    if rest.len() > 3 && rest[3] != b' ' {
        return Err("malformed status code".to_string());
    }
    let code = std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=599).contains(c) && code.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| "malformed status code".to_string())?;
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(Some(200)));
        assert_eq!(parse_status_line(b"HTTP/1.0 503\r\n"), Ok(Some(503)));
        assert_eq!(parse_status_line(b"HTTP/1.1 200 O"), Ok(None));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2x0 OK\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2000 OK\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 +20 OK\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 \r\n").is_err());
    }
}

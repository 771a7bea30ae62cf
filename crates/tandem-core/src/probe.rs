//! Health probes shared by the proxy's server checks and the cluster's service checks: a TCP
//! connect, or an HTTP GET whose status must fall in an accepted set.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Split `http://IP:PORT/path` into the address and the path (`/` when absent). Only literal
/// addresses: a name would make behaviour depend on DNS at the worst moment.
pub fn parse_http_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http://"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .parse()
        .map_err(|_| format!("{url:?}: the host must be IP:PORT"))?;
    Ok((addr, path.to_string()))
}

/// What to probe.
#[derive(Clone, Copy, Debug)]
pub enum Probe<'a> {
    Tcp,
    Http {
        path: &'a str,
        expect: &'a StatusSet,
    },
}

/// One probe: TCP connect, or an HTTP GET whose status must be in `expect`; `Err` says why it
/// failed.
pub async fn probe(kind: Probe<'_>, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let Probe::Http { path, expect } = kind else {
            return Ok(());
        };
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

/// An inclusive set of accepted HTTP status codes, from `expect = "200-399"` or `"200,204"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let parse = |x: &str| -> Result<u16, String> {
                x.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("{x:?} is not an HTTP status code (100-599)"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("range {part:?} is empty"));
            }
            ranges.push((lo, hi));
        }
        Ok(Self(ranges))
    }

    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200-399").unwrap_or(StatusSet(vec![]));
        assert!(s.contains(200) && s.contains(399) && !s.contains(404));
        let s = StatusSet::parse("200, 204").unwrap_or(StatusSet(vec![]));
        assert!(s.contains(204) && !s.contains(201));
        assert!(StatusSet::parse("abc").is_err());
        assert!(StatusSet::parse("300-200").is_err());
        assert!(StatusSet::parse("99").is_err());
    }

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

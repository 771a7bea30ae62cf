//! A minimal HTTP/1.1 client for drills: one request on a fresh or kept connection, bounded by
//! a timeout, with the answer's status and body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A kept-alive connection to one address.
pub struct Conn {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// The `x-served-by` header of the last answer, if it had one.
    pub served_by: Option<String>,
}

/// What a request ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Status(u16, Bytes),
    Error(&'static str),
}

impl Conn {
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            sender: None,
            served_by: None,
        }
    }

    /// Send one request; the connection is reopened after errors.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Outcome {
        self.served_by = None;
        match tokio::time::timeout(timeout, self.request_inner(method, path, body)).await {
            Ok(o) => {
                if matches!(o, Outcome::Error(_)) {
                    self.sender = None;
                }
                o
            }
            Err(_) => {
                self.sender = None;
                Outcome::Error("timeout")
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> Outcome {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = match tokio::net::TcpStream::connect(&self.addr).await {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Outcome::Error("refused")
                }
                Err(_) => return Outcome::Error("connect"),
            };
            let _ = tcp.set_nodelay(true);
            let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            else {
                return Outcome::Error("connect");
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Outcome::Error("connect");
        };
        if sender.ready().await.is_err() {
            return Outcome::Error("reset");
        }
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr);
        let payload = match body {
            Some((auth, text)) => {
                if !auth.is_empty() {
                    req = req.header("authorization", format!("Bearer {auth}"));
                }
                req = req.header("content-type", "application/json");
                Bytes::from(text.to_string())
            }
            None => Bytes::new(),
        };
        let Ok(req) = req.body(Full::new(payload)) else {
            return Outcome::Error("bad request");
        };
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(_) => return Outcome::Error("reset"),
        };
        let status = resp.status().as_u16();
        self.served_by = resp
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match resp.into_body().collect().await {
            Ok(b) => Outcome::Status(status, b.to_bytes()),
            Err(_) => Outcome::Error("reset"),
        }
    }
}

/// One GET on a fresh connection, parsed as JSON when the status is 2xx.
pub async fn get_json(addr: &str, path: &str, timeout: Duration) -> Option<serde_json::Value> {
    match Conn::new(addr).request("GET", path, None, timeout).await {
        Outcome::Status(s, body) if (200..300).contains(&s) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

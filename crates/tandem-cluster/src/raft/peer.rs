//! Raft traffic between peers: JSON over HTTP/1.1 with pooled connections, every message signed
//! with HMAC-SHA256 of the cluster secret (timestamp, path and body), every unsigned, badly
//! signed or malformed message refused and counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

use super::{NodeId, TypeConfig};

pub const AUTH_HEADER: &str = "x-tandem-auth";
/// Signed messages older or newer than this are refused (hosts' wall clocks may differ a bit).
const MAX_SKEW_MS: i64 = 300_000;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, ts: &str, path: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
    m.update(ts.as_bytes());
    m.update(b"\n");
    m.update(path.as_bytes());
    m.update(b"\n");
    m.update(body);
    Some(m)
}

/// The value of the auth header for a message.
pub fn sign(secret: &str, path: &str, body: &[u8]) -> String {
    let ts = tandem_core::clock::unix_millis().to_string();
    let tag = mac(secret, &ts, path, body)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    format!("{ts}.{}", hex(&tag))
}

/// Check a message's auth header; `Err` says why it is refused.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    path: &str,
    body: &[u8],
) -> Result<(), &'static str> {
    let header = header.ok_or("unsigned")?;
    let (ts, tag) = header.split_once('.').ok_or("malformed signature")?;
    let t: i64 = ts.parse().map_err(|_| "malformed signature")?;
    let now = tandem_core::clock::unix_millis() as i64;
    if (now - t).abs() > MAX_SKEW_MS {
        return Err("stale signature");
    }
    let tag = unhex(tag).ok_or("malformed signature")?;
    let m = mac(secret, ts, path, body).ok_or("bad secret")?;
    m.verify_slice(&tag).map_err(|_| "bad signature")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ===== impl PeerClient =====

/// Pooled HTTP connections to one peer.
pub struct PeerClient {
    addr: String,
    secret: Arc<str>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    #[error("{0}")]
    Network(String),
}

impl PeerClient {
    pub fn new(addr: String, secret: Arc<str>) -> Self {
        Self {
            addr,
            secret,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// POST a signed JSON message and parse the JSON answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        match tokio::time::timeout(timeout, self.call_inner(path, req)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Network(format!("{} {path}: timeout", self.addr))),
        }
    }

    async fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Network(e.to_string()))?;
        let mut sender = self.connection().await?;
        let request = http::Request::post(path)
            .header("host", &self.addr)
            .header("content-type", "application/json")
            .header(AUTH_HEADER, sign(&self.secret, path, &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Network(e.to_string()))?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::Network(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError::Network(e.to_string()))?
            .to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < 8 {
                idle.push(sender);
            }
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(CallError::Network(format!(
                "{} {path}: {status}: {text}",
                self.addr
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Network(format!("{} {path}: bad answer: {e}", self.addr)))
    }

    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        loop {
            let Some(mut s) = self.idle.lock().ok().and_then(|mut i| i.pop()) else {
                break;
            };
            if s.is_closed() {
                continue;
            }
            if s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let unreachable =
            |e: &dyn std::fmt::Display| CallError::Unreachable(self.addr.clone(), e.to_string());
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

// ===== impl Network =====

/// Creates the per-peer clients openraft replicates through.
pub(crate) struct Network {
    pub(crate) secret: Arc<str>,
    /// How soon a peer that could not be reached is tried again (openraft's default is 500 ms,
    /// which would keep a member that just restarted out of the quorum for that long).
    pub(crate) retry: Duration,
    /// How long a request may go on after openraft stopped waiting for it (see `rpc`).
    pub(crate) linger: Duration,
}

pub(crate) struct PeerConn {
    target: NodeId,
    client: Arc<PeerClient>,
    retry: Duration,
    linger: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            target,
            client: Arc::new(PeerClient::new(node.addr.clone(), self.secret.clone())),
            retry: self.retry,
            linger: self.linger,
        }
    }
}

impl PeerConn {
    /// One RPC. openraft waits for an append only one heartbeat interval; on a busy machine an
    /// answer often takes longer, and dropping the request there would close its connection,
    /// so the next one would pay for a new connection and be late too. The request therefore
    /// runs in a task of its own, bounded by `linger`, that puts its connection back in the
    /// pool when it ends; the caller stops waiting at openraft's limit.
    async fn rpc<
        Req: Serialize + Send + Sync + 'static,
        Resp: DeserializeOwned + Send + 'static,
        E: std::error::Error + DeserializeOwned + Send + 'static,
    >(
        &self,
        path: &'static str,
        req: Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let client = self.client.clone();
        let linger = self.linger.max(option.hard_ttl());
        let task = tokio::spawn(async move {
            client
                .call::<Req, Result<Resp, RaftError<NodeId, E>>>(path, &req, linger)
                .await
        });
        let r = match tokio::time::timeout(option.hard_ttl(), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(CallError::Network(format!("{path}: {e}"))),
            Err(_) => Err(CallError::Network(format!(
                "{} {path}: no answer within {:?}",
                self.client.addr,
                option.hard_ttl()
            ))),
        };
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(CallError::Unreachable(a, e)) => Err(RPCError::Unreachable(Unreachable::new(
                &AnyError::error(format!("{a}: {e}")),
            ))),
            Err(CallError::Network(e)) => {
                Err(RPCError::Network(NetworkError::new(&AnyError::error(e))))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/append", rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/vote", rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let secret = "0123456789abcdef-secret";
        let h = sign(secret, "/raft/vote", b"{}");
        assert_eq!(verify(secret, Some(&h), "/raft/vote", b"{}"), Ok(()));
        assert_eq!(
            verify(secret, Some(&h), "/raft/vote", b"{ }"),
            Err("bad signature")
        );
        assert_eq!(
            verify(secret, Some(&h), "/raft/append", b"{}"),
            Err("bad signature")
        );
        assert_eq!(
            verify("another-secret-0123456", Some(&h), "/raft/vote", b"{}"),
            Err("bad signature")
        );
        assert_eq!(verify(secret, None, "/raft/vote", b"{}"), Err("unsigned"));
        assert_eq!(
            verify(secret, Some("garbage"), "/raft/vote", b"{}"),
            Err("malformed signature")
        );
        assert_eq!(
            verify(secret, Some("1.zz"), "/raft/vote", b"{}"),
            Err("stale signature")
        );
    }
}

//! The etcd v3 DCS: the cluster record kept in etcd keys and changed with optimistic
//! transactions, the way Patroni uses etcd.
//!
//! Layout under `/tandem/<cluster>/`:
//! - `record`: the lease part of `ClusterState` as JSON (lease, version, last_token, paused,
//!   switchover);
//! - `members/<name>`: one `MemberRecord` as JSON per member, so heartbeats never contend with
//!   lease writes.
//!
//! A write reads the whole prefix in one linearizable range request (values and mod revisions),
//! applies the command with the same `ClusterState::apply` the Raft backend uses, and writes only
//! the keys that changed in one transaction guarded by their mod revisions (or
//! `create_revision == 0` for a key that did not exist). When a guard fails, another writer got
//! in between: the command is applied again to the fresh state, a bounded number of times. So an
//! `Acquire` whose expected version went stale answers `ok = false`, exactly as in `state.rs`.
//! A command that changes nothing (a refused renew, a lost acquire) is answered from the
//! linearizable read without a write.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tandem_core::clock;

use crate::dcs::{Dcs, DcsError};
use crate::state::{ClusterState, Command, LeaseRecord, MemberRecord, Outcome};

/// How many times a write is applied again after losing its compare-and-set to another writer.
const MAX_ATTEMPTS: usize = 5;

// gRPC status codes (grpc/doc/statuscodes.md); etcd answers `Unavailable` for "no leader" and
// "request timed out" (no quorum).
const GRPC_CANCELLED: i32 = 1;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// The lease part of the record, stored at `record`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RecordDoc {
    lease: Option<LeaseRecord>,
    version: u64,
    last_token: u64,
    paused: bool,
    switchover: Option<String>,
    #[serde(default)]
    sync: Vec<String>,
    #[serde(default)]
    sync_leader: Option<String>,
    #[serde(default)]
    initialized: Option<String>,
}

impl RecordDoc {
    fn of(s: &ClusterState) -> Self {
        RecordDoc {
            lease: s.lease.clone(),
            version: s.version,
            last_token: s.last_token,
            paused: s.paused,
            switchover: s.switchover.clone(),
            sync: s.sync.clone(),
            sync_leader: s.sync_leader.clone(),
            initialized: s.initialized.clone(),
        }
    }
}

/// The record as read, with the mod revision of every key (absent keys have none).
#[derive(Debug, Default)]
struct Snapshot {
    state: ClusterState,
    record_rev: Option<i64>,
    member_revs: BTreeMap<String, i64>,
}

/// The etcd v3 store. Requests go to any of the endpoints; etcd answers only with a quorum.
pub struct EtcdDcs {
    kv: KvClient,
    prefix: String,
    timeout: Duration,
    /// Whether the last request got an answer.
    reachable: AtomicBool,
}

// ===== impl EtcdDcs =====

impl EtcdDcs {
    /// A client for cluster `cluster` on `endpoints` (`http://host:port`). Every request to
    /// etcd is bounded by `timeout`, so a `read` takes at most `timeout` and a `write` (a read
    /// and a transaction per attempt) at most `2 * MAX_ATTEMPTS * timeout`. A request that etcd
    /// lost with a dying leader fails after `timeout` and the caller tries again; the HTTP/2
    /// keep-alive pings close a connection to a member that stopped answering, so the next
    /// request goes to another endpoint.
    ///
    /// The connection is lazy: this succeeds while etcd is down, and requests fail with
    /// `NoQuorum` or `Timeout` until it is reachable.
    pub async fn connect(
        endpoints: &[String],
        cluster: &str,
        timeout: Duration,
    ) -> Result<Self, DcsError> {
        if endpoints.is_empty() {
            return Err(DcsError::Other("no etcd endpoints".into()));
        }
        if cluster.is_empty() || cluster.contains('/') {
            return Err(DcsError::Other(format!(
                "cluster name {cluster:?} cannot be an etcd key segment"
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(timeout, timeout * 2);
        let client =
            match tokio::time::timeout(timeout, Client::connect(endpoints, Some(options))).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(classify(e)),
                Err(_) => return Err(DcsError::Timeout),
            };
        Ok(EtcdDcs {
            kv: client.kv_client(),
            prefix: format!("/tandem/{cluster}/"),
            timeout,
            reachable: AtomicBool::new(false),
        })
    }

    fn record_key(&self) -> String {
        format!("{}record", self.prefix)
    }

    fn member_key(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }

    /// Run one etcd request within the request timeout, and remember whether it was answered.
    ///
    /// The client spreads requests over all endpoints, a dead member's included, so a request
    /// may fail at once for want of a connection while the other members answer. Such a
    /// request is sent again until the timeout: any request that `retry` allows (reads: every
    /// "no quorum" answer, which includes etcd's "leader changed"), and any request that surely
    /// never left this process (no connection). A transaction that may have reached etcd is
    /// not sent again here: the caller reads again first.
    async fn call<T, F, Fut>(&self, retry: Retry, mut request: F) -> Result<T, DcsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = clock::now() + self.timeout;
        let pause = (self.timeout / 20).max(Duration::from_millis(2));
        let r = loop {
            match clock::timeout_at(deadline, request()).await {
                Ok(Ok(v)) => break Ok(v),
                Ok(Err(e)) => {
                    let again = never_sent(&e);
                    let e = classify(e);
                    let again =
                        again || (retry == Retry::Reads && matches!(e, DcsError::NoQuorum(_)));
                    if !again || clock::now() + pause >= deadline {
                        break Err(e);
                    }
                    tracing::debug!(component = "cluster", error = %e, "etcd request failed; sending it again");
                    tokio::time::sleep(pause).await;
                }
                Err(_) => break Err(DcsError::Timeout),
            }
        };
        self.reachable.store(r.is_ok(), Ordering::Relaxed);
        r
    }

    /// The whole record, read at one revision (a linearizable range request on the prefix).
    async fn snapshot(&self) -> Result<Snapshot, DcsError> {
        let resp = self
            .call(Retry::Reads, || {
                let mut kv = self.kv.clone();
                let prefix = self.prefix.clone();
                async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut snap = Snapshot::default();
        let members_prefix = format!("{}members/", self.prefix);
        for item in resp.kvs() {
            let key = String::from_utf8_lossy(item.key());
            if key == self.record_key() {
                let doc: RecordDoc = decode(&key, item.value())?;
                snap.state.lease = doc.lease;
                snap.state.version = doc.version;
                snap.state.last_token = doc.last_token;
                snap.state.paused = doc.paused;
                snap.state.switchover = doc.switchover;
                snap.state.sync = doc.sync;
                snap.state.sync_leader = doc.sync_leader;
                snap.state.initialized = doc.initialized;
                snap.record_rev = Some(item.mod_revision());
            } else if let Some(name) = key.strip_prefix(&members_prefix) {
                let m: MemberRecord = decode(&key, item.value())?;
                snap.state.members.insert(name.to_string(), m);
                snap.member_revs
                    .insert(name.to_string(), item.mod_revision());
            } else {
                tracing::debug!(component = "cluster", key = %key, "ignoring unknown etcd key");
            }
        }
        Ok(snap)
    }

    /// Apply `cmd` to a fresh read and write what changed. `None`: another writer changed one
    /// of those keys in between.
    async fn try_write(&self, cmd: &Command) -> Result<Option<Outcome>, DcsError> {
        let snap = self.snapshot().await?;
        let mut next = snap.state.clone();
        let outcome = next.apply(cmd);
        let mut guards = Vec::new();
        let mut puts = Vec::new();
        let record = RecordDoc::of(&next);
        if record != RecordDoc::of(&snap.state) {
            let key = self.record_key();
            guards.push(guard(&key, snap.record_rev));
            puts.push(TxnOp::put(key, encode(&record)?, None));
        }
        for (name, m) in &next.members {
            if snap.state.members.get(name) != Some(m) {
                let key = self.member_key(name);
                guards.push(guard(&key, snap.member_revs.get(name).copied()));
                puts.push(TxnOp::put(key, encode(m)?, None));
            }
        }
        if puts.is_empty() {
            // Nothing changed: the linearizable read is the answer.
            return Ok(Some(outcome));
        }
        let txn = Txn::new().when(guards).and_then(puts);
        let resp = self
            .call(Retry::Unsent, || {
                let mut kv = self.kv.clone();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded().then_some(outcome))
    }
}

impl Dcs for EtcdDcs {
    async fn read(&self) -> Result<ClusterState, DcsError> {
        Ok(self.snapshot().await?.state)
    }

    async fn write(&self, cmd: Command) -> Result<Outcome, DcsError> {
        for attempt in 1..=MAX_ATTEMPTS {
            if let Some(outcome) = self.try_write(&cmd).await? {
                return Ok(outcome);
            }
            tracing::debug!(
                component = "cluster",
                attempt,
                "etcd compare-and-set lost to another writer; applying again"
            );
        }
        Err(DcsError::Other(format!(
            "etcd compare-and-set lost {MAX_ATTEMPTS} times in a row"
        )))
    }

    fn has_quorum(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}

// ===== helpers =====

/// Which failed requests `EtcdDcs::call` sends again within its timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read: again on any "no quorum" answer.
    Reads,
    /// A write: again only when it never left this process.
    Unsent,
}

/// Whether a request failed for want of a connection (refused, or no route), so that it
/// never reached etcd.
fn never_sent(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        E::GRpcStatus(s) => Some(s),
        E::TransportError(t) => Some(t),
        E::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
            ) {
                return true;
            }
        }
        // hyper's connector error, when the chain does not reach the io::Error.
        if err.to_string().contains("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}

/// The transaction guard for a key read at `rev` (`None`: the key did not exist).
fn guard(key: &str, rev: Option<i64>) -> Compare {
    match rev {
        Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        None => Compare::create_revision(key, CompareOp::Equal, 0),
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, DcsError> {
    serde_json::to_vec(v).map_err(|e| DcsError::Other(format!("encoding the record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, DcsError> {
    serde_json::from_slice(value)
        .map_err(|e| DcsError::Other(format!("malformed value at etcd key {key}: {e}")))
}

/// Unreachable endpoints and etcd's own "no leader" / "timed out" answers mean no quorum.
fn classify(e: etcd_client::Error) -> DcsError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => match i32::from(s.code()) {
            GRPC_DEADLINE_EXCEEDED => DcsError::Timeout,
            GRPC_UNAVAILABLE | GRPC_CANCELLED => DcsError::NoQuorum(s.message().to_string()),
            _ => DcsError::Other(s.to_string()),
        },
        E::TransportError(t) => DcsError::NoQuorum(t.to_string()),
        E::IoError(io) => DcsError::NoQuorum(io.to_string()),
        other => DcsError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_key_holds_the_lease_part_only() {
        let mut s = ClusterState::default();
        s.apply(&Command::Acquire {
            node: "n1".into(),
            expected_version: 0,
        });
        s.apply(&Command::Heartbeat {
            node: "n1".into(),
            info: Default::default(),
        });
        let json =
            String::from_utf8(encode(&RecordDoc::of(&s)).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"lease":{"holder":"n1","token":1},"version":1,"last_token":1,"paused":false,"switchover":null,"sync":[],"sync_leader":null,"initialized":null}"#
        );
    }
}

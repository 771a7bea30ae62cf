//! The distributed configuration store (DCS) the lease lives in. Both backends keep the same
//! record (`state::ClusterState`) and apply the same commands with the same rules; only the
//! consensus underneath differs (embedded Raft or etcd v3).

use std::future::Future;
use std::sync::Mutex;

use crate::state::{ClusterState, Command, Outcome};

/// Why a DCS request failed. Every variant is retryable: the lease engine copes with failure
/// by letting the lease run out.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DcsError {
    #[error("no quorum reachable: {0}")]
    NoQuorum(String),
    #[error("DCS request timed out")]
    Timeout,
    #[error("DCS error: {0}")]
    Other(String),
}

/// A consensus store holding the cluster record.
pub trait Dcs: Send + Sync + 'static {
    /// The committed record (possibly a little behind on a follower; never uncommitted state).
    fn read(&self) -> impl Future<Output = Result<ClusterState, DcsError>> + Send;
    /// Apply `cmd` through consensus and return its outcome.
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Outcome, DcsError>> + Send;
    /// Best effort: whether this node reaches a quorum right now.
    fn has_quorum(&self) -> bool;
    /// The member that leads the store, when the store is made of the members (embedded Raft).
    fn store_leader(&self) -> Option<String> {
        None
    }
    /// The store's current election term, when the store is made of the members (embedded
    /// Raft): it changes only with an election, so a stable term means nobody disturbed the group.
    fn store_term(&self) -> Option<u64> {
        None
    }
}

/// A store in memory, for engine-level tests of the agent. Not a consensus store.
#[derive(Default, Debug)]
pub struct MemDcs {
    state: Mutex<ClusterState>,
    /// When set, every request fails as if no quorum were reachable.
    pub down: std::sync::atomic::AtomicBool,
}

impl MemDcs {
    fn check(&self) -> Result<(), DcsError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            Err(DcsError::NoQuorum("memory store marked down".into()))
        } else {
            Ok(())
        }
    }
}

impl Dcs for MemDcs {
    async fn read(&self) -> Result<ClusterState, DcsError> {
        self.check()?;
        Ok(self.state.lock().map(|s| s.clone()).unwrap_or_default())
    }

    async fn write(&self, cmd: Command) -> Result<Outcome, DcsError> {
        self.check()?;
        let mut s = self
            .state
            .lock()
            .map_err(|_| DcsError::Other("poisoned".into()))?;
        Ok(s.apply(&cmd))
    }

    fn has_quorum(&self) -> bool {
        self.check().is_ok()
    }
}

//! Graceful shutdown: one signal, observed by every task that must stop or drain.

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal. `trigger` once; every clone's `wait` then resolves.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start shutting down everything that watches this signal (idempotent).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once `trigger` has been called on any clone.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// A child signal: triggered with its parent, or on its own without touching the parent.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }
}

//! Task handles that abort their task when dropped, so a component that goes away takes its
//! background work with it.

use std::future::Future;

use tokio::task::JoinHandle;

/// Owns a spawned task; dropping the handle aborts the task.
#[derive(Debug)]
pub struct TaskHandle(JoinHandle<()>);

impl TaskHandle {
    pub fn spawn<F>(fut: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(tokio::spawn(fut))
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Wait for the task to finish on its own (it is not aborted).
    pub async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

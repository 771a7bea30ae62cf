//! Service hooks: shell commands run with a timeout, given TANDEM_NODE, TANDEM_ROLE and
//! TANDEM_FENCING_TOKEN. Hooks run one at a time, in order, so a demote always finishes before
//! the next promote starts.

use std::time::Duration;

use tokio::process::Command;

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Start,
    Stop,
    Promote,
    Demote,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Start => "start",
            Hook::Stop => "stop",
            Hook::Promote => "promote",
            Hook::Demote => "demote",
        }
    }
}

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{hook} hook could not start: {source}")]
    Spawn {
        hook: &'static str,
        source: std::io::Error,
    },
    #[error("{hook} hook exited with {status}: {stderr}")]
    Failed {
        hook: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{hook} hook killed after {secs:.1}s")]
    Timeout { hook: &'static str, secs: f64 },
}

/// Run `cmd` with `sh -c`.
pub async fn run(
    hook: Hook,
    cmd: &str,
    node: &str,
    role: &str,
    token: Option<u64>,
    timeout: Duration,
) -> Result<(), HookError> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env("TANDEM_NODE", node)
        .env("TANDEM_ROLE", role)
        .env("TANDEM_HOOK", hook.as_str())
        .env(
            "TANDEM_FENCING_TOKEN",
            token.map(|t| t.to_string()).unwrap_or_default(),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = c.output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => {
            return Err(HookError::Timeout {
                hook: hook.as_str(),
                secs: timeout.as_secs_f64(),
            })
        }
        Ok(Err(source)) => {
            return Err(HookError::Spawn {
                hook: hook.as_str(),
                source,
            })
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(HookError::Failed {
            hook: hook.as_str(),
            status: out.status.to_string(),
            stderr: stderr.chars().take(500).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hooks_get_their_environment_and_a_timeout() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("env");
        let cmd = format!(
            "echo $TANDEM_NODE $TANDEM_ROLE $TANDEM_FENCING_TOKEN > {}",
            out.display()
        );
        run(
            Hook::Promote,
            &cmd,
            "n1",
            "primary",
            Some(7),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap_or_default().trim(),
            "n1 primary 7"
        );
        let e = run(
            Hook::Demote,
            "exit 3",
            "n1",
            "replica",
            None,
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(e, Err(HookError::Failed { .. })));
        let e = run(
            Hook::Stop,
            "sleep 5",
            "n1",
            "replica",
            None,
            Duration::from_millis(100),
        )
        .await;
        assert!(matches!(e, Err(HookError::Timeout { .. })));
    }
}

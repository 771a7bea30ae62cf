//! The replicated cluster record: who holds the lease (with its fencing token), a version that
//! changes on every lease write, member heartbeats, pause and switchover requests.
//!
//! `apply` is deterministic and has no notion of time: expiry is judged by each node from how
//! long the version has stayed unchanged by its own clock (see docs/design/lease.md),
//! and taking a lease is a compare-and-set on the version. Every DCS backend exposes this
//! record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The lease as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    /// Fencing token: strictly increasing over every acquisition in the cluster's life.
    pub token: u64,
}

/// What a member last reported about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberInfo {
    pub healthy: bool,
    pub priority: u32,
    pub nofailover: bool,
    /// Admin API address, for display and for tools.
    pub api: String,
    /// The managed PostgreSQL, for `kind = "postgres"` services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg: Option<PgMember>,
}

/// What a member reports about its PostgreSQL: enough for the others to judge who may be
/// promoted (the highest WAL position among the safe candidates wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PgMember {
    /// `host:port` clients and replicas connect to.
    pub addr: String,
    /// True while PostgreSQL runs and answers.
    pub running: bool,
    /// True when it is a primary (not in recovery).
    pub primary: bool,
    /// On a primary its current WAL position; on a replica the highest position received or
    /// replayed, as bytes.
    pub lsn: u64,
    pub timeline: u32,
    /// A replica that streams from the current primary.
    pub streaming: bool,
    /// The database system identifier (from initdb), as decimal.
    pub sysid: String,
}

/// A member's record: its report and a counter bumped by every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberRecord {
    #[serde(flatten)]
    pub info: MemberInfo,
    pub seq: u64,
}

/// The whole replicated record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    pub lease: Option<LeaseRecord>,
    /// Changes on every acquisition, renewal and release.
    pub version: u64,
    /// Last fencing token handed out.
    pub last_token: u64,
    pub members: BTreeMap<String, MemberRecord>,
    /// Automatic failover stopped cluster-wide.
    pub paused: bool,
    /// A planned switchover in progress: only this node may take the lease.
    pub switchover: Option<String>,
    /// (PostgreSQL, synchronous mode) the members that hold every acknowledged commit between
    /// them: only these may be promoted. Written by the lease holder only.
    #[serde(default)]
    pub sync: Vec<String>,
    /// (PostgreSQL, synchronous mode) the primary that wrote `sync`: every commit it
    /// acknowledged is also on it, so it stays a candidate too.
    #[serde(default)]
    pub sync_leader: Option<String>,
    /// (PostgreSQL) the system identifier of the database the cluster runs, once bootstrapped.
    #[serde(default)]
    pub initialized: Option<String>,
}

/// A change to the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Take the lease if the version is still `expected_version`.
    Acquire {
        node: String,
        expected_version: u64,
    },
    /// Extend the lease held by `node` with `token`.
    Renew {
        node: String,
        token: u64,
    },
    /// Give up the lease held by `node` with `token`.
    Release {
        node: String,
        token: u64,
    },
    Heartbeat {
        node: String,
        info: MemberInfo,
    },
    SetPaused {
        paused: bool,
    },
    SetSwitchover {
        target: Option<String>,
    },
    /// The lease holder records the synchronous standbys (fenced by its token).
    SetSync {
        node: String,
        token: u64,
        sync: Vec<String>,
    },
    /// The lease holder records the database it bootstrapped (fenced by its token; once).
    SetInitialized {
        node: String,
        token: u64,
        sysid: String,
    },
}

/// The result of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Outcome {
    /// True when the command took effect.
    pub ok: bool,
    /// Version after the command.
    pub version: u64,
    /// The lease after the command.
    pub lease: Option<LeaseRecord>,
}

impl ClusterState {
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let ok = match cmd {
            Command::Acquire {
                node,
                expected_version,
            } => {
                let ok = self.version == *expected_version;
                if ok {
                    self.last_token += 1;
                    self.lease = Some(LeaseRecord {
                        holder: node.clone(),
                        token: self.last_token,
                    });
                    self.version += 1;
                    if self.switchover.as_deref() == Some(node) {
                        self.switchover = None;
                    }
                }
                ok
            }
            Command::Renew { node, token } => {
                let ok = self.held_by(node, *token);
                if ok {
                    self.version += 1;
                }
                ok
            }
            Command::Release { node, token } => {
                let ok = self.held_by(node, *token);
                if ok {
                    self.lease = None;
                    self.version += 1;
                }
                ok
            }
            Command::Heartbeat { node, info } => {
                let m = self.members.entry(node.clone()).or_default();
                m.info = info.clone();
                m.seq += 1;
                true
            }
            Command::SetPaused { paused } => {
                self.paused = *paused;
                true
            }
            Command::SetSwitchover { target } => {
                self.switchover = target.clone();
                true
            }
            // Neither changes the version: they are not lease writes, and must not look like a
            // renewal to the members timing the lease.
            Command::SetSync { node, token, sync } => {
                let ok = self.held_by(node, *token);
                if ok {
                    self.sync = sync.clone();
                    self.sync_leader = Some(node.clone());
                }
                ok
            }
            Command::SetInitialized { node, token, sysid } => {
                let ok = self.held_by(node, *token)
                    && self.initialized.as_ref().is_none_or(|s| s == sysid);
                if ok {
                    self.initialized = Some(sysid.clone());
                }
                ok
            }
        };
        Outcome {
            ok,
            version: self.version,
            lease: self.lease.clone(),
        }
    }

    fn held_by(&self, node: &str, token: u64) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| l.holder == node && l.token == token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(s: &mut ClusterState, node: &str) -> Outcome {
        let v = s.version;
        s.apply(&Command::Acquire {
            node: node.into(),
            expected_version: v,
        })
    }

    #[test]
    fn acquire_is_a_compare_and_set_on_the_version() {
        let mut s = ClusterState::default();
        let stale = s.version;
        let o = acquire(&mut s, "n1");
        assert!(o.ok);
        assert_eq!(o.lease.as_ref().map(|l| l.token), Some(1));
        // A second candidate that read the old version loses.
        let o = s.apply(&Command::Acquire {
            node: "n2".into(),
            expected_version: stale,
        });
        assert!(!o.ok);
        assert_eq!(o.lease.map(|l| l.holder), Some("n1".to_string()));
    }

    #[test]
    fn renew_needs_holder_and_token_and_bumps_the_version() {
        let mut s = ClusterState::default();
        acquire(&mut s, "n1");
        let v = s.version;
        assert!(
            s.apply(&Command::Renew {
                node: "n1".into(),
                token: 1
            })
            .ok
        );
        assert_eq!(s.version, v + 1);
        assert!(
            !s.apply(&Command::Renew {
                node: "n2".into(),
                token: 1
            })
            .ok
        );
        assert!(
            !s.apply(&Command::Renew {
                node: "n1".into(),
                token: 7
            })
            .ok
        );
    }

    #[test]
    fn tokens_increase_across_holders() {
        let mut s = ClusterState::default();
        acquire(&mut s, "n1");
        assert!(
            s.apply(&Command::Release {
                node: "n1".into(),
                token: 1
            })
            .ok
        );
        let o = acquire(&mut s, "n2");
        assert_eq!(o.lease.map(|l| l.token), Some(2));
        // Taking over an expired lease (judged by the caller) also gets a new token.
        let o = acquire(&mut s, "n3");
        assert_eq!(
            o.lease.map(|l| (l.holder, l.token)),
            Some(("n3".to_string(), 3))
        );
    }

    #[test]
    fn acquiring_ends_a_switchover_to_that_node() {
        let mut s = ClusterState::default();
        s.apply(&Command::SetSwitchover {
            target: Some("n2".into()),
        });
        acquire(&mut s, "n2");
        assert_eq!(s.switchover, None);
    }

    #[test]
    fn heartbeats_count() {
        let mut s = ClusterState::default();
        let info = MemberInfo {
            healthy: true,
            priority: 100,
            nofailover: false,
            api: String::new(),
            pg: None,
        };
        s.apply(&Command::Heartbeat {
            node: "n1".into(),
            info: info.clone(),
        });
        s.apply(&Command::Heartbeat {
            node: "n1".into(),
            info,
        });
        assert_eq!(s.members["n1"].seq, 2);
        assert_eq!(s.version, 0, "heartbeats do not touch the lease version");
    }
}

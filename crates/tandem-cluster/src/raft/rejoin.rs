//! A member whose Raft state is gone must not rejoin under its old identity.
//!
//! A member that lost its data directory (a replaced disk, a wrong `rm`) but comes back with the
//! same name would answer vote requests with an empty log. Raft's safety rests on every voter
//! remembering what it accepted: with three members A, B, C, an entry committed on A and B only,
//! and B emptied, C (without the entry) wins an election with B's vote once A is gone, and the
//! committed entry (a lease write) is lost. So a member that starts with no Raft state asks its
//! peers, before it serves any peer request, whether the cluster was formed and whether it ever
//! ran in it (its member record is in the cluster record); if so, it refuses to start.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::Raft;
use serde::{Deserialize, Serialize};

use super::peer::PeerClient;
use super::store::SmData;
use super::{NodeId, TypeConfig};

#[derive(Debug, Serialize, Deserialize)]
pub struct FormedRequest {
    /// The asking member's name.
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FormedResponse {
    /// This member belongs to a formed Raft group.
    pub formed: bool,
    /// The cluster record has the asker's member record: it ran in this cluster before.
    pub ran_before: bool,
}

/// A peer's answer, from its own state.
pub fn answer(raft: &Raft<TypeConfig>, sm: &RwLock<SmData>, req: &FormedRequest) -> FormedResponse {
    let formed = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .next()
        .is_some();
    let ran_before = sm
        .read()
        .is_ok_and(|d| d.state.members.contains_key(&req.name));
    FormedResponse { formed, ran_before }
}

/// Ask every peer (in parallel, each within `limit`); `Err` names the first that knows this
/// member from before. Peers that do not answer are not waited for beyond `limit`: a cluster
/// being formed for the first time has members that are not up yet.
pub async fn check(
    me: &str,
    peers: &BTreeMap<NodeId, Arc<PeerClient>>,
    names: &BTreeMap<NodeId, String>,
    limit: Duration,
) -> Result<(), String> {
    let mut asks = tokio::task::JoinSet::new();
    for (id, client) in peers {
        let (client, name) = (client.clone(), names.get(id).cloned().unwrap_or_default());
        let req = FormedRequest {
            name: me.to_string(),
        };
        asks.spawn(async move {
            let r = client
                .call::<_, FormedResponse>("/raft/formed", &req, limit)
                .await;
            (name, r)
        });
    }
    while let Some(done) = asks.join_next().await {
        let Ok((peer, Ok(r))) = done else { continue };
        if r.formed && r.ran_before {
            asks.abort_all();
            return Err(format!(
                "this member ({me}) has no Raft state in its data directory, but {peer} knows it \
                 as a member of the formed cluster: its log is lost, and rejoining under the same \
                 name could make the cluster forget committed lease writes. Restore the data \
                 directory if you can; otherwise see \"Lost data directories\" in docs/cluster.md"
            ));
        }
    }
    Ok(())
}

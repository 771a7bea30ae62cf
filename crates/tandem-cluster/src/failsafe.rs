//! Failsafe mode (`[cluster] failsafe = true`): when the store cannot be reached, the primary
//! keeps its lease only while every other member confirms, over the signed peer channel, that
//! it is not primary and still sees the same lease. A member that confirmed at time `r` treats
//! the lease as renewed at `r`: it will not try to take it before `r + ttl` by its clock, which
//! is the same rule, with the same proof, as a renewal seen in the store (docs/design/lease.md).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use tandem_core::clock::{self, Instant};

use crate::metrics::{ClusterMetrics, ReasonLabel};
use crate::raft::peer;

/// What the lease holder claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub leader: String,
    pub token: u64,
}

/// This member's side: what it last knew, and when it last confirmed a claim.
#[derive(Default, Debug)]
pub struct Board {
    primary: AtomicBool,
    holder: Mutex<Option<(String, u64)>>,
    confirmed: Mutex<Option<Instant>>,
}

impl Board {
    /// Kept current by the agent.
    pub fn update(&self, primary: bool, holder: Option<(String, u64)>) {
        self.primary.store(primary, Ordering::Relaxed);
        if let Ok(mut h) = self.holder.lock() {
            *h = holder;
        }
    }

    /// When this member last confirmed the holder's claim.
    pub fn confirmed(&self) -> Option<Instant> {
        self.confirmed.lock().ok().and_then(|c| *c)
    }

    fn confirm(&self, claim: &Claim) -> Result<(), &'static str> {
        if self.primary.load(Ordering::Relaxed) {
            return Err("this member is primary");
        }
        let holder = self.holder.lock().map_err(|_| "lock")?.clone();
        if holder != Some((claim.leader.clone(), claim.token)) {
            return Err("the claim does not match the lease this member knows");
        }
        if let Ok(mut c) = self.confirmed.lock() {
            *c = Some(clock::now());
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Ctx {
    board: Arc<Board>,
    secret: Arc<str>,
    metrics: ClusterMetrics,
}

/// `POST /failsafe` on the peer address.
pub fn router(board: Arc<Board>, secret: Arc<str>, metrics: ClusterMetrics) -> Router {
    Router::new()
        .route("/failsafe", post(confirm))
        .with_state(Ctx {
            board,
            secret,
            metrics,
        })
}

async fn confirm(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers.get(peer::AUTH_HEADER).and_then(|v| v.to_str().ok());
    if let Err(why) = peer::verify(&ctx.secret, auth, "/failsafe", &body) {
        ctx.metrics
            .peer_rejected
            .get_or_create(&ReasonLabel {
                reason: why.replace(' ', "_"),
            })
            .inc();
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let Ok(claim) = serde_json::from_slice::<Claim>(&body) else {
        ctx.metrics
            .peer_rejected
            .get_or_create(&ReasonLabel {
                reason: "malformed".into(),
            })
            .inc();
        return (StatusCode::BAD_REQUEST, "malformed claim").into_response();
    };
    match ctx.board.confirm(&claim) {
        Ok(()) => (StatusCode::OK, "true").into_response(),
        Err(why) => (StatusCode::CONFLICT, why).into_response(),
    }
}

/// Ask every other member to confirm `claim`; true only if all of them do within `timeout`.
pub async fn confirm_all(
    peers: &BTreeMap<String, String>,
    me: &str,
    secret: &Arc<str>,
    claim: &Claim,
    timeout: Duration,
) -> bool {
    let calls: Vec<_> = peers
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .map(|(_, addr)| {
            let client = peer::PeerClient::new(addr.clone(), secret.clone());
            let claim = claim.clone();
            tokio::spawn(async move {
                client
                    .call::<Claim, bool>("/failsafe", &claim, timeout)
                    .await
                    .unwrap_or(false)
            })
        })
        .collect();
    let mut all = true;
    for c in calls {
        all &= c.await.unwrap_or(false);
    }
    all
}

//! The TCP path: one client connection relayed to one server, both directions copied with
//! half-close, the server chosen again when connecting fails.

use std::net::SocketAddr;
use std::sync::Arc;

use tandem_core::clock;
use tokio::net::TcpStream;

use crate::balance::PickContext;
use crate::http::FrontendRuntime;
use crate::metrics::ErrorKind;
use crate::server::Server;

pub(crate) async fn serve(mut client: TcpStream, peer: SocketAddr, rt: Arc<FrontendRuntime>) {
    let start = clock::now();
    let backend = &rt.backend;
    let cfg = &backend.cfg;
    let mut tried: Vec<Arc<Server>> = Vec::new();
    for attempt in 0..=cfg.retries {
        let picked = {
            let sel = backend.selection();
            backend.picker.pick(
                &sel,
                &PickContext {
                    client: peer.ip(),
                    hash_key: None,
                    tried: &tried,
                },
            )
        };
        let Some(server) = picked else { break };
        if attempt > 0 {
            backend.metrics.retries.inc();
        }
        tried.push(server.clone());
        let _guard = server.inflight_guard();
        let upstream =
            match tokio::time::timeout(cfg.connect_timeout.get(), TcpStream::connect(server.addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(_)) | Err(_) => {
                    server.passive_failure(cfg.health.fall, "connect");
                    backend.metrics.error(ErrorKind::Connect);
                    continue;
                }
            };
        server.passive_ok();
        let _ = upstream.set_nodelay(true);
        let mut upstream = upstream;
        let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        if rt.access_log {
            let (up, down) = result.as_ref().map_or((0, 0), |&(a, b)| (a, b));
            tracing::info!(
                target: "tandem::access",
                frontend = %rt.name,
                backend = %backend.name,
                server = %server.name,
                client = %peer.ip(),
                bytes_in = up,
                bytes_out = down,
                error = result.as_ref().err().map(|e| e.to_string()),
                ms = clock::since(start).as_secs_f64() * 1000.0,
            );
        }
        return;
    }
    backend.metrics.error(ErrorKind::NoServer);
    tracing::warn!(frontend = %rt.name, backend = %backend.name, client = %peer, "no server accepted the connection");
}

//! The HTTP listener: accepts connections and serves the router over HTTP/1.1
//! (hyper), with the limits a public server needs against slow clients and
//! connection floods.
//!
//! - At most `RECARGA_MAX_CONNECTIONS` connections are served at once; past
//!   that, new ones wait in the kernel's backlog until one closes.
//! - A connection must send a request's headers within
//!   `RECARGA_HEADER_READ_TIMEOUT_S` (this also closes idle keep-alive
//!   connections), so a slowloris client is cut off.
//! - Request bodies and whole requests are bounded by the router's layers
//!   (`http::router`: `RECARGA_BODY_TIMEOUT_S`, `RECARGA_REQUEST_TIMEOUT_S`).
//! - Each request carries its peer address (`ConnectInfo`) for the IP
//!   allow-lists and per-address limits.
//! - On shutdown it stops accepting, lets every connection finish its
//!   in-flight request (keep-alive ends), and returns when all have closed.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Pause after a failed `accept` (e.g. out of file descriptors).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then drains.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        connections.spawn(connection(stream, peer, router.clone(), limits, slot, stop.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection; its slot is given back when it closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    _slot: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = router.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            return;
        }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, %peer, "connection ended with an error while draining");
    }
}

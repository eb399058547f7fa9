//! Serving the fleet's public HTTP surfaces (the webhook receiver, the dashboard) so that
//! nothing a stranger does holds the server: a client has [`Limits::header_timeout`] to send a
//! request's head (the same bounds an idle keep-alive connection), at most
//! [`Limits::max_connections`] connections are open at once (one more is answered 503 and
//! closed at once), and a shutdown closes idle connections at once and the rest within
//! [`Limits::drain`], whatever clients do. Bodies are read by the handlers, each within its own
//! size and time bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// The bounds of a server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's head (also the longest a keep-alive connection stays idle).
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a shutdown waits for requests in progress.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: 512,
            drain: Duration::from_secs(10),
        }
    }
}

/// The answer to a connection over the cap.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\nretry-after: 1\r\n\r\n";

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, never spin.
                    warn!(error = %e, "Could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            debug!(%peer, "Connection over the cap refused");
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        // Handlers may read the peer's address (`ConnectInfo<SocketAddr>`): the dashboard names
        // it in its audit stream.
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, req).await }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "Connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    info!(drain_secs = limits.drain.as_secs_f64(), "Stopped accepting; draining");
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        warn!("Connections still open after the drain deadline; closing them");
    }
    Ok(())
}

//! Serving: takes an already bound listener and a shutdown future, so tests bind port 0.
//!
//! The accept loop is the hub's own (hyper's HTTP/1 connection builder under the axum
//! router) because a server reachable beyond loopback needs what `axum::serve` does not set:
//! a deadline for a request's headers, which also closes keep-alive connections left idle
//! (a client that sends half a request line and then nothing no longer holds a connection
//! forever), and caps on open connections, in total and per client address, so that such
//! clients cannot use up the process's file descriptors.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::http::router;
use crate::state::AppState;

/// Serves the hub on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests (pushes included) finish and commit before returning.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let settings = state.config.server.clone();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    tracing::info!(
        %address,
        "cityhub is listening on http://{address}; the web console is at http://{address}/console/."
    );
    let endpoints = state.endpoints.clone();
    let app = router(state);
    let limits = Arc::new(ConnectionLimits::new(
        settings.max_connections,
        settings.max_connections_per_client,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(
            settings.header_read_timeout_secs.max(1),
        ));
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a moment rather than spin, and keep serving.
                tracing::warn!(error = %err, "Could not accept a connection; retrying shortly.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = limits.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        // Answers are small and clients wait for them: send each at once, not after Nagle's
        // delay.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "Could not set TCP_NODELAY on a connection.");
        }
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = connections
            .watch(http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "A connection ended with an error.");
            }
            drop(admitted);
        });
    }
    drop(listener);
    // Event streams never end by themselves: end them, or shutdown waits out its grace.
    endpoints.close_streams();
    // In-flight requests get `grace` to finish; a client that keeps a connection open longer
    // must not keep the process alive forever.
    tokio::select! {
        () = connections.shutdown() => {
            tracing::info!("cityhub has stopped: in-flight requests finished.");
        }
        () = tokio::time::sleep(grace) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "cityhub stopped before every connection closed: the shutdown grace period ran out."
            );
        }
    }
    Ok(())
}

/// Open connections, in total and per client address.
struct ConnectionLimits {
    total_cap: usize,
    per_client_cap: usize,
    open: Mutex<OpenConnections>,
    /// Refusals since the last warning, and when that was: one line a second at most, or a
    /// flood of clients becomes a flood of logs.
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    fn new(total_cap: u64, per_client_cap: u64) -> Self {
        let cap = |value: u64| match value {
            0 => usize::MAX,
            value => usize::try_from(value).unwrap_or(usize::MAX),
        };
        Self {
            total_cap: cap(total_cap),
            per_client_cap: cap(per_client_cap),
            open: Mutex::default(),
            refused: AtomicU64::new(0),
            last_warning: Mutex::default(),
        }
    }

    /// A place for one more connection from `client`, held until the guard drops; `None`
    /// (and a warning) when a cap is reached.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|err| err.into_inner());
        let from_client = open.per_client.get(&client).copied().unwrap_or(0);
        let refusal = if open.total >= self.total_cap {
            Some(("max_connections", self.total_cap))
        } else if from_client >= self.per_client_cap {
            Some(("max_connections_per_client", self.per_client_cap))
        } else {
            None
        };
        if let Some((setting, cap)) = refusal {
            let total = open.total;
            drop(open);
            self.warn_refused(client, setting, cap, total);
            return None;
        }
        open.per_client.insert(client, from_client + 1);
        open.total += 1;
        Some(Admitted {
            limits: Arc::clone(self),
            client,
        })
    }

    fn warn_refused(&self, client: IpAddr, setting: &str, cap: usize, open: usize) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|err| err.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.refused.store(0, Ordering::Relaxed);
        tracing::warn!(
            %client,
            setting = %format!("server.{setting}"),
            cap,
            open,
            refused,
            "A connection was closed on arrival: server.{setting} ({cap}) is reached. \
             Raise it if these clients are legitimate (behind a proxy every connection \
             comes from the proxy's address)."
        );
    }
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(|err| err.into_inner());
        open.total -= 1;
        if let Some(from_client) = open.per_client.get_mut(&self.client) {
            *from_client -= 1;
            if *from_client == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

/// The caller's address, where the hub's own accept loop put it (tests that call the router
/// directly have none).
pub fn peer_address(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down: finishing in-flight requests.");
}

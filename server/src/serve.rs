//! Serving: takes an already bound listener and a shutdown future, so tests bind port 0.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

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
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    tracing::info!(
        %address,
        "cityhub is listening on http://{address}; the web console is at http://{address}/console/."
    );
    let (stopping, stop_requested) = oneshot::channel::<()>();
    let endpoints = state.endpoints.clone();
    let signal = async move {
        shutdown.await;
        // Event streams never end by themselves: end them, or shutdown waits out its grace.
        endpoints.close_streams();
        let _ = stopping.send(());
    };
    // Answers are small and clients wait for them: send each at once, not after Nagle's
    // delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "Could not set TCP_NODELAY on a connection.");
        }
    });
    let serving = axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::pin!(serving);
    // Once shutdown is asked for, in-flight requests get `grace` to finish; a client that
    // keeps a connection open longer must not keep the process alive forever.
    let deadline = async move {
        if stop_requested.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut serving => {
            result?;
            tracing::info!("cityhub has stopped: in-flight requests finished.");
        }
        () = deadline => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "cityhub stopped before every connection closed: the shutdown grace period ran out."
            );
        }
    }
    Ok(())
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

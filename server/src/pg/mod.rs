//! The PostgreSQL front door: psql, DBeaver, Grafana, Superset, psycopg and pgjdbc speak
//! the PostgreSQL wire protocol (pgwire) to the hub.
//!
//! One query path, several doors: every statement runs through the same
//! [`cityhub_query::QueryEngine`] as `POST /api/v1/sql`, with the caller's view, masking,
//! closed SQL surface, limits and audit (`via: pg`). This module only speaks the protocol:
//! - [`startup`]: the password is a hub token; the database must be `cityhub`;
//! - [`session`]: what a PostgreSQL session has beyond queries (`SET`, `SHOW`,
//!   transactions as no-ops, cursors) and the cancel keys;
//! - [`queries`]: the simple and extended query protocols over the engine, streaming rows
//!   as DataFusion produces them.

mod errors;
mod queries;
mod session;
mod startup;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use pgwire::api::PgWireServerHandlers;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::messages::cancel::CancelRequest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::state::AppState;
use queries::PgQueries;
use session::CancelKeys;
use startup::TokenStartup;

/// The database name clients connect to: the hub serves one.
pub const DATABASE: &str = "cityhub";

/// Why the PostgreSQL door could not start.
#[derive(Debug, thiserror::Error)]
pub enum PgStartError {
    #[error("reading the TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("reading the TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS certificate and key do not fit together: {0}")]
    Tls(String),
}

/// Loads `server.pg_tls_cert` and `server.pg_tls_key` (PEM) when both are set.
pub fn tls_acceptor(state: &AppState) -> Result<Option<TlsAcceptor>, PgStartError> {
    let server = &state.config.server;
    if server.pg_tls_cert.is_empty() && server.pg_tls_key.is_empty() {
        return Ok(None);
    }
    let certificates = CertificateDer::pem_file_iter(Path::new(&server.pg_tls_cert))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| PgStartError::Certificate {
            path: server.pg_tls_cert.clone(),
            reason: err.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_file(Path::new(&server.pg_tls_key)).map_err(|err| {
        PgStartError::Key {
            path: server.pg_tls_key.clone(),
            reason: err.to_string(),
        }
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| PgStartError::Tls(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|err| PgStartError::Tls(err.to_string()))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` resolves. Connections
/// already open end with the process.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    warn_if_exposed(address, tls.is_some());
    tracing::info!(
        %address,
        tls = tls.is_some(),
        "cityhub speaks the PostgreSQL protocol on {address} (database {DATABASE}, the password is a token)."
    );
    let handlers = Arc::new(PgFrontDoor::new(state));
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %err, "Could not accept a PostgreSQL connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let handlers = handlers.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            metrics::gauge!("cityhub_pg_connections").increment(1.0);
            if let Err(err) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!(%peer, error = %err, "A PostgreSQL connection ended with an error.");
            }
            metrics::gauge!("cityhub_pg_connections").decrement(1.0);
        });
    }
    tracing::info!("The PostgreSQL door has stopped accepting connections.");
    Ok(())
}

/// Tokens travel as passwords: in clear text unless the connection is encrypted.
fn warn_if_exposed(address: SocketAddr, tls: bool) {
    if !tls && !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "The PostgreSQL door listens beyond this machine without TLS: tokens cross the \
             network in clear text. Set server.pg_tls_cert and server.pg_tls_key."
        );
    }
}

/// The handlers pgwire calls for every connection; per-connection state lives in the
/// connection's session extensions (see [`session::Session`]).
struct PgFrontDoor {
    queries: Arc<PgQueries>,
    startup: Arc<TokenStartup>,
    cancels: Arc<CancelKeys>,
}

impl PgFrontDoor {
    fn new(state: AppState) -> Self {
        let cancels = Arc::new(CancelKeys::default());
        Self {
            queries: Arc::new(PgQueries::new(state.clone())),
            startup: Arc::new(TokenStartup::new(state, cancels.clone())),
            cancels,
        }
    }
}

impl PgWireServerHandlers for PgFrontDoor {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancels.clone()
    }
}

#[async_trait::async_trait]
impl CancelHandler for CancelKeys {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancel(request.pid, &request.secret_key);
    }
}

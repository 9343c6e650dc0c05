//! `cityhub serve [--demo]`: the hub until Ctrl-C or SIGTERM.

use std::time::Instant;

use anyhow::Context;
use cityhub_config::Config;
use cityhub_server::tasks::Tasks;
use cityhub_server::{AppState, serve, telemetry};

use crate::demo;

/// Opens the hub, loads the demo city if asked, serves, and shuts down back to front:
/// stop accepting, let in-flight requests commit, commit what the feeds consumed, then
/// store the audit log's last events.
pub async fn run(config: Config, with_demo: bool) -> anyhow::Result<()> {
    telemetry::init_logging(&config.log.level, &config.log.format);
    let state = AppState::open(config.clone()).await?;
    if with_demo {
        let started = Instant::now();
        let loaded = demo::load(&state).await.context("loading the demo city")?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            fresh = loaded.fresh,
            "The demo city is ready."
        );
        println!("{}", loaded.describe());
    }
    let listener = tokio::net::TcpListener::bind(&config.server.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.bind))?;
    if with_demo {
        println!(
            "Web console: http://{}/console/ (sign in with one of the tokens above)",
            listener.local_addr()?
        );
    }
    let feeds = cityhub_ingest::kafka::KafkaFeeds::start(
        &state.ingest,
        &config.ingest.kafka,
        state.kafka.clone(),
        state.cameras.settings().liveness,
    )
    .await
    .context("starting the Kafka feeds")?;
    // The PostgreSQL door stops accepting when the HTTP one does.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let postgres = start_postgres(&state, stopped.clone()).await?;
    let flight = start_flight(&state, stopped).await?;
    let tasks = Tasks::start(&state);
    // The demo city's cameras stay alive only while something sends keepalives.
    let platform = with_demo.then(|| tokio::spawn(demo::cameras::simulate(state.clone())));
    let shutdown = async move {
        serve::shutdown_signal().await;
        let _ = stop.send(true);
    };
    serve::run(listener, state.clone(), shutdown).await?;
    if let Some(postgres) = postgres {
        postgres.abort();
    }
    if let Some(flight) = flight {
        flight.abort();
    }
    tasks.stop();
    if let Some(platform) = platform {
        platform.abort();
    }
    // Commit what the feeds consumed before the process ends.
    feeds.stop().await;
    state.audit.flush().await;
    Ok(())
}

/// Listens for PostgreSQL clients on `server.pg_bind` (unless it is empty) until `stopped`.
async fn start_postgres(
    state: &AppState,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let address = &state.config.server.pg_bind;
    if address.is_empty() {
        return Ok(None);
    }
    let tls = cityhub_server::pg::tls_acceptor(state)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen for PostgreSQL clients on {address} (server.pg_bind)")
        })?;
    let until = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    Ok(Some(tokio::spawn(cityhub_server::pg::run(
        listener,
        state.clone(),
        tls,
        until,
    ))))
}

/// Listens for Arrow Flight SQL clients on `server.flight_bind` (unless it is empty) until
/// `stopped`.
async fn start_flight(
    state: &AppState,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>> {
    let address = &state.config.server.flight_bind;
    if address.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen for Flight SQL clients on {address} (server.flight_bind)")
        })?;
    let until = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    Ok(Some(tokio::spawn(cityhub_server::flight::run(
        listener,
        state.clone(),
        until,
    ))))
}

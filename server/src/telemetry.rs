//! Logging (`tracing`) and the process-wide Prometheus registry.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Sets up logging to stderr: `text` for people, `json` for log shippers.
/// `RUST_LOG`, when set, wins over the configured level.
pub fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second call (tests start several hubs) keeps the first subscriber.
    drop(result);
}

/// The process-wide Prometheus recorder; installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    handle
                }
                // Another recorder is installed (embedding in a bigger program): keep a
                // private one so /metrics still answers.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

fn describe_metrics() {
    metrics::describe_counter!(
        "cityhub_http_requests_total",
        "HTTP requests answered, by route, method and status."
    );
    metrics::describe_histogram!(
        "cityhub_http_request_duration_seconds",
        "Time to answer HTTP requests, by route."
    );
    metrics::describe_counter!("cityhub_push_rows_total", "Rows committed by pushes.");
    metrics::describe_counter!(
        "cityhub_push_bytes_total",
        "Request body bytes of committed pushes."
    );
    metrics::describe_counter!(
        "cityhub_push_rows_rejected_total",
        "Rows refused by validation."
    );
    metrics::describe_histogram!(
        "cityhub_commit_seconds",
        "Time from the first commit attempt to a committed snapshot."
    );
    metrics::describe_counter!(
        "cityhub_commit_retries_total",
        "Commits retried after losing a race to a concurrent writer."
    );
    metrics::describe_counter!(
        "cityhub_upsert_rows_replaced_total",
        "Stored rows of keyed datasets replaced by a newer row with the same key."
    );
    metrics::describe_counter!(
        "cityhub_upsert_files_rewritten_total",
        "Stored files of keyed datasets rewritten without the rows an upsert replaced."
    );
    metrics::describe_gauge!(
        "cityhub_queries_running",
        "SQL queries whose result stream is still open."
    );
}

/// Middleware: counts requests by matched route (never the raw path, which would explode
/// the label set) and records their duration.
pub async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "cityhub_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!("cityhub_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

//! `cityhub sql`: one query, locally or against a server, printed for a person or a pipe.

use std::io::Write;

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use cityhub_catalog::Principal;
use cityhub_config::Config;
use cityhub_server::AppState;
use futures::StreamExt;

pub async fn run(
    config: Config,
    sql: &str,
    format: &str,
    server: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<()> {
    if !["table", "csv", "json"].contains(&format) {
        bail!("--format must be table, csv or json, not {format:?}");
    }
    match server {
        Some(server) => remote(server, token.unwrap_or_default(), sql, format).await,
        None => local(config, sql, format).await,
    }
}

/// Queries the local data folder as its operator (whoever can read the folder can read the
/// files anyway).
async fn local(config: Config, sql: &str, format: &str) -> anyhow::Result<()> {
    let state = AppState::open(config).await?;
    let operator = Principal::local_operator();
    let result = state
        .query
        .execute(&operator, sql, &[])
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut batches = Vec::new();
    let mut stream = result.batches;
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(|err| anyhow::anyhow!("{err}"))?);
    }
    // The query's audit entry is written when its stream ends; store it before exiting.
    drop(stream);
    state.audit.flush().await;
    print_batches(&result.schema, &batches, format)
}

async fn remote(server: &str, token: &str, sql: &str, format: &str) -> anyhow::Result<()> {
    let accept = match format {
        "csv" => "text/csv",
        "json" => "application/json",
        _ => "application/vnd.apache.arrow.stream",
    };
    let url = format!("{}/api/v1/sql", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .header("accept", accept)
        .body(sql.to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}");
    }
    if format == "table" {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        return print_batches(&schema, &batches, format);
    }
    std::io::stdout().write_all(&body)?;
    Ok(())
}

fn print_batches(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    format: &str,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        "csv" => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for batch in batches {
                writer.write(batch)?;
            }
        }
        "json" => {
            let mut writer = arrow::json::ArrayWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            writeln!(out)?;
        }
        _ => {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if batches.is_empty() {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                        schema.clone()
                    )])?
                )?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
    }
    Ok(())
}

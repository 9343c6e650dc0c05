//! End-to-end: table lifecycle. Compaction on demand and by policy, with pushes landing
//! while it runs, its refusals, and what the dataset says about its storage.

use std::time::Duration;

use crate::support::{self, TestServer, read_rows, row_count};
use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use cityhub_catalog::Role;
use serde_json::{Value, json};

const NDJSON: &str = "application/x-ndjson";

/// A hub that compacts only when asked (the background job would race the assertions).
async fn manual_hub() -> TestServer {
    TestServer::spawn_with(|config| config.compaction.enabled = false).await
}

/// `pushes` pushes of `rows` rows each, with `at` running backwards so that sorting shows.
async fn push_many(server: &TestServer, token: &str, dataset: &str, pushes: i64, rows: i64) {
    for push in 0..pushes {
        let body: String = (0..rows)
            .map(|row| {
                let id = push * rows + row;
                let at = chrono::DateTime::from_timestamp(1_800_000_000 - id * 7, 0)
                    .expect("a time")
                    .to_rfc3339();
                format!(
                    "{{\"id\": {id}, \"kind\": \"k{}\", \"score\": {id}.25, \"at\": \"{at}\"}}\n",
                    id % 3
                )
            })
            .collect();
        let (status, answer) = server.push(token, dataset, NDJSON, body).await;
        assert_eq!(status, 201, "{answer}");
    }
}

async fn sql(server: &TestServer, token: &str, sql: &str) -> Value {
    let response = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(sql.to_string())
        .send()
        .await
        .expect("request");
    let (status, body) = support::split(response).await;
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

const SUMMARY: &str = "SELECT kind, count(*) AS n, sum(score) AS total, min(id) AS first \
                       FROM gongan.events GROUP BY kind ORDER BY kind";

#[tokio::test]
async fn compaction_merges_small_files_keeps_every_row_and_sorts_them() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 30, 5).await;
    let before = sql(&server, &server.admin, SUMMARY).await;
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    assert_eq!(described["storage"]["files"], 30, "{described}");
    assert_eq!(described["storage"]["small_files"], 30);
    assert_eq!(described["storage"]["last_compaction_at"], Value::Null);

    let (status, report) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.events/compact",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            &report["files_before"],
            &report["files_after"],
            &report["rows"]
        ),
        (&json!(30), &json!(1), &json!(150)),
        "{report}"
    );
    let snapshot = report["snapshot_id"].as_i64().expect("a snapshot");

    // The same answers from one file, whose rows are sorted by the first timestamp column.
    assert_eq!(sql(&server, &server.admin, SUMMARY).await, before);
    let batches = read_rows(&server.state, &dataset).await;
    assert_eq!(row_count(&batches), 150);
    let times: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("at")
                .expect("at")
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec()
        })
        .collect();
    assert!(times.is_sorted(), "rows are written sorted by `at`");

    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    assert_eq!(described["storage"]["files"], 1, "{described}");
    assert_eq!(described["snapshot_id"], snapshot);
    assert!(described["storage"]["last_compaction_at"].is_string());
    let (_, snapshots) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events/snapshots")
        .await;
    assert_eq!(snapshots[0]["operation"], "compact", "{snapshots}");

    // A second compaction has nothing to merge and commits nothing.
    let (status, again) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.events/compact",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["snapshot_id"], Value::Null, "{again}");
    assert_eq!(again["files_after"], 1);

    // Audited with who asked and what it did.
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    let entry = audit
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "compact" && e["detail"]["snapshot_id"] == snapshot)
        .cloned()
        .unwrap_or_else(|| panic!("no compact entry in {audit}"));
    assert_eq!(entry["principal"], "test-gongan-producer");
    assert_eq!(entry["dataset"], "gongan.events");

    // Prometheus counts it.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_compactions_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cityhub_compaction_rows_total "),
        "{metrics}"
    );
}

#[tokio::test]
async fn compaction_is_refused_to_strangers_and_for_unknown_datasets() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 3, 2).await;
    server.department("minzheng").await;
    let other_producer = server.token("minzheng", Role::Producer).await;
    let analyst = server.token("gongan", Role::Analyst).await;
    let path = "/api/v1/datasets/gongan.events/compact";

    for (token, who) in [
        (&other_producer, "another department"),
        (&analyst, "an analyst"),
    ] {
        let (status, body) = server.post_json(token, path, json!({})).await;
        assert_eq!(status, 403, "{who}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("department gongan"), "{who}: {message}");
    }
    let (status, body) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.nothing/compact",
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .post_json(&producer, "/api/v1/datasets/no-dot/compact", json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.post_json("wrong-token", path, json!({})).await;
    assert_eq!(status, 401, "{body}");
    // Nothing changed.
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    assert_eq!(described["storage"]["files"], 3, "{described}");
}

#[tokio::test]
async fn pushes_that_commit_while_a_compaction_runs_are_kept() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 40, 10).await;
    let compaction = {
        let (client, url, token) = (
            server.client.clone(),
            server.url("/api/v1/datasets/gongan.events/compact"),
            producer.clone(),
        );
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("compact");
            support::split(response).await
        })
    };
    // Six writers push while the compaction reads, merges and commits.
    let mut writers = Vec::new();
    for writer in 0..6i64 {
        let (client, url, token) = (
            server.client.clone(),
            server.url("/api/v1/datasets/gongan.events/rows"),
            producer.clone(),
        );
        writers.push(tokio::spawn(async move {
            for push in 0..5i64 {
                let id = 10_000 + writer * 100 + push;
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", NDJSON)
                    .body(format!("{{\"id\": {id}, \"kind\": \"late\"}}\n"))
                    .send()
                    .await
                    .expect("push");
                assert_eq!(response.status().as_u16(), 201);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let (status, report) = compaction.await.expect("compaction task");
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["rows"], 400,
        "the compaction merged the 40 files it read"
    );
    let counted = sql(
        &server,
        &server.admin,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids, \
         sum(CASE WHEN kind = 'late' THEN 1 ELSE 0 END) AS late FROM gongan.events",
    )
    .await;
    assert_eq!(counted, json!([{"n": 430, "ids": 430, "late": 30}]));
}

#[tokio::test]
async fn the_server_compacts_a_dataset_with_too_many_small_files_by_itself() {
    let server = TestServer::spawn_with(|config| {
        config.compaction.interval_secs = 1;
        config.compaction.min_small_files = 4;
    })
    .await;
    // The jobs `cityhub serve` runs beside the listener.
    let tasks = cityhub_server::tasks::Tasks::start(&server.state);
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 6, 3).await;
    let mut files = Value::Null;
    for _ in 0..100 {
        let (_, described) = server
            .get(&server.admin, "/api/v1/datasets/gongan.events")
            .await;
        files = described["storage"]["files"].clone();
        if files == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files, 1, "the background job merged the six files");
    assert_eq!(
        sql(
            &server,
            &server.admin,
            "SELECT count(*) AS n FROM gongan.events"
        )
        .await,
        json!([{"n": 18}])
    );
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "compact" && e["principal"] == "cityhub"),
        "the hub's own compaction is audited as the hub: {audit}"
    );
    tasks.stop();
}

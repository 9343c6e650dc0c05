//! End-to-end: table lifecycle. Compaction on demand and by policy, with pushes landing
//! while it runs, its refusals, and what the dataset says about its storage.

use std::time::Duration;

use crate::support::{self, TestServer, read_rows, row_count, sql_ok as sql};
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

/// The object files of the data folder, relative to the object store's root.
fn stored_files(server: &TestServer) -> Vec<String> {
    let root = server.data_dir.path().join("objects");
    let mut found = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(&root).expect("under root");
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

/// A stray file in a dataset's folder, as a crash between write and commit leaves one,
/// last modified `age` ago.
fn orphan(server: &TestServer, dataset_id: i64, name: &str, age: Duration) -> String {
    let key = format!("datasets/{dataset_id}/2026-11-27/{name}.parquet");
    let path = server.data_dir.path().join("objects").join(&key);
    std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
    std::fs::write(&path, b"PAR1 half-written").expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_modified(std::time::SystemTime::now() - age)
        .expect("set mtime");
    key
}

async fn dataset_id(server: &TestServer, name: &str) -> i64 {
    let name = cityhub_catalog::DatasetName::parse(name).expect("name");
    server
        .state
        .catalog
        .dataset(&name)
        .await
        .expect("catalog")
        .expect("dataset")
        .id
}

#[tokio::test]
async fn garbage_collection_expires_replaced_snapshots_and_deletes_their_files_and_orphans() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 4, 5).await;
    let id = dataset_id(&server, &dataset).await;
    let (_, snapshots) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events/snapshots")
        .await;
    let first_snapshot = snapshots[3]["id"].as_i64().expect("id");
    let (status, report) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.events/compact",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let old_orphan = orphan(&server, id, "crashed", Duration::from_secs(2 * 3600));
    let young_orphan = orphan(&server, id, "in-flight", Duration::from_secs(10));
    assert_eq!(stored_files(&server).len(), 4 + 1 + 2);

    // Today: every snapshot is within retention, only the old orphan goes.
    let now = server.state.clock.now();
    let retention = server.state.retention.clone();
    let today = server
        .state
        .ingest
        .collect_garbage(None, &retention, now, false)
        .await
        .expect("gc");
    assert_eq!(
        (today.snapshots_expired, today.files_expired, today.orphans),
        (0, 0, 1),
        "{today:?}"
    );
    assert_eq!(today.removed[0].key, old_orphan);
    assert!(!stored_files(&server).contains(&old_orphan));
    assert!(stored_files(&server).contains(&young_orphan));
    // Time travel to the first push still works.
    let old = sql(
        &server,
        &server.admin,
        &format!("SELECT count(*) AS n FROM gongan.events VERSION AS OF {first_snapshot}"),
    )
    .await;
    assert_eq!(old, json!([{"n": 5}]));

    // Eight days on (retention is seven): a dry run lists, a real run deletes the four
    // files the compaction replaced; the compacted file and the rows stay.
    let later = now + chrono::Duration::days(8);
    let dry = server
        .state
        .ingest
        .collect_garbage(None, &retention, later, true)
        .await
        .expect("dry run");
    assert_eq!(
        (dry.snapshots_expired, dry.files_expired),
        (4, 4),
        "{dry:?}"
    );
    assert_eq!(
        stored_files(&server).len(),
        4 + 1 + 1,
        "a dry run deletes nothing"
    );
    let run = server
        .state
        .ingest
        .collect_garbage(None, &retention, later, false)
        .await
        .expect("gc");
    assert_eq!(
        (run.snapshots_expired, run.files_expired, run.orphans),
        (4, 4, 1),
        "the young orphan is two hours older now: {run:?}"
    );
    assert!(run.bytes_reclaimed > 0);
    let left = stored_files(&server);
    assert_eq!(left.len(), 1, "only the compacted file is left: {left:?}");
    assert_eq!(
        sql(
            &server,
            &server.admin,
            "SELECT count(*) AS n FROM gongan.events"
        )
        .await,
        json!([{"n": 20}])
    );
    // The expired snapshot is gone for time travel, with a clear answer.
    let response = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(&server.admin)
        .header("content-type", "text/plain")
        .body(format!(
            "SELECT count(*) FROM gongan.events VERSION AS OF {first_snapshot}"
        ))
        .send()
        .await
        .expect("request");
    let (status, body) = support::split(response).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is not a readable snapshot")),
        "{body}"
    );
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    assert!(described["last_gc_at"].is_string(), "{described}");
    assert_eq!(described["storage"]["snapshots"], 1, "{described}");
}

#[tokio::test]
async fn the_server_collects_garbage_by_itself_and_gc_dry_run_changes_nothing() {
    let server = TestServer::spawn_with(|config| {
        config.compaction.enabled = false;
        config.retention.gc_interval_secs = 1;
    })
    .await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 1, 3).await;
    let id = dataset_id(&server, &dataset).await;
    let stale = orphan(&server, id, "stale", Duration::from_secs(3 * 3600));
    let tasks = cityhub_server::tasks::Tasks::start(&server.state);
    let mut gone = false;
    for _ in 0..100 {
        if !stored_files(&server).contains(&stale) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tasks.stop();
    assert!(gone, "the background collection deleted the orphan");
    assert_eq!(stored_files(&server).len(), 1, "the committed file stays");
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "gc"
                && e["principal"] == "cityhub"
                && e["detail"]["orphans"] == 1),
        "{audit}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_gc_files_deleted_total{reason=\"orphan\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_schema_evolves_by_patch_and_pushes_use_it_at_once() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 1, 2).await;
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    let mut columns = described["columns"].as_array().expect("columns").clone();
    // Add a nullable column, drop `phone`'s sensitivity, widen the decimal.
    columns.push(json!({"name": "street", "type": "string"}));
    for column in &mut columns {
        if column["name"] == "phone" {
            column
                .as_object_mut()
                .expect("object")
                .remove("sensitivity");
        }
        if column["name"] == "amount" {
            column["type"] = json!("decimal(12,2)");
        }
    }
    let response = server
        .client
        .patch(server.url("/api/v1/datasets/gongan.events"))
        .bearer_auth(&producer)
        .json(&json!({"columns": columns, "sort_key": ["kind", "at"]}))
        .send()
        .await
        .expect("request");
    let (status, changed) = support::split(response).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["schema_version"], 2);
    assert_eq!(changed["sort_key"], json!(["kind", "at"]));
    // The next push carries the new column; old rows read NULL in it.
    let (status, body) = server
        .push(
            &producer,
            &dataset,
            NDJSON,
            "{\"id\": 99, \"street\": \"玉溪路\", \"amount\": 1234567890.12}\n",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        sql(
            &server,
            &server.admin,
            "SELECT id, street FROM gongan.events ORDER BY id"
        )
        .await,
        json!([{"id": 0, "street": null}, {"id": 1, "street": null}, {"id": 99, "street": "玉溪路"}])
    );
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    assert_eq!(
        described["schema_versions"].as_array().map(Vec::len),
        Some(2)
    );
    // The sensitivity change is audited, naming the column.
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    let entry = audit
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "dataset_change")
        .cloned()
        .unwrap_or_else(|| panic!("no dataset_change in {audit}"));
    assert_eq!(
        entry["detail"]["sensitivity_changes"],
        json!([{"column": "phone", "from": "phone", "to": null}])
    );
}

#[tokio::test]
async fn impossible_schema_changes_are_refused_naming_each_column() {
    let server = manual_hub().await;
    server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let patch = |token: String, body: Value| {
        let request = server
            .client
            .patch(server.url("/api/v1/datasets/gongan.events"))
            .bearer_auth(token)
            .json(&body);
        async move { support::split(request.send().await.expect("request")).await }
    };
    // Dropped `phone`, `id` int64 -> string, `at` made NOT NULL... from nullable, a new
    // NOT NULL column.
    let columns = json!([
        {"name": "id", "type": "string", "nullable": false},
        {"name": "kind", "type": "string"},
        {"name": "at", "type": "timestamp", "nullable": false},
        {"name": "score", "type": "float64"},
        {"name": "ok", "type": "bool"},
        {"name": "day", "type": "date"},
        {"name": "amount", "type": "decimal(10,3)"},
        {"name": "extra", "type": "int32", "nullable": false}
    ]);
    let (status, body) = patch(producer.clone(), json!({"columns": columns})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "schema_change_refused");
    let problems: Vec<&str> = body["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "column phone: dropping a column",
        "column id: changing int64 to string",
        "column at: making a nullable column NOT NULL",
        "column amount: changing decimal(10,2) to decimal(10,3)",
        "column extra: an added column must be nullable",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected} missing from {problems:?}"
        );
    }
    // Nothing changed.
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events")
        .await;
    assert_eq!(described["schema_version"], 1);

    // Other bad input: an empty change, an unknown field, a sort key on no column,
    // strangers and unknown datasets.
    let (status, body) = patch(producer.clone(), json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("columns"))
    );
    let (status, body) = patch(producer.clone(), json!({"colums": []})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = patch(producer.clone(), json!({"sort_key": ["nope"]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sort_key[0]")),
        "{body}"
    );
    server.department("minzheng").await;
    let stranger = server.token("minzheng", Role::Producer).await;
    let (status, body) = patch(stranger, json!({"sort_key": ["kind"]})).await;
    assert_eq!(status, 403, "{body}");
    let response = server
        .client
        .patch(server.url("/api/v1/datasets/gongan.nothing"))
        .bearer_auth(&producer)
        .json(&json!({"sort_key": []}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn a_delete_rewrites_only_the_files_holding_matching_rows() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    // Three files: ids 0-9, 10-19, 20-29.
    push_many(&server, &producer, &dataset, 3, 10).await;
    let (_, snapshots) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events/snapshots")
        .await;
    let before = snapshots[0]["id"].as_i64().expect("id");
    let files_before: Vec<String> = read_paths(&server, &dataset).await;

    // ids 12 and 14: both in the second file; the others are ruled out by statistics.
    let (status, report) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.events/deletes",
            json!({"where": "id IN (12, 14) OR (id > 15 AND id < 17)"}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rows_deleted"], 3, "{report}");
    assert_eq!(report["files_rewritten"], 1, "{report}");
    let snapshot = report["snapshot_id"].as_i64().expect("snapshot");
    let files_after = read_paths(&server, &dataset).await;
    assert!(files_after.contains(&files_before[0]) && files_after.contains(&files_before[2]));
    assert!(
        !files_after.contains(&files_before[1]),
        "the second file was rewritten"
    );

    // Visible at once; the old snapshot still reads the rows until retention expires it.
    assert_eq!(
        sql(
            &server,
            &server.admin,
            "SELECT count(*) AS n FROM gongan.events"
        )
        .await,
        json!([{"n": 27}])
    );
    assert_eq!(
        sql(
            &server,
            &server.admin,
            &format!("SELECT count(*) AS n FROM gongan.events VERSION AS OF {before} WHERE id IN (12, 14, 16)")
        )
        .await,
        json!([{"n": 3}])
    );
    let (_, snapshots) = server
        .get(&server.admin, "/api/v1/datasets/gongan.events/snapshots")
        .await;
    assert_eq!(snapshots[0]["id"], snapshot);
    assert_eq!(snapshots[0]["operation"], "delete");

    // NULLs in the predicate's column are kept (NULL is not a match); no match, no commit.
    let (status, nothing) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.events/deletes",
            json!({"where": "kind = 'no such kind'"}),
        )
        .await;
    assert_eq!(status, 200, "{nothing}");
    assert_eq!(
        nothing,
        json!({"rows_deleted": 0, "files_rewritten": 0, "snapshot_id": null})
    );

    // A delete of a whole file removes it without writing an empty one.
    let (status, whole) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.events/deletes",
            json!({"where": "id < 10"}),
        )
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(
        (&whole["rows_deleted"], &whole["files_rewritten"]),
        (&json!(10), &json!(1))
    );
    assert_eq!(read_paths(&server, &dataset).await.len(), 2);

    // Audited with the predicate.
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "delete"
                && e["detail"]["where"] == "id IN (12, 14) OR (id > 15 AND id < 17)"
                && e["detail"]["rows_deleted"] == 3
                && e["principal"] == "test-gongan-producer"),
        "{audit}"
    );
}

async fn read_paths(server: &TestServer, dataset: &str) -> Vec<String> {
    let id = dataset_id(server, dataset).await;
    server
        .state
        .catalog
        .snapshot_files(id, None)
        .await
        .expect("files")
        .into_iter()
        .map(|f| f.path)
        .collect()
}

#[tokio::test]
async fn hostile_or_wrong_deletes_are_refused_naming_the_field_and_change_nothing() {
    let server = manual_hub().await;
    let dataset = server.events_dataset("gongan").await;
    support::people(&server).await;
    let producer = server.token("gongan", Role::Producer).await;
    push_many(&server, &producer, &dataset, 2, 5).await;
    let path = "/api/v1/datasets/gongan.events/deletes";
    for (predicate, expected) in [
        ("", "where: give the rows to delete"),
        ("id = 1; DROP TABLE gongan.events", "where: not a condition"),
        ("DROP TABLE gongan.events", "where: not a condition"),
        (
            "id IN (SELECT id FROM gongan.people)",
            "where: a subquery is not allowed",
        ),
        ("EXISTS (SELECT 1)", "where: a subquery is not allowed"),
        ("random() < 0.5", "where: random() is not allowed"),
        ("no_such_column = 1", "where: not a condition"),
    ] {
        let (status, body) = server
            .post_json(&producer, path, json!({"where": predicate}))
            .await;
        assert_eq!(status, 400, "{predicate}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(expected), "{predicate}: {message}");
    }
    let (status, body) = server
        .post_json(&producer, path, json!({"filter": "id = 1"}))
        .await;
    assert_eq!(status, 400, "an unknown field: {body}");
    server.department("minzheng").await;
    let stranger = server.token("minzheng", Role::Producer).await;
    let (status, body) = server
        .post_json(&stranger, path, json!({"where": "id = 1"}))
        .await;
    assert_eq!(status, 403, "{body}");
    let analyst = server.token("gongan", Role::Analyst).await;
    let (status, body) = server
        .post_json(&analyst, path, json!({"where": "id = 1"}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.nothing/deletes",
            json!({"where": "id = 1"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        sql(
            &server,
            &server.admin,
            "SELECT count(*) AS n FROM gongan.events"
        )
        .await,
        json!([{"n": 10}]),
        "nothing was deleted"
    );
    assert_eq!(read_paths(&server, &dataset).await.len(), 2);
}

#[tokio::test]
async fn rows_past_their_retention_are_deleted_by_the_hub() {
    let server = manual_hub().await;
    server.department("gongan").await;
    let mut spec = support::events_spec("gongan.visits");
    spec["row_retention"] = json!({"column": "at", "days": 30});
    let (status, body) = server
        .post_json(&server.admin, "/api/v1/datasets", spec)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["row_retention"], json!({"column": "at", "days": 30}));
    let now = server.state.clock.now();
    let at = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    let rows = format!(
        "{{\"id\": 1, \"at\": \"{}\"}}\n{{\"id\": 2, \"at\": \"{}\"}}\n{{\"id\": 3}}\n",
        at(40),
        at(1)
    );
    let (status, body) = server
        .push(&server.admin, "gongan.visits", NDJSON, rows)
        .await;
    assert_eq!(status, 201, "{body}");
    let deleted = cityhub_server::deletes::expire_rows(&server.state, now)
        .await
        .expect("row retention");
    assert_eq!(deleted, 1);
    assert_eq!(
        sql(
            &server,
            &server.admin,
            "SELECT id FROM gongan.visits ORDER BY id"
        )
        .await,
        json!([{"id": 2}, {"id": 3}]),
        "the 40-day-old row is gone; a row without a time is kept"
    );
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "delete"
                && e["principal"] == "cityhub"
                && e["detail"]["rows_deleted"] == 1),
        "{audit}"
    );

    // A retention on a column that is not a time, or on none, is refused by name.
    for (retention, field) in [
        (
            json!({"column": "kind", "days": 30}),
            "row_retention.column",
        ),
        (
            json!({"column": "nope", "days": 30}),
            "row_retention.column",
        ),
        (json!({"column": "at", "days": 0}), "row_retention.days"),
    ] {
        let mut spec = support::events_spec("gongan.bad_retention");
        spec["row_retention"] = retention;
        let (status, body) = server
            .post_json(&server.admin, "/api/v1/datasets", spec)
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{body}"
        );
    }
}

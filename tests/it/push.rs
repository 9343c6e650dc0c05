//! End-to-end: pushing rows in every format, every kind of bad input, idempotency,
//! partial acceptance, concurrency, durability across restarts and graceful shutdown.

use crate::support;
use std::sync::Arc;

use crate::support::{TestServer, read_rows, row_count};
use arrow::array::{AsArray, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use cityhub_catalog::Role;
use serde_json::{Value, json};

const NDJSON: &str = "application/x-ndjson";

async fn snapshot_count(server: &TestServer, dataset: &str) -> usize {
    let (status, body) = server
        .get(
            &server.admin,
            &format!("/api/v1/datasets/{dataset}/snapshots"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("array").len()
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .expect("id column")
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn ipc_stream(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).expect("writer");
        writer.write(batch).expect("write");
        writer.finish().expect("finish");
    }
    out
}

fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
    out
}

fn id_kind_batch(ids: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("k{i}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch")
}

#[tokio::test]
async fn all_five_formats_commit_snapshots() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;

    let ndjson = concat!(
        "{\"id\": 1, \"kind\": \"a\", \"at\": \"2024-05-01T08:30:00+08:00\", \"score\": 1.5, \"ok\": true, \"day\": \"2024-05-01\", \"amount\": \"12.30\", \"phone\": \"13800001111\"}\n",
        "\n",
        "{\"id\": 2, \"at\": 1714523400}\n"
    );
    let (status, body) = server.push(&producer, &dataset, NDJSON, ndjson).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["rows_accepted"], 2);
    assert_eq!(body["rows_rejected"], 0);
    let first_snapshot = body["snapshot_id"].as_i64().expect("snapshot id");

    let array = json!([{"id": 3, "kind": "b"}, {"id": 4, "score": 7}]);
    let (status, body) = server
        .push(
            &producer,
            &dataset,
            "application/json; charset=utf-8",
            array.to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let csv = "id,kind,at,amount\n5,c,2024-05-01T00:30:00Z,1.5\n6,\"quoted, with comma\",,\n";
    let (status, body) = server.push(&producer, &dataset, "text/csv", csv).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["rows_accepted"], 2);

    let (status, body) = server
        .push(
            &producer,
            &dataset,
            "application/vnd.apache.arrow.stream",
            ipc_stream(&id_kind_batch(&[7, 8, 9])),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["rows_accepted"], 3);

    let (status, body) = server
        .push(
            &producer,
            &dataset,
            "application/vnd.apache.parquet",
            parquet_bytes(&id_kind_batch(&[10])),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let batches = read_rows(&server.state, &dataset).await;
    assert_eq!(ids(&batches), (1..=10).collect::<Vec<_>>());
    assert_eq!(snapshot_count(&server, &dataset).await, 5);
    let (_, info) = server
        .get(&producer, &format!("/api/v1/datasets/{dataset}"))
        .await;
    assert_eq!(info["rows"], 10);
    assert_eq!(info["files"], 5);
    let (_, log) = server
        .get(&producer, &format!("/api/v1/datasets/{dataset}/snapshots"))
        .await;
    assert_eq!(log[4]["id"].as_i64(), Some(first_snapshot));
    assert_eq!(log[4]["operation"], "append");
    assert_eq!(log[0]["rows"], 10);
    assert_eq!(log[0]["parent_id"], log[1]["id"]);

    // The values survived the trip: check the first row's typed cells.
    let first = &batches[0];
    let at = first.column_by_name("at").expect("at");
    assert_eq!(
        at.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(0),
        1_714_523_400_000_000
    );
    let amount = first.column_by_name("amount").expect("amount");
    assert_eq!(
        amount
            .as_primitive::<arrow::datatypes::Decimal128Type>()
            .value(0),
        1230
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_rows_are_all_reported_and_nothing_is_committed() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let body = concat!(
        "{\"id\": 1, \"kind\": \"fine\"}\n",
        "{\"id\": \"two\"}\n",
        "{\"kind\": \"no id\"}\n",
        "{\"id\": 4, \"colour\": \"red\"}\n",
        "{\"id\": 5, \"at\": \"2024-05-01 08:00:00\"}\n",
        "{\"id\": 6, \"score\": [1]}\n",
        "{\"id\": 7, \n",
        "[1, 2]\n",
        "{\"id\": 9, \"amount\": \"1.234\"}\n",
        "{\"id\": null}\n"
    );
    let (status, body) = server.push(&producer, &dataset, NDJSON, body).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "rows_rejected");
    // Line 3 lacks the non-nullable id; a row with a bad value elsewhere and no id names both.
    let (_, both) = server
        .push(&producer, &dataset, NDJSON, "{\"score\": \"high\"}\n")
        .await;
    let columns: Vec<&str> = both["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|r| r["column"].as_str())
        .collect();
    assert_eq!(columns, vec!["score", "id"], "{both}");
    assert_eq!(body["rows_accepted"], 0);
    assert_eq!(body["rows_rejected"], 9);
    assert_eq!(body["snapshot_id"], Value::Null);
    let rejected = body["rejected"].as_array().expect("rejected");
    let at = |line: u64| {
        rejected
            .iter()
            .find(|r| r["line"] == line)
            .unwrap_or_else(|| panic!("line {line} not reported: {body}"))
    };
    assert_eq!(at(2)["column"], "id");
    assert!(
        at(2)["error"]
            .as_str()
            .unwrap_or("")
            .contains("expected a whole number")
    );
    assert_eq!(at(3)["column"], "id");
    assert!(at(3)["error"].as_str().unwrap_or("").contains("missing"));
    assert_eq!(at(4)["column"], "colour");
    assert!(at(5)["error"].as_str().unwrap_or("").contains("UTC offset"));
    assert_eq!(at(6)["column"], "score");
    assert!(
        at(7)["error"]
            .as_str()
            .unwrap_or("")
            .contains("not valid JSON")
    );
    assert!(
        at(8)["error"]
            .as_str()
            .unwrap_or("")
            .contains("expected a JSON object")
    );
    assert_eq!(at(9)["column"], "amount");
    assert!(
        at(10)["error"]
            .as_str()
            .unwrap_or("")
            .contains("not nullable")
    );
    assert_eq!(snapshot_count(&server, &dataset).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn partial_pushes_commit_the_good_rows_and_report_the_bad() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let csv = "id,score\n1,1.5\nx,2\n3,abc\n4,\n";
    let response = server
        .client
        .post(server.url(&format!("/api/v1/datasets/{dataset}/rows?partial=true")))
        .bearer_auth(&producer)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("request");
    let (status, body) = support::split(response).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["rows_accepted"], 2);
    assert_eq!(body["rows_rejected"], 2);
    let lines: Vec<u64> = body["rejected"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["line"].as_u64())
        .collect();
    assert_eq!(lines, vec![3, 4]);
    assert_eq!(ids(&read_rows(&server.state, &dataset).await), vec![1, 4]);
    server.stop().await;
}

#[tokio::test]
async fn malformed_bodies_of_every_format_are_refused_whole() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "application/json",
            b"[{\"id\": 1}, {\"id\": 2".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "application/json",
            b"{\"id\": 1}".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "application/vnd.apache.arrow.stream",
            b"not arrow at all".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "application/vnd.apache.parquet",
            b"PAR1garbagePAR1".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "text/csv",
            b"id,nosuch\n1,2\n".to_vec(),
            422,
            "schema_mismatch",
        ),
        ("text/csv", b"kind\nx\n".to_vec(), 422, "schema_mismatch"),
        (NDJSON, Vec::new(), 400, "empty_body"),
        (NDJSON, b"  \n\n".to_vec(), 400, "empty_body"),
        (
            "text/plain",
            b"{\"id\": 1}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        ("", b"{\"id\": 1}".to_vec(), 415, "unsupported_media_type"),
    ];
    for (content_type, body, expected_status, expected_code) in cases {
        let mut request = server
            .client
            .post(server.url(&format!("/api/v1/datasets/{dataset}/rows")))
            .bearer_auth(&producer)
            .body(body.clone());
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let (status, answer) = support::split(request.send().await.expect("request")).await;
        assert_eq!(
            status,
            expected_status,
            "{content_type} {:?}: {answer}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(answer["error"]["code"], expected_code, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 10)
        );
    }

    // A truncated Arrow stream: valid schema, cut inside the first batch.
    let full = ipc_stream(&id_kind_batch(&[1, 2, 3]));
    let (status, answer) = server
        .push(
            &producer,
            &dataset,
            "application/vnd.apache.arrow.stream",
            full[..full.len() - 20].to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    // An Arrow column of an incompatible type is a schema mismatch naming the column.
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["1"]))],
    )
    .expect("batch");
    let (status, answer) = server
        .push(
            &producer,
            &dataset,
            "application/vnd.apache.arrow.stream",
            ipc_stream(&wrong),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"id\""),
        "{answer}"
    );
    // Nulls in a non-nullable column of a Parquet body are rejected row by row.
    let nulls = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true)])),
        vec![Arc::new(Int32Array::from(vec![Some(1), None, Some(3)]))],
    )
    .expect("batch");
    let (status, answer) = server
        .push(
            &producer,
            &dataset,
            "application/vnd.apache.parquet",
            parquet_bytes(&nulls),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["line"], 2);
    assert_eq!(answer["rejected"][0]["column"], "id");

    assert_eq!(snapshot_count(&server, &dataset).await, 0);
    let objects = server.data_dir.path().join("objects");
    let files = walk(&objects);
    assert!(
        files.is_empty(),
        "refused pushes must leave no files: {files:?}"
    );
    server.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn oversize_bodies_answer_413() {
    let server = TestServer::spawn_with(|config| config.server.max_body_bytes = 1024).await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let body: String = (0..100)
        .map(|i| format!("{{\"id\": {i}, \"kind\": \"padding\"}}\n"))
        .collect();
    let (status, answer) = server.push(&producer, &dataset, NDJSON, body.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "body_too_large");
    // Chunked, without a Content-Length: the limit still holds while reading.
    let stream = futures::stream::iter(
        body.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _) = server
        .push(
            &producer,
            &dataset,
            NDJSON,
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(snapshot_count(&server, &dataset).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn pushes_are_authorised_by_role_and_department() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    server.department("jiaotong").await;
    let row = "{\"id\": 1}\n";
    let own = server.token("gongan", Role::Producer).await;
    let other = server.token("jiaotong", Role::Producer).await;
    let analyst = server.token("gongan", Role::Analyst).await;
    let dashboard = server.token("gongan", Role::Dashboard).await;
    assert_eq!(server.push(&own, &dataset, NDJSON, row).await.0, 201);
    assert_eq!(
        server.push(&server.admin, &dataset, NDJSON, row).await.0,
        201
    );
    assert_eq!(server.push(&other, &dataset, NDJSON, row).await.0, 403);
    assert_eq!(server.push(&analyst, &dataset, NDJSON, row).await.0, 403);
    assert_eq!(server.push(&dashboard, &dataset, NDJSON, row).await.0, 403);
    assert_eq!(server.push(&own, "gongan.nosuch", NDJSON, row).await.0, 404);
    for bad in [
        "gongan.events;drop",
        "gongan.ev'ents",
        "gongan%2F..%2Fevents",
        "GONGAN.events",
    ] {
        let (status, body) = server.push(&own, bad, NDJSON, row).await;
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
    }
    assert_eq!(snapshot_count(&server, &dataset).await, 2);
    server.stop().await;
}

#[tokio::test]
async fn idempotency_keys_make_retries_commit_once() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let send = |key: &'static str, body: &'static str| {
        server
            .client
            .post(server.url(&format!("/api/v1/datasets/{dataset}/rows")))
            .bearer_auth(&producer)
            .header("content-type", NDJSON)
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let (status, first) = support::split(
        send("batch-0001", "{\"id\": 1}\n{\"id\": 2}\n")
            .await
            .expect("r"),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = support::split(
        send("batch-0001", "{\"id\": 1}\n{\"id\": 2}\n")
            .await
            .expect("r"),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["snapshot_id"], first["snapshot_id"]);
    assert_eq!(again["rows_accepted"], 2);
    assert_eq!(again["replayed"], true);
    let (status, conflict) =
        support::split(send("batch-0001", "{\"id\": 3}\n").await.expect("r")).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "idempotency_key_reused");
    // Many concurrent retries of one new key still commit once.
    let retries: Vec<_> = (0..8)
        .map(|_| send("batch-0002", "{\"id\": 10}\n"))
        .collect();
    let answers = futures::future::join_all(retries).await;
    let mut snapshots = std::collections::HashSet::new();
    for answer in answers {
        let (status, body) = support::split(answer.expect("r")).await;
        assert!(status == 200 || status == 201, "{body}");
        snapshots.insert(body["snapshot_id"].as_i64());
    }
    assert_eq!(snapshots.len(), 1);
    assert_eq!(
        ids(&read_rows(&server.state, &dataset).await),
        vec![1, 2, 10]
    );
    assert_eq!(snapshot_count(&server, &dataset).await, 2);
    server.stop().await;
}

#[tokio::test]
async fn many_parallel_pushes_each_land_exactly_once() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let pushes = 64;
    let rows_each = 25;
    let requests: Vec<_> = (0..pushes)
        .map(|p| {
            let body: String = (0..rows_each)
                .map(|r| format!("{{\"id\": {}, \"kind\": \"p{p}\"}}\n", p * rows_each + r))
                .collect();
            server.push(&producer, &dataset, NDJSON, body)
        })
        .collect();
    let answers = futures::future::join_all(requests).await;
    let mut snapshot_ids = std::collections::HashSet::new();
    for (status, body) in answers {
        assert_eq!(status, 201, "{body}");
        assert!(snapshot_ids.insert(body["snapshot_id"].as_i64().expect("id")));
    }
    let batches = read_rows(&server.state, &dataset).await;
    assert_eq!(
        ids(&batches),
        (0..pushes * rows_each)
            .map(|i| i as i64)
            .collect::<Vec<_>>()
    );
    assert_eq!(snapshot_count(&server, &dataset).await, pushes);
    server.stop().await;
}

#[tokio::test]
async fn acknowledged_rows_survive_a_restart() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let (status, _) = server
        .push(&producer, &dataset, NDJSON, "{\"id\": 42}\n")
        .await;
    assert_eq!(status, 201);
    let config = (*server.state.config).clone();
    let TestServer {
        data_dir, state, ..
    } = server;
    drop(state);
    let reopened = cityhub_server::AppState::open(config)
        .await
        .expect("reopen");
    assert_eq!(ids(&read_rows(&reopened, &dataset).await), vec![42]);
    drop(data_dir);
}

#[tokio::test]
async fn shutdown_lets_in_flight_pushes_commit() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let rows: Vec<Vec<u8>> = (0..20)
        .map(|chunk| {
            (0..1000)
                .map(|i| format!("{{\"id\": {}, \"kind\": \"bulk\"}}\n", chunk * 1000 + i))
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    // The body is streamed through a one-slot channel, so the push is provably in flight
    // (headers sent, body being read) when shutdown is asked for.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), receiver))
    });
    let request = server
        .client
        .post(server.url(&format!("/api/v1/datasets/{dataset}/rows")))
        .bearer_auth(&producer)
        .header("content-type", NDJSON)
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let in_flight = tokio::spawn(request);
    let mut chunks = rows.into_iter();
    for chunk in chunks.by_ref().take(2) {
        sender.send(chunk).await.expect("send");
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let state = server.state.clone();
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for chunk in chunks {
        sender.send(chunk).await.expect("send");
    }
    drop(sender);
    let response = in_flight
        .await
        .expect("join")
        .expect("the push was answered");
    assert_eq!(response.status(), 201);
    let _data_dir = stopping.await.expect("server stopped");
    assert_eq!(row_count(&read_rows(&state, &dataset).await), 20_000);
}

#[tokio::test]
async fn hostile_json_does_not_hurt_the_server() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let hostile = vec![
        deep.clone(),
        format!("{{\"id\": 1, \"kind\": {deep}}}"),
        "{\"id\": 1e999}".to_string(),
        "{\"id\": 99999999999999999999999}".to_string(),
        "{\"kind\": \"\\ud800\"}".to_string(),
        "\u{feff}{\"id\": 1}".to_string(),
        "{\"id\": 1, \"id\": 2}".to_string(),
    ];
    for body in hostile {
        let (status, answer) = server
            .push(&producer, &dataset, NDJSON, format!("{body}\n"))
            .await;
        assert!((400..500).contains(&status), "{status} {answer}");
    }
    let (status, _) = server
        .push(
            &producer,
            &dataset,
            "text/csv",
            vec![0xff, 0xfe, b'\n', 0, 1, 2],
        )
        .await;
    assert!((400..500).contains(&status));
    assert_eq!(snapshot_count(&server, &dataset).await, 0);
    let (status, _) = server.get(&server.admin, "/api/v1/datasets").await;
    assert_eq!(status, 200, "the server still answers");
    server.stop().await;
}

#[tokio::test]
async fn the_in_memory_object_store_works_end_to_end() {
    let server = TestServer::spawn_with(|config| config.storage.url = "memory://".into()).await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let (status, body) = server
        .push(&producer, &dataset, NDJSON, "{\"id\": 5}\n")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids(&read_rows(&server.state, &dataset).await), vec![5]);
    assert!(
        walk(&server.data_dir.path().join("objects")).is_empty(),
        "nothing on disk"
    );
    server.stop().await;
}

//! End-to-end: upsert by primary key. A keyed dataset holds one row per key through
//! pushes, retries, concurrent writers, compactions and deletes; bad keys are refused at
//! registration and by `PATCH`.

use std::collections::BTreeMap;

use crate::support::{self, TestServer, sql_ok as sql};
use cityhub_catalog::Role;
use serde_json::{Value, json};

const NDJSON: &str = "application/x-ndjson";

/// `gongan.persons`, keyed by the ID number, with a masked name.
async fn persons(server: &TestServer) -> String {
    server.department("gongan").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({
                "name": "gongan.persons",
                "sharing": "unconditional",
                "primary_key": ["id_number"],
                "columns": [
                    {"name": "id_number", "type": "string", "nullable": false},
                    {"name": "name", "type": "string", "sensitivity": "person_name"},
                    {"name": "address", "type": "string"},
                    {"name": "version", "type": "int64"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    "gongan.persons".to_string()
}

fn person(id: u32, version: i64) -> String {
    format!(
        "{{\"id_number\": \"51102519800101{id:04}\", \"name\": \"张{id}\", \
         \"address\": \"内江市市中区{version}号\", \"version\": {version}}}\n"
    )
}

/// Every stored (id number, version), in id order, through the SQL front door.
async fn versions(server: &TestServer) -> Vec<(String, i64)> {
    let body = sql(
        server,
        &server.admin,
        "SELECT id_number, version FROM gongan.persons ORDER BY id_number, version",
    )
    .await;
    body.as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row["id_number"].as_str().expect("id").to_string(),
                row["version"].as_i64().expect("version"),
            )
        })
        .collect()
}

fn id(n: u32) -> String {
    format!("51102519800101{n:04}")
}

#[tokio::test]
async fn a_pushed_key_replaces_the_stored_row_and_a_keyed_retry_does_not_apply_twice() {
    let server = TestServer::spawn_with(|config| config.compaction.enabled = false).await;
    let dataset = persons(&server).await;
    let producer = server.token("gongan", Role::Producer).await;
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.persons")
        .await;
    assert_eq!(
        described["primary_key"],
        json!(["id_number"]),
        "{described}"
    );

    // Within one push the last row of a key wins.
    let body = [person(1, 1), person(2, 1), person(1, 2)].concat();
    let (status, answer) = server.push(&producer, &dataset, NDJSON, body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(versions(&server).await, vec![(id(1), 2), (id(2), 1)]);

    // A later push replaces the stored row of its key and adds the new key.
    let body = [person(2, 3), person(3, 3)].concat();
    let (status, answer) = server.push(&producer, &dataset, NDJSON, body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        versions(&server).await,
        vec![(id(1), 2), (id(2), 3), (id(3), 3)]
    );

    // A retry of a keyed push that already landed is answered from the record, even after
    // another push replaced its row: it does not replace it back.
    let keyed_push = |version: i64| {
        server
            .client
            .post(server.url("/api/v1/datasets/gongan.persons/rows"))
            .bearer_auth(&producer)
            .header("content-type", NDJSON)
            .header("idempotency-key", "persons-batch-7")
            .body(person(1, version))
            .send()
    };
    let (status, first) = support::split(keyed_push(4).await.expect("push")).await;
    assert_eq!(status, 201, "{first}");
    let (status, answer) = server.push(&producer, &dataset, NDJSON, person(1, 5)).await;
    assert_eq!(status, 201, "{answer}");
    let (status, replay) = support::split(keyed_push(4).await.expect("push")).await;
    assert_eq!(status, 200, "a replay commits nothing new: {replay}");
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["snapshot_id"], first["snapshot_id"]);
    assert_eq!(
        versions(&server).await,
        vec![(id(1), 5), (id(2), 3), (id(3), 3)]
    );

    // Masking and the snapshot log are those of any dataset.
    server.department("minzheng").await;
    let analyst = server.token("minzheng", Role::Analyst).await;
    let body = sql(
        &server,
        &analyst,
        "SELECT name FROM gongan.persons ORDER BY id_number",
    )
    .await;
    assert_eq!(body[0]["name"], "张*", "{body}");
    let (_, snapshots) = server
        .get(&server.admin, "/api/v1/datasets/gongan.persons/snapshots")
        .await;
    let operations: Vec<&str> = snapshots
        .as_array()
        .expect("snapshots")
        .iter()
        .filter_map(|s| s["operation"].as_str())
        .collect();
    assert_eq!(
        operations,
        ["upsert", "upsert", "upsert", "append"],
        "{snapshots}"
    );

    // Compaction and deletes keep one row per key.
    let (status, report) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.persons/compact",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["files_after"], 1, "{report}");
    let (status, deleted) = server
        .post_json(
            &producer,
            "/api/v1/datasets/gongan.persons/deletes",
            json!({"where": format!("id_number = '{}'", id(2))}),
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["rows_deleted"], 1, "{deleted}");
    let (status, answer) = server
        .push(
            &producer,
            &dataset,
            NDJSON,
            [person(3, 6), person(2, 6)].concat(),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        versions(&server).await,
        vec![(id(1), 5), (id(2), 6), (id(3), 6)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_keyed_writers_and_compactions_leave_one_row_per_key_the_last_commit_wins() {
    let server = TestServer::spawn_with(|config| config.compaction.enabled = false).await;
    let dataset = persons(&server).await;
    let producer = server.token("gongan", Role::Producer).await;
    const KEYS: u32 = 40;
    const WRITERS: i64 = 6;
    const ROUNDS: i64 = 8;
    // Every push carries every key, with a version saying who wrote it in which round, so
    // the last commit decides every row.
    let writer = |writer: i64| {
        let server = &server;
        let producer = producer.clone();
        let dataset = dataset.clone();
        async move {
            let mut committed = Vec::new();
            for round in 0..ROUNDS {
                let version = writer * 1000 + round;
                let body: String = (0..KEYS).map(|key| person(key, version)).collect();
                let (status, answer) = server.push(&producer, &dataset, NDJSON, body).await;
                assert_eq!(status, 201, "{answer}");
                committed.push((answer["snapshot_id"].as_i64().expect("snapshot"), version));
            }
            committed
        }
    };
    let compactor = async {
        for _ in 0..6 {
            let (status, report) = server
                .post_json(
                    &producer,
                    "/api/v1/datasets/gongan.persons/compact",
                    json!({}),
                )
                .await;
            // A compaction that keeps losing its files to the writers gives up cleanly.
            assert!(status == 200 || status == 409, "{status}: {report}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    // A second writer process: its own commit queue over the same catalog and store, so its
    // commits and the server's really race, and the loser plans its upsert again.
    let other_process = cityhub_ingest::Ingest::new(
        server.state.catalog.clone(),
        server.state.ingest.storage().clone(),
        server.state.config.ingest.clone(),
        server.state.audit.clone(),
        Default::default(),
    );
    let admin = server
        .state
        .catalog
        .principal_by_token_hash(&cityhub_catalog::token::hash_token(&server.admin))
        .await
        .expect("catalog")
        .expect("the admin");
    let other_writer = async {
        let mut committed = Vec::new();
        for round in 0..ROUNDS {
            let version = WRITERS * 1000 + round;
            let body: String = (0..KEYS).map(|key| person(key, version)).collect();
            let request = cityhub_ingest::PushRequest {
                format: cityhub_ingest::Format::NdJson,
                body: body.into_bytes().into(),
                partial: false,
                idempotency_key: None,
            };
            let outcome = other_process
                .push(&admin, "gongan.persons", request)
                .await
                .expect("the other process pushes");
            committed.push((outcome.snapshot_id.expect("committed"), version));
        }
        committed
    };
    let (results, other, ()) = tokio::join!(
        futures::future::join_all((0..WRITERS).map(writer)),
        other_writer,
        compactor
    );
    let (_, last_version) = results
        .into_iter()
        .flatten()
        .chain(other)
        .max()
        .expect("some commits");
    let stored = versions(&server).await;
    let expected: Vec<(String, i64)> = (0..KEYS).map(|key| (id(key), last_version)).collect();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn bad_keys_are_refused_at_registration_and_a_key_keeps_its_type() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    let spec = |primary_key: Value, id_column: Value| {
        json!({
            "name": "gongan.keyed",
            "primary_key": primary_key,
            "columns": [id_column, {"name": "score", "type": "float64", "nullable": false}]
        })
    };
    let not_null_id = json!({"name": "id", "type": "int64", "nullable": false});
    for (primary_key, id_column, field, expected) in [
        (
            json!(["id"]),
            json!({"name": "id", "type": "int64"}),
            "primary_key[0]",
            "\"id\" is nullable",
        ),
        (
            json!(["nope"]),
            not_null_id.clone(),
            "primary_key[0]",
            "\"nope\" is not a column",
        ),
        (
            json!(["id", "score"]),
            not_null_id.clone(),
            "primary_key[1]",
            "\"score\" is a float64",
        ),
        (
            json!(["id", "id"]),
            not_null_id.clone(),
            "primary_key[1]",
            "\"id\" is named twice",
        ),
    ] {
        let (status, body) = server
            .post_json(
                &server.admin,
                "/api/v1/datasets",
                spec(primary_key, id_column),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {message}");
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let (status, _) = server
        .get(&server.admin, "/api/v1/datasets/gongan.keyed")
        .await;
    assert_eq!(status, 404, "no refused registration left anything behind");

    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            spec(json!(["id"]), not_null_id),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let patch = |body: Value| {
        let request = server
            .client
            .patch(server.url("/api/v1/datasets/gongan.keyed"))
            .bearer_auth(&server.admin)
            .json(&body);
        async move { support::split(request.send().await.expect("request")).await }
    };
    // Nullable or retyped, the key would no longer identify rows across old and new files.
    let (status, body) = patch(json!({"columns": [
        {"name": "id", "type": "int64"},
        {"name": "score", "type": "float64", "nullable": false}
    ]}))
    .await;
    assert_eq!(status, 409, "{body}");
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("column id: a primary-key column keeps its type"),
        "{problems}"
    );
    // The key itself is fixed at registration.
    let (status, body) = patch(json!({"primary_key": ["score"]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].to_string().contains("primary_key"),
        "{body}"
    );
    let (_, described) = server
        .get(&server.admin, "/api/v1/datasets/gongan.keyed")
        .await;
    assert_eq!(described["primary_key"], json!(["id"]));
    assert_eq!(described["schema_version"], 1, "{described}");

    // A row without its key is rejected with its line, like any NOT NULL column.
    let producer = server.token("gongan", Role::Producer).await;
    let (status, body) = server
        .push(
            &producer,
            "gongan.keyed",
            NDJSON,
            "{\"id\": 1, \"score\": 1.0}\n{\"score\": 2.0}\n",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let rejected: BTreeMap<i64, String> = body["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["line"].as_i64().unwrap_or(0), r["column"].to_string()))
        .collect();
    assert!(rejected.get(&2).is_some_and(|f| f.contains("id")), "{body}");
}

//! End-to-end: `POST /api/v1/sql` in every format, refusals, parameters, roles, limits,
//! cancellation, and queries while pushes commit.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::TestServer;
use cityhub_catalog::Role;
use serde_json::{Value, json};

const NDJSON: &str = "application/x-ndjson";

async fn with_events(server: &TestServer) -> (String, String) {
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let rows: String = (1..=6)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"kind\": \"{}\", \"score\": {i}.5}}\n",
                if i % 2 == 0 { "even" } else { "odd" }
            )
        })
        .collect();
    let (status, body) = server.push(&producer, &dataset, NDJSON, rows).await;
    assert_eq!(status, 201, "{body}");
    (dataset, server.token("gongan", Role::Analyst).await)
}

async fn sql(server: &TestServer, token: &str, accept: &str, body: Value) -> reqwest::Response {
    let request = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(token)
        .header("accept", accept);
    let request = match body {
        Value::String(text) => request.header("content-type", "text/plain").body(text),
        other => request.json(&other),
    };
    request.send().await.expect("request")
}

#[tokio::test]
async fn results_come_in_every_format() {
    let server = TestServer::spawn().await;
    let (dataset, analyst) = with_events(&server).await;
    let query = json!(format!(
        "SELECT id, kind FROM {dataset} WHERE id <= 3 ORDER BY id"
    ));

    let response = sql(&server, &analyst, "application/json", query.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let rows: Value = response.json().await.expect("json");
    assert_eq!(
        rows,
        json!([{"id": 1, "kind": "odd"}, {"id": 2, "kind": "even"}, {"id": 3, "kind": "odd"}])
    );

    let text = sql(&server, &analyst, NDJSON, query.clone())
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(text.lines().count(), 3);
    assert_eq!(
        serde_json::from_str::<Value>(text.lines().next().unwrap_or("")).expect("line"),
        json!({"id": 1, "kind": "odd"})
    );

    let csv = sql(&server, &analyst, "text/csv", query.clone())
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(csv, "id,kind\n1,odd\n2,even\n3,odd\n");

    let arrow = sql(
        &server,
        &analyst,
        "application/vnd.apache.arrow.stream",
        query.clone(),
    )
    .await;
    assert_eq!(arrow.status(), 200);
    let bytes = arrow.bytes().await.expect("bytes");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("ipc");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    assert_eq!(support::row_count(&batches), 3);

    let parquet = sql(
        &server,
        &analyst,
        "application/vnd.apache.parquet",
        query.clone(),
    )
    .await;
    let bytes = parquet.bytes().await.expect("bytes");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
        .expect("parquet");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    assert_eq!(support::row_count(&batches), 3);

    // An empty result is still well-formed in every format.
    let empty = json!(format!("SELECT id, kind FROM {dataset} WHERE id > 100"));
    let rows: Value = sql(&server, &analyst, "application/json", empty.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows, json!([]));
    let csv = sql(&server, &analyst, "text/csv", empty)
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(csv, "id,kind\n");

    let refused = sql(&server, &analyst, "image/png", query).await;
    assert_eq!(refused.status(), 406);

    // curl --data-binary without a Content-Type sends form encoding: it is read as SQL text.
    let curl_default = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(&analyst)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("SELECT count(*) AS n FROM {dataset}"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        curl_default.json::<Value>().await.expect("json"),
        json!([{"n": 6}])
    );
    server.stop().await;
}

#[tokio::test]
async fn parameters_are_bound_as_values() {
    let server = TestServer::spawn().await;
    let (dataset, analyst) = with_events(&server).await;
    let query = format!("SELECT id FROM {dataset} WHERE id > $1 AND kind = $2 ORDER BY id");
    let rows: Value = sql(
        &server,
        &analyst,
        "application/json",
        json!({"sql": query, "params": [2, "even"]}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(rows, json!([{"id": 4}, {"id": 6}]));
    // An injection attempt is only a string that matches nothing.
    let rows: Value = sql(
        &server,
        &analyst,
        "application/json",
        json!({"sql": query, "params": [0, "x' OR '1'='1"]}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(rows, json!([]));
    let response = sql(
        &server,
        &analyst,
        "application/json",
        json!({"sql": query, "params": [{"a": 1}, "x"]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_parameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("params[0]")
    );
    let response = sql(
        &server,
        &analyst,
        "application/json",
        json!({"query": "SELECT 1"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn refusals_and_mistakes_have_their_own_statuses() {
    let server = TestServer::spawn().await;
    let (dataset, analyst) = with_events(&server).await;
    for refused in [
        format!("DROP TABLE {dataset}"),
        format!("INSERT INTO {dataset} (id) VALUES (1)"),
        format!("COPY (SELECT * FROM {dataset}) TO '/tmp/leak.csv'"),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT 1; SELECT 2".to_string(),
    ] {
        let response = sql(&server, &analyst, "application/json", json!(refused)).await;
        assert_eq!(response.status(), 403, "{refused}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "forbidden", "{refused}");
    }
    assert!(!std::path::Path::new("/tmp/leak.csv").exists());

    let response = sql(
        &server,
        &analyst,
        "application/json",
        json!("SELECT * FROM gongan.nosuch"),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_sql");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nosuch"),
        "{body}"
    );

    let response = sql(
        &server,
        &analyst,
        "application/json",
        json!(format!("SELECT id,\n  nosuch_column FROM {dataset}")),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["position"]["line"], 2,
        "the error points into the SQL: {body}"
    );

    let empty = sql(&server, &analyst, "application/json", json!("   ")).await;
    assert_eq!(empty.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn only_analysts_and_admins_run_sql() {
    let server = TestServer::spawn().await;
    let (dataset, analyst) = with_events(&server).await;
    let query = json!(format!("SELECT count(*) AS n FROM {dataset}"));
    for (role, expected) in [(Role::Dashboard, 403), (Role::Producer, 403)] {
        let token = server.token("gongan", role).await;
        assert_eq!(
            sql(&server, &token, "application/json", query.clone())
                .await
                .status(),
            expected
        );
    }
    assert_eq!(
        sql(&server, &analyst, "application/json", query.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        sql(&server, &server.admin, "application/json", query.clone())
            .await
            .status(),
        200
    );
    let anonymous = server
        .client
        .post(server.url("/api/v1/sql"))
        .body("SELECT 1")
        .send()
        .await
        .expect("r");
    assert_eq!(anonymous.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn memory_and_time_limits_fail_cleanly() {
    let server = TestServer::spawn_with(|config| {
        config.query.memory_limit_bytes = 2 * 1024 * 1024;
        config.query.timeout_secs = 1;
    })
    .await;
    let (_, analyst) = with_events(&server).await;
    let hungry = "SELECT count(*) FROM generate_series(1, 3000000) a JOIN generate_series(1, 3000000) b ON a.value = b.value";
    let response = sql(&server, &analyst, "application/json", json!(hungry)).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "memory_limit_exceeded");

    let slow = "SELECT count(*) FROM generate_series(1, 100000000000)";
    let started = Instant::now();
    let response = sql(&server, &analyst, "application/json", json!(slow)).await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(30));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "query_timeout");
    // The hub still answers normally afterwards.
    assert_eq!(
        sql(&server, &analyst, "application/json", json!("SELECT 1"))
            .await
            .status(),
        200
    );
    wait_until_no_query_runs(&server).await;
    server.stop().await;
}

async fn wait_until_no_query_runs(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state.query.running_queries() > 0 {
        assert!(Instant::now() < deadline, "a query kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn results_stream_and_a_client_that_hangs_up_cancels_the_query() {
    let server = TestServer::spawn().await;
    let (_, analyst) = with_events(&server).await;
    // Far more rows than could be buffered: the first bytes must arrive while it runs.
    let endless = "SELECT value, value * 2 AS twice FROM generate_series(1, 100000000000)";
    let mut response = sql(&server, &analyst, NDJSON, json!(endless)).await;
    assert_eq!(response.status(), 200);
    let mut received = 0;
    while received < 1_000_000 {
        let chunk = response.chunk().await.expect("chunk").expect("more data");
        received += chunk.len();
    }
    assert_eq!(server.state.query.running_queries(), 1);
    drop(response);
    wait_until_no_query_runs(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn queries_see_whole_snapshots_while_pushes_commit() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let analyst = server.token("gongan", Role::Analyst).await;
    let batch = 500;
    let pushes = 20;
    let writer = {
        let client = server.client.clone();
        let url = server.url(&format!("/api/v1/datasets/{dataset}/rows"));
        tokio::spawn(async move {
            for p in 0..pushes {
                let body: String = (0..batch)
                    .map(|i| format!("{{\"id\": {}}}\n", p * batch + i))
                    .collect();
                let response = client
                    .post(&url)
                    .bearer_auth(&producer)
                    .header("content-type", NDJSON)
                    .body(body)
                    .send()
                    .await
                    .expect("push");
                assert_eq!(response.status(), 201);
            }
        })
    };
    let mut last = 0;
    let query = json!(format!(
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM {dataset}"
    ));
    while !writer.is_finished() {
        let rows: Value = sql(&server, &analyst, "application/json", query.clone())
            .await
            .json()
            .await
            .expect("json");
        let n = rows[0]["n"].as_i64().expect("n");
        assert_eq!(n % batch, 0, "a query saw part of a push: {n}");
        assert_eq!(rows[0]["d"].as_i64(), Some(n), "a query saw a row twice");
        assert!(n >= last, "counts went backwards: {last} then {n}");
        last = n;
    }
    writer.await.expect("writer");
    let rows: Value = sql(&server, &analyst, "application/json", query)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows[0]["n"], pushes * batch);
    server.stop().await;
}

/// A syntax error answered `SQL error: ParserError("Expected: ...")`, a Rust debug string;
/// it is a sentence with the `position` object, like an unknown column.
#[tokio::test]
async fn a_syntax_error_answers_a_sentence_and_its_position() {
    let server = TestServer::spawn().await;
    let response = sql(
        &server,
        &server.admin,
        "application/json",
        json!("SELECT 1;\nSELEC name FROM x"),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_sql", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the SQL does not parse: expected an SQL statement, found: SELEC"),
        "{message}"
    );
    assert!(
        !message.contains("ParserError") && !message.contains('\\'),
        "{message}"
    );
    assert_eq!(body["position"], json!({"line": 2, "column": 1}), "{body}");
    server.stop().await;
}

/// `now()` in SQL reads the hub's clock, not the machine's: a hub run on another clock
/// (the demo at a fixed hour, tests) sees its own time in queries and endpoints alike.
#[tokio::test]
async fn now_in_sql_is_the_hubs_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = cityhub_config::Config::default();
    config.storage.data_dir = dir.path().display().to_string();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let state = cityhub_server::AppState::open_with_clock(
        config,
        cityhub_catalog::clock::Clock::starting_at(start),
    )
    .await
    .expect("open");
    let admin = cityhub_catalog::Principal::local_operator();
    let result = state
        .query
        .execute(
            &admin,
            "SELECT CAST(now() AS DATE) = DATE '2026-01-01' AS today",
            &[],
        )
        .await
        .expect("query");
    let batches: Vec<_> = futures::StreamExt::collect::<Vec<_>>(result.batches).await;
    let batch = batches
        .into_iter()
        .next()
        .expect("a batch")
        .expect("no error");
    let today = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::BooleanArray>()
        .expect("bool");
    assert!(today.value(0), "now() is 2026-01-01 on this hub's clock");
}

/// The catalog's statistics reach the optimizer: a join with a small dataset collects the
/// small side once and streams the large one, whichever side the query names it on,
/// instead of hash-repartitioning both; on a string key the hub's lookup join answers it
/// (query/src/lookup_join.rs: a collected build side of at most 256 rows).
#[tokio::test]
async fn a_join_with_a_small_dataset_is_not_repartitioned() {
    let server = TestServer::spawn().await;
    let events = server.events_dataset("gongan").await;
    let producer = server.token("gongan", Role::Producer).await;
    let rows: String = (1..=3000)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"kind\": \"k{}\", \"score\": {i}.5}}\n",
                i % 3
            )
        })
        .collect();
    let (status, body) = server.push(&producer, &events, NDJSON, rows).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({"name": "gongan.kinds", "sharing": "unconditional", "columns": [
                {"name": "kind", "type": "string", "nullable": false},
                {"name": "label", "type": "string"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let kinds = "{\"kind\": \"k0\", \"label\": \"零\"}\n{\"kind\": \"k1\", \"label\": \"一\"}\n";
    let (status, body) = server
        .push(&producer, "gongan.kinds", NDJSON, kinds.to_string())
        .await;
    assert_eq!(status, 201, "{body}");
    for query in [
        "SELECT k.label, count(*) FROM gongan.events e JOIN gongan.kinds k ON e.kind = k.kind GROUP BY k.label",
        "SELECT k.label, count(*) FROM gongan.kinds k JOIN gongan.events e ON e.kind = k.kind GROUP BY k.label",
    ] {
        let response = sql(
            &server,
            &server.admin,
            NDJSON,
            json!(format!("EXPLAIN {query}")),
        )
        .await;
        let plan = response.text().await.expect("plan");
        assert!(plan.contains("LookupJoinExec: join_type=Inner"), "{plan}");
        assert!(!plan.contains("HashJoinExec"), "{plan}");
        assert!(!plan.contains("mode=Partitioned"), "{plan}");
        // The collected (build) side is the first scan under the join: the 2-row table,
        // the only one read with `label`, whichever side the query names it on; the
        // probe side is the 3,000-row one.
        // (The plan is a JSON string: its lines are separated by `\n` escapes.)
        let under_join = &plan[plan.find("LookupJoinExec").expect("a join")..];
        let mut scans = under_join
            .split("\\n")
            .filter(|line| line.contains("DataSourceExec"));
        let (build, probe) = (scans.next().expect("build"), scans.next().expect("probe"));
        assert!(
            build.contains("label") && !probe.contains("label"),
            "{plan}"
        );
        let response = sql(
            &server,
            &server.admin,
            NDJSON,
            json!(format!("{query} ORDER BY 1")),
        )
        .await;
        let text = response.text().await.expect("rows");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("1000"), "{text}");
    }
}

/// With `query.engine = "ballista"` and nothing listening where the scheduler should be, a
/// query over a dataset answers 503 naming the scheduler, runs nothing and is audited as
/// failed; a query of no dataset runs on the hub. With `query.ballista_fallback` the query
/// runs on the hub instead.
#[tokio::test]
async fn an_unreachable_ballista_scheduler_answers_503_or_the_hub_runs_the_query() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let scheduler = format!("df://127.0.0.1:{closed}");
    let on_cluster = |fallback: bool| {
        let scheduler = scheduler.clone();
        move |config: &mut cityhub_config::Config| {
            config.query.engine = cityhub_config::QueryEngineKind::Ballista;
            config.query.ballista_scheduler = scheduler;
            config.query.ballista_fallback = fallback;
        }
    };
    let fixture = support::fixture_with(on_cluster(false)).await;
    let server = &fixture.server;
    let (status, body) = support::sql_status(
        server,
        &fixture.analyst,
        "SELECT count(*) FROM gongan.events",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "engine_unavailable", "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains(&scheduler) && message.contains("query.ballista_fallback"),
        "{message}"
    );
    let entries = support::audit_entries(server).await;
    let last = entries
        .iter()
        .find(|entry| entry["action"] == "query")
        .expect("the query's audit entry");
    assert_eq!(last["outcome"], "failed", "{last}");
    let constant = support::sql_ok(server, &fixture.analyst, "SELECT 1 AS one").await;
    assert_eq!(constant, json!([{"one": 1}]));

    let fixture = support::fixture_with(on_cluster(true)).await;
    let rows = support::sql_ok(
        &fixture.server,
        &fixture.analyst,
        "SELECT count(*) AS n, max(phone) AS phone FROM gongan.events",
    )
    .await;
    assert_eq!(rows, json!([{"n": 4, "phone": "180****1999"}]));
}

/// Through a Ballista scheduler and two executors (processes of the hub's binary): an
/// analyst of another department reads `gongan.events` with its phones masked, the answer
/// is the hub's own, and the audit names the phone column as read masked. Without the
/// cluster the same hub answers 503: the queries did go to it.
#[tokio::test]
async fn queries_on_a_ballista_cluster_are_masked_and_audited_as_on_the_hub() {
    let mut cluster = None;
    let fixture = support::fixture_with(|config| {
        let started = crate::ballista_cluster::BallistaCluster::start(std::path::Path::new(
            &config.storage.data_dir,
        ));
        config.query.engine = cityhub_config::QueryEngineKind::Ballista;
        config.query.ballista_scheduler = started.scheduler.clone();
        cluster = Some(started);
    })
    .await;
    let cluster = cluster.expect("a cluster");
    let server = &fixture.server;
    let admin = cityhub_catalog::Principal {
        id: 0,
        name: "ballista-admin".into(),
        department: "admin".into(),
        role: Role::Admin,
        created_at: chrono::Utc::now(),
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
        region: None,
    };
    cluster
        .wait_until_ready(
            &server.state.query,
            &admin,
            "SELECT count(*) FROM gongan.events",
        )
        .await;
    let sql = "SELECT id, kind, phone FROM gongan.events WHERE kind = 'patrol' ORDER BY id";
    let rows = support::sql_ok(server, &fixture.analyst, sql).await;
    assert_eq!(
        rows,
        json!([
            {"id": 1, "kind": "patrol", "phone": "180****1999"},
            {"id": 3, "kind": "patrol", "phone": "139****2222"}
        ])
    );
    // A filter on the masked column sees masked values, on the executors too.
    let rows = support::sql_ok(
        server,
        &fixture.analyst,
        "SELECT count(*) AS n FROM gongan.events WHERE phone = '18012341999'",
    )
    .await;
    assert_eq!(rows, json!([{"n": 0}]));
    let entries = support::audit_entries(server).await;
    let read = entries
        .iter()
        .find(|entry| entry["action"] == "query" && entry["detail"]["sql"] == sql)
        .expect("the query's audit entry");
    assert_eq!(read["outcome"], "ok", "{read}");
    assert_eq!(
        read["detail"]["sensitive_columns"],
        json!([{"dataset": "gongan.events", "column": "phone", "sensitivity": "phone", "masked": true}]),
        "{read}"
    );

    drop(cluster);
    let (status, body) = support::sql_status(server, &fixture.analyst, sql).await;
    assert_eq!(status, 503, "{body}");
}

/// SQL asked again reuses its optimized plan (query/src/plan_cache.rs), bound to the
/// request's own tables: the same answers, each principal's masks, the rows of a push
/// committed in between, a grant's approval and revocation taking effect at once, an audit
/// entry for every read, and `now()` read afresh each time.
#[tokio::test]
async fn sql_asked_again_reuses_its_plan_and_still_reads_what_is_current() {
    let fixture = support::fixture().await;
    let server = &fixture.server;
    let engine = &server.state.query;
    let analyst = &fixture.analyst;
    let query = "SELECT id, phone FROM gongan.events WHERE id <= 5 ORDER BY id";
    let first = support::sql_ok(server, analyst, query).await;
    assert_eq!(
        first[0],
        json!({"id": 1, "phone": "180****1999"}),
        "{first}"
    );
    let reused = engine.plans_reused();
    let again = support::sql_ok(server, analyst, query).await;
    assert_eq!(again, first);
    assert_eq!(
        engine.plans_reused(),
        reused + 1,
        "the second run reused the plan"
    );

    // The tables of subqueries are bound again too.
    let nested = "SELECT id, (SELECT max(id) FROM gongan.events) AS last FROM gongan.events \
                  WHERE id IN (SELECT id FROM gongan.events WHERE kind = 'patrol') ORDER BY id";
    let planned = support::sql_ok(server, analyst, nested).await;
    assert_eq!(
        planned,
        json!([{"id": 1, "last": 4}, {"id": 3, "last": 4}]),
        "{planned}"
    );
    let reused = engine.plans_reused();
    assert_eq!(support::sql_ok(server, analyst, nested).await, planned);
    assert_eq!(engine.plans_reused(), reused + 1);

    // Another principal's plan is its own: the owner's admin sees the phones unmasked.
    let admin = support::sql_ok(server, &server.admin, query).await;
    assert_eq!(
        admin[0],
        json!({"id": 1, "phone": "18012341999"}),
        "{admin}"
    );

    // A push commits a new snapshot: the analyst's next run reads it (masked).
    let row =
        json!({"id": 5, "kind": "fire", "phone": "13855556666", "at": "2026-03-03T08:00:00Z"});
    let (status, body) = server
        .push(&server.admin, "gongan.events", NDJSON, format!("{row}\n"))
        .await;
    assert_eq!(status, 201, "{body}");
    let reused = engine.plans_reused();
    let after_push = support::sql_ok(server, analyst, query).await;
    assert_eq!(after_push.as_array().map(Vec::len), Some(5), "{after_push}");
    assert_eq!(after_push[4], json!({"id": 5, "phone": "138****6666"}));
    assert_eq!(
        engine.plans_reused(),
        reused,
        "a new snapshot is planned afresh"
    );
    assert_eq!(support::sql_ok(server, analyst, query).await, after_push);
    assert_eq!(engine.plans_reused(), reused + 1);

    // Every run is audited with what it read, reused plan or not.
    let entries = support::audit_entries(server).await;
    let runs: Vec<&Value> = entries
        .iter()
        .filter(|entry| {
            entry["action"] == "query"
                && entry["detail"]["sql"] == query
                && entry["principal"] == "test-minzheng-analyst"
        })
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for run in runs {
        assert_eq!(
            run["detail"]["sensitive_columns"],
            json!([{"dataset": "gongan.events", "column": "phone", "sensitivity": "phone", "masked": true}]),
            "{run}"
        );
    }

    // A conditional dataset: refused, then readable once granted, refused once revoked,
    // always the same SQL text.
    let people = "SELECT name, phone FROM gongan.people ORDER BY name";
    let (status, body) = support::sql_status(server, analyst, people).await;
    assert_eq!(status, 403, "{body}");
    let owner = server.token("gongan", Role::Producer).await;
    let decided = support::grant(server, analyst, &owner, "gongan.people", "复用计划测试").await;
    let granted = support::sql_ok(server, analyst, people).await;
    let reused = engine.plans_reused();
    assert_eq!(support::sql_ok(server, analyst, people).await, granted);
    assert_eq!(engine.plans_reused(), reused + 1);
    let grant = decided["grant"]["id"].as_i64().expect("grant");
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/grants/{grant}/revoke"),
            json!({"reason": "测试结束"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = support::sql_status(server, analyst, people).await;
    assert_eq!(status, 403, "a revoked grant reads nothing: {body}");

    // now() is the hub's clock at each run, never a constant folded into a kept plan.
    let clock = "SELECT CAST(now() AS VARCHAR) AS at";
    let before = support::sql_ok(server, analyst, clock).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = support::sql_ok(server, analyst, clock).await;
    assert_ne!(before, after, "now() moved on between runs");
}

//! A real hub on port 0 with a temporary data folder, and helpers to talk to it.

use std::net::SocketAddr;

use cityhub_catalog::token::Token;
use cityhub_catalog::{NewPrincipal, Role};
use cityhub_config::Config;
use cityhub_server::AppState;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestServer {
    pub address: SocketAddr,
    /// The PostgreSQL wire protocol's address (database `cityhub`, a token as password).
    pub pg_address: SocketAddr,
    /// Arrow Flight SQL's address (`authorization: Bearer <token>`).
    pub flight_address: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    pub admin: String,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a hub whose configuration `adjust` may change (e.g. a small body limit).
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_clock(adjust, cityhub_catalog::clock::Clock::system()).await
    }

    /// [`Self::spawn_with`] on a hub reading the time from `clock`.
    pub async fn spawn_with_clock(
        adjust: impl FnOnce(&mut Config),
        clock: cityhub_catalog::clock::Clock,
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.storage.data_dir = data_dir.path().display().to_string();
        config.server.bind = "127.0.0.1:0".into();
        adjust(&mut config);
        let state = AppState::open_with_clock(config, clock)
            .await
            .expect("open the hub");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let address = listener.local_addr().expect("address");
        let pg_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let pg_address = pg_listener.local_addr().expect("address");
        let tls = cityhub_server::pg::tls_acceptor(&state).expect("TLS certificate and key");
        let flight_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let flight_address = flight_listener.local_addr().expect("address");
        let (sender, receiver) = oneshot::channel::<()>();
        let (stop_pg, pg_stopped) = oneshot::channel::<()>();
        let (stop_flight, flight_stopped) = oneshot::channel::<()>();
        tokio::spawn(cityhub_server::flight::run(
            flight_listener,
            state.clone(),
            async {
                let _ = flight_stopped.await;
            },
        ));
        tokio::spawn(cityhub_server::pg::run(
            pg_listener,
            state.clone(),
            tls,
            async {
                let _ = pg_stopped.await;
            },
        ));
        let task = tokio::spawn(cityhub_server::serve::run(listener, state.clone(), async {
            let _ = receiver.await;
            let _ = stop_pg.send(());
            let _ = stop_flight.send(());
        }));
        let mut server = Self {
            address,
            pg_address,
            flight_address,
            state,
            client: reqwest::Client::new(),
            admin: String::new(),
            data_dir,
            shutdown: Some(sender),
            task: Some(task),
        };
        server.admin = server.token("admin", Role::Admin).await;
        server
    }

    /// Makes a principal and returns its token.
    pub async fn token(&self, department: &str, role: Role) -> String {
        self.token_with_rate(department, role, None).await
    }

    /// Makes a principal with its own request rate (`None`: the server's) and returns its
    /// token.
    pub async fn token_with_rate(&self, department: &str, role: Role, rate: Option<u32>) -> String {
        let token = Token::generate();
        self.state
            .catalog
            .create_principal(
                NewPrincipal {
                    name: format!("test-{department}-{role}"),
                    department: department.into(),
                    role,
                    expires_at: None,
                    rate_limit_per_second: rate,
                    region: None,
                },
                &token.hash,
            )
            .await
            .expect("create principal");
        token.plaintext
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    pub async fn post_json(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    pub async fn put_json(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .put(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    /// What `/metrics` says now (Prometheus text).
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Pushes a body with a content type to a dataset.
    pub async fn push(
        &self,
        token: &str,
        dataset: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/api/v1/datasets/{dataset}/rows")))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    /// Creates a department (as admin) if it does not exist.
    pub async fn department(&self, code: &str) {
        let (status, body) = self
            .post_json(
                &self.admin,
                "/api/v1/departments",
                json!({"code": code, "name": format!("{code} 局")}),
            )
            .await;
        assert!(status == 201 || status == 409, "{status} {body}");
    }

    /// Registers the standard test dataset `{department}.events` (as admin).
    pub async fn events_dataset(&self, department: &str) -> String {
        self.department(department).await;
        let name = format!("{department}.events");
        let (status, body) = self
            .post_json(&self.admin, "/api/v1/datasets", events_spec(&name))
            .await;
        assert_eq!(status, 201, "{body}");
        name
    }

    /// Stops the server gracefully and waits for it; returns the data folder so a test can
    /// still look at what the server left behind.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server ran cleanly");
        }
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, placeholder)
    }
}

/// A hub for the query doors' tests: `gongan.events` (unconditional, four rows with
/// phones), `gongan.people` (conditional), `gongan.informants` (shared with nobody), and an
/// analyst of another department, `minzheng`, who sees `gongan`'s phones masked.
pub struct Fixture {
    pub server: TestServer,
    pub analyst: String,
}

pub async fn fixture_with(adjust: impl FnOnce(&mut cityhub_config::Config)) -> Fixture {
    let server = TestServer::spawn_with(adjust).await;
    let dataset = server.events_dataset("gongan").await;
    let rows = [
        json!({"id": 1, "kind": "patrol", "phone": "18012341999", "at": "2026-03-01T08:00:00Z", "score": 1.5, "ok": true}),
        json!({"id": 2, "kind": "fire", "phone": "13700003333", "at": "2026-03-01T09:30:00Z", "score": 2.5, "ok": false}),
        json!({"id": 3, "kind": "patrol", "phone": "13911112222", "at": "2026-03-02T10:00:00Z", "score": null, "ok": true}),
        json!({"id": 4, "kind": "traffic", "phone": null, "at": "2026-03-02T11:00:00Z", "score": 4.0, "ok": null}),
    ];
    let body: String = rows.iter().map(|row| format!("{row}\n")).collect();
    let (status, answer) = server
        .push(&server.admin, &dataset, "application/x-ndjson", body)
        .await;
    assert_eq!(status, 201, "{answer}");
    people(&server).await;
    // A dataset shared with nobody: no door may even name it.
    let (status, answer) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({"name": "gongan.informants", "sharing": "none", "columns": [
                {"name": "id", "type": "int64", "nullable": false}]}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let analyst = server.token("minzheng", Role::Analyst).await;
    Fixture { server, analyst }
}

pub async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// The names a client listed (`schema.table`), checked to hold the fixture's readable
/// table and neither the conditional dataset without a grant nor the one shared with
/// nobody.
pub fn listed_only_readable(listed: &Value) -> Vec<String> {
    let listed: Vec<String> = listed
        .as_array()
        .expect("a list of names")
        .iter()
        .filter_map(|name| name.as_str().map(str::to_string))
        .collect();
    assert!(
        listed.iter().any(|name| name == "gongan.events"),
        "{listed:?}"
    );
    assert!(
        !listed
            .iter()
            .any(|name| name.contains("people") || name.contains("informants")),
        "{listed:?}"
    );
    listed
}

/// The audit log as the admin reads it, flushed first.
pub async fn audit_entries(server: &TestServer) -> Vec<Value> {
    server.state.audit.flush().await;
    let (status, audit) = server.get(&server.admin, "/api/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    audit.as_array().expect("entries").clone()
}

/// `gongan.people`: conditional, with a name and a phone column.
pub async fn people(server: &TestServer) -> String {
    server.department("gongan").await;
    server.department("minzheng").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({
                "name": "gongan.people",
                "sharing": "conditional",
                "classification": "important",
                "columns": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "name", "type": "string", "sensitivity": "person_name"},
                    {"name": "phone", "type": "string", "sensitivity": "phone"},
                    {"name": "town", "type": "string"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .push(
            &server.admin,
            "gongan.people",
            "application/x-ndjson",
            concat!(
                r#"{"id":1,"name":"张小明","phone":"18012341999","town":"椑木镇"}"#,
                "\n",
                r#"{"id":2,"name":"李四","phone":"13700003333","town":"史家镇"}"#,
                "\n"
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    "gongan.people".into()
}

/// A dataset with one column of most types, non-null `id`.
pub fn events_spec(name: &str) -> Value {
    json!({
        "name": name,
        "description": "test events",
        "classification": "general",
        "sharing": "unconditional",
        "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "kind", "type": "string"},
            {"name": "at", "type": "timestamp"},
            {"name": "score", "type": "float64"},
            {"name": "ok", "type": "bool"},
            {"name": "day", "type": "date"},
            {"name": "amount", "type": "decimal(10,2)"},
            {"name": "phone", "type": "string", "sensitivity": "phone"}
        ]
    })
}

/// What `query` answers `token` through `POST /api/v1/sql`; the query must succeed.
pub async fn sql_ok(server: &TestServer, token: &str, query: &str) -> Value {
    let (status, body) = sql_status(server, token, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// The status and body `POST /api/v1/sql` answers `token` for `query`.
pub async fn sql_status(server: &TestServer, token: &str, query: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(query.to_string())
        .send()
        .await
        .expect("request");
    split(response).await
}

pub async fn split(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The applicant's department applies for every column of `dataset` and the owner approves
/// at once, both over HTTP; returns the approval's answer (with its `grant`).
pub async fn grant(
    server: &TestServer,
    applicant: &str,
    owner: &str,
    dataset: &str,
    purpose: &str,
) -> Value {
    let (status, request) = server
        .post_json(
            applicant,
            &format!("/api/v1/datasets/{dataset}/share-requests"),
            json!({ "purpose": purpose }),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_i64().expect("id");
    let (status, decided) = server
        .post_json(
            owner,
            &format!("/api/v1/share-requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    decided
}

/// A clock reading the most recent 17:58 UTC (01:58 the next day in Beijing), running on
/// from there: tests that depend on "today" run at that hour whatever the hour is.
pub fn evening_clock() -> cityhub_catalog::clock::Clock {
    let now = chrono::Utc::now();
    let today = now
        .date_naive()
        .and_hms_opt(17, 58, 0)
        .expect("a time of day")
        .and_utc();
    let start = if today <= now {
        today
    } else {
        today - chrono::Duration::days(1)
    };
    cityhub_catalog::clock::Clock::starting_at(start)
}

/// Reads every row of a dataset's current snapshot straight from its Parquet files.
pub async fn read_rows(state: &AppState, dataset: &str) -> Vec<arrow::record_batch::RecordBatch> {
    let name = cityhub_catalog::DatasetName::parse(dataset).expect("name");
    let dataset = state
        .catalog
        .dataset(&name)
        .await
        .expect("catalog")
        .expect("dataset");
    let files = state
        .catalog
        .snapshot_files(dataset.id, None)
        .await
        .expect("files");
    let mut batches = Vec::new();
    for file in files {
        let bytes = state
            .ingest
            .storage()
            .get(&file.path)
            .await
            .expect("read file");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
            .expect("parquet");
        for batch in reader {
            batches.push(batch.expect("batch"));
        }
    }
    batches
}

pub fn row_count(batches: &[arrow::record_batch::RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Sends a record to Kafka, waiting while the producer's queue is full.
pub fn send<K, P>(
    producer: &rdkafka::producer::BaseProducer,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                producer.poll(std::time::Duration::from_millis(10));
                record = back;
            }
        }
    }
}

/// A program on `PATH` (and in `/usr/sbin`, where Debian puts daemons such as haproxy).
pub fn program_on_path(program: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(std::iter::once(std::path::PathBuf::from("/usr/sbin")))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Reads server-sent events from a response: (event, id, data) of each, skipping comments.
pub struct EventReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// Comment lines seen (the server's heartbeats).
    pub comments: usize,
}

impl EventReader {
    pub async fn open(server: &TestServer, token: &str, path: &str, last_id: Option<&str>) -> Self {
        let mut request = server
            .client
            .get(server.url(path))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event within `wait`, or `None`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<(String, String, String)> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut event, mut id, mut data) =
                        (String::new(), String::new(), String::new());
                    for line in block.lines() {
                        if line.starts_with(':') {
                            self.comments += 1;
                        }
                        if let Some(v) = line.strip_prefix("event: ") {
                            event = v.into();
                        } else if let Some(v) = line.strip_prefix("id: ") {
                            id = v.into();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push_str(v);
                        }
                    }
                    if !event.is_empty() {
                        return Some((event, id, data));
                    }
                    continue;
                }
                let chunk = futures::StreamExt::next(&mut self.body).await?.ok()?;
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .ok()
        .flatten()
    }
}

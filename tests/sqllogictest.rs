//! SQL behaviour, as sqllogictest files in `tests/slt/`, run against a real hub whose
//! fixture datasets are pushed through the ingest path (several snapshots, several files).
//!
//! A file's first line may name who runs it: `# principal: <department> <role>
//! [region=<code>]`; the default is an admin. Errors read `<code>: <message>`, with the code the HTTP API would answer,
//! so that `statement error forbidden` and `query error invalid_sql` assert the kind of
//! refusal.
//!
//! Every file runs twice: on the hub's own engine, then through a Ballista scheduler and two
//! executors started from the hub's binary (`query.engine = "ballista"`), which must give
//! the same answers. A record that may differ there is marked `skipif ballista`.
//!
//! Its own runner (`harness = false`): `cargo test --test sqllogictest -- cameras` runs the
//! files whose names contain `cameras`; each file is reported as one test per engine.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use cityhub_catalog::sharing::{Decision, NewShareRequest};
use cityhub_catalog::token::Token;
use cityhub_catalog::{DatasetName, NewPrincipal, Principal, Role};
use cityhub_ingest::{Format, PushRequest};
use cityhub_query::QueryEngine;

#[path = "it/ballista_cluster.rs"]
mod ballista_cluster;
use ballista_cluster::BallistaCluster;
use cityhub_server::AppState;
use cityhub_server::http::ApiError;
use futures::StreamExt;
use serde_json::json;
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

struct HubDb {
    query: QueryEngine,
    principal: Principal,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for HubDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let describe = |err: cityhub_query::QueryError| {
            let answer = ApiError::from(err);
            SqlError(format!("{}: {}", answer.code, answer.message))
        };
        let result = self
            .query
            .execute(&self.principal, sql, &[])
            .await
            .map_err(describe)?;
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut stream = result.batches;
        while let Some(batch) = stream.next().await {
            batches.push(batch.map_err(describe)?);
        }
        let types = result
            .schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64 => DefaultColumnType::Integer,
                DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
                    DefaultColumnType::FloatingPoint
                }
                _ => DefaultColumnType::Text,
            })
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SqlError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = formatters
                    .iter()
                    .map(|f| {
                        let text = f.value(row).to_string();
                        if text.is_empty() {
                            "(empty)".to_string()
                        } else {
                            text
                        }
                    })
                    .collect();
                // A plan is text of several lines: one record line each, as printed.
                if cells.iter().any(|cell| cell.contains('\n')) {
                    let text = cells.join(" ");
                    rows.extend(text.lines().map(|line| vec![line.trim_end().to_string()]));
                } else {
                    rows.push(cells);
                }
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "cityhub"
    }
}

/// The fixture city: four datasets with every sharing type, pushed in several snapshots.
async fn fixture(state: &AppState) {
    let admin = principal("admin", Role::Admin);
    for (code, name) in [
        ("gongan", "公安局"),
        ("jiaotong", "交通局"),
        ("zhili", "社会治理中心"),
        ("minzheng", "民政局"),
        ("weijian", "卫健委"),
    ] {
        state
            .catalog
            .create_department(code, name)
            .await
            .expect("department");
    }
    let datasets = [
        json!({"name": "gongan.alarms", "region_column": "region_code", "sharing": "unconditional", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "at", "type": "timestamp", "nullable": false},
            {"name": "region_code", "type": "string"},
            {"name": "kind", "type": "string"},
            {"name": "phone", "type": "string", "sensitivity": "phone"}]}),
        json!({"name": "jiaotong.flows", "region_column": "region_code", "sharing": "none", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "region_code", "type": "string"},
            {"name": "vehicles", "type": "int32"}]}),
        json!({"name": "zhili.cases", "region_column": "region_code", "sharing": "conditional", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "region_code", "type": "string"},
            {"name": "category", "type": "string"}]}),
        json!({"name": "gongan.residents", "region_column": "region_code", "sharing": "conditional", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "name", "type": "string", "sensitivity": "person_name"},
            {"name": "id_card", "type": "string", "sensitivity": "id_card"},
            {"name": "phone", "type": "string", "sensitivity": "phone"},
            {"name": "address", "type": "string", "sensitivity": "address"},
            {"name": "plate", "type": "string", "sensitivity": "plate_no"},
            {"name": "photo", "type": "string", "sensitivity": "face_image"},
            {"name": "region_code", "type": "string"},
            {"name": "age", "type": "int32"}]}),
        json!({"name": "gongan.informants", "sharing": "none", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "alias", "type": "string"}]}),
        json!({"name": "zhili.events", "region_column": "region_code", "sharing": "unconditional", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "region_code", "type": "string"},
            {"name": "status", "type": "string"}]}),
        json!({"name": "jiaotong.violations", "sharing": "unconditional", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "camera_id", "type": "string", "nullable": false},
            {"name": "plate", "type": "string", "sensitivity": "plate_no"},
            {"name": "kind", "type": "string"}]}),
        json!({"name": "zhili.categories", "sharing": "unconditional", "region_free": true,
            "columns": [
            {"name": "code", "type": "string", "nullable": false},
            {"name": "name", "type": "string"}]}),
        json!({"name": "zhili.hotline", "sharing": "unconditional", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "category", "type": "string"},
            {"name": "longitude", "type": "float64"},
            {"name": "latitude", "type": "float64"}]}),
    ];
    for spec in datasets {
        let new = serde_json::from_value(spec).expect("dataset spec");
        state.catalog.create_dataset(new).await.expect("dataset");
    }
    let pushes: [(&str, &str); 11] = [
        (
            "jiaotong.violations",
            concat!(
                r#"{"id":1,"camera_id":"51102800051210000001","plate":"川K12345","kind":"speeding"}"#,
                "\n",
                r#"{"id":2,"camera_id":"51102800051210000001","plate":"川K88888","kind":"speeding"}"#,
                "\n",
                r#"{"id":3,"camera_id":"51102400041320000002","plate":"川KA1234","kind":"red light"}"#,
                "\n",
                r#"{"id":4,"camera_id":"51102500001320000099","plate":"川K00001","kind":"parking"}"#,
                "\n"
            ),
        ),
        (
            "zhili.hotline",
            concat!(
                r#"{"id":1,"category":"路灯不亮","longitude":104.8501,"latitude":29.7702}"#,
                "\n",
                r#"{"id":2,"category":"噪音扰民","longitude":105.0600,"latitude":29.5800}"#,
                "\n",
                r#"{"id":3,"category":"占道经营","longitude":105.2801,"latitude":29.3401}"#,
                "\n"
            ),
        ),
        (
            "gongan.residents",
            concat!(
                r#"{"id":1,"name":"张小明","id_card":"51102519900101123X","phone":"18012341999","address":"四川省内江市市中区玉溪路12号","plate":"川K12345","photo":"https://img.example/1.jpg","region_code":"511002","age":36}"#,
                "\n",
                r#"{"id":2,"name":"欧阳娜娜","id_card":"511028198505052222","phone":"13900002222","address":"内江市隆昌市金鹅街道古湖路8号","plate":"川K88888","photo":"https://img.example/2.jpg","region_code":"511083","age":41}"#,
                "\n",
                r#"{"id":3,"name":"李四","id_card":"511011200001013333","phone":"13700003333","address":"内江市东兴区汉渝大道1号","plate":"川KA1234","region_code":"511011","age":26}"#,
                "\n",
                r#"{"id":4,"name":"王五","id_card":"511024197003034444","address":"内江市威远县严陵镇建设路3号","region_code":"511024","age":56}"#,
                "\n"
            ),
        ),
        ("gongan.informants", "{\"id\":1,\"alias\":\"老鹰\"}\n"),
        (
            "gongan.alarms",
            concat!(
                r#"{"id":1,"at":"2026-11-01T08:00:00+08:00","region_code":"511002","kind":"theft","phone":"13800001111"}"#,
                "\n",
                r#"{"id":2,"at":"2026-11-01T09:30:00+08:00","region_code":"511011","kind":"fight"}"#,
                "\n",
                r#"{"id":3,"at":"2026-11-02T10:00:00+08:00","region_code":"511024","kind":"theft"}"#,
                "\n",
                r#"{"id":4,"at":"2026-11-02T23:00:00+08:00","region_code":"511025","kind":"fraud"}"#,
                "\n"
            ),
        ),
        (
            "gongan.alarms",
            concat!(
                r#"{"id":5,"at":"2026-11-10T08:00:00+08:00","region_code":"511083","kind":"theft"}"#,
                "\n",
                r#"{"id":6,"at":"2026-11-10T12:00:00+08:00","region_code":"511002","kind":"fraud"}"#,
                "\n",
                r#"{"id":7,"at":"2026-11-11T08:00:00+08:00","region_code":"511002","kind":"theft"}"#,
                "\n"
            ),
        ),
        (
            "gongan.alarms",
            concat!(
                r#"{"id":8,"at":"2026-11-20T08:00:00+08:00","region_code":"511011","kind":"fight"}"#,
                "\n",
                r#"{"id":9,"at":"2026-11-21T08:00:00+08:00","region_code":"511024","kind":null}"#,
                "\n"
            ),
        ),
        (
            "jiaotong.flows",
            concat!(
                r#"{"id":1,"region_code":"511002","vehicles":1200}"#,
                "\n",
                r#"{"id":2,"region_code":"511011","vehicles":800}"#,
                "\n"
            ),
        ),
        (
            "zhili.cases",
            concat!(
                r#"{"id":1,"region_code":"511002","category":"环境卫生"}"#,
                "\n",
                r#"{"id":2,"region_code":"511002","category":"交通出行"}"#,
                "\n"
            ),
        ),
        (
            "zhili.events",
            concat!(
                r#"{"id":1,"region_code":"511002","status":"open"}"#,
                "\n",
                r#"{"id":2,"region_code":"511024","status":"closed"}"#,
                "\n"
            ),
        ),
        (
            "zhili.events",
            concat!(r#"{"id":3,"region_code":"511024","status":"open"}"#, "\n"),
        ),
    ];
    for (dataset, rows) in pushes {
        let request = PushRequest {
            format: Format::NdJson,
            body: rows.as_bytes().to_vec().into(),
            partial: false,
            idempotency_key: None,
        };
        state
            .ingest
            .push(&admin, dataset, request)
            .await
            .expect("fixture push");
    }
    grants(state).await;
    cameras(state).await;
    evolved(state, &admin).await;
    keyed(state, &admin).await;
    // A city-wide code table (region_free), snapshot 19.
    let categories = concat!(
        r#"{"code":"theft","name":"盗窃"}"#,
        "\n",
        r#"{"code":"fraud","name":"诈骗"}"#,
        "\n",
        r#"{"code":"fight","name":"斗殴"}"#,
        "\n"
    );
    state
        .ingest
        .push(
            &admin,
            "zhili.categories",
            PushRequest {
                format: Format::NdJson,
                body: categories.as_bytes().to_vec().into(),
                partial: false,
                idempotency_key: None,
            },
        )
        .await
        .expect("categories push");
}

/// `jiaoyu.enrolments`, keyed by (school, student_id): a push repeating a key within itself
/// (snapshot 15), a push replacing a stored key (16), a compaction (17) and a push replacing
/// a key of the compacted file (18).
async fn keyed(state: &AppState, admin: &Principal) {
    let spec = json!({"name": "jiaoyu.enrolments", "sharing": "none",
        "primary_key": ["school", "student_id"], "columns": [
        {"name": "school", "type": "string", "nullable": false},
        {"name": "student_id", "type": "int64", "nullable": false},
        {"name": "grade", "type": "int32"},
        {"name": "status", "type": "string"}]});
    let new = serde_json::from_value(spec).expect("dataset spec");
    state.catalog.create_dataset(new).await.expect("dataset");
    let pushes = [
        concat!(
            "{\"school\":\"一中\",\"student_id\":1,\"grade\":1,\"status\":\"enrolled\"}\n",
            "{\"school\":\"一中\",\"student_id\":2,\"grade\":1,\"status\":\"enrolled\"}\n",
            "{\"school\":\"二中\",\"student_id\":1,\"grade\":2,\"status\":\"enrolled\"}\n",
            "{\"school\":\"一中\",\"student_id\":1,\"grade\":2,\"status\":\"moved up\"}\n",
        ),
        concat!(
            "{\"school\":\"一中\",\"student_id\":2,\"grade\":1,\"status\":\"left\"}\n",
            "{\"school\":\"一中\",\"student_id\":3,\"grade\":1,\"status\":\"enrolled\"}\n",
        ),
    ];
    let push = |rows: &'static str| PushRequest {
        format: Format::NdJson,
        body: rows.as_bytes().to_vec().into(),
        partial: false,
        idempotency_key: None,
    };
    for rows in pushes {
        state
            .ingest
            .push(admin, "jiaoyu.enrolments", push(rows))
            .await
            .expect("keyed push");
    }
    let name = DatasetName::parse("jiaoyu.enrolments").expect("name");
    let no_progress = |_: u64, _: u64| {};
    state
        .ingest
        .compact(Some(admin), &name, &state.compaction, &no_progress)
        .await
        .expect("compact");
    state
        .ingest
        .push(
            admin,
            "jiaoyu.enrolments",
            push("{\"school\":\"二中\",\"student_id\":1,\"grade\":3,\"status\":\"graduated\"}\n"),
        )
        .await
        .expect("keyed push after compaction");
}

/// `jiaoyu.students` (sharing none: only admins see it): two rows under schema version 1,
/// then the schema evolves (a column added, int32 to int64, a decimal's precision raised),
/// then one row under version 2, then id 2 is deleted. Its snapshots are 12, 13 and 14,
/// after the others.
async fn evolved(state: &AppState, admin: &Principal) {
    use cityhub_catalog::DatasetChange;
    state
        .catalog
        .create_department("jiaoyu", "教育局")
        .await
        .expect("department");
    let spec = json!({"name": "jiaoyu.students", "sharing": "none", "columns": [
        {"name": "id", "type": "int64", "nullable": false},
        {"name": "grade", "type": "int32"},
        {"name": "fee", "type": "decimal(8,2)"}]});
    let new = serde_json::from_value(spec).expect("dataset spec");
    state.catalog.create_dataset(new).await.expect("dataset");
    let push = |rows: &'static str| PushRequest {
        format: Format::NdJson,
        body: rows.as_bytes().to_vec().into(),
        partial: false,
        idempotency_key: None,
    };
    state
        .ingest
        .push(
            admin,
            "jiaoyu.students",
            push("{\"id\":1,\"grade\":3,\"fee\":100.50}\n{\"id\":2,\"grade\":4,\"fee\":99.00}\n"),
        )
        .await
        .expect("push v1");
    let change: DatasetChange = serde_json::from_value(json!({"columns": [
        {"name": "id", "type": "int64", "nullable": false},
        {"name": "grade", "type": "int64"},
        {"name": "fee", "type": "decimal(10,2)"},
        {"name": "school", "type": "string"}]}))
    .expect("change");
    let name = DatasetName::parse("jiaoyu.students").expect("name");
    state
        .ingest
        .change_dataset(admin, &name, change)
        .await
        .expect("evolve");
    state
        .ingest
        .push(
            admin,
            "jiaoyu.students",
            push("{\"id\":3,\"grade\":5000000000,\"fee\":12345678.25,\"school\":\"内江一中\"}\n"),
        )
        .await
        .expect("push v2");
    // Then id 2 is erased (snapshot 14).
    cityhub_server::deletes::delete_rows(state, Some(admin), &name, "id = 2")
        .await
        .expect("delete");
}

/// The fixture's camera registry, with statuses that hold for the hours a test run takes
/// (the fixture hub counts a channel offline after 3 missed hourly keepalives):
/// online, offline by timeout, offline by VLOST, never heard of, and a deleted one.
async fn cameras(state: &AppState) {
    use cityhub_catalog::camera::status::Event;
    use cityhub_catalog::camera::{CameraSignal, ChannelReport, SignalKind};
    let now = cityhub_catalog::camera::now_ms();
    let day = 86_400_000;
    let reports = [
        json!({"id": "51102800051210000001", "name": "隆昌 G85 卡口", "department": "jiaotong",
               "longitude": 105.28, "latitude": 29.34, "ptz_type": 3, "position_type": 10}),
        json!({"id": "51102400041320000002", "name": "威远 严陵路口", "department": "jiaotong",
               "longitude": 104.67, "latitude": 29.53, "ptz_type": 3, "position_type": 10}),
        json!({"id": "51102500001320000003", "name": "资中 北街口", "department": "gongan",
               "longitude": 104.85, "latitude": 29.77, "ptz_type": 1, "position_type": 4,
               "parent_id": "51102500001180000001",
               "streams": {"flv": "http://nvr.zizhong/ch3.live.flv"}}),
        json!({"id": "51100200001320000004", "name": "市中 大千广场", "department": "gongan",
               "longitude": 105.06, "latitude": 29.58, "ptz_type": 1, "position_type": 4}),
        json!({"id": "51101100011320000005", "department": "gongan"}),
        json!({"id": "51101100011320000006", "name": "已拆除", "department": "gongan"}),
    ];
    let reports = reports
        .into_iter()
        .map(|r| ChannelReport::from_json(r, None).expect("fixture camera"))
        .collect();
    let outcomes = state
        .catalog
        .register_cameras(reports, None, now - 2 * day)
        .await
        .expect("register cameras");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let signal = |id: &str, at: i64, kind: SignalKind| CameraSignal {
        id: id.into(),
        at,
        kind,
    };
    let signals = vec![
        signal("51102800051210000001", now, SignalKind::Keepalive),
        signal("51102400041320000002", now - day, SignalKind::Keepalive),
        signal("51102500001320000003", now - day, SignalKind::Keepalive),
        signal("51102500001320000003", now - day / 2, SignalKind::Keepalive),
        signal("51100200001320000004", now - 60_000, SignalKind::Keepalive),
        signal(
            "51100200001320000004",
            now,
            SignalKind::Event(Event::Vlost, None),
        ),
        signal(
            "51101100011320000006",
            now,
            SignalKind::Event(Event::Del, None),
        ),
    ];
    let liveness = state.cameras.settings().liveness;
    let outcomes = state
        .catalog
        .camera_signals(signals, None, liveness, now)
        .await
        .expect("camera signals");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // Alarms of three counties' channels and two positions of 东兴's 0005.
    use cityhub_catalog::camera::{CameraAlarm, CameraPosition, CameraReport};
    let hour = 3_600_000;
    let alarm = |id: &str, at: i64, priority: u8, method: u8, alarm_type: u8| {
        CameraReport::Alarm(CameraAlarm {
            id: id.into(),
            at,
            priority,
            method,
            alarm_type: Some(alarm_type),
            description: None,
            longitude: None,
            latitude: None,
        })
    };
    let position = |at: i64, longitude: f64| {
        CameraReport::Position(CameraPosition {
            id: "51101100011320000005".into(),
            at,
            longitude,
            latitude: 29.6,
            speed: Some(30.0),
            direction: Some(90.0),
            altitude: None,
        })
    };
    let reports = vec![
        alarm("51102800051210000001", now - 2 * hour, 2, 5, 7),
        alarm("51102500001320000003", now - hour, 1, 5, 6),
        alarm("51100200001320000004", now - hour / 2, 3, 2, 1),
        alarm("51100200001320000004", now - 3 * hour, 4, 6, 1),
        position(now - 60_000, 105.10),
        position(now, 105.11),
    ];
    let outcomes = state
        .catalog
        .record_camera_reports(reports, None, now)
        .await
        .expect("camera reports");
    assert!(outcomes.iter().all(|o| *o == Ok(true)), "{outcomes:?}");
}

/// Grants on `gongan.residents`: zhili may read some columns, all masked (the trusted tier);
/// minzheng may read every column with names unmasked; jiaotong's grant has expired;
/// weijian may read the rows of 市中区 and 隆昌市 only (one grant each).
async fn grants(state: &AppState) {
    let residents = state
        .catalog
        .dataset(&DatasetName::parse("gongan.residents").expect("name"))
        .await
        .expect("lookup")
        .expect("residents");
    let owner = real_principal(state, "gongan", Role::Producer).await;
    let now = chrono::Utc::now();
    // (department, columns granted, columns unmasked, expiry)
    type Plan<'a> = (
        &'a str,
        Option<Vec<&'a str>>,
        Vec<&'a str>,
        chrono::DateTime<chrono::Utc>,
        Option<&'a str>,
    );
    let plans: [Plan; 5] = [
        (
            "zhili",
            Some(vec![
                "id",
                "name",
                "id_card",
                "phone",
                "address",
                "region_code",
                "age",
            ]),
            vec![],
            now + chrono::Duration::days(30),
            None,
        ),
        (
            "minzheng",
            None,
            vec!["name"],
            now + chrono::Duration::days(30),
            None,
        ),
        (
            "jiaotong",
            None,
            vec!["name"],
            now - chrono::Duration::seconds(1),
            None,
        ),
        (
            "weijian",
            None,
            vec![],
            now + chrono::Duration::days(30),
            Some("511002"),
        ),
        (
            "weijian",
            None,
            vec![],
            now + chrono::Duration::days(30),
            Some("511028"),
        ),
    ];
    for (department, columns, unmasked, expires_at, region) in plans {
        let rows = region.map(|code| cityhub_catalog::sharing::RowLimit {
            regions: vec![code.to_string()],
            since: None,
        });
        let applicant = real_principal(state, department, Role::Analyst).await;
        let request = state
            .catalog
            .create_share_request(NewShareRequest {
                dataset_id: residents.id,
                department: department.into(),
                requested_by: applicant.id,
                purpose: "fixture".into(),
                columns: columns.map(|c| c.into_iter().map(String::from).collect()),
                unmasked: unmasked.into_iter().map(String::from).collect(),
                until: None,
                answer_due_at: now + chrono::Duration::days(7),
                rows: rows.clone(),
            })
            .await
            .expect("request");
        state
            .catalog
            .decide_share_request(Decision {
                request_id: request.id,
                decided_by: owner.id,
                approve: true,
                reason: None,
                columns: None,
                unmasked: None,
                expires_at: Some(expires_at),
                rows: None,
            })
            .await
            .expect("approve");
    }
}

async fn real_principal(state: &AppState, department: &str, role: Role) -> Principal {
    state
        .catalog
        .create_principal(
            NewPrincipal {
                name: format!("slt-{department}-{role}"),
                department: department.into(),
                role,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &Token::generate().hash,
        )
        .await
        .expect("principal")
}

fn principal(department: &str, role: Role) -> Principal {
    Principal {
        id: 0,
        name: format!("slt-{department}-{role}"),
        department: department.into(),
        role,
        created_at: chrono::Utc::now(),
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
        region: None,
    }
}

fn principal_of(path: &Path) -> Principal {
    let text = std::fs::read_to_string(path).expect("read slt");
    let first = text.lines().next().unwrap_or_default();
    match first
        .strip_prefix("# principal:")
        .map(str::split_whitespace)
    {
        Some(mut words) => {
            let department = words.next().expect("department");
            let role: Role = words.next().expect("role").parse().expect("role");
            let region = words
                .next()
                .and_then(|word| word.strip_prefix("region="))
                .map(String::from);
            Principal {
                region,
                ..principal(department, role)
            }
        }
        None => principal("admin", Role::Admin),
    }
}

/// The files whose names contain one of `filters` (all without filters), sorted.
fn slt_files(filters: &[String]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt"))
            .expect("tests/slt")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "slt"))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
            })
            .collect();
    files.sort();
    files
}

fn main() -> std::process::ExitCode {
    // cargo passes libtest's flags (`--nocapture`, `--test-threads=2`, ...): words that
    // are not flags are file filters.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (passed, failed, filtered) = runtime.block_on(run(&filters));
    // The closing line in libtest's words, so that tools summing test results count these.
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Runs the matching files against one hub with the fixture; (passed, failed, filtered).
async fn run(filters: &[String]) -> (usize, usize, usize) {
    let all = slt_files(&[]).len();
    let files = slt_files(filters);
    assert!(all > 0, "no .slt files found in tests/slt");
    println!("\nrunning {} sqllogictest files", files.len());
    if files.is_empty() {
        return (0, 0, all);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = cityhub_config::Config::default();
    config.storage.data_dir = dir.path().display().to_string();
    config.cameras.keepalive_interval_secs = 3600;
    config.cameras.rtsp_template = "rtsp://media.neijiang:554/rtp/{device}_{channel}".into();
    let state = AppState::open(config.clone()).await.expect("open");
    fixture(&state).await;

    let mut failures = Vec::new();
    run_files(&files, state.query.clone(), "local", &mut failures).await;
    let cluster = BallistaCluster::start(dir.path());
    let mut on_cluster = config.query.clone();
    on_cluster.engine = cityhub_config::QueryEngineKind::Ballista;
    on_cluster.ballista_scheduler = cluster.scheduler.clone();
    // A query the cluster cannot finish fails the file within a minute, not five.
    on_cluster.timeout_secs = 60;
    let engine = QueryEngine::new(
        state.catalog.clone(),
        state.ingest.storage().store(),
        on_cluster,
        state.audit.clone(),
        cityhub_catalog::camera::CameraSettings::from_config(&config.cameras),
    )
    .expect("an engine on the cluster");
    cluster
        .wait_until_ready(
            &engine,
            &principal("admin", Role::Admin),
            "SELECT count(*) FROM zhili.events",
        )
        .await;
    run_files(&files, engine.clone(), "ballista", &mut failures).await;
    // The second pass ran on the cluster, not quietly on the hub: without the cluster the
    // same engine answers that it cannot reach it.
    drop(cluster);
    let admin = principal("admin", Role::Admin);
    match engine
        .execute(&admin, "SELECT count(*) FROM zhili.events", &[])
        .await
    {
        Err(cityhub_query::QueryError::Unavailable(_)) => {}
        Err(other) => failures.push(format!("without its cluster the engine answered {other}")),
        Ok(_) => failures.push("without its cluster the engine still answered".into()),
    }
    for failure in &failures {
        println!("\n---- {failure}");
    }
    let ran = files.len() * 2;
    (
        ran - failures.len(),
        failures.len(),
        (all - files.len()) * 2,
    )
}

/// Runs `files` on `query`; `engine` names the pass (and is the label `skipif` matches).
async fn run_files(
    files: &[PathBuf],
    query: QueryEngine,
    engine: &str,
    failures: &mut Vec<String>,
) {
    for file in files {
        let principal = principal_of(file);
        let query = query.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let db = HubDb {
                query: query.clone(),
                principal: principal.clone(),
            };
            async move { Ok::<_, SqlError>(db) }
        });
        runner.add_label(engine);
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        match runner.run_file_async(file).await {
            Ok(()) => println!("test {name} ({engine}) ... ok"),
            Err(err) => {
                println!("test {name} ({engine}) ... FAILED");
                failures.push(format!("{} ({engine}):\n{err}", file.display()));
            }
        }
    }
}

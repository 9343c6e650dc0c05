//! The camera registry over HTTP: registration one by one and in batches with per-item
//! errors, curated overrides, keepalives and NOTIFY events, lookup, search with a cursor,
//! statistics, and who may do what.

use crate::support;
use crate::support::TestServer;
use cityhub_catalog::Role;
use serde_json::{Value, json};

const NVR: &str = "51102500001180000001";
const CAM_A: &str = "51102500001320000001";
const CAM_B: &str = "51102500001320000002";
const CAM_LEGACY: &str = "51102800051310000003";

async fn hub() -> TestServer {
    let server = TestServer::spawn_with(|config| {
        config.cameras.rtsp_template = "rtsp://media.neijiang:554/rtp/{device}_{channel}".into();
        config.cameras.flv_template =
            "http://media.neijiang/rtp/{device}_{channel}.live.flv".into();
    })
    .await;
    server.department("gongan").await;
    server.department("jiaotong").await;
    server
}

async fn post_body(
    server: &TestServer,
    token: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    support::split(response).await
}

async fn register_three(server: &TestServer, token: &str) {
    let (status, body) = server
        .post_json(
            token,
            "/api/v1/cameras/batch",
            json!([
                {"id": NVR, "name": "资中 NVR", "department": "gongan"},
                {"id": CAM_A, "parent_id": NVR, "name": "北街口", "department": "gongan",
                 "longitude": 104.85, "latitude": 29.77, "ptz_type": 1, "position_type": 4},
                {"id": CAM_B, "parent_id": NVR, "name": "东街口", "department": "gongan",
                 "longitude": 104.86, "latitude": 29.78, "ptz_type": 3,
                 "streams": {"rtsp": "rtsp://nvr.zizhong/ch2"}}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], 3, "{body}");
}

#[tokio::test]
async fn one_channel_registers_decodes_and_shows_derived_values() {
    let server = hub().await;
    let producer = server.token("jiaotong", Role::Producer).await;
    let (status, camera) = server
        .put_json(
            &producer,
            &format!("/api/v1/cameras/{CAM_LEGACY}"),
            json!({"name": "隆昌 G85 卡口", "longitude": 105.28, "latitude": 29.34,
                   "ptz_type": 3, "position_type": 10, "tags": ["卡口"]}),
        )
        .await;
    assert_eq!(status, 201, "{camera}");
    assert_eq!(
        camera["department"], "jiaotong",
        "defaults to the caller's department"
    );
    assert_eq!(camera["region_code"], "511028");
    assert_eq!(camera["region_name"], "隆昌县");
    assert_eq!(camera["county_code"], "511083");
    assert_eq!(camera["county_name"], "隆昌市");
    assert_eq!(camera["industry"], 5);
    assert_eq!(camera["type"], 131);
    assert_eq!(camera["network"], 0);
    assert_eq!(camera["serial"], 3);
    assert_eq!(camera["status"], "unknown");
    assert_eq!(camera["complete"], true);
    let gcj_lon = camera["gcj02"]["longitude"].as_f64().expect("gcj02");
    assert!(gcj_lon > 105.28 && gcj_lon < 105.29, "{gcj_lon}");
    assert_eq!(
        camera["streams"]["rtsp"],
        format!("rtsp://media.neijiang:554/rtp/{CAM_LEGACY}_{CAM_LEGACY}")
    );
    // Updating answers 200 and the GET shows the same record.
    let (status, updated) = server
        .put_json(
            &producer,
            &format!("/api/v1/cameras/{CAM_LEGACY}"),
            json!({"id": CAM_LEGACY, "name": "隆昌 G85 卡口 2"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let (status, fetched) = server
        .get(&producer, &format!("/api/v1/cameras/{CAM_LEGACY}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched["name"], "隆昌 G85 卡口 2");
    assert_eq!(fetched["reported"]["name"], "隆昌 G85 卡口 2");
    // Bad ids and bad fields name what is wrong.
    for (path, body, needle) in [
        ("/api/v1/cameras/123", json!({}), "exactly 20 digits"),
        (
            "/api/v1/cameras/4403050000132000001X",
            json!({}),
            "digits only",
        ),
        (
            "/api/v1/cameras/44030500001320000001",
            json!({}),
            "centre code",
        ),
        (
            "/api/v1/cameras/51102500009990000001",
            json!({}),
            "type (digits 11-13)",
        ),
        (
            "/api/v1/cameras/51102500001320000009",
            json!({"longitude": 181.0, "latitude": 29.0}),
            "longitude",
        ),
        (
            "/api/v1/cameras/51102500001320000009",
            json!({"id": CAM_A}),
            "must agree",
        ),
    ] {
        let (status, answer) = server.put_json(&producer, path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{path}: {message}");
    }
    let (status, _) = server.get(&producer, "/api/v1/cameras/12").await;
    assert_eq!(status, 400);
    let (status, _) = server
        .get(&producer, "/api/v1/cameras/51102500001320000099")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn batches_accept_valid_items_and_list_each_refused_one() {
    let server = hub().await;
    let producer = server.token("gongan", Role::Producer).await;
    let (status, body) = server
        .post_json(
            &producer,
            "/api/v1/cameras/batch",
            json!([
                {"id": CAM_A, "name": "ok 1"},
                {"id": "5110250000132000000"},
                {"id": "5110250000132000000x"},
                {"id": "99999900001320000001"},
                {"id": "51102500008880000001"},
                {"id": CAM_B, "longitude": 104.0, "latitude": 95.0},
                {"id": CAM_A, "name": "again"},
                {"id": NVR, "colour": "grey"},
                {"id": "51102500001320000004", "department": "jiaotong"},
                {"id": "51102500001320000005", "ptz_type": "dome"},
                "not an object",
                {"id": "51102500001320000006", "name": "ok 2"}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"], 10, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    let fields: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().unwrap_or(99),
                e["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            (1, "id"),
            (2, "id"),
            (3, "id"),
            (4, "id"),
            (5, "latitude"),
            (6, "id"),
            (7, "colour"),
            (8, "department"),
            (9, "ptz_type"),
            (10, "channel"),
        ]
    );
    assert!(
        errors[5]["message"]
            .as_str()
            .unwrap_or("")
            .contains("duplicate of item 0")
    );
    assert_eq!(errors[0]["id"], "5110250000132000000");
    // Only the valid ones are in the registry.
    let (_, page) = server.get(&producer, "/api/v1/cameras").await;
    let ids: Vec<&str> = page["cameras"]
        .as_array()
        .expect("cameras")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec![CAM_A, "51102500001320000006"]);

    // NDJSON: a broken line is that line's error.
    let ndjson = format!(
        "{{\"id\": \"{CAM_B}\", \"name\": \"ndjson ok\"}}\n{{broken\n\n{{\"id\": \"{NVR}\"}}\n"
    );
    let (status, body) = post_body(
        &server,
        &producer,
        "/api/v1/cameras/batch",
        "application/x-ndjson",
        &ndjson,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["errors"][0]["line"], 2, "{body}");
    // A body that is not an array at all is the request's error, and changes nothing.
    let (status, body) = post_body(
        &server,
        &producer,
        "/api/v1/cameras/batch",
        "application/json",
        "{\"id\": 1}",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post_body(
        &server,
        &producer,
        "/api/v1/cameras/batch",
        "text/csv",
        "id",
    )
    .await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn keepalives_and_events_drive_the_status_the_api_shows() {
    let server = hub().await;
    let producer = server.token("gongan", Role::Producer).await;
    register_three(&server, &producer).await;
    let (status, body) = server
        .post_json(
            &producer,
            "/api/v1/cameras/keepalive",
            json!([
                {"id": NVR},
                {"id": "51102500001320000077"},
                {"id": CAM_A, "at": "2999-01-01T00:00:00Z"},
                {"id": CAM_A, "at": "yesterday"},
                {"id": CAM_A, "extra": 1},
                {"id": "123"}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(
        body["channels_marked"], 3,
        "the NVR marks itself and both channels"
    );
    let messages: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or(""))
        .collect();
    assert!(messages[0].contains("register it first"), "{messages:?}");
    assert!(messages[1].contains("in the future"), "{messages:?}");
    assert!(messages[2].contains("RFC 3339"), "{messages:?}");
    assert!(messages[3].contains("unknown field"), "{messages:?}");
    assert!(messages[4].contains("20 digits"), "{messages:?}");

    let (_, camera) = server
        .get(&producer, &format!("/api/v1/cameras/{CAM_A}"))
        .await;
    assert_eq!(camera["status"], "online", "{camera}");
    assert!(camera["last_keepalive_at"].is_string());

    let (status, body) = server
        .post_json(
            &producer,
            "/api/v1/cameras/events",
            json!([
                {"id": CAM_B, "event": "VLOST"},
                {"id": CAM_A, "event": "EXPLODE"},
                {"id": CAM_A},
                {"id": "51102500001320000088", "event": "OFF"},
                {"id": "51102500001320000089", "event": "ADD",
                 "channel": {"name": "新增 1", "parent_id": NVR}},
                {"id": "51102500001320000090", "event": "ADD", "channel": {"latitude": 100}},
                {"id": CAM_A, "event": "ON", "channel": {"name": "x"}}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        fields,
        vec!["event", "event", "id", "channel.latitude", "channel"]
    );

    let (_, camera) = server
        .get(&producer, &format!("/api/v1/cameras/{CAM_B}"))
        .await;
    assert_eq!(camera["status"], "offline");
    assert_eq!(camera["notified"], "VLOST");
    // Explicit stream URLs win over the template; the others are derived.
    assert_eq!(camera["streams"]["rtsp"], "rtsp://nvr.zizhong/ch2");
    assert_eq!(
        camera["streams"]["flv"],
        format!("http://media.neijiang/rtp/{NVR}_{CAM_B}.live.flv")
    );

    let (_, offline) = server
        .get(&producer, "/api/v1/cameras?status=offline")
        .await;
    let ids: Vec<&str> = offline["cameras"]
        .as_array()
        .expect("cameras")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec![CAM_B]);

    let (status, stats) = server
        .get(&producer, "/api/v1/cameras/stats?group_by=region")
        .await;
    assert_eq!(status, 200, "{stats}");
    let zizhong = &stats["groups"][0];
    assert_eq!(zizhong["key"], "511025");
    assert_eq!(zizhong["name"], "资中县");
    assert_eq!(
        zizhong["total"], 3,
        "video channels; the NVR is not one: {stats}"
    );
    assert_eq!(zizhong["online"], 1, "CAM_A: {stats}");
    assert_eq!(zizhong["offline"], 1);
    assert_eq!(zizhong["unknown"], 1, "the ADDed channel: {stats}");
    let rate = zizhong["online_rate"].as_f64().expect("rate");
    assert!((rate - 1.0 / 3.0).abs() < 1e-9, "{rate}");
    assert_eq!(stats["overall"]["total"], 3);
    let availability = zizhong["availability"].as_f64().expect("availability");
    assert!(availability > 0.0 && availability < 1.0, "{availability}");
}

#[tokio::test]
async fn curated_overrides_win_until_removed() {
    let server = hub().await;
    let producer = server.token("gongan", Role::Producer).await;
    register_three(&server, &producer).await;
    let path = format!("/api/v1/cameras/{CAM_A}/curated");
    let (status, camera) = server
        .put_json(
            &producer,
            &path,
            json!({"name": "北街与东街交叉口 (已核实)"}),
        )
        .await;
    assert_eq!(status, 200, "{camera}");
    assert_eq!(camera["name"], "北街与东街交叉口 (已核实)");
    assert_eq!(camera["curated"]["name"], "北街与东街交叉口 (已核实)");
    register_three_again(&server, &producer).await;
    let (_, camera) = server
        .get(&producer, &format!("/api/v1/cameras/{CAM_A}"))
        .await;
    assert_eq!(
        camera["name"], "北街与东街交叉口 (已核实)",
        "a re-report keeps the curation"
    );
    assert_eq!(camera["reported"]["name"], "北街口 v2");
    let (status, bad) = server
        .put_json(&producer, &path, json!({"ptz_type": 9}))
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, camera) = server.delete(&producer, &path).await;
    assert_eq!(status, 200, "{camera}");
    assert_eq!(camera["name"], "北街口 v2");
}

async fn register_three_again(server: &TestServer, token: &str) {
    let (status, body) = server
        .post_json(
            token,
            "/api/v1/cameras/batch",
            json!([{"id": CAM_A, "parent_id": NVR, "name": "北街口 v2", "department": "gongan"}]),
        )
        .await;
    assert_eq!((status, &body["updated"]), (200, &json!(1)), "{body}");
}

#[tokio::test]
async fn only_owners_and_admins_change_cameras_and_everyone_but_dashboards_reads() {
    let server = hub().await;
    let owner = server.token("gongan", Role::Producer).await;
    register_three(&server, &owner).await;
    let other = server.token("jiaotong", Role::Producer).await;
    let analyst = server.token("jiaotong", Role::Analyst).await;
    let dashboard = server.token("gongan", Role::Dashboard).await;
    let camera = format!("/api/v1/cameras/{CAM_A}");
    let (status, body) = server
        .put_json(&other, &camera, json!({"name": "mine now"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("belongs to department gongan")
    );
    let (status, body) = server
        .put_json(&other, &format!("{camera}/curated"), json!({"name": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(
            &other,
            "/api/v1/cameras/events",
            json!([{"id": CAM_A, "event": "OFF"}]),
        )
        .await;
    assert_eq!((status, &body["rejected"]), (200, &json!(1)), "{body}");
    let (status, _) = server.put_json(&analyst, &camera, json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = server
        .post_json(
            &analyst,
            "/api/v1/cameras/keepalive",
            json!([{"id": CAM_A}]),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server.get(&analyst, &camera).await;
    assert_eq!(status, 200);
    let (status, _) = server.get(&dashboard, &camera).await;
    assert_eq!(status, 403);
    let response = server
        .client
        .get(server.url(&camera))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    // The admin may change any channel, including handing it to another department.
    let (status, body) = server
        .put_json(
            &server.admin,
            &format!("{camera}/curated"),
            json!({"department": "jiaotong"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["department"], "jiaotong");
}

#[tokio::test]
async fn searches_page_with_a_cursor_and_refuse_bad_parameters() {
    let server = hub().await;
    let producer = server.token("gongan", Role::Producer).await;
    let items: Vec<Value> = (1..=25)
        .map(|serial| {
            json!({"id": format!("51102500001320{serial:06}"), "name": format!("cam {serial}"),
                   "longitude": 104.8 + serial as f64 / 1000.0, "latitude": 29.7})
        })
        .collect();
    let (status, body) = server
        .post_json(&producer, "/api/v1/cameras/batch", Value::Array(items))
        .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(25)), "{body}");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/cameras?region=511000&limit=10&cursor={cursor}"),
            None => "/api/v1/cameras?region=511000&limit=10".to_string(),
        };
        let (status, page) = server.get(&producer, &path).await;
        assert_eq!(status, 200, "{page}");
        for camera in page["cameras"].as_array().expect("cameras") {
            seen.push(camera["serial"].as_u64().expect("serial"));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<u64>>());
    let (_, boxed) = server
        .get(&producer, "/api/v1/cameras?bbox=104.8,29.6,104.8055,29.8")
        .await;
    assert_eq!(boxed["cameras"].as_array().map(Vec::len), Some(5));
    let (_, none) = server.get(&producer, "/api/v1/cameras?region=511024").await;
    assert_eq!(none["cameras"].as_array().map(Vec::len), Some(0));
    for (query, needle) in [
        ("status=sleeping", "status"),
        ("bbox=1,2,3", "bbox"),
        ("bbox=105,29,104,30", "bbox"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("region=5110x0", "region"),
        ("cursor=abc", "cursor"),
        ("industry=traffic", "industry"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = server
            .get(&producer, &format!("/api/v1/cameras?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{query}: {message}");
    }
    for query in ["group_by=colour", "window_hours=0", "window_hours=week"] {
        let (status, body) = server
            .get(&producer, &format!("/api/v1/cameras/stats?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
    }
}

/// Weekly and monthly availability (`days=`, `from=`/`to=`) come from the daily roll-ups,
/// which `hub.camera_daily` shows: on a hub whose clock reads 2026-11-28 10:00 in Beijing,
/// with a history placed on the three days before.
#[tokio::test]
async fn whole_day_statistics_and_hub_camera_daily_come_from_the_daily_roll_ups() {
    use cityhub_catalog::camera::daily::{beijing_day, day_start};
    use cityhub_catalog::camera::{CameraSignal, ChannelReport, SignalKind};
    const HOUR: i64 = 3_600_000;
    const WEIYUAN: &str = "51102400041320000004";
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:00+08:00")
        .expect("time")
        .with_timezone(&chrono::Utc);
    // Keepalives an hour apart: a channel is online for three hours after one.
    let server = TestServer::spawn_with_clock(
        |config| config.cameras.keepalive_interval_secs = 3600,
        cityhub_catalog::clock::Clock::starting_at(start),
    )
    .await;
    server.department("gongan").await;
    server.department("jiaotong").await;
    let today = beijing_day(start.timestamp_millis());
    let began = |days_ago: i32| day_start(today - days_ago);
    let catalog = &server.state.catalog;
    let reports = [
        json!({"id": CAM_A, "department": "gongan"}),
        json!({"id": CAM_B, "department": "gongan"}),
        json!({"id": WEIYUAN, "department": "jiaotong"}),
    ]
    .into_iter()
    .map(|r| ChannelReport::from_json(r, None).expect("report"))
    .collect();
    // Registered at 23:00 on 11-24; CAM_A online 02:00-05:00 on 11-25, CAM_B 22:00 on
    // 11-26 to 01:00 on 11-27, 威远's never heard of.
    catalog
        .register_cameras(reports, None, began(3) - HOUR)
        .await
        .expect("register");
    let keepalive = |id: &str, at: i64| CameraSignal {
        id: id.into(),
        at,
        kind: SignalKind::Keepalive,
    };
    catalog
        .camera_signals(
            vec![
                keepalive(CAM_A, began(3) + 2 * HOUR),
                keepalive(CAM_B, began(2) + 22 * HOUR),
            ],
            None,
            server.state.cameras.settings().liveness,
            began(0),
        )
        .await
        .expect("keepalives");
    let viewer = server.token("gongan", Role::Analyst).await;
    let stats = |query: &'static str| {
        let server = &server;
        let viewer = viewer.clone();
        async move {
            let (status, body) = server
                .get(
                    &viewer,
                    &format!("/api/v1/cameras/stats?group_by=region&{query}"),
                )
                .await;
            assert_eq!(status, 200, "{query}: {body}");
            body
        }
    };
    let availability = |body: &Value, key: &str| {
        body["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["key"] == key)
            .and_then(|g| g["availability"].as_f64())
            .unwrap_or_else(|| panic!("{key} in {body}"))
    };

    let three = stats("days=3").await;
    assert_eq!(
        three["window"],
        json!({"from": "2026-11-24T16:00:00.000Z", "to": "2026-11-27T16:00:00.000Z",
               "first_day": "2026-11-25", "last_day": "2026-11-27", "days": 3})
    );
    // 资中: 3 + 3 online hours of 2 channels × 72 h; 威远: none of 72 h.
    assert_eq!(availability(&three, "511025"), 6.0 / 144.0, "{three}");
    assert_eq!(availability(&three, "511024"), 0.0);
    assert_eq!(three["overall"]["availability"].as_f64(), Some(6.0 / 216.0));
    assert_eq!(three["overall"]["total"], 3, "counts are the channels now");
    let one_day = stats("from=2026-11-26&to=2026-11-26").await;
    assert_eq!(availability(&one_day, "511025"), 2.0 / 48.0, "{one_day}");
    let yesterday = stats("days=1").await;
    assert_eq!(availability(&yesterday, "511025"), 1.0 / 48.0);
    assert_eq!(yesterday["window"]["first_day"], "2026-11-27");

    // The rows behind them, per channel per day; the 11-24 hour of registration included.
    let rows = support::sql_ok(
        &server,
        &server.admin,
        "SELECT camera_id, count(*) AS days, sum(online_seconds) AS online, \
         sum(observed_seconds) AS observed, sum(CASE WHEN complete THEN 1 ELSE 0 END) AS whole \
         FROM hub.camera_daily GROUP BY camera_id ORDER BY camera_id",
    )
    .await;
    assert_eq!(
        rows,
        json!([
            {"camera_id": WEIYUAN, "days": 4, "online": 0.0, "observed": 262800.0, "whole": 3},
            {"camera_id": CAM_A, "days": 4, "online": 10800.0, "observed": 262800.0, "whole": 3},
            {"camera_id": CAM_B, "days": 4, "online": 10800.0, "observed": 262800.0, "whole": 3},
        ])
    );
    let per_day = support::sql_ok(
        &server,
        &server.admin,
        &format!(
            "SELECT CAST(day AS VARCHAR) AS day, online_seconds, transitions FROM hub.camera_daily \
             WHERE camera_id = '{CAM_B}' ORDER BY day"
        ),
    )
    .await;
    assert_eq!(
        per_day,
        json!([
            {"day": "2026-11-24", "online_seconds": 0.0, "transitions": 0},
            {"day": "2026-11-25", "online_seconds": 0.0, "transitions": 0},
            {"day": "2026-11-26", "online_seconds": 7200.0, "transitions": 1},
            {"day": "2026-11-27", "online_seconds": 3600.0, "transitions": 1},
        ])
    );

    for (query, needle) in [
        ("days=3&to=2026-11-27", "days"),
        ("window_hours=24&days=7", "window_hours"),
        ("days=0", "days"),
        ("days=401", "kept for 400 days"),
        ("to=2026-11-27", "from"),
        ("from=2026-11-28", "has not ended yet"),
        ("from=2026-11-27&to=2026-11-26", "after"),
        ("from=2026-13-01", "not a date"),
        (
            "from=2025-01-01&to=2025-01-31",
            "earliest day is 2025-10-24",
        ),
    ] {
        let (status, body) = server
            .get(&viewer, &format!("/api/v1/cameras/stats?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{query}: {message}");
    }
}

#[tokio::test]
async fn alarms_and_positions_are_kept_per_item_and_read_beside_their_cameras() {
    const CAR: &str = "51102500001380000009";
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:00+08:00")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let server = TestServer::spawn_with_clock(
        |config| config.cameras.position_retention_days = 1,
        cityhub_catalog::clock::Clock::starting_at(start),
    )
    .await;
    server.department("gongan").await;
    server.department("jiaotong").await;
    let gongan = server.token("gongan", Role::Producer).await;
    let jiaotong = server.token("jiaotong", Role::Producer).await;
    register_three(&server, &gongan).await;
    let (status, body) = server
        .put_json(
            &gongan,
            &format!("/api/v1/cameras/{CAR}"),
            json!({"name": "巡逻车 9"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .put_json(
            &jiaotong,
            &format!("/api/v1/cameras/{CAM_LEGACY}"),
            json!({"name": "隆昌 卡口"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // A JSON array: the good alarms are kept, a re-sent one once, each bad one named.
    let (status, body) = server
        .post_json(
            &gongan,
            "/api/v1/cameras/alarms",
            json!([
                {"id": CAM_A, "priority": 1, "method": 5, "type": 6,
                 "at": "2026-11-28T09:30:00", "description": "周界入侵"},
                {"id": CAM_B, "priority": 3, "method": 2, "type": 1,
                 "at": "2026-11-28T09:40:00+08:00"},
                {"id": CAM_A, "priority": 1, "method": 5, "type": 6,
                 "at": "2026-11-28T01:30:00Z"},
                {"id": CAM_A, "priority": 9, "method": 5, "at": "2026-11-28T09:31:00+08:00"},
                {"id": CAM_A, "priority": 2, "method": 1, "type": 3,
                 "at": "2026-11-28T09:31:00+08:00"},
                {"id": "51102500001320000777", "priority": 2, "method": 2,
                 "at": "2026-11-28T09:31:00+08:00"},
                {"id": CAM_LEGACY, "priority": 2, "method": 2, "at": "2026-11-28T09:31:00+08:00"},
                {"id": CAM_A, "priority": 2, "method": 2, "at": "2026-11-28T11:00:00+08:00"},
                "ALARM"
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["accepted"], &body["duplicates"], &body["rejected"]),
        (&json!(2), &json!(1), &json!(6)),
        "{body}"
    );
    let refused: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().expect("item"),
                e["field"].as_str().expect("field"),
            )
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            (3, "priority"),
            (4, "type"),
            (5, "id"),
            (6, "id"),
            (7, "at"),
            (8, "item")
        ]
    );
    assert!(
        body["errors"][3]["message"]
            .as_str()
            .expect("message")
            .contains("belongs to department jiaotong"),
        "{body}"
    );

    // NDJSON positions: a bad line is that line's error.
    let (status, body) = post_body(
        &server,
        &gongan,
        "/api/v1/cameras/positions",
        "application/x-ndjson",
        &format!(
            "{{\"id\":\"{CAR}\",\"at\":\"2026-11-28T09:59:00+08:00\",\"longitude\":105.05,\"latitude\":29.58,\"speed\":36.5,\"direction\":90}}\n\
             {{\"id\":\"{CAR}\",\"at\":\n\
             {{\"id\":\"{CAR}\",\"at\":\"2026-11-26T09:00:00+08:00\",\"longitude\":105.01,\"latitude\":29.57}}\n\
             {{\"id\":\"{CAR}\",\"at\":\"2026-11-28T09:59:10+08:00\",\"longitude\":105.06,\"latitude\":29.58,\"speed\":-1}}\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["accepted"], &body["rejected"]),
        (&json!(2), &json!(2)),
        "{body}"
    );
    let lines: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().expect("line"),
                e["field"].as_str().expect("field"),
            )
        })
        .collect();
    assert_eq!(lines, vec![(2, "line"), (4, "speed")]);

    // Dashboards read; they do not report.
    let dashboard = server.token("gongan", Role::Dashboard).await;
    let (status, _) = server
        .post_json(&dashboard, "/api/v1/cameras/alarms", json!([]))
        .await;
    assert_eq!(status, 403);
    // The admin reports for any department.
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/cameras/alarms",
            json!([{"id": CAM_LEGACY, "priority": 4, "method": 6, "type": 2, "at": start.timestamp_millis()}]),
        )
        .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");

    // In SQL beside the cameras, with the code tables' names.
    let rows = support::sql_ok(
        &server,
        &server.admin,
        "SELECT a.camera_id, c.name, a.county_code, a.priority_name, a.method_name, \
         a.alarm_type_name, a.description, CAST(a.at AS VARCHAR) AS at \
         FROM hub.camera_alarms a JOIN hub.cameras c ON c.id = a.camera_id ORDER BY a.seq",
    )
    .await;
    assert_eq!(
        rows,
        json!([
            {"camera_id": CAM_A, "name": "北街口", "county_code": "511025",
             "priority_name": "一级警情", "method_name": "视频报警",
             "alarm_type_name": "入侵检测报警", "description": "周界入侵",
             "at": "2026-11-28T01:30:00Z"},
            {"camera_id": CAM_B, "name": "东街口", "county_code": "511025",
             "priority_name": "三级警情", "method_name": "设备报警",
             "alarm_type_name": "视频丢失报警", "description": null,
             "at": "2026-11-28T01:40:00Z"},
            {"camera_id": CAM_LEGACY, "name": "隆昌 卡口", "county_code": "511083",
             "priority_name": "四级警情", "method_name": "设备故障报警",
             "alarm_type_name": "存储设备风扇故障报警", "description": null,
             "at": "2026-11-28T02:00:00Z"}
        ])
    );
    // A county sees its own cameras' alarms only.
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/tokens",
            json!({"department": "gongan", "role": "analyst", "region": "511083"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let longchang = body["token"].as_str().expect("token").to_string();
    let rows = support::sql_ok(
        &server,
        &longchang,
        "SELECT camera_id FROM hub.camera_alarms UNION ALL SELECT camera_id FROM hub.camera_positions",
    )
    .await;
    assert_eq!(rows, json!([{"camera_id": CAM_LEGACY}]));
    let analyst = server.token("gongan", Role::Analyst).await;
    let rows = support::sql_ok(
        &server,
        &analyst,
        "SELECT count(*) AS n, max(speed) AS fastest, \
         bool_and(gcj02_longitude > longitude) AS shifted FROM hub.camera_positions",
    )
    .await;
    assert_eq!(rows, json!([{"n": 2, "fastest": 36.5, "shifted": true}]));
    assert!(
        server
            .metrics()
            .await
            .contains("cityhub_camera_reports_total{kind=\"alarm\"} 3"),
        "metrics count what was kept"
    );

    // The sweeper deletes the positions older than cameras.position_retention_days (1).
    server.state.cameras.sweep().await.expect("sweep");
    let rows = support::sql_ok(
        &server,
        &analyst,
        "SELECT CAST(at AS VARCHAR) AS at FROM hub.camera_positions",
    )
    .await;
    assert_eq!(rows, json!([{"at": "2026-11-28T01:59:00Z"}]));
}

/// The seq of each change of a page, with its kind.
fn kinds(page: &Value) -> Vec<(String, String)> {
    page["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_string(),
                c["change"].as_str().expect("change").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_change_feed_pages_streams_scopes_and_tells_a_late_consumer_to_resync() {
    let server = hub().await;
    let gongan = server.token("gongan", Role::Producer).await;
    let analyst = server.token("gongan", Role::Analyst).await;
    let (status, listed) = server.get(&analyst, "/api/v1/cameras").await;
    assert_eq!(status, 200, "{listed}");
    let start = listed["change_cursor"]
        .as_str()
        .expect("change_cursor")
        .to_string();
    let mut events = support::EventReader::open(
        &server,
        &analyst,
        &format!("/api/v1/cameras/changes?since={start}"),
        None,
    )
    .await;
    register_three(&server, &gongan).await;
    let (status, body) = server
        .post_json(&gongan, "/api/v1/cameras/keepalive", json!([{"id": NVR}]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json(
            &gongan,
            "/api/v1/cameras/events",
            json!([{"id": CAM_B, "event": "VLOST"}, {"id": CAM_A, "event": "DEL"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put_json(
            &gongan,
            &format!("/api/v1/cameras/{CAM_B}/curated"),
            json!({"name": "东街口 (改)"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let expected = [
        (NVR, "registered"),
        (CAM_A, "registered"),
        (CAM_B, "registered"),
        // The NVR's keepalive marks it and both channels under it.
        (NVR, "status"),
        (CAM_A, "status"),
        (CAM_B, "status"),
        (CAM_B, "status"),
        (CAM_A, "deleted"),
        (CAM_B, "curated"),
    ];
    // As events, in order, each with its seq as id.
    let mut streamed = Vec::new();
    let mut last_seq: Option<i64> = None;
    for _ in &expected {
        let (event, id, data) = events
            .next(std::time::Duration::from_secs(10))
            .await
            .expect("a change event");
        assert_eq!(event, "change");
        let change: Value = serde_json::from_str(&data).expect("JSON");
        assert_eq!(change["seq"].to_string(), id);
        let seq: i64 = id.parse().expect("the id is the seq");
        assert!(
            last_seq.is_none_or(|last| seq > last),
            "{seq} after {last_seq:?}"
        );
        last_seq = Some(seq);
        streamed.push(change);
    }
    let got: Vec<(&str, &str)> = streamed
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id"),
                c["change"].as_str().expect("kind"),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(streamed[3]["status"], json!("online"));
    assert_eq!(streamed[3]["cause"], json!("keepalive"));
    assert_eq!(streamed[6]["status"], json!("offline"));
    assert_eq!(streamed[6]["notified"], json!("VLOST"));
    assert_eq!(streamed[8]["camera"]["name"], json!("东街口 (改)"));
    assert_eq!(streamed[8]["camera"]["status"], json!("offline"));
    assert_eq!(
        streamed[8]["camera"]["streams"]["rtsp"],
        json!("rtsp://nvr.zizhong/ch2")
    );
    // Reconnecting with Last-Event-ID goes on after it.
    let third = streamed[2]["seq"].to_string();
    let mut again = support::EventReader::open(
        &server,
        &analyst,
        "/api/v1/cameras/changes?since=0",
        Some(&third),
    )
    .await;
    let (_, id, _) = again
        .next(std::time::Duration::from_secs(10))
        .await
        .expect("event");
    assert_eq!(id, streamed[3]["seq"].to_string());

    // The same as pages: two at a time, with the cursor.
    let mut cursor = start.clone();
    let mut paged = Vec::new();
    loop {
        let (status, page) = server
            .get(
                &analyst,
                &format!("/api/v1/cameras/changes?since={cursor}&limit=2"),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        paged.extend(kinds(&page));
        cursor = page["next_cursor"].as_str().expect("cursor").to_string();
        if !page["more"].as_bool().expect("more") {
            break;
        }
    }
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(id, kind)| (id.to_string(), kind.to_string()))
        .collect();
    assert_eq!(paged, expected);
    let (_, page) = server
        .get(&analyst, &format!("/api/v1/cameras/changes?since={cursor}"))
        .await;
    assert_eq!(page["changes"], json!([]), "nothing after the end");
    assert_eq!(page["next_cursor"].as_str(), Some(cursor.as_str()));

    // A 威远 (511024) token sees none of 资中's channels; a 资中 one sees them all.
    for (region, seen) in [("511024", 0), ("511025", 9)] {
        let (status, body) = server
            .post_json(
                &server.admin,
                "/api/v1/tokens",
                json!({"department": "gongan", "role": "analyst", "region": region}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let scoped = body["token"].as_str().expect("token");
        let (status, page) = server
            .get(scoped, &format!("/api/v1/cameras/changes?since={start}"))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(kinds(&page).len(), seen, "{region}: {page}");
        assert_eq!(page["next_cursor"].as_str(), Some(cursor.as_str()));
    }

    // Bad cursors and limits name the parameter.
    for (query, field) in [
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("after=3", "after"),
    ] {
        let (status, body) = server
            .get(&analyst, &format!("/api/v1/cameras/changes?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{query}: {message}");
    }

    // A cursor past the newest change is not this feed's (another hub's, or the catalog was
    // restored from an older backup): list again rather than wait for what never comes.
    let (status, body) = server
        .get(&analyst, "/api/v1/cameras/changes?since=999999")
        .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], json!("resync_required"));

    // Retention deleted everything up to now: a consumer from before is told to list again,
    // as a 410 and (for a stream) before any event; one at the end goes on.
    let deleted = server
        .state
        .catalog
        .purge_camera_changes(i64::MAX)
        .await
        .expect("purge");
    assert_eq!(deleted, expected.len() as u64);
    for accept in ["application/json", "text/event-stream"] {
        let response = server
            .client
            .get(server.url(&format!("/api/v1/cameras/changes?since={start}")))
            .bearer_auth(&analyst)
            .header("accept", accept)
            .send()
            .await
            .expect("request");
        let (status, body) = support::split(response).await;
        assert_eq!(status, 410, "{accept}: {body}");
        assert_eq!(body["error"]["code"], json!("resync_required"));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("change_cursor")),
            "{body}"
        );
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_camera_change_resyncs_total 3"),
        "each answer that told a consumer to resync is counted"
    );
    assert!(
        metrics.contains("cityhub_camera_change_streams 2"),
        "the two streams still open are counted"
    );
    let (status, page) = server
        .get(&analyst, &format!("/api/v1/cameras/changes?since={cursor}"))
        .await;
    assert_eq!(status, 200, "{page}");
    let (_, listed) = server.get(&analyst, "/api/v1/cameras").await;
    assert_eq!(listed["change_cursor"].as_str(), Some(cursor.as_str()));
    // The stream that was open is at the end, past what retention deleted: it goes on.
    let (status, _) = server
        .put_json(
            &gongan,
            &format!("/api/v1/cameras/{CAM_B}/curated"),
            json!({"name": "东街口"}),
        )
        .await;
    assert_eq!(status, 200);
    let (event, _, data) = events
        .next(std::time::Duration::from_secs(10))
        .await
        .expect("the stream goes on");
    assert_eq!(event, "change");
    assert!(data.contains("\"curated\""), "{data}");
}

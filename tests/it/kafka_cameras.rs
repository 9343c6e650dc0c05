//! Camera registrations, keepalives and NOTIFY events arriving from Kafka topics (librdkafka's
//! mock cluster, a real Kafka-protocol broker in-process): each good message applied once,
//! bad ones and ones the registry refuses kept as dead letters, and a crash losing nothing.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::TestServer;
use cityhub_catalog::camera::status::{Liveness, Status};
use cityhub_catalog::camera::{CameraFeed, CameraQuery};
use cityhub_config::KafkaFeed;
use cityhub_ingest::kafka::KafkaFeeds;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const CHANNELS: &str = "platform.channels";
const KEEPALIVES: &str = "platform.keepalives";
const EVENTS: &str = "platform.events";

fn id(serial: u32) -> String {
    format!("51102500001320{serial:06}")
}

fn produce(bootstrap: &str, topic: &str, payloads: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (index, payload) in payloads.iter().enumerate() {
        let key = format!("k{index}");
        let record = BaseRecord::to(topic)
            .partition((index % 2) as i32)
            .key(&key)
            .payload(payload);
        support::send(&producer, record);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Registrations `serials`, and every tenth serial also a bad message of some kind.
fn registrations(serials: std::ops::RangeInclusive<u32>) -> Vec<String> {
    let mut payloads = Vec::new();
    for serial in serials {
        payloads.push(format!(
            r#"{{"id":"{}","name":"资中 {serial}号杆","department":"gongan","longitude":104.85,"latitude":29.77}}"#,
            id(serial)
        ));
        if serial % 10 == 0 {
            payloads.push(match (serial / 10) % 3 {
                0 => "{not json".to_string(),
                1 => format!(r#"{{"id":"{}9"}}"#, id(serial)),
                _ => format!(r#"{{"id":"{}","latitude":95}}"#, id(serial)),
            });
        }
    }
    payloads
}

fn feed(bootstrap: &str, topic: &str, dataset: &str) -> KafkaFeed {
    // A group per feed, so that starting one feed does not rebalance the others, and a
    // short session, so that the crashed worker's partitions are reassigned quickly.
    let properties = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    KafkaFeed {
        flush_rows: 25,
        flush_age_ms: 200,
        group_id: format!("cityhub-{topic}"),
        properties,
        ..KafkaFeed::new(bootstrap, topic, dataset)
    }
}

/// Starts one feed, reporting on `board`.
async fn start(
    server: &TestServer,
    feed: KafkaFeed,
    board: cityhub_ingest::kafka::StatusBoard,
) -> KafkaFeeds {
    KafkaFeeds::start(&server.state.ingest, &[feed], board, Liveness::default())
        .await
        .expect("the feed starts")
}

async fn wait_for(server: &TestServer, feed: CameraFeed, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offsets = server
            .state
            .catalog
            .camera_stream_offsets(feed)
            .await
            .expect("offsets");
        let done: i64 = offsets.iter().map(|o| o.2).sum();
        if done >= total {
            assert_eq!(done, total, "offsets past the end: {offsets:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {total} {feed:?} messages applied: {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn registered(server: &TestServer) -> usize {
    server
        .state
        .catalog
        .search_cameras(
            CameraQuery {
                limit: 10_000,
                ..CameraQuery::default()
            },
            cityhub_catalog::camera::now_ms(),
            Liveness::default(),
        )
        .await
        .expect("search")
        .len()
}

async fn dead_letters(server: &TestServer) -> Vec<cityhub_catalog::StoredRejection> {
    server
        .state
        .catalog
        .camera_rejected_records(0, 10_000)
        .await
        .expect("dead letters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn camera_topics_feed_the_registry_exactly_once() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in [CHANNELS, KEEPALIVES, EVENTS] {
        cluster.create_topic(topic, 2, 1).expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();

    // 100 channels and 10 bad registration messages.
    let first = registrations(1..=100);
    produce(&bootstrap, CHANNELS, &first);
    let channels = start(
        &server,
        feed(&bootstrap, CHANNELS, "hub.cameras"),
        Default::default(),
    )
    .await;
    wait_for(&server, CameraFeed::Registrations, first.len() as i64).await;
    assert_eq!(registered(&server).await, 100);
    assert_eq!(dead_letters(&server).await.len(), 10);

    // A crash loses nothing and applies nothing twice: 50 more channels after a restart.
    channels.abandon().await;
    let second = registrations(101..=150);
    produce(&bootstrap, CHANNELS, &second);
    let channels = start(
        &server,
        feed(&bootstrap, CHANNELS, "hub.cameras"),
        Default::default(),
    )
    .await;
    wait_for(
        &server,
        CameraFeed::Registrations,
        (first.len() + second.len()) as i64,
    )
    .await;
    assert_eq!(registered(&server).await, 150);
    assert_eq!(
        dead_letters(&server).await.len(),
        15,
        "each bad message kept once"
    );
    // The catalogue's change feed heard of each channel once.
    let changes = server
        .state
        .catalog
        .camera_changes(0, 10_000)
        .await
        .expect("changes")
        .changes;
    let fed: std::collections::BTreeSet<&str> = changes
        .iter()
        .map(|c| c.change.camera_id.as_str())
        .collect();
    assert_eq!(changes.len(), 150, "one change per channel");
    assert_eq!(fed.len(), 150, "of 150 channels");
    assert!(
        changes
            .iter()
            .all(|c| c.change.kind == cityhub_catalog::camera::changes::ChangeKind::Registered)
    );

    // Keepalives for 1..=80 (and two unknown ids), NOTIFY VLOST for 1..=5 (and a bad name).
    let now = cityhub_catalog::camera::now_ms();
    let mut keepalives: Vec<String> = (1..=80)
        .map(|serial| format!(r#"{{"id":"{}","at":{now}}}"#, id(serial)))
        .collect();
    keepalives.push(format!(r#"{{"id":"{}"}}"#, id(900)));
    keepalives.push(format!(r#"{{"id":"{}"}}"#, id(901)));
    produce(&bootstrap, KEEPALIVES, &keepalives);
    let mut events: Vec<String> = (1..=5)
        .map(|serial| {
            format!(
                r#"{{"id":"{}","event":"VLOST","at":{}}}"#,
                id(serial),
                now + 1
            )
        })
        .collect();
    events.push(format!(r#"{{"id":"{}","event":"EXPLODE"}}"#, id(6)));
    let signals = start(
        &server,
        feed(&bootstrap, KEEPALIVES, "hub.camera_keepalives"),
        Default::default(),
    )
    .await;
    wait_for(&server, CameraFeed::Keepalives, keepalives.len() as i64).await;
    produce(&bootstrap, EVENTS, &events);
    let notify = start(
        &server,
        feed(&bootstrap, EVENTS, "hub.camera_events"),
        server.state.kafka.clone(),
    )
    .await;
    wait_for(&server, CameraFeed::Events, events.len() as i64).await;

    let status = |serial: u32| {
        let server = &server;
        async move {
            let (record, _) = server
                .state
                .catalog
                .camera(&id(serial))
                .await
                .expect("read")
                .expect("registered");
            record
                .live
                .status_at(cityhub_catalog::camera::now_ms(), Liveness::default())
        }
    };
    assert_eq!(status(3).await, Status::Offline, "VLOST");
    assert_eq!(status(42).await, Status::Online);
    assert_eq!(status(120).await, Status::Unknown);
    let letters = dead_letters(&server).await;
    assert_eq!(
        letters.len(),
        18,
        "15 registrations, 2 unknown keepalives, 1 bad event"
    );
    let by_feed = |dataset: &str| letters.iter().filter(|l| l.dataset == dataset).count();
    assert_eq!(by_feed("hub.cameras"), 15);
    assert_eq!(by_feed("hub.camera_keepalives"), 2);
    assert_eq!(by_feed("hub.camera_events"), 1);
    assert!(
        letters
            .iter()
            .any(|l| l.record.error.contains("register it first")),
        "{letters:?}"
    );

    // Admins read them in SQL beside the datasets' dead letters.
    let response = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(&server.admin)
        .header("content-type", "text/plain")
        .body("SELECT dataset, count(*) AS n FROM hub.rejected_records GROUP BY dataset ORDER BY dataset")
        .send()
        .await
        .expect("sql");
    let (code, body) = support::split(response).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!([
            {"dataset": "hub.camera_events", "n": 1},
            {"dataset": "hub.camera_keepalives", "n": 2},
            {"dataset": "hub.cameras", "n": 15}
        ])
    );
    // The feeds' partitions are in the ingest status, for admins.
    let (code, status) = server.get(&server.admin, "/api/v1/ingest/status").await;
    assert_eq!(code, 200, "{status}");
    let partitions = status["partitions"].as_array().expect("partitions");
    assert!(
        partitions
            .iter()
            .any(|p| p["dataset"] == "hub.camera_events"),
        "{status}"
    );
    for feeds in [channels, signals, notify] {
        feeds.stop().await;
    }
}

#[tokio::test]
async fn camera_feeds_are_checked_before_anything_starts() {
    let server = TestServer::spawn().await;
    let csv = KafkaFeed {
        format: "csv".into(),
        ..KafkaFeed::new("127.0.0.1:1", "t", "hub.camera_events")
    };
    let refused = KafkaFeeds::start(
        &server.state.ingest,
        &[csv],
        Default::default(),
        Liveness::default(),
    )
    .await
    .err()
    .expect("csv refused");
    assert!(refused.to_string().contains("format"), "{refused}");
    let system = KafkaFeed::new("127.0.0.1:1", "t", "hub.datasets");
    let refused = KafkaFeeds::start(
        &server.state.ingest,
        &[system],
        Default::default(),
        Liveness::default(),
    )
    .await
    .err()
    .expect("system table refused");
    assert!(refused.to_string().contains("system table"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alarm_and_position_topics_are_kept_exactly_once() {
    const ALARMS: &str = "platform.alarms";
    const POSITIONS: &str = "platform.positions";
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    let reports = (1..=10)
        .map(|serial| {
            cityhub_catalog::camera::ChannelReport::from_json(
                serde_json::json!({"id": id(serial), "department": "gongan"}),
                None,
            )
            .expect("report")
        })
        .collect();
    let now = cityhub_catalog::camera::now_ms();
    server
        .state
        .catalog
        .register_cameras(reports, None, now - 60_000)
        .await
        .expect("register");
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in [ALARMS, POSITIONS] {
        cluster.create_topic(topic, 2, 1).expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    // 40 alarms of the ten channels, each sent twice (a platform re-sending after a
    // reconnect), and three bad ones.
    let alarm = |serial: u32, minute: i64| {
        format!(
            r#"{{"id":"{}","priority":2,"method":5,"type":2,"at":{}}}"#,
            id(serial),
            now - minute * 60_000
        )
    };
    let mut alarms: Vec<String> = (0..40).map(|i| alarm(1 + i % 10, i as i64)).collect();
    alarms.extend((0..40).map(|i| alarm(1 + i % 10, i as i64)));
    alarms.push(format!(
        r#"{{"id":"{}","priority":7,"method":5,"at":{now}}}"#,
        id(1)
    ));
    alarms.push(format!(
        r#"{{"id":"{}","priority":2,"method":5,"at":{now}}}"#,
        id(99)
    ));
    alarms.push("[]".into());
    produce(&bootstrap, ALARMS, &alarms);
    let positions: Vec<String> = (0..30)
        .map(|second| {
            format!(
                r#"{{"id":"{}","at":{},"longitude":105.05,"latitude":29.58,"speed":{second}}}"#,
                id(1),
                now - second * 1_000
            )
        })
        .collect();
    produce(&bootstrap, POSITIONS, &positions);

    let alarm_feed = start(
        &server,
        feed(&bootstrap, ALARMS, "hub.camera_alarms"),
        Default::default(),
    )
    .await;
    let position_feed = start(
        &server,
        feed(&bootstrap, POSITIONS, "hub.camera_positions"),
        Default::default(),
    )
    .await;
    wait_for(&server, CameraFeed::Alarms, alarms.len() as i64).await;
    wait_for(&server, CameraFeed::Positions, positions.len() as i64).await;
    // A crash, ten more positions, a restart: nothing lost, nothing twice.
    position_feed.abandon().await;
    let more: Vec<String> = (30..40)
        .map(|second| {
            format!(
                r#"{{"id":"{}","at":{},"longitude":105.05,"latitude":29.58}}"#,
                id(2),
                now - second * 1_000
            )
        })
        .collect();
    produce(&bootstrap, POSITIONS, &more);
    let position_feed = start(
        &server,
        feed(&bootstrap, POSITIONS, "hub.camera_positions"),
        Default::default(),
    )
    .await;
    wait_for(
        &server,
        CameraFeed::Positions,
        (positions.len() + more.len()) as i64,
    )
    .await;

    let rows = support::sql_ok(
        &server,
        &server.admin,
        "SELECT (SELECT count(*) FROM hub.camera_alarms) AS alarms, \
         (SELECT count(DISTINCT camera_id) FROM hub.camera_alarms) AS alarming, \
         (SELECT count(*) FROM hub.camera_positions) AS positions, \
         (SELECT count(*) FROM hub.camera_positions p JOIN hub.cameras c ON c.id = p.camera_id \
          WHERE c.department = 'gongan') AS joined",
    )
    .await;
    assert_eq!(
        rows,
        serde_json::json!([{"alarms": 40, "alarming": 10, "positions": 40, "joined": 40}])
    );
    let letters = dead_letters(&server).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(letters.iter().all(|l| l.dataset == "hub.camera_alarms"));
    assert!(
        letters.iter().any(|l| l.record.error.contains("priority")),
        "{letters:?}"
    );
    for feeds in [alarm_feed, position_feed] {
        feeds.stop().await;
    }
}

//! Kafka feeds against librdkafka's mock cluster (a real Kafka-protocol broker in-process):
//! every good message lands exactly once, bad ones become dead letters, and neither a crash,
//! a rebalance, a zombie nor broker errors lose or duplicate anything.

use crate::support;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::TestServer;
use arrow::array::{Array, AsArray, Int64Array};
use cityhub_catalog::{Dataset, DatasetName, OffsetAdvance, StreamProgress};
use cityhub_config::KafkaFeed;
use cityhub_ingest::kafka::KafkaFeeds;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

const TOPIC: &str = "gongan.alarms";

/// A hub with `gongan.alarms` (id, kind, and the Kafka metadata columns).
async fn hub() -> (TestServer, Dataset) {
    hub_keyed(json!([])).await
}

/// [`hub`] with `gongan.alarms` keyed by `primary_key`.
async fn hub_keyed(primary_key: serde_json::Value) -> (TestServer, Dataset) {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({
                "name": "gongan.alarms",
                "sharing": "unconditional",
                "primary_key": primary_key,
                "columns": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "kind", "type": "string"},
                    {"name": "_partition", "type": "int32", "nullable": false},
                    {"name": "_offset", "type": "int64", "nullable": false},
                    {"name": "_key", "type": "string"},
                    {"name": "_timestamp", "type": "timestamp"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dataset = server
        .state
        .catalog
        .dataset(&DatasetName::parse("gongan.alarms").expect("name"))
        .await
        .expect("catalog")
        .expect("dataset");
    (server, dataset)
}

fn cluster(
    partitions: i32,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster
        .create_topic(TOPIC, partitions, 1)
        .expect("create topic");
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

/// Produces messages with ids `ids` round-robin over `partitions`; every id divisible by 10
/// gets a bad payload of one of four kinds. Returns the ids that are good.
fn produce(bootstrap: &str, partitions: i32, ids: std::ops::Range<i64>) -> Vec<i64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut good = Vec::new();
    for id in ids {
        let payload = if id % 10 == 0 {
            match (id / 10) % 4 {
                0 => "{not json".to_string(),
                1 => format!(r#"{{"id":"{id}"}}"#),
                2 => String::new(),
                _ => format!(r#"{{"id":{id},"kind":"{}"}}"#, "x".repeat(5000)),
            }
        } else {
            good.push(id);
            format!(r#"{{"id":{id},"kind":"theft"}}"#)
        };
        let key = format!("key-{id}");
        let partition = (id % i64::from(partitions)) as i32;
        let record = BaseRecord::to(TOPIC)
            .partition(partition)
            .key(&key)
            .payload(&payload);
        support::send(&producer, record);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    good
}

fn feed(bootstrap: &str) -> KafkaFeed {
    KafkaFeed {
        flush_rows: 40,
        flush_age_ms: 200,
        max_message_bytes: 4096,
        ..KafkaFeed::new(bootstrap, TOPIC, "gongan.alarms")
    }
}

/// Starts one feed with a status board of its own.
async fn start(hub: &cityhub_server::AppState, feed: KafkaFeed) -> KafkaFeeds {
    KafkaFeeds::start(&hub.ingest, &[feed], Default::default(), Default::default())
        .await
        .expect("the feed starts")
}

/// Waits until the catalog's offsets add up to `total` messages.
async fn wait_for_offsets(server: &TestServer, dataset: &Dataset, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offsets = server
            .state
            .catalog
            .stream_offsets(dataset.id)
            .await
            .expect("offsets");
        let done: i64 = offsets.iter().map(|o| o.next_offset).sum();
        if done >= total {
            assert_eq!(done, total, "offsets past the end: {offsets:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {total} messages committed: {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every id in the dataset's current snapshot, sorted, duplicates kept.
async fn ids(server: &TestServer) -> Vec<i64> {
    let mut ids = Vec::new();
    for batch in support::read_rows(&server.state, "gongan.alarms").await {
        let column = batch
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .expect("id column");
        ids.extend(column.values().iter().copied());
    }
    ids.sort_unstable();
    ids
}

async fn dead_letters(
    server: &TestServer,
    dataset: &Dataset,
) -> Vec<cityhub_catalog::StoredRejection> {
    server
        .state
        .catalog
        .rejected_records(dataset.id, 0, 100_000)
        .await
        .expect("dead letters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_good_message_lands_once_and_bad_ones_become_dead_letters() {
    let (server, dataset) = hub().await;
    let (_cluster, bootstrap) = cluster(3);
    let mut good = produce(&bootstrap, 3, 1..601);
    let feeds = KafkaFeeds::start(
        &server.state.ingest,
        &[feed(&bootstrap)],
        server.state.kafka.clone(),
        Default::default(),
    )
    .await
    .expect("start");
    wait_for_offsets(&server, &dataset, 600).await;
    good.sort_unstable();
    assert_eq!(ids(&server).await, good);

    let dead = dead_letters(&server, &dataset).await;
    assert_eq!(dead.len(), 60);
    let errors: BTreeMap<i64, String> = dead
        .iter()
        .map(|d| {
            let id: i64 = String::from_utf8_lossy(d.record.key.as_deref().unwrap_or_default())
                .trim_start_matches("key-")
                .parse()
                .expect("key");
            (id, d.record.error.clone())
        })
        .collect();
    assert!(errors[&40].contains("not valid JSON"), "{}", errors[&40]);
    assert!(errors[&10].starts_with("id:"), "{}", errors[&10]);
    assert_eq!(errors[&20], "the message is empty");
    assert!(errors[&30].contains("max_message_bytes"), "{}", errors[&30]);
    assert_eq!(dead[0].record.topic, TOPIC);

    // The metadata columns come from Kafka: partition = id % 3, keys, timestamps.
    for batch in support::read_rows(&server.state, "gongan.alarms").await {
        let id = batch.column_by_name("id").expect("id");
        let id = id.as_any().downcast_ref::<Int64Array>().expect("ids");
        let partition = batch.column_by_name("_partition").expect("partition");
        let partition = partition
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .expect("partitions");
        for row in 0..batch.num_rows() {
            assert_eq!(i64::from(partition.value(row)), id.value(row) % 3);
        }
        assert_eq!(
            batch.column_by_name("_timestamp").expect("ts").null_count(),
            0
        );
    }

    // The status shows every partition caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = feeds.status();
        if status.len() == 3 && status.iter().all(|s| s.lag == Some(0)) {
            assert!(status.iter().all(|s| s.catalog_offset == Some(200)));
            assert_eq!(status.iter().map(|s| s.rejected_total).sum::<u64>(), 60);
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The same over HTTP and in /metrics; dead letters in SQL for the owner only.
    let (status, body) = server.get(&server.admin, "/api/v1/ingest/status").await;
    assert_eq!(status, 200, "{body}");
    let partitions = body["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    assert!(
        partitions
            .iter()
            .all(|p| p["lag"] == 0 && p["last_flush_at"].is_string())
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains("cityhub_kafka_lag{"), "{metrics}");
    assert!(metrics.contains("cityhub_kafka_rejected_total{"));
    let owner = server.token("gongan", cityhub_catalog::Role::Analyst).await;
    let dead_sql = "SELECT count(*) AS n, min(\"offset\") AS first FROM hub.rejected_records";
    let (status, rows) = server
        .post_json(&owner, "/api/v1/sql", json!({ "sql": dead_sql }))
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows[0]["n"], 60);
    server.department("jiaotong").await;
    let other = server
        .token("jiaotong", cityhub_catalog::Role::Analyst)
        .await;
    let (_, rows) = server
        .post_json(&other, "/api/v1/sql", json!({ "sql": dead_sql }))
        .await;
    assert_eq!(rows[0]["n"], 0, "dead letters are the owner's to read");
    feeds.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_worker_resumes_from_the_catalog_without_loss_or_duplicates() {
    let (server, dataset) = hub().await;
    let (_cluster, bootstrap) = cluster(2);
    let mut good = produce(&bootstrap, 2, 1..401);
    // Batches of 40 rows and no flush by age: the crash leaves half-built batches behind.
    let slow = KafkaFeed {
        flush_age_ms: 600_000,
        ..feed(&bootstrap)
    };
    let feeds = start(&server.state, slow).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .state
        .catalog
        .stream_offsets(dataset.id)
        .await
        .expect("offsets")
        .iter()
        .map(|o| o.next_offset)
        .sum::<i64>()
        < 100
    {
        assert!(Instant::now() < deadline, "nothing committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    feeds.abandon().await;
    good.extend(produce(&bootstrap, 2, 401..601));

    let feeds = start(&server.state, feed(&bootstrap)).await;
    wait_for_offsets(&server, &dataset, 600).await;
    good.sort_unstable();
    assert_eq!(ids(&server).await, good, "each good message exactly once");
    assert_eq!(dead_letters(&server, &dataset).await.len(), 60);
    feeds.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hubs_share_the_partitions_and_a_rebalance_loses_and_duplicates_nothing() {
    let (server, dataset) = hub().await;
    let (_cluster, bootstrap) = cluster(4);
    let mut good = produce(&bootstrap, 4, 1..401);
    let first = start(&server.state, feed(&bootstrap)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second hub on the same data folder, with its own catalog connections and commit
    // queues (as a second process has), joins the group: the partitions are split.
    let other_hub = cityhub_server::AppState::open((*server.state.config).clone())
        .await
        .expect("a second hub");
    let second = start(&other_hub, feed(&bootstrap)).await;
    good.extend(produce(&bootstrap, 4, 401..801));
    wait_for_offsets(&server, &dataset, 800).await;
    good.sort_unstable();
    assert_eq!(ids(&server).await, good);
    assert_eq!(dead_letters(&server, &dataset).await.len(), 80);
    let owned = |feeds: &KafkaFeeds| feeds.status().iter().filter(|s| s.worker.is_some()).count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while owned(&first) + owned(&second) != 4 || owned(&second) == 0 {
        assert!(
            Instant::now() < deadline,
            "first {:?} second {:?}",
            first.status(),
            second.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_partition_moved_on_cannot_commit_and_resumes_from_the_catalog() {
    let (server, dataset) = hub().await;
    let (_cluster, bootstrap) = cluster(1);
    let mut good = produce(&bootstrap, 1, 1..101);
    let feeds = start(&server.state, feed(&bootstrap)).await;
    wait_for_offsets(&server, &dataset, 100).await;
    // Another worker (say in a process that got the partition in a rebalance this one has
    // not seen yet) commits offsets 100..150 as having been dead letters only.
    let current = server
        .state
        .catalog
        .dataset(&dataset.name)
        .await
        .expect("catalog")
        .expect("dataset");
    server
        .state
        .ingest
        .commit_stream(
            &current,
            vec![],
            StreamProgress {
                offsets: vec![OffsetAdvance {
                    topic: TOPIC.into(),
                    partition: 0,
                    expected: Some(100),
                    next: 150,
                }],
                rejected: vec![],
            },
        )
        .await
        .expect("the other worker's commit");
    let more = produce(&bootstrap, 1, 101..201);
    // This worker's batch from 100 is refused; it re-reads the catalog and continues at 150.
    good.extend(more.into_iter().filter(|id| *id > 150));
    wait_for_offsets(&server, &dataset, 200).await;
    good.sort_unstable();
    assert_eq!(ids(&server).await, good);
    feeds.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outages_and_errors_are_retried() {
    let (server, dataset) = hub().await;
    let (cluster, bootstrap) = cluster(2);
    let mut good = produce(&bootstrap, 2, 1..201);
    cluster.broker_down(1).expect("down");
    cluster.broker_down(2).expect("down");
    cluster.broker_down(3).expect("down");
    let feeds = start(&server.state, feed(&bootstrap)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for broker in 1..=3 {
        cluster.broker_up(broker).expect("up");
    }
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Fetch,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5],
    );
    good.extend(produce(&bootstrap, 2, 201..401));
    wait_for_offsets(&server, &dataset, 400).await;
    good.sort_unstable();
    assert_eq!(ids(&server).await, good);
    feeds.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_catalog_slows_the_feed_down_and_loses_nothing() {
    let (server, dataset) = hub().await;
    let (_cluster, bootstrap) = cluster(2);
    // Another process holds the catalog's write lock for two seconds; commits fail fast
    // (a short busy timeout) and are retried with backoff until the lock is gone.
    let catalog_path = server.data_dir.path().join("catalog.db");
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(catalog_path).expect("open");
        conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
        std::thread::sleep(Duration::from_secs(2));
        conn.execute_batch("COMMIT").expect("unlock");
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut good = produce(&bootstrap, 2, 1..301);
    let feeds = start(&server.state, feed(&bootstrap)).await;
    wait_for_offsets(&server, &dataset, 300).await;
    locker.join().expect("locker");
    good.sort_unstable();
    assert_eq!(ids(&server).await, good);
    feeds.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_feed_keeps_the_last_message_of_each_key() {
    let (server, dataset) = hub_keyed(json!(["id"])).await;
    let (_cluster, bootstrap) = cluster(3);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    // 300 messages over 50 ids; an id always goes to the same partition, so the message
    // produced last for it is also the last in its partition's order.
    for n in 0..300i64 {
        let id = n % 50;
        let payload = format!(r#"{{"id":{id},"kind":"v{n}"}}"#);
        let key = format!("key-{id}");
        let record = BaseRecord::to(TOPIC)
            .partition((id % 3) as i32)
            .key(&key)
            .payload(&payload);
        support::send(&producer, record);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let feeds = start(&server.state, feed(&bootstrap)).await;
    wait_for_offsets(&server, &dataset, 300).await;
    feeds.stop().await;

    assert_eq!(ids(&server).await, (0..50).collect::<Vec<_>>());
    let mut kinds = BTreeMap::new();
    for batch in support::read_rows(&server.state, "gongan.alarms").await {
        let id = batch.column_by_name("id").expect("id");
        let id = id.as_any().downcast_ref::<Int64Array>().expect("int64");
        let kind = batch.column_by_name("kind").expect("kind");
        let kind = kind.as_string::<i32>();
        for row in 0..batch.num_rows() {
            kinds.insert(id.value(row), kind.value(row).to_string());
        }
    }
    for (id, kind) in kinds {
        assert_eq!(kind, format!("v{}", 250 + id), "id {id}");
    }
}

/// A feed whose broker does not answer is in the status from the moment it starts: first
/// joining, then unreachable with the time it became so and the error, to the departments
/// that may see its dataset and to nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_whose_broker_is_down_shows_as_unreachable_to_those_who_may_see_it() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    server.department("jiaotong").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({"name": "gongan.secret_alarms", "sharing": "none", "columns": [
                {"name": "id", "type": "int64", "nullable": false}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Nothing listens on port 1.
    let down = KafkaFeed::new("127.0.0.1:1", "gongan.secret", "gongan.secret_alarms");
    let feeds = KafkaFeeds::start(
        &server.state.ingest,
        &[down],
        server.state.kafka.clone(),
        Default::default(),
    )
    .await
    .expect("a feed starts whether or not its broker answers");
    let (_, status) = server.get(&server.admin, "/api/v1/ingest/status").await;
    let feed = &status["feeds"][0];
    assert_eq!(feed["dataset"], "gongan.secret_alarms", "{status}");
    assert!(
        feed["state"] == "joining" || feed["state"] == "broker_unreachable",
        "{status}"
    );
    assert_eq!(feed["silent"], false);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, status) = server.get(&server.admin, "/api/v1/ingest/status").await;
        if status["feeds"][0]["state"] == "broker_unreachable" {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let feed = &status["feeds"][0];
    assert!(feed["broker_unreachable_since"].is_string(), "{status}");
    assert!(
        feed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("broker")),
        "{status}"
    );
    assert_eq!(feed["partitions"], json!([]));

    // The owner's analysts see it; another department's do not, not even its name.
    let owner = server.token("gongan", cityhub_catalog::Role::Analyst).await;
    let (_, seen) = server.get(&owner, "/api/v1/ingest/status").await;
    assert_eq!(seen["feeds"].as_array().map(Vec::len), Some(1), "{seen}");
    let other = server
        .token("jiaotong", cityhub_catalog::Role::Analyst)
        .await;
    let (_, hidden) = server.get(&other, "/api/v1/ingest/status").await;
    assert_eq!(hidden, json!({"feeds": [], "partitions": []}));
    feeds.stop().await;

    // Stopped with its node: said so, not silent.
    let (_, status) = server.get(&server.admin, "/api/v1/ingest/status").await;
    assert_eq!(status["feeds"][0]["state"], "stopped", "{status}");
}

//! The catalogue change feed: consumers that fold it (whole-hub, county and town) hold
//! exactly what listing the registry shows them, after thousands of random registrations,
//! curations, keepalives, NOTIFY events, deletions and keepalive timeouts; a consumer behind
//! retention is told to list again, and a listing with the feed after its cursor catches up.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Backend, on_both_backends};
use crate::audit::AuditLog;
use crate::camera::{CameraQuery, CameraRegistry, CameraSettings};
use crate::clock::Clock;
use crate::error::CatalogError;
use crate::model::Principal;
use crate::region::Scope;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_795_824_000_000;

/// Channels of three counties (隆昌's under its retired code 511028), and two NVRs whose
/// keepalives mark the channels under them.
fn ids() -> Vec<String> {
    let mut ids = Vec::new();
    for (centre, count) in [("51102500", 14), ("51102400", 8), ("51102800", 6)] {
        for serial in 1..=count {
            ids.push(format!("{centre}00132{serial:07}"));
        }
    }
    ids.push("51102500001180000901".into());
    ids.push("51102400001180000902".into());
    ids
}

fn at_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("time")
}

/// One consumer of the feed and the copy it keeps.
struct Consumer {
    scope: Option<Scope>,
    cursor: i64,
    copy: BTreeMap<String, Value>,
}

impl Consumer {
    fn new(scope: Option<&str>, cursor: i64) -> Self {
        Consumer {
            scope: scope.map(|code| Scope::of(code).expect("scope")),
            cursor,
            copy: BTreeMap::new(),
        }
    }

    fn apply(&mut self, change: &Value) {
        let id = change["id"].as_str().expect("id").to_string();
        match change["change"].as_str().expect("change") {
            "registered" | "updated" | "restored" | "curated" => {
                assert_eq!(change["camera"]["id"], json!(id));
                self.copy.insert(id, change["camera"].clone());
            }
            "status" => {
                // A status change of a channel the consumer does not hold is of one it
                // will hear of (or has heard leave) in order; there is nothing to apply.
                if let Some(camera) = self.copy.get_mut(&id) {
                    for field in ["status", "status_since", "notified"] {
                        camera[field] = change[field].clone();
                    }
                }
            }
            "deleted" => {
                self.copy.remove(&id);
            }
            other => panic!("unknown change {other:?}"),
        }
    }

    /// Reads the feed to its end in pages of `page`.
    async fn catch_up(&mut self, registry: &CameraRegistry, page: usize) {
        loop {
            // As the API answers it (the cursor is a string there).
            let answer = serde_json::to_value(
                registry
                    .changes(self.scope.as_ref(), self.cursor, page)
                    .await
                    .expect("changes"),
            )
            .expect("JSON");
            let changes = answer["changes"].as_array().expect("changes");
            assert!(changes.len() <= page);
            for change in changes {
                let seq = change["seq"].as_i64().expect("seq");
                assert!(
                    seq > self.cursor,
                    "the feed goes forward: {seq} after {}",
                    self.cursor
                );
                self.apply(change);
            }
            let next: i64 = answer["next_cursor"]
                .as_str()
                .expect("cursor")
                .parse()
                .expect("a number");
            assert!(next >= self.cursor);
            self.cursor = next;
            if !answer["more"].as_bool().expect("more") {
                return;
            }
        }
    }
}

/// Every channel a caller in `scope` lists, as the listing shows it minus the one field the
/// feed does not carry (see `camera::changes`), and the first page's change cursor.
async fn listing(registry: &CameraRegistry, scope: Option<&str>) -> (BTreeMap<String, Value>, i64) {
    let mut all = BTreeMap::new();
    let mut after = None;
    let mut cursor = None;
    loop {
        let page = registry
            .search(CameraQuery {
                after: after.clone(),
                limit: 7,
                scope: scope.map(|code| Scope::of(code).expect("scope")),
                ..CameraQuery::default()
            })
            .await
            .expect("search");
        if after.is_none() {
            cursor = Some(
                page["change_cursor"]
                    .as_str()
                    .expect("the first page has the change cursor")
                    .parse::<i64>()
                    .expect("a number"),
            );
        } else {
            assert!(page.get("change_cursor").is_none());
        }
        for camera in page["cameras"].as_array().expect("cameras") {
            let mut camera = camera.clone();
            camera
                .as_object_mut()
                .expect("object")
                .remove("last_keepalive_at");
            let id = camera["id"].as_str().expect("id").to_string();
            all.insert(id, camera);
        }
        match page["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return (all, cursor.expect("cursor")),
        }
    }
}

fn random_fields(rng: &mut StdRng, ids: &[String], id: &str) -> Value {
    let mut fields = json!({});
    if rng.random_bool(0.8) {
        fields["name"] = json!(["北街口", "东门", "西站", "城南卡口"].choose(rng));
    }
    if rng.random_bool(0.5) {
        fields["civil_code"] = json!(["511025100", "511025102", "511024100"].choose(rng));
    }
    if rng.random_bool(0.5) {
        fields["longitude"] = json!(104.0 + f64::from(rng.random_range(0..1000)) / 1000.0);
        fields["latitude"] = json!(29.0 + f64::from(rng.random_range(0..1000)) / 1000.0);
    }
    if rng.random_bool(0.3) {
        fields["position_type"] = json!(rng.random_range(1..=10));
    }
    if rng.random_bool(0.3) {
        fields["department"] = json!(["gongan", "jiaotong"].choose(rng));
    }
    // Channels hang under an NVR of their own county now and then.
    if !id.contains("00118") && rng.random_bool(0.4) {
        let nvr = &ids[ids.len() - if id.starts_with("511024") { 1 } else { 2 }];
        fields["parent_id"] = json!(nvr);
    }
    fields
}

async fn a_folded_feed_is_the_registry_after_random_changes(backend: Backend) {
    let Some((_dir, catalog)) = super::open(backend).await else {
        return;
    };
    for (code, name) in [("gongan", "公安局"), ("jiaotong", "交通局")] {
        catalog
            .create_department(code, name)
            .await
            .expect("department");
    }
    let base = CameraRegistry::new(
        catalog.clone(),
        AuditLog::start(catalog.clone()),
        CameraSettings::default(),
    );
    let admin = Principal::local_operator();
    let ids = ids();
    let mut rng = StdRng::seed_from_u64(20261206);
    let mut consumers = [
        Consumer::new(None, 0),
        Consumer::new(Some("511025"), 0),
        Consumer::new(Some("511025100"), 0),
    ];
    let mut now = T0;
    let mut head = 0;
    let mut steps = 0;
    let mut statuses = BTreeMap::<String, usize>::new();
    while head < 10_000 {
        steps += 1;
        // The clock moves by up to a minute a step: channels that no keepalive reaches for
        // three minutes time out.
        now += rng.random_range(0..60) * 1000;
        let registry = base.clone().with_clock(Clock::starting_at(at_time(now)));
        let batch: Vec<&String> = ids.choose_multiple(&mut rng, 6).collect();
        match rng.random_range(0..10) {
            0..=1 => {
                let items = batch
                    .iter()
                    .map(|id| {
                        let mut fields = random_fields(&mut rng, &ids, id);
                        fields["id"] = json!(id);
                        (None, Ok(fields))
                    })
                    .collect();
                registry
                    .register_batch(&admin, items)
                    .await
                    .expect("register");
            }
            2 => {
                let id = batch[0];
                let curated = if rng.random_bool(0.3) {
                    json!({})
                } else {
                    random_fields(&mut rng, &ids, id)
                };
                // A deleted or never registered channel is not found: that is an answer.
                match registry.curate(&admin, id, curated).await {
                    Ok(_) | Err(CatalogError::NotFound { .. }) => {}
                    Err(err) => panic!("curate {id}: {err}"),
                }
            }
            3..=6 => {
                let items = batch
                    .iter()
                    .map(|id| {
                        // Some keepalives arrive late.
                        let at = now - rng.random_range(0..4) * MINUTE;
                        (None, Ok(json!({"id": id, "at": at})))
                    })
                    .collect();
                registry
                    .signals(&admin, items, true)
                    .await
                    .expect("keepalives");
            }
            _ => {
                let items = batch
                    .iter()
                    .map(|id| {
                        let event = *["ON", "OFF", "VLOST", "DEFECT", "DEL", "ADD", "UPDATE"]
                            .choose(&mut rng)
                            .expect("event");
                        let at = now - rng.random_range(0..3) * MINUTE;
                        let mut item = json!({"id": id, "event": event, "at": at});
                        if matches!(event, "ADD" | "UPDATE") {
                            item["channel"] = random_fields(&mut rng, &ids, id);
                        }
                        (None, Ok(item))
                    })
                    .collect();
                registry
                    .signals(&admin, items, false)
                    .await
                    .expect("events");
            }
        }
        // Consumers read now and then, in small pages, while the feed grows.
        if rng.random_bool(0.05) {
            let consumer = &mut consumers[rng.random_range(0..3)];
            consumer.catch_up(&registry, rng.random_range(1..40)).await;
        }
        if steps % 100 == 0 {
            head = catalog.camera_change_head().await.expect("head");
        }
        // Now and then every consumer compares its copy with the registry mid-walk.
        if steps % 500 == 0 {
            compare(&mut consumers, &registry, &mut statuses).await;
        }
    }
    // Past the last keepalive's timeout: the last reads see the sweep's offline changes.
    now += rng.random_range(0..10) * MINUTE;
    let registry = base.clone().with_clock(Clock::starting_at(at_time(now)));
    compare(&mut consumers, &registry, &mut statuses).await;
    // The random walk went through every status (else the comparisons proved little).
    assert!(
        ["online", "offline", "unknown"]
            .iter()
            .all(|status| statuses.get(*status).is_some_and(|n| *n > 10)),
        "{statuses:?}"
    );
}

/// Brings every consumer to the end of the feed and compares its copy with its listing,
/// counting the statuses seen.
async fn compare(
    consumers: &mut [Consumer],
    registry: &CameraRegistry,
    statuses: &mut BTreeMap<String, usize>,
) {
    for consumer in consumers {
        consumer.catch_up(registry, 500).await;
        let scope = consumer.scope.as_ref().map(|s| s.region.code);
        let (listed, _) = listing(registry, scope).await;
        assert!(!listed.is_empty(), "{scope:?} lists channels");
        for (id, camera) in &listed {
            assert_eq!(
                consumer.copy.get(id),
                Some(camera),
                "{scope:?}: the copy of {id} is the listed channel"
            );
            *statuses
                .entry(camera["status"].as_str().expect("status").to_string())
                .or_default() += 1;
        }
        assert_eq!(
            consumer.copy.keys().collect::<Vec<_>>(),
            listed.keys().collect::<Vec<_>>(),
            "{scope:?}: the copy holds the listed channels and no others"
        );
    }
}

async fn a_consumer_behind_retention_lists_again_and_follows_from_the_listing(backend: Backend) {
    let Some((_dir, catalog)) = super::open(backend).await else {
        return;
    };
    let base = CameraRegistry::new(
        catalog.clone(),
        AuditLog::start(catalog.clone()),
        CameraSettings::default(),
    );
    let admin = Principal::local_operator();
    let registry = |at: i64| base.clone().with_clock(Clock::starting_at(at_time(at)));
    let admin = &admin;
    let register = |registry: CameraRegistry, id: &'static str, name: &'static str| async move {
        registry
            .register_batch(admin, vec![(None, Ok(json!({"id": id, "name": name})))])
            .await
            .expect("register")
    };
    register(registry(T0), "51102500001320000001", "北街口").await;
    register(registry(T0 + MINUTE), "51102500001320000002", "东门").await;
    let mut behind = Consumer::new(None, 0);
    behind.catch_up(&registry(T0 + MINUTE), 1).await;
    assert_eq!(behind.copy.len(), 2);
    // Eight days on (retention keeps seven), one more change; the sweeper's purge then
    // deletes the two old ones and keeps the new.
    let later = T0 + 8 * DAY;
    register(registry(later), "51102500001320000001", "北街口 改").await;
    let first_cursor = behind.cursor;
    register(registry(later + MINUTE), "51102500001320000003", "西站").await;
    registry(later + MINUTE).sweep().await.expect("sweep");
    let mut kept = Consumer::new(None, first_cursor);
    kept.catch_up(&registry(later + MINUTE), 10).await;
    assert_eq!(
        kept.copy.keys().collect::<Vec<_>>(),
        ["51102500001320000001", "51102500001320000003"],
        "a consumer at the last kept place still follows"
    );
    let gone = registry(later + MINUTE).changes(None, 0, 10).await;
    let Err(CatalogError::ResyncRequired(message)) = gone else {
        panic!("a cursor before the deleted changes must resync: {gone:?}");
    };
    assert!(
        message.contains("GET /api/v1/cameras") && message.contains("change_cursor"),
        "{message}"
    );
    // Listing again, then following from the listing's cursor, gives the registry.
    let now = later + 2 * MINUTE;
    let (listed, cursor) = listing(&registry(now), None).await;
    register(registry(now), "51102500001320000002", "东门 改").await;
    let mut fresh = Consumer::new(None, cursor);
    fresh.copy = listed;
    fresh.catch_up(&registry(now), 10).await;
    let (listed, _) = listing(&registry(now), None).await;
    assert_eq!(fresh.copy, listed);
    assert_eq!(fresh.copy["51102500001320000002"]["name"], json!("东门 改"));
    // The same values again are no change: not even updated_at moves.
    let head = catalog.camera_change_head().await.expect("head");
    register(registry(now + MINUTE), "51102500001320000002", "东门 改").await;
    assert_eq!(catalog.camera_change_head().await.expect("head"), head);
}

/// Writers on two nodes commit in another order than they start; a reader paging the feed
/// meanwhile sees every change once, in increasing order, and none is skipped.
async fn concurrent_writers_never_let_a_cursor_skip_a_change(backend: Backend) {
    let Some((dir, catalog)) = super::open(backend).await else {
        return;
    };
    let other_node = dir.reopen().await;
    let writers: Vec<_> = (0..4u32)
        .map(|writer| {
            let node = if writer % 2 == 0 {
                catalog.clone()
            } else {
                other_node.clone()
            };
            tokio::spawn(async move {
                for serial in 0..50u32 {
                    let id = format!("5110250000132{:07}", writer * 1_000 + serial + 1);
                    let report = crate::camera::ChannelReport::from_json(json!({"id": id}), None)
                        .expect("report");
                    let outcomes = node
                        .register_cameras(vec![report], None, T0 + i64::from(serial))
                        .await
                        .expect("register");
                    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                }
            })
        })
        .collect();
    let reader = {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0, Vec::new());
            for _ in 0..10_000 {
                let page = catalog.camera_changes(cursor, 7).await.expect("changes");
                for stored in &page.changes {
                    assert!(stored.seq > cursor, "{} after {cursor}", stored.seq);
                    cursor = stored.seq;
                    seen.push(stored.change.camera_id.clone());
                }
                if seen.len() == 200 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    let seen = reader.await.expect("reader");
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 200, "every change read once");
    assert_eq!(distinct.len(), 200, "of 200 channels");
}

on_both_backends!(
    a_folded_feed_is_the_registry_after_random_changes,
    a_consumer_behind_retention_lists_again_and_follows_from_the_listing,
    concurrent_writers_never_let_a_cursor_skip_a_change,
);

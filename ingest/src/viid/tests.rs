//! Checking GA/T 1400 requests: whole-request refusals, and record by record.

use serde_json::json;

use super::*;

const DEVICE: &str = "51102500001190000001";

fn now() -> DateTime<Utc> {
    // 2026-12-06 08:30:00 Beijing time.
    fields::parse_time("20261206083000").expect("valid")
}

fn sender() -> Sender {
    Sender {
        account_id: "51100000001190000001".into(),
        department: "gaj".into(),
    }
}

fn settings() -> ViidSettings {
    ViidSettings {
        retention_days: 180,
        max_image_bytes: 1024,
    }
}

/// A 41-digit source (image) id: device, type 02, time, serial.
fn source_id(serial: u32) -> String {
    format!("{DEVICE}02{}{serial:05}", "20261206082959")
}

/// A 48-digit vehicle id: its source, type 02, a serial.
fn vehicle_id(serial: u32) -> String {
    format!("{}02{:05}", source_id(serial), 1)
}

fn vehicle(serial: u32) -> Value {
    json!({
        "MotorVehicleID": vehicle_id(serial),
        "InfoKind": 1,
        "SourceID": source_id(serial),
        "DeviceID": DEVICE,
        "PassTime": "20261206082959",
        "LaneNo": 2,
        "PlateNo": "川K12345",
        "PlateColor": "5",
        "VehicleClass": "K33",
        "VehicleColor": 2,
        "Speed": 42.5,
        "Direction": "3",
        "SubImageList": {"SubImageInfoObject": [{
            "ImageID": source_id(serial),
            "Type": "01",
            "FileFormat": "Jpeg",
            "ShotTime": "20261206082959",
            "Width": 1920,
            "Height": 1080,
            "Data": "/9j/4AAQSkZJRgABAQ=="
        }]}
    })
}

fn body(objects: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"MotorVehicleListObject": {"MotorVehicleObject": objects}}))
        .expect("json")
}

fn check(body: &[u8]) -> Result<(Vec<RecordStatus>, Vec<RecordIn>), ViidFailure> {
    check_request(ViidKind::MotorVehicle, body, &sender(), now(), settings())
}

fn refusal(body: &[u8]) -> RequestRefused {
    match check(body) {
        Err(ViidFailure::Refused(refused)) => refused,
        Err(ViidFailure::Failed(err)) => panic!("failed instead of refused: {err}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn a_good_vehicle_becomes_a_row_and_an_image() {
    let (statuses, good) = check(&body(vec![vehicle(1)])).expect("checked");
    assert_eq!(statuses[0].code, StatusCode::Ok);
    assert_eq!(statuses[0].id, vehicle_id(1));
    let record = &good[0];
    assert_eq!(record.row["motor_vehicle_id"], json!(vehicle_id(1)));
    assert_eq!(record.row["captured_at"], json!("2026-12-06T00:29:59.000Z"));
    assert_eq!(record.row["plate_no"], json!("川K12345"));
    assert_eq!(record.row["vehicle_color"], json!("2"));
    assert_eq!(record.row["region_code"], json!("511025"));
    assert_eq!(record.row["platform_id"], json!("51100000001190000001"));
    assert_eq!(record.row["image_count"], json!(1));
    let image = &record.images[0];
    assert_eq!(image.extension, "jpg");
    assert_eq!(image.data.as_deref().map(<[u8]>::len), Some(13));
    assert_eq!(image.row["parent_kind"], json!("motor_vehicle"));
    assert_eq!(image.row["parent_id"], json!(vehicle_id(1)));
    assert_eq!(image.row["device_id"], json!(DEVICE));
    assert_eq!(image.row["width"], json!(1920));
}

#[test]
fn a_body_that_is_not_the_standard_shape_is_refused_whole() {
    let not_json = refusal(b"{\"MotorVehicleListObject\": ");
    assert_eq!(not_json.code, StatusCode::InvalidJsonFormat);
    assert!(
        not_json.message.contains("not JSON"),
        "{}",
        not_json.message
    );
    let wrong = refusal(br#"{"FaceListObject": {"FaceObject": []}}"#);
    assert_eq!(wrong.code, StatusCode::InvalidJsonContent);
    assert!(
        wrong
            .message
            .contains(r#"{"MotorVehicleListObject": {"MotorVehicleObject": [...]}}"#),
        "{}",
        wrong.message
    );
    let empty = refusal(&body(vec![]));
    assert!(empty.message.contains("at least one"), "{}", empty.message);
}

#[test]
fn each_bad_record_is_refused_alone_with_its_field() {
    let mut cases: Vec<(Value, &str, &str)> = Vec::new();
    let mut bad = |change: &dyn Fn(&mut Value), field: &'static str, says: &'static str| {
        let mut record = vehicle(100 + cases.len() as u32);
        change(&mut record);
        cases.push((record, field, says));
    };
    bad(
        &|v| v["PlateColor"] = json!("77"),
        "PlateColor",
        "code table",
    );
    bad(
        &|v| v["PassTime"] = json!("20261306082959"),
        "PassTime",
        "YYYYMMDDhhmmss",
    );
    bad(
        &|v| v["PassTime"] = json!("20261207082959"),
        "PassTime",
        "in the future",
    );
    bad(
        &|v| v["PassTime"] = json!("20250101000000"),
        "PassTime",
        "older than the 180 days",
    );
    bad(
        &|v| v["MotorVehicleID"] = json!("123"),
        "MotorVehicleID",
        "48 digits",
    );
    bad(
        &|v| v["VehicleClass"] = json!("car"),
        "VehicleClass",
        "GA 24.4",
    );
    bad(&|v| v["Speed"] = json!("fast"), "Speed", "from 0 to 500");
    bad(
        &|v| v["SubImageList"]["SubImageInfoObject"][0]["Data"] = json!("!!!"),
        "SubImageList.SubImageInfoObject[0].Data",
        "base64",
    );
    bad(
        &|v| v["SubImageList"]["SubImageInfoObject"][0]["Data"] = json!("A".repeat(4000)),
        "SubImageList.SubImageInfoObject[0].Data",
        "larger than 1024 bytes",
    );
    bad(
        &|v| {
            v["SubImageList"]["SubImageInfoObject"][0]
                .as_object_mut()
                .expect("object")
                .remove("Data");
        },
        "SubImageList.SubImageInfoObject[0].Data",
        "StoragePath",
    );
    bad(
        &|v| {
            v.as_object_mut().expect("object").remove("DeviceID");
        },
        "DeviceID",
        "which device",
    );
    bad(&|v| v["PlateNo"] = json!("川K\u{7}1"), "PlateNo", "control");
    let mut objects = vec![vehicle(1)];
    objects.extend(cases.iter().map(|(record, _, _)| record.clone()));
    objects.push(vehicle(2));
    objects.push(json!("not an object"));
    objects.push(vehicle(1));
    let (statuses, good) = check(&body(objects)).expect("checked");
    assert_eq!(good.len(), 2, "the two good vehicles");
    assert_eq!(statuses.len(), cases.len() + 4);
    assert_eq!(statuses[0].code, StatusCode::Ok);
    for (status, (_, field, says)) in statuses[1..].iter().zip(&cases) {
        assert_eq!(status.code, StatusCode::InvalidJsonContent, "{status:?}");
        assert!(
            status.message.starts_with(&format!("{field}: ")) && status.message.contains(says),
            "{field} / {says}: {}",
            status.message
        );
    }
    let after = &statuses[cases.len() + 1..];
    assert_eq!(after[0].code, StatusCode::Ok);
    assert!(
        after[1].message.contains("must be a JSON object"),
        "{:?}",
        after[1]
    );
    assert!(after[2].message.contains("appears twice"), "{:?}", after[2]);
    assert_eq!(
        good.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0, cases.len() + 1]
    );
}

#[test]
fn faces_take_their_time_from_the_first_time_field_present_and_tag_personal_data() {
    let face = json!({"FaceListObject": {"FaceObject": [{
        "FaceID": "650100000011900000010220171219100515999830656599",
        "InfoKind": 1,
        "SourceID": "66000000001190123456022017120110101000007",
        "DeviceID": "51102500001190000007",
        "FaceAppearTime": "20261206080000",
        "LocationMarkTime": "20261206070000",
        "IDType": "111",
        "IDNumber": "511025199001011234",
        "Name": "张三",
        "GenderCode": "1",
        "AgeUpLimit": 40,
        "AgeLowerLimit": 30
    }]}});
    let (statuses, good) = check_request(
        ViidKind::Face,
        &serde_json::to_vec(&face).expect("json"),
        &sender(),
        now(),
        settings(),
    )
    .expect("checked");
    assert_eq!(statuses[0].code, StatusCode::Ok, "{statuses:?}");
    assert_eq!(
        good[0].row["captured_at"],
        json!("2026-12-06T00:00:00.000Z")
    );
    assert_eq!(good[0].row["image_count"], json!(0));
    let dataset = ViidKind::Face.new_dataset("gaj", 180);
    let tagged: Vec<(&str, Option<cityhub_catalog::Sensitivity>)> = dataset
        .columns
        .iter()
        .filter(|c| c.sensitivity.is_some())
        .map(|c| (c.name.as_str(), c.sensitivity))
        .collect();
    assert_eq!(
        tagged,
        vec![
            ("id_number", Some(cityhub_catalog::Sensitivity::IdCard)),
            ("name", Some(cityhub_catalog::Sensitivity::PersonName)),
        ]
    );
    assert_eq!(dataset.sort_key, vec!["captured_at".to_string()]);
    assert_eq!(dataset.row_retention.map(|r| r.days), Some(180));
}

#[test]
fn image_keys_name_their_dataset_region_pack_and_range_and_nothing_else() {
    let pack = "viid/gaj/2026-12-06/face/511025/0193a1b2-0000-7000-8000-000000000000.pack";
    let owner = image_owner(&format!("{pack}/2048-1028.jpg")).expect("an image key");
    assert_eq!(owner.dataset.to_string(), "gaj.viid_images");
    assert_eq!(owner.region, "511025");
    assert_eq!(owner.pack, pack);
    assert_eq!(owner.range, 2048..3076);
    for bad in [
        "datasets/1/2026-12-06/x.parquet".to_string(),
        format!("{pack}/0-0.jpg"),
        format!("{pack}/a-5.jpg"),
        format!("{pack}/18446744073709551615-2.jpg"),
        format!("{pack}/0-5.j/g"),
        format!("{pack}/../0-5.jpg"),
        "viid/gaj/2026-12-06/face/511025/ab.jpg/0-5.jpg".to_string(),
        "viid/gaj/2026-12-06/face/511025/../0-5.jpg".to_string(),
        "viid/gaj/2026-12-06/nothing/511025/ab.pack/0-5.jpg".to_string(),
        "viid/gaj/2026-13-06/face/511025/ab.pack/0-5.jpg".to_string(),
        "viid/gaj/2026-12-06/face/51102x/ab.pack/0-5.jpg".to_string(),
        "viid/GA J/2026-12-06/face/511025/ab.pack/0-5.jpg".to_string(),
    ] {
        assert!(image_owner(&bad).is_none(), "{bad}");
    }
}

#[test]
fn base64_with_line_breaks_is_taken_and_garbage_is_not() {
    let mut record = vehicle(1);
    record["SubImageList"]["SubImageInfoObject"][0]["Data"] = json!("/9j/4AAQ\r\nSkZJRgAB\nAQ==");
    let (statuses, good) = check(&body(vec![record])).expect("checked");
    assert_eq!(statuses[0].code, StatusCode::Ok, "{statuses:?}");
    assert_eq!(good[0].images[0].data.as_deref().map(<[u8]>::len), Some(13));
    let mut record = vehicle(2);
    record["SubImageList"]["SubImageInfoObject"][0]["Data"] = json!("/9j/ 4AA!");
    let (statuses, _) = check(&body(vec![record])).expect("checked");
    assert!(
        statuses[0].message.contains("not valid base64"),
        "{statuses:?}"
    );
}

#[test]
fn escaped_text_reads_as_its_unescaped_form() {
    // Senders that escape `/` in base64 (`\/`, as some JSON writers do) or write fields
    // with `\u` escapes: the body's text is then not the value, and the checks must see
    // the value.
    let text = String::from_utf8(body(vec![vehicle(1)]))
        .expect("utf-8")
        .replace("/9j/4AAQ", "\\/9j\\/4AAQ")
        .replace("\"K33\"", "\"\\u004B33\"");
    assert!(
        text.contains("\\/9j\\/") && text.contains("u004B33"),
        "{text}"
    );
    let (statuses, good) = check(text.as_bytes()).expect("checked");
    assert_eq!(statuses[0].code, StatusCode::Ok, "{statuses:?}");
    let (_, plain) = check(&body(vec![vehicle(1)])).expect("checked");
    assert_eq!(good[0].images[0].data, plain[0].images[0].data);
    assert_eq!(good[0].row["vehicle_class"], json!("K33"));
    assert_eq!(good[0].row, plain[0].row);
}

#[test]
fn a_nested_value_where_a_field_is_expected_is_named_by_its_kind() {
    let mut record = vehicle(1);
    record["LaneNo"] = json!([1, 2]);
    let mut other = vehicle(2);
    other["PlateNo"] = json!({"text": "川K12345"});
    let (statuses, good) = check(&body(vec![record, other])).expect("checked");
    assert!(good.is_empty());
    assert_eq!(
        statuses[0].message,
        "LaneNo: an array is not a whole number from 0 to 99"
    );
    assert_eq!(
        statuses[1].message,
        "PlateNo: must be a string, not an object"
    );
}

#[test]
fn images_of_every_length_decode_to_their_bytes() {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    // Every tail length (padding of 0, 1 and 2) and lengths on both sides of the SIMD
    // decoder's block sizes.
    for length in (1..=130).chain([1023, 1024, 1025, 10_240]) {
        let bytes: Vec<u8> = (0..length).map(|i| (i * 131 + 7) as u8).collect();
        let decoded = check::decode_image("Data", &engine.encode(&bytes), 1 << 20).expect("valid");
        assert_eq!(decoded, bytes, "length {length}");
    }
    let err = check::decode_image("Data", "QUJD=", 1 << 20).expect_err("bad padding");
    assert!(err.message.contains("not valid base64"), "{err}");
}

/// A receiver over a SQLite catalog and a local folder in `dir`, with department `gaj`
/// and its landing datasets.
async fn receiver_in(dir: &std::path::Path) -> ViidReceiver {
    let catalog: cityhub_catalog::Catalog = Arc::new(
        cityhub_catalog::SqliteStore::open(&dir.join("catalog.db"), 5_000).expect("catalog"),
    );
    catalog
        .create_department("gaj", "公安局")
        .await
        .expect("department");
    let storage = crate::storage::Storage::open(&format!("file://{}", dir.join("data").display()))
        .expect("storage");
    let ingest = Ingest::new(
        catalog.clone(),
        storage,
        cityhub_config::IngestConfig::default(),
        cityhub_catalog::AuditLog::start(catalog),
        Arc::default(),
    );
    let receiver = ViidReceiver::new(ingest, settings());
    receiver.ensure_datasets("gaj").await.expect("datasets");
    receiver
}

/// Posts each request's vehicles while the lane's commits are held under way, lets them go
/// once every request waits, and answers each request's statuses.
async fn posted_while_commits_are_under_way(
    receiver: &ViidReceiver,
    requests: Vec<Vec<Value>>,
) -> Vec<Vec<RecordStatus>> {
    let lane = receiver.lane("gaj", ViidKind::MotorVehicle);
    let under_way = lane
        .committing
        .acquire_many(COMMITS_IN_FLIGHT_PER_LANE as u32)
        .await
        .expect("permits");
    let count = requests.len();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|records| post(receiver, records))
        .collect();
    eventually("every request waiting in the lane", || {
        lane.waiting.lock().expect("waiting").len() == count
    })
    .await;
    drop(under_way);
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task").expect("answered"));
    }
    answers
}

/// The files of `dataset`'s current snapshot.
async fn current_files(receiver: &ViidReceiver, dataset: &str) -> Vec<cityhub_catalog::DataFile> {
    let catalog = &receiver.ingest.catalog;
    let name = cityhub_catalog::DatasetName::parse(dataset).expect("name");
    let dataset = catalog.dataset(&name).await.expect("read").expect("exists");
    catalog
        .snapshot_files(dataset.id, None)
        .await
        .expect("files")
}

#[tokio::test]
async fn requests_that_wait_for_a_commit_are_committed_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = receiver_in(dir.path()).await;
    let requests = (0..3u32)
        .map(|request| vec![vehicle(request * 2 + 1), vehicle(request * 2 + 2)])
        .collect();
    for statuses in posted_while_commits_are_under_way(&receiver, requests).await {
        assert_eq!(statuses.len(), 2);
        assert!(
            statuses.iter().all(|s| s.code == StatusCode::Ok),
            "{statuses:?}"
        );
    }
    for dataset in ["gaj.viid_motor_vehicles", "gaj.viid_images"] {
        let files = current_files(&receiver, dataset).await;
        assert_eq!(
            files.len(),
            1,
            "one commit for the three requests: {files:?}"
        );
        assert_eq!(files[0].rows, 6);
    }
    let packs = receiver
        .ingest
        .storage
        .list("viid/gaj/")
        .await
        .expect("list");
    assert_eq!(packs.len(), 1, "one pack for the six images: {packs:?}");
}

#[tokio::test]
async fn a_commit_that_fails_answers_every_request_it_carried_and_keeps_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = receiver_in(dir.path()).await;
    // A file where the images' folder would be: the packs cannot be written.
    std::fs::write(dir.path().join("data/viid"), b"in the way").expect("write");
    let requests = vec![vec![vehicle(1)], vec![vehicle(2)]];
    for statuses in posted_while_commits_are_under_way(&receiver, requests).await {
        assert_eq!(statuses[0].code, StatusCode::OtherError, "{statuses:?}");
        assert!(
            statuses[0].message.contains("send it again"),
            "{statuses:?}"
        );
    }
    for dataset in ["gaj.viid_motor_vehicles", "gaj.viid_images"] {
        let files = current_files(&receiver, dataset).await;
        assert!(files.is_empty(), "{files:?}");
    }
    let written = receiver.ingest.storage.list("").await.expect("list");
    assert!(
        written.iter().all(|o| !o.key.ends_with(".parquet")),
        "the Parquet files written for the failed commit are removed: {written:?}"
    );
}

/// Posts `records` as one request, on its own task.
fn post(
    receiver: &ViidReceiver,
    records: Vec<Value>,
) -> tokio::task::JoinHandle<Result<Vec<RecordStatus>, ViidFailure>> {
    let receiver = receiver.clone();
    let body = Bytes::from(body(records));
    tokio::spawn(async move {
        receiver
            .receive(&sender(), ViidKind::MotorVehicle, body, now())
            .await
    })
}

/// Waits until `condition` holds, or fails the test saying `what` did not happen (a
/// broken gather must fail, not hang).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn all_stored(answer: Result<Result<Vec<RecordStatus>, ViidFailure>, tokio::task::JoinError>) {
    let statuses = answer.expect("task").expect("answered");
    assert!(
        statuses.iter().all(|s| s.code == StatusCode::Ok),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_commit_started_beside_another_waits_for_the_requests_being_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = receiver_in(dir.path()).await;
    let lane = receiver.lane("gaj", ViidKind::MotorVehicle);
    // Another commit under way, and a request of the lane being checked.
    let other_commit = lane.committing.acquire().await.expect("permit");
    let other_under_way = UnderWay::start(&lane);
    let being_checked = Checking::start(&lane);

    let first = post(&receiver, vec![vehicle(1)]);
    // Its commit has the second permit and waits: the first request stays queued.
    eventually("the first request's commit under way", || {
        lane.under_way.load(Ordering::SeqCst) == 2
    })
    .await;
    let second = post(&receiver, vec![vehicle(2), vehicle(3)]);
    eventually("both requests waiting in the lane together", || {
        lane.waiting.lock().expect("waiting").len() == 2
    })
    .await;
    assert!(
        !first.is_finished(),
        "the first request waited for the check"
    );
    // The last check ends: one commit takes both requests, though the other is still
    // under way.
    drop(being_checked);
    all_stored(first.await);
    all_stored(second.await);
    for dataset in ["gaj.viid_motor_vehicles", "gaj.viid_images"] {
        let files = current_files(&receiver, dataset).await;
        assert_eq!(files.len(), 1, "one commit for both requests: {files:?}");
        assert_eq!(files[0].rows, 3);
    }
    drop(other_under_way);
    drop(other_commit);
}

#[tokio::test]
async fn a_commit_alone_or_with_nothing_being_checked_does_not_wait() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = receiver_in(dir.path()).await;
    let lane = receiver.lane("gaj", ViidKind::MotorVehicle);
    let within = std::time::Duration::from_secs(30);
    // Alone: a request being checked does not hold it.
    let being_checked = Checking::start(&lane);
    let alone = tokio::time::timeout(within, post(&receiver, vec![vehicle(1)]))
        .await
        .expect("a commit alone does not wait for checks");
    all_stored(alone);
    drop(being_checked);
    // Beside another commit, with nothing being checked.
    let other_commit = lane.committing.acquire().await.expect("permit");
    let other_under_way = UnderWay::start(&lane);
    let beside = tokio::time::timeout(within, post(&receiver, vec![vehicle(2)]))
        .await
        .expect("nothing being checked: the commit does not wait");
    all_stored(beside);
    // Beside another commit, a check started after the commit began to gather: once the
    // checks it found under way end, it goes.
    let earlier = Checking::start(&lane);
    let gathering = post(&receiver, vec![vehicle(3)]);
    eventually("a commit gathering beside the other", || {
        lane.under_way.load(Ordering::SeqCst) == 2 && !lane.waiting.lock().expect("w").is_empty()
    })
    .await;
    let later = Checking::start(&lane);
    drop(earlier);
    let gathered = tokio::time::timeout(within, gathering)
        .await
        .expect("a check started later does not hold the commit");
    all_stored(gathered);
    drop(later);
    drop(other_under_way);
    drop(other_commit);
    assert_eq!(
        current_files(&receiver, "gaj.viid_motor_vehicles")
            .await
            .len(),
        3
    );
}

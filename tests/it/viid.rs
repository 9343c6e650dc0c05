//! The GA/T 1400 视图库 receiver end to end, driven by a client written from the
//! standard's messages: registration with HTTP digest (RFC 2617, MD5, qop=auth), keepalive,
//! time, 1,000 vehicles with images (10 bad ones of different kinds), faces, collection
//! devices, unregistration; then SQL over the landed datasets with masking for another
//! department, and images served or refused, every one audited.

use base64::Engine;
use cityhub_catalog::Role;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::support::{TestServer, audit_entries, sql_ok, sql_status};

const PLATFORM: &str = "51100000001190000001";
const CHECKPOINT: &str = "51102500001210000001";
const FACE_CAMERA: &str = "51102500001320000002";
/// 2026-12-06 08:30:00 Beijing time.
const NOW: &str = "2026-12-06T00:30:00Z";

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// A lower platform speaking GA/T 1400.4 to the hub.
struct Platform<'a> {
    server: &'a TestServer,
    id: String,
}

impl<'a> Platform<'a> {
    fn new(server: &'a TestServer, id: &str) -> Self {
        Self {
            server,
            id: id.to_string(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self
            .server
            .client
            .request(method, self.server.url(path))
            .header("User-Identify", &self.id);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/VIID+JSON")
                .body(body.to_string());
        }
        Answer::of(request.send().await.expect("request")).await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Registers: the first request is answered with a digest challenge, the second answers
    /// it with `password`.
    async fn register(&self, password: &str) -> Answer {
        let path = "/VIID/System/Register";
        let body = json!({"RegisterObject": {"DeviceID": self.id}});
        let challenge = self.post(path, &body).await;
        assert_eq!(challenge.status, 401, "{:?}", challenge.body);
        assert_eq!(
            challenge.body["ResponseStatusObject"]["StatusCode"],
            json!(4)
        );
        let header = challenge.www_authenticate.expect("a digest challenge");
        let param = |name: &str| -> String {
            let start = header.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            header[start..]
                .split('"')
                .next()
                .expect("closing quote")
                .to_string()
        };
        let (realm, nonce) = (param("realm"), param("nonce"));
        assert!(
            header.starts_with("Digest ") && header.contains("qop=\"auth\""),
            "{header}"
        );
        let ha1 = md5_hex(&format!("{}:{realm}:{password}", self.id));
        let ha2 = md5_hex(&format!("POST:{path}"));
        let cnonce = "0a4f113b";
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        let authorization = format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{path}\", \
             qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{response}\", algorithm=MD5",
            self.id
        );
        let answer = self
            .server
            .client
            .post(self.server.url(path))
            .header("User-Identify", &self.id)
            .header("Authorization", authorization)
            .header("Content-Type", "application/VIID+JSON")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Answer::of(answer).await
    }
}

struct Answer {
    status: u16,
    body: Value,
    content_type: String,
    www_authenticate: Option<String>,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            body,
            content_type,
            www_authenticate,
        }
    }

    /// The statuses of a `ResponseStatusListObject`.
    fn statuses(&self) -> Vec<Value> {
        self.body["ResponseStatusListObject"]["ResponseStatusObject"]
            .as_array()
            .unwrap_or_else(|| panic!("a status list: {}", self.body))
            .clone()
    }
}

/// A GA/T 1400 time `minutes` before the test's now, Beijing time.
fn viid_time(minutes: i64) -> String {
    let now: chrono::DateTime<chrono::Utc> = NOW.parse().expect("time");
    (now - chrono::Duration::minutes(minutes))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("offset"))
        .format("%Y%m%d%H%M%S")
        .to_string()
}

fn source_id(device: &str, serial: u32) -> String {
    format!("{device}02{}{serial:05}", viid_time(1))
}

fn image(serial: u32) -> Vec<u8> {
    // Stands in for a JPEG: a JPEG's first bytes and some that differ per vehicle.
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend((0..1024u32).map(|i| ((i * 31 + serial * 7) % 251) as u8));
    bytes
}

fn vehicle(serial: u32, plate: &str) -> Value {
    let source = source_id(CHECKPOINT, serial);
    json!({
        "MotorVehicleID": format!("{source}02{:05}", 1),
        "InfoKind": 1,
        "SourceID": source,
        "TollgateID": CHECKPOINT,
        "DeviceID": CHECKPOINT,
        "PassTime": viid_time(i64::from(serial % 600) + 1),
        "LaneNo": serial % 4 + 1,
        "PlateNo": plate,
        "PlateColor": "5",
        "VehicleClass": "K33",
        "VehicleColor": "2",
        "Speed": 40 + serial % 30,
        "Direction": "3",
        "SubImageList": {"SubImageInfoObject": [{
            "ImageID": source,
            "Type": "01",
            "FileFormat": "Jpeg",
            "ShotTime": viid_time(i64::from(serial % 600) + 1),
            "Width": 1920,
            "Height": 1080,
            "Data": base64::engine::general_purpose::STANDARD.encode(image(serial))
        }]}
    })
}

/// Makes one record bad.
type Spoil = Box<dyn Fn(&mut Value)>;

fn vehicles(list: Vec<Value>) -> Value {
    json!({"MotorVehicleListObject": {"MotorVehicleObject": list}})
}

async fn city() -> (TestServer, String) {
    city_with(|_| {}).await
}

async fn city_with(adjust: impl FnOnce(&mut cityhub_config::Config)) -> (TestServer, String) {
    let clock = cityhub_catalog::clock::Clock::starting_at(NOW.parse().expect("time"));
    let server = TestServer::spawn_with_clock(adjust, clock).await;
    server.department("gaj").await;
    server.department("jtj").await;
    let password = cityhub_catalog::viid::create_account(
        &server.state.catalog,
        &server.state.audit,
        &cityhub_catalog::Principal::local_operator(),
        PLATFORM,
        "gaj",
    )
    .await
    .expect("account")
    .1;
    (server, password)
}

#[tokio::test]
async fn a_platform_registers_keeps_alive_posts_records_and_unregisters() {
    let (server, password) = city().await;
    let platform = Platform::new(&server, PLATFORM);

    // Before registering, records are refused in the standard's shape.
    let early = platform
        .post(
            "/VIID/MotorVehicles",
            &vehicles(vec![vehicle(1, "川K00001")]),
        )
        .await;
    assert_eq!(early.status, 401, "{:?}", early.body);
    assert!(
        early.content_type.starts_with("application/VIID+JSON"),
        "{}",
        early.content_type
    );
    assert_eq!(early.body["ResponseStatusObject"]["StatusCode"], json!(4));
    assert!(
        early.body["ResponseStatusObject"]["StatusString"]
            .as_str()
            .is_some_and(|s| s.contains("Register first")),
        "{}",
        early.body
    );

    // A wrong password is refused, and audited.
    let wrong = platform.register("not-the-password").await;
    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    let registered = platform.register(&password).await;
    assert_eq!(registered.status, 200, "{:?}", registered.body);
    assert_eq!(
        registered.body["ResponseStatusObject"]["StatusCode"],
        json!(0)
    );
    assert_eq!(
        registered.body["ResponseStatusObject"]["Id"],
        json!(PLATFORM)
    );
    assert_eq!(
        registered.body["ResponseStatusObject"]["LocalTime"],
        json!("20261206083000"),
        "the hub's clock, in Beijing time"
    );

    let alive = platform
        .post(
            "/VIID/System/Keepalive",
            &json!({"KeepaliveObject": {"DeviceID": PLATFORM}}),
        )
        .await;
    assert_eq!(
        (
            alive.status,
            &alive.body["ResponseStatusObject"]["StatusCode"]
        ),
        (200, &json!(0))
    );
    let time = platform
        .send(reqwest::Method::GET, "/VIID/System/Time", None)
        .await;
    assert_eq!(
        time.body["SystemTimeObject"]["LocalTime"],
        json!("20261206083000")
    );
    assert_eq!(
        time.body["SystemTimeObject"]["VIIDServerID"]
            .as_str()
            .map(str::len),
        Some(20)
    );

    // 1,000 vehicles, 10 of them bad in different ways: the 990 land, each bad one is
    // answered with its field.
    let mut list: Vec<Value> = (0..1000)
        .map(|i| vehicle(i, &format!("川K{i:05}")))
        .collect();
    let bad: Vec<(usize, Spoil, &str)> = vec![
        (3, Box::new(|v| v["PlateColor"] = json!("77")), "PlateColor"),
        (
            50,
            Box::new(|v| v["PassTime"] = json!("2026-12-06 08:00")),
            "PassTime",
        ),
        (
            99,
            Box::new(|v| v["PassTime"] = json!(viid_time(-60 * 24))),
            "PassTime",
        ),
        (
            150,
            Box::new(|v| v["MotorVehicleID"] = json!("51102500001210000001")),
            "MotorVehicleID",
        ),
        (
            200,
            Box::new(|v| v["VehicleClass"] = json!("SUV")),
            "VehicleClass",
        ),
        (333, Box::new(|v| v["Speed"] = json!(9999)), "Speed"),
        (
            400,
            Box::new(|v| v["SubImageList"]["SubImageInfoObject"][0]["Data"] = json!("***")),
            "SubImageList.SubImageInfoObject[0].Data",
        ),
        (
            500,
            Box::new(|v| v["SubImageList"]["SubImageInfoObject"][0]["Type"] = json!("55")),
            "SubImageList.SubImageInfoObject[0].Type",
        ),
        (
            600,
            Box::new(|v| {
                v.as_object_mut().expect("object").remove("DeviceID");
            }),
            "DeviceID",
        ),
        (999, Box::new(|v| v["LaneNo"] = json!("left")), "LaneNo"),
    ];
    for (index, spoil, _) in &bad {
        spoil(&mut list[*index]);
    }
    let answer = platform
        .post("/VIID/MotorVehicles", &vehicles(list.clone()))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let statuses = answer.statuses();
    assert_eq!(statuses.len(), 1000);
    for (index, status) in statuses.iter().enumerate() {
        assert_eq!(status["RequestURL"], json!("/VIID/MotorVehicles"));
        let local_time = status["LocalTime"].as_str().unwrap_or_default();
        assert!(
            local_time.len() == 14 && local_time.bytes().all(|b| b.is_ascii_digit()),
            "{status}"
        );
        assert_eq!(
            status["Id"], list[index]["MotorVehicleID"],
            "in the order sent"
        );
        match bad.iter().find(|(at, _, _)| *at == index) {
            Some((_, _, field)) => {
                assert_eq!(status["StatusCode"], json!(8), "{status}");
                let said = status["StatusString"].as_str().expect("string");
                assert!(said.starts_with(&format!("{field}: ")), "{field}: {said}");
            }
            None => assert_eq!(status["StatusCode"], json!(0), "{status}"),
        }
    }

    // A body that is not JSON is refused whole.
    let broken = platform
        .send(reqwest::Method::POST, "/VIID/MotorVehicles", None)
        .await;
    assert_eq!(broken.status, 400, "{:?}", broken.body);
    assert_eq!(broken.body["ResponseStatusObject"]["StatusCode"], json!(7));

    // Faces, with the personal data GA/T 1400 carries.
    let face_source = source_id(FACE_CAMERA, 1);
    let faces = json!({"FaceListObject": {"FaceObject": [{
        "FaceID": format!("{face_source}06{:05}", 1),
        "InfoKind": 1,
        "SourceID": face_source,
        "DeviceID": FACE_CAMERA,
        "FaceAppearTime": viid_time(5),
        "IDType": "111",
        "IDNumber": "511025199001011234",
        "Name": "张小明",
        "GenderCode": "1",
        "AgeUpLimit": 40,
        "AgeLowerLimit": 30,
        "SubImageList": {"SubImageInfoObject": [{
            "ImageID": face_source,
            "Type": "11",
            "FileFormat": "Jpeg",
            "Data": base64::engine::general_purpose::STANDARD.encode(image(7))
        }]}
    }]}});
    let answer = platform.post("/VIID/Faces", &faces).await;
    assert_eq!(
        answer.statuses()[0]["StatusCode"],
        json!(0),
        "{:?}",
        answer.body
    );

    // Collection devices: a device's later report replaces the earlier one.
    for name in ["城东卡口", "城东卡口 (北向)"] {
        let apes = json!({"APEListObject": {"APEObject": [{
            "ApeID": CHECKPOINT, "Name": name, "Model": "DS-2CD", "IPAddr": "10.1.2.3",
            "Port": 80, "Longitude": 105.06, "Latitude": 29.58, "PlaceCode": "511025",
            "IsOnline": "1"
        }]}});
        let answer = platform.post("/VIID/APEs", &apes).await;
        assert_eq!(
            answer.statuses()[0]["StatusCode"],
            json!(0),
            "{:?}",
            answer.body
        );
    }

    // What landed, read by the owning department.
    let owner = server.token("gaj", Role::Analyst).await;
    let counted = sql_ok(
        &server,
        &owner,
        "SELECT count(*) AS n, count(DISTINCT plate_no) AS plates, min(region_code) AS region \
         FROM gaj.viid_motor_vehicles",
    )
    .await;
    assert_eq!(counted[0]["n"], json!(990), "{counted}");
    assert_eq!(counted[0]["plates"], json!(990));
    assert_eq!(counted[0]["region"], json!("511025"));
    let images = sql_ok(
        &server,
        &owner,
        "SELECT count(*) AS n, min(bytes) AS smallest, count(DISTINCT sha256) AS hashes \
         FROM gaj.viid_images WHERE parent_kind = 'motor_vehicle'",
    )
    .await;
    assert_eq!(images[0]["n"], json!(990), "{images}");
    assert_eq!(images[0]["smallest"], json!(1028));
    let one = sql_ok(
        &server,
        &owner,
        &format!(
            "SELECT v.plate_no, v.captured_at, i.object_key, i.sha256, i.type \
             FROM gaj.viid_motor_vehicles v JOIN gaj.viid_images i \
             ON i.parent_id = v.motor_vehicle_id WHERE v.motor_vehicle_id = '{}'",
            list[7]["MotorVehicleID"].as_str().expect("id")
        ),
    )
    .await;
    assert_eq!(one[0]["plate_no"], json!("川K00007"), "{one}");
    assert_eq!(one[0]["type"], json!("01"));
    assert_eq!(one[0]["sha256"], json!(hex::encode(sha256(&image(7)))));
    let key = one[0]["object_key"].as_str().expect("a key").to_string();
    assert!(
        key.starts_with("viid/gaj/2026-12-06/motor_vehicle/511025/"),
        "{key}"
    );
    // Collection devices join the camera registry by their id.
    let producer = server.token("gaj", Role::Producer).await;
    let (status, camera) = server
        .put_json(
            &producer,
            &format!("/api/v1/cameras/{CHECKPOINT}"),
            json!({"name": "城东卡口", "longitude": 105.06, "latitude": 29.58}),
        )
        .await;
    assert_eq!(status, 201, "{camera}");
    let joined = sql_ok(
        &server,
        &owner,
        "SELECT a.model, c.name, c.county_name FROM gaj.viid_apes a \
         JOIN hub.cameras c ON c.id = a.ape_id",
    )
    .await;
    assert_eq!(
        joined,
        json!([{"model": "DS-2CD", "name": "城东卡口", "county_name": "资中县"}])
    );
    let devices = sql_ok(&server, &owner, "SELECT ape_id, name FROM gaj.viid_apes").await;
    assert_eq!(
        devices,
        json!([{"ape_id": CHECKPOINT, "name": "城东卡口 (北向)"}])
    );

    // The image itself, to its owner; audited.
    let served = image_request(&server, &owner, &key).await;
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(
        served
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/jpeg")
    );
    assert_eq!(served.bytes().await.expect("bytes").to_vec(), image(7));

    // Another department: nothing without a grant; with one, plates masked and images
    // withheld; with a grant that unmasks the images, the image too.
    let traffic = server.token("jtj", Role::Analyst).await;
    let (status, _) = sql_status(
        &server,
        &traffic,
        "SELECT count(*) FROM gaj.viid_motor_vehicles",
    )
    .await;
    assert_eq!(status, 403);
    crate::support::grant(
        &server,
        &traffic,
        &server.admin,
        "gaj.viid_motor_vehicles",
        "交通流量分析",
    )
    .await;
    crate::support::grant(
        &server,
        &traffic,
        &server.admin,
        "gaj.viid_images",
        "交通流量分析",
    )
    .await;
    let masked = sql_ok(
        &server,
        &traffic,
        &format!(
            "SELECT plate_no FROM gaj.viid_motor_vehicles WHERE motor_vehicle_id = '{}'",
            list[7]["MotorVehicleID"].as_str().expect("id")
        ),
    )
    .await;
    let plate = masked[0]["plate_no"].as_str().expect("masked plate");
    assert!(
        plate.starts_with('川') && plate.ends_with("07") && plate.contains('*'),
        "{plate}"
    );
    let keys = sql_ok(
        &server,
        &traffic,
        "SELECT count(object_key) AS keys FROM gaj.viid_images",
    )
    .await;
    assert_eq!(
        keys[0]["keys"],
        json!(0),
        "image keys are withheld from masked readers"
    );
    let refused = image_request(&server, &traffic, &key).await;
    assert_eq!(refused.status().as_u16(), 403);
    let (status, request) = server
        .post_json(
            &traffic,
            "/api/v1/datasets/gaj.viid_images/share-requests",
            json!({"purpose": "肇事逃逸车辆核查", "unmasked": ["object_key"]}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let (status, decided) = server
        .post_json(
            &server.admin,
            &format!("/api/v1/share-requests/{}/approve", request["id"]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    let allowed = image_request(&server, &traffic, &key).await;
    assert_eq!(allowed.status().as_u16(), 200);
    // A key that is not an image's, or an image that does not exist: not found.
    for missing in [
        "viid/gaj/2026-12-06/motor_vehicle/511025/0193a1b2-0000-7000-8000-000000000000.pack/0-10.jpg",
        "datasets/1/x.parquet",
    ] {
        let answer = image_request(&server, &owner, missing).await;
        assert_eq!(answer.status().as_u16(), 404, "{missing}");
    }

    let audit = audit_entries(&server).await;
    let reads: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e["action"] == "image_read")
        .map(|e| {
            (
                e["department"].as_str().unwrap_or_default(),
                e["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for expected in [("gaj", "ok"), ("jtj", "refused"), ("jtj", "ok")] {
        assert!(reads.contains(&expected), "{expected:?} in {reads:?}");
    }
    let registrations: Vec<&str> = audit
        .iter()
        .filter(|e| e["action"] == "viid_account")
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(
        registrations.contains(&"refused") && registrations.contains(&"ok"),
        "{registrations:?}"
    );
    assert!(
        audit.iter().any(|e| e["action"] == "viid_receive"
            && e["detail"]["records_stored"] == json!(990)
            && e["detail"]["records_refused"] == json!(10)),
        "the receipt of the 1,000 vehicles is audited"
    );

    // Unregistered, the platform is refused again.
    let gone = platform
        .post(
            "/VIID/System/UnRegister",
            &json!({"UnRegisterObject": {"DeviceID": PLATFORM}}),
        )
        .await;
    assert_eq!(
        gone.body["ResponseStatusObject"]["StatusCode"],
        json!(0),
        "{:?}",
        gone.body
    );
    let after = platform
        .post(
            "/VIID/MotorVehicles",
            &vehicles(vec![vehicle(5000, "川K99999")]),
        )
        .await;
    assert_eq!(after.status, 401);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_viid_records_total"),
        "metrics name the receiver"
    );

    // Images go with their rows' retention (180 days), whole capture days at a time.
    let now: chrono::DateTime<chrono::Utc> = NOW.parse().expect("time");
    let kept = server
        .state
        .viid
        .expire_images(now + chrono::Duration::days(180))
        .await
        .expect("expiry");
    // Vehicles passing up to 10 hours before 08:30 were captured on the 5th (Beijing
    // time) for serials 510-599: that day is wholly past; the 6th is not.
    assert_eq!(kept, 1, "only the pack of the day wholly past retention");
    assert_eq!(
        image_request(&server, &owner, &key).await.status().as_u16(),
        200
    );
    let gone = server
        .state
        .viid
        .expire_images(now + chrono::Duration::days(182))
        .await
        .expect("expiry");
    assert_eq!(gone, 2, "the other vehicles' pack and the face's");
    assert_eq!(
        image_request(&server, &owner, &key).await.status().as_u16(),
        404
    );
}

/// `GET /api/v1/images/{key}` as `token`.
async fn image_request(server: &TestServer, token: &str, key: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(&format!("/api/v1/images/{key}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test]
async fn images_on_their_own_and_notifications_of_subscriptions_land_too() {
    let (server, password) = city_with(|config| config.viid.max_body_bytes = 1024 * 1024).await;
    let platform = Platform::new(&server, PLATFORM);
    assert_eq!(platform.register(&password).await.status, 200);

    // A body over viid.max_body_bytes is refused whole, in the standard's shape.
    let huge: Vec<Value> = (0..700).map(|i| vehicle(i, "川K00000")).collect();
    let answer = platform.post("/VIID/MotorVehicles", &vehicles(huge)).await;
    assert_eq!(answer.status, 413, "{:?}", answer.body);
    assert!(
        answer.body["ResponseStatusObject"]["StatusString"]
            .as_str()
            .is_some_and(|s| s.contains("viid.max_body_bytes")),
        "{:?}",
        answer.body
    );

    let image_id = source_id(FACE_CAMERA, 9);
    let images = json!({"ImageListObject": {"ImageObject": [
        {
            "ImageInfo": {
                "ImageID": image_id, "InfoKind": 1, "ImageSource": "99",
                "DeviceID": FACE_CAMERA, "FileFormat": "Png", "ShotTime": viid_time(3),
                "Width": 640, "Height": 480
            },
            "Data": base64::engine::general_purpose::STANDARD.encode(image(9))
        },
        {
            "ImageInfo": {"ImageID": source_id(FACE_CAMERA, 10), "DeviceID": FACE_CAMERA,
                          "ShotTime": "yesterday"},
            "Data": "aGVsbG8="
        }
    ]}});
    let answer = platform.post("/VIID/Images", &images).await;
    let statuses = answer.statuses();
    assert_eq!(statuses[0]["StatusCode"], json!(0), "{:?}", answer.body);
    assert_eq!(statuses[1]["StatusCode"], json!(8));
    assert!(
        statuses[1]["StatusString"]
            .as_str()
            .is_some_and(|s| s.starts_with("ImageInfo.ShotTime: ")),
        "{}",
        statuses[1]
    );

    let mut bad = vehicle(3, "川K10003");
    bad["PlateColor"] = json!("0");
    let notifications = json!({"SubscribeNotificationListObject": {"SubscribeNotificationObject": [
        {
            "NotificationID": "51100000001190000001202612060830000001",
            "SubscribeID": "511000000011900000012026120608300000001",
            "Title": "过车", "TriggerTime": viid_time(0),
            "MotorVehicleObjectList": {"MotorVehicleObject": [
                vehicle(1, "川K10001"), vehicle(2, "川K10002")
            ]}
        },
        {
            "NotificationID": "51100000001190000001202612060830000002",
            "MotorVehicleObjectList": {"MotorVehicleObject": [bad]}
        }
    ]}});
    let answer = platform
        .post("/VIID/SubscribeNotifications", &notifications)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let statuses = answer.statuses();
    assert_eq!(
        statuses[0]["Id"],
        json!("51100000001190000001202612060830000001")
    );
    assert_eq!(statuses[0]["StatusCode"], json!(0), "{}", statuses[0]);
    assert_eq!(statuses[1]["StatusCode"], json!(8), "{}", statuses[1]);
    assert!(
        statuses[1]["StatusString"]
            .as_str()
            .is_some_and(|s| s.contains("PlateColor")),
        "{}",
        statuses[1]
    );

    let owner = server.token("gaj", Role::Analyst).await;
    let landed = sql_ok(
        &server,
        &owner,
        "SELECT (SELECT count(*) FROM gaj.viid_motor_vehicles) AS vehicles, \
         (SELECT count(*) FROM gaj.viid_images WHERE parent_kind = 'image') AS images, \
         (SELECT max(file_format) FROM gaj.viid_images WHERE parent_kind = 'image') AS format",
    )
    .await;
    assert_eq!(
        landed,
        json!([{"vehicles": 2, "images": 1, "format": "Png"}])
    );
    let key = sql_ok(
        &server,
        &owner,
        "SELECT object_key FROM gaj.viid_images WHERE parent_kind = 'image'",
    )
    .await;
    let key = key[0]["object_key"].as_str().expect("key");
    assert!(key.ends_with(".png"), "{key}");
    let served = image_request(&server, &owner, key).await;
    assert_eq!(
        served
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    assert_eq!(served.bytes().await.expect("bytes").to_vec(), image(9));
}

/// An upper platform's notification receiver: answers 500 to the first `fail_first`
/// notifications, then takes them, keeping every body taken.
async fn upper_receiver(
    fail_first: usize,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let taken: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/VIID/SubscribeNotifications",
        axum::routing::post({
            let taken = taken.clone();
            move |body: String| {
                let taken = taken.clone();
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let value: Value = serde_json::from_str(&body).expect("JSON");
                    taken.lock().expect("lock").push(value);
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        format!("http://{address}/VIID/SubscribeNotifications"),
        taken,
    )
}

#[tokio::test]
async fn an_upper_platform_subscribes_and_receives_what_lands_after_a_failed_delivery() {
    // Two failures in a row drop a subscription (20 by default): the test sees it dropped.
    let (server, password) = city_with(|config| config.viid.notify_max_attempts = 2).await;
    let upper_id = "51000000001190000001";
    let upper_password = cityhub_catalog::viid::create_account(
        &server.state.catalog,
        &server.state.audit,
        &cityhub_catalog::Principal::local_operator(),
        upper_id,
        "gaj",
    )
    .await
    .expect("account")
    .1;
    let lower = Platform::new(&server, PLATFORM);
    let upper = Platform::new(&server, upper_id);
    assert_eq!(lower.register(&password).await.status, 200);
    assert_eq!(upper.register(&upper_password).await.status, 200);

    // The delivery round the serving hub runs every second (`Tasks`), run here by the test.
    let state = server.state.clone();
    let rounds = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            cityhub_server::notify::deliver_round(&state, &client).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let (address, taken) = upper_receiver(1).await;
    let subscribe = |id: &str, detail: &str, address: &str| {
        json!({"SubscribeListObject": {"SubscribeObject": [{
            "SubscribeID": id, "Title": "过车", "SubscribeDetail": detail,
            "ResourceURI": CHECKPOINT, "ApplicantName": "省厅", "ApplicantOrg": "510000",
            "BeginTime": viid_time(1), "EndTime": viid_time(-60), "ReceiveAddr": address,
            "OperateType": 0, "ReportInterval": 5
        }]}})
    };
    let answer = upper
        .post("/VIID/Subscribes", &subscribe("SUB-1", "13", &address))
        .await;
    assert_eq!(
        answer.statuses()[0]["StatusCode"],
        json!(0),
        "{:?}",
        answer.body
    );
    // Hostile or mistaken subscriptions are refused one by one.
    for (detail, address, field) in [
        ("99", "http://x/", "SubscribeDetail"),
        ("13", "ftp://x/", "ReceiveAddr"),
    ] {
        let answer = upper
            .post("/VIID/Subscribes", &subscribe("SUB-BAD", detail, address))
            .await;
        let status = &answer.statuses()[0];
        assert_eq!(status["StatusCode"], json!(8));
        assert!(
            status["StatusString"]
                .as_str()
                .is_some_and(|s| s.starts_with(field)),
            "{status}"
        );
    }

    // The lower platform posts three vehicles; one is bad, and a face nobody subscribed to.
    let mut bad = vehicle(3, "川K30003");
    bad["PlateColor"] = json!("0");
    let answer = lower
        .post(
            "/VIID/MotorVehicles",
            &vehicles(vec![vehicle(1, "川K30001"), vehicle(2, "川K30002"), bad]),
        )
        .await;
    assert_eq!(answer.status, 200);

    // The first delivery fails; the next one, a second later, is taken.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let notification = loop {
        if let Some(first) = taken.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no notification within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let object = &notification["SubscribeNotificationListObject"]["SubscribeNotificationObject"][0];
    assert_eq!(object["SubscribeID"], json!("SUB-1"));
    let delivered = object["MotorVehicleObjectList"]["MotorVehicleObject"]
        .as_array()
        .expect("vehicles");
    let plates: Vec<&str> = delivered
        .iter()
        .filter_map(|v| v["PlateNo"].as_str())
        .collect();
    assert_eq!(plates, vec!["川K30001", "川K30002"]);
    assert_eq!(delivered[0]["PassTime"], vehicle(1, "")["PassTime"]);
    assert_eq!(delivered[0]["DeviceID"], json!(CHECKPOINT));

    // The hub counts a delivery once the upper platform's answer has reached it, which can
    // be just after the upper platform holds the notification: read until both are counted.
    let mine = loop {
        let listed = upper
            .send(reqwest::Method::GET, "/VIID/Subscribes", None)
            .await;
        let mine = listed.body["SubscribeListObject"]["SubscribeObject"][0].clone();
        if mine["Delivered"] == json!(2) || std::time::Instant::now() >= deadline {
            break mine;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&mine["SubscribeStatus"], &mine["Delivered"]),
        (&json!(0), &json!(2)),
        "{mine}"
    );

    // Cancelled, it is listed so and gets nothing more.
    let cancel = json!({"SubscribeListObject": {"SubscribeObject": [{
        "SubscribeID": "SUB-1", "OperateType": 1
    }]}});
    assert_eq!(
        upper.post("/VIID/Subscribes", &cancel).await.statuses()[0]["StatusCode"],
        json!(0)
    );
    // A receiver that cannot be reached is dropped after notify_max_attempts failures in a
    // row, and the subscriber sees it dropped, with the reason.
    let answer = upper
        .post(
            "/VIID/Subscribes",
            &subscribe(
                "SUB-2",
                "13",
                "http://127.0.0.1:9/VIID/SubscribeNotifications",
            ),
        )
        .await;
    assert_eq!(answer.statuses()[0]["StatusCode"], json!(0));
    lower
        .post(
            "/VIID/MotorVehicles",
            &vehicles(vec![vehicle(4, "川K30004")]),
        )
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listed = upper
            .send(reqwest::Method::GET, "/VIID/Subscribes", None)
            .await;
        let list = listed.body["SubscribeListObject"]["SubscribeObject"]
            .as_array()
            .expect("list")
            .clone();
        let first = list
            .iter()
            .find(|s| s["SubscribeID"] == "SUB-1")
            .expect("SUB-1");
        assert_eq!(first["SubscribeStatus"], json!(1));
        assert_eq!(
            first["Delivered"],
            json!(2),
            "nothing after the cancellation"
        );
        let second = list
            .iter()
            .find(|s| s["SubscribeID"] == "SUB-2")
            .expect("SUB-2");
        if second["SubscribeStatus"] == json!(9) {
            let reason = second["Reason"].as_str().expect("a reason");
            assert!(
                reason.starts_with("2 deliveries in a row failed")
                    && reason.contains("could not be reached"),
                "{reason}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not dropped within 30 s: {second}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(taken.lock().expect("lock").len(), 1);
    rounds.abort();
}

//! The demo city: Neijiang's departments and a few of their datasets, filled with synthetic
//! rows (labelled as such) so that a fresh hub has something real-looking to query.
//!
//! Loading is idempotent: departments and datasets that exist are kept, datasets that have
//! data are not refilled, and the demo tokens made on the first run are printed again
//! (they are kept in `demo-tokens.json` in the data folder; demo use only).

use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    ArrayRef, Decimal128Array, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use cityhub_catalog::region::{Region, counties_of};
use cityhub_catalog::sharing::NewToken;
use cityhub_catalog::{
    CatalogError, Classification, Column, ColumnType, DatasetName, NewDataset, Principal, Role,
    Sensitivity, Sharing,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use cityhub_server::AppState;

/// Rows of a full-size demo (the tests load a small fraction).
pub const FULL_SCALE: f64 = 1.0;

const DEPARTMENTS: &[(&str, &str)] = &[
    ("gongan", "内江市公安局"),
    ("jiaotong", "内江市交通运输局"),
    ("chengguan", "内江市城市管理行政执法局"),
    ("yingji", "内江市应急管理局"),
    ("minzheng", "内江市民政局"),
    ("weijian", "内江市卫生健康委员会"),
    ("zhili", "内江市社会治理中心"),
];

const SYNTHETIC: &str = "（合成演示数据 synthetic demo data）";

/// A demo token, printed so people can try the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoToken {
    pub department: String,
    pub role: Role,
    /// The governance centre's level: the city's or a county's (`None`: unscoped).
    #[serde(default)]
    pub region: Option<String>,
    pub token: String,
}

/// What loading the demo did.
#[derive(Debug, Clone)]
pub struct DemoCity {
    /// False when the demo was already loaded and only reused.
    pub fresh: bool,
    pub rows_loaded: u64,
    /// Camera channels registered by this load (0 when the registry already had some).
    pub cameras_loaded: usize,
    pub tokens: Vec<DemoToken>,
}

impl DemoCity {
    /// A short text for the terminal: what is there and the tokens to use.
    pub fn describe(&self) -> String {
        let mut text =
            String::from("Demo city Neijiang (内江) is loaded with synthetic data. Demo tokens:\n");
        for token in &self.tokens {
            let scope = token
                .region
                .as_deref()
                .map(|code| {
                    let name = cityhub_catalog::region::region(code).map_or("", |r| r.name);
                    format!("{code} {name}")
                })
                .unwrap_or_default();
            text.push_str(&format!(
                "  {:<10} {:<10} {:<14} {}\n",
                token.department,
                token.role.as_str(),
                scope,
                token.token
            ));
        }
        text.push_str("Dashboard endpoints (zhili tokens): ");
        let names: Vec<String> = super::endpoints::definitions()
            .iter()
            .map(|(name, _)| format!("/api/v1/endpoints/{name}"))
            .collect();
        text.push_str(&names.join(", "));
        text.push('\n');
        text
    }
}

/// Loads the full demo city.
pub async fn load(state: &AppState) -> anyhow::Result<DemoCity> {
    load_scaled(state, FULL_SCALE).await
}

/// Loads the demo city with `scale` times the full row counts.
pub async fn load_scaled(state: &AppState, scale: f64) -> anyhow::Result<DemoCity> {
    let catalog = &state.catalog;
    for (code, name) in DEPARTMENTS {
        match catalog.create_department(code, name).await {
            Ok(_) | Err(CatalogError::AlreadyExists { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let now = state.clock.now_micros();
    let mut rows_loaded = 0;
    let mut loads = Vec::new();
    for (index, spec) in datasets().into_iter().enumerate() {
        let dataset = match catalog.create_dataset(spec.new.clone()).await {
            Ok(dataset) => dataset,
            Err(CatalogError::AlreadyExists { .. }) => catalog
                .dataset(&spec.new.name)
                .await?
                .context("a demo dataset vanished")?,
            Err(err) => return Err(err.into()),
        };
        if dataset.snapshot_id.is_some() {
            continue;
        }
        let rows = ((spec.rows as f64) * scale).max(10.0) as usize;
        rows_loaded += rows as u64;
        let ingest = state.ingest.clone();
        let generate = spec.generate;
        // Datasets are generated in parallel; each seed is fixed so the city is the same
        // on every machine.
        loads.push(tokio::spawn(async move {
            let batches = tokio::task::spawn_blocking(move || {
                let mut rng = StdRng::seed_from_u64(28181 + index as u64);
                generate(&dataset.columns, rows, now, &mut rng).map(|b| (dataset, b))
            })
            .await??;
            let (dataset, batches) = batches;
            let file = ingest.write_file(&dataset, batches).await?;
            ingest.commit_append(&dataset, vec![file], None).await?;
            anyhow::Ok(())
        }));
    }
    for load in loads {
        load.await??;
    }
    let cameras_loaded = super::cameras::load(state, scale).await?;

    let token_file = state.config.data_dir().join("demo-tokens.json");
    let existing: Option<Vec<DemoToken>> = std::fs::read(&token_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let tokens = match existing {
        Some(tokens) => tokens,
        None => {
            let mut tokens = Vec::new();
            let mut principals = std::collections::HashMap::new();
            let unscoped = [
                ("admin", Role::Admin),
                ("zhili", Role::Producer),
                ("gongan", Role::Producer),
                ("yingji", Role::Producer),
                ("zhili", Role::Analyst),
                ("gongan", Role::Analyst),
                ("jiaotong", Role::Analyst),
                ("zhili", Role::Dashboard),
            ]
            .map(|(department, role)| (department, role, None));
            // The three-level governance centres (市、县综治中心): the city's and each
            // county's, an analyst and a dashboard token each.
            let mut levels = vec![cityhub_catalog::region::CITY];
            levels.extend(
                counties_of(cityhub_catalog::region::CITY)
                    .iter()
                    .map(|r| r.code),
            );
            let scoped = levels.into_iter().flat_map(|code| {
                [Role::Analyst, Role::Dashboard].map(|role| ("zhili", role, Some(code)))
            });
            for (department, role, region) in unscoped.into_iter().chain(scoped) {
                let name = match region {
                    None => format!("demo-{department}-{role}"),
                    Some(code) => format!("demo-{department}-{role}-{code}"),
                };
                let new = NewToken {
                    name: Some(name),
                    department: department.into(),
                    role,
                    expires_at: None,
                    // The governance centre's screens all poll with one token.
                    rate_limit_per_second: (role == Role::Dashboard).then_some(50_000),
                    region: region.map(String::from),
                };
                let (principal, token) = state
                    .sharing
                    .create_token(&Principal::local_operator(), new, "demo")
                    .await?;
                if region.is_none() {
                    principals.insert((department, role), principal.id);
                }
                tokens.push(DemoToken {
                    department: department.into(),
                    role,
                    region: region.map(String::from),
                    token: token.plaintext,
                });
            }
            demo_sharing(state, &principals).await?;
            std::fs::create_dir_all(state.config.data_dir())?;
            std::fs::write(&token_file, serde_json::to_vec_pretty(&tokens)?)
                .with_context(|| format!("writing {}", token_file.display()))?;
            tokens
        }
    };
    super::endpoints::load(state)
        .await
        .context("saving the demo's dashboard endpoints")?;
    Ok(DemoCity {
        fresh: rows_loaded > 0 || cameras_loaded > 0,
        rows_loaded,
        cameras_loaded,
        tokens,
    })
}

/// Sharing in the demo city: jiaotong holds a grant on gongan's traffic violations (plates
/// masked), and gongan has asked zhili for hotline cases, still pending.
async fn demo_sharing(
    state: &AppState,
    principals: &std::collections::HashMap<(&str, Role), i64>,
) -> anyhow::Result<()> {
    use cityhub_catalog::sharing::{Decision, NewShareRequest, working_days_after};
    let catalog = &state.catalog;
    let dataset = |name: &str| {
        let name = DatasetName::parse(name);
        async move {
            catalog
                .dataset(&name?)
                .await?
                .context("a demo dataset vanished")
        }
    };
    let id = |key: (&str, Role)| principals.get(&key).copied().context("a demo principal");
    let now = state.clock.now();
    let due = working_days_after(now, state.config.sharing.answer_within_working_days as u32);
    let violations = dataset("gongan.traffic_violations").await?;
    let request = catalog
        .create_share_request(NewShareRequest {
            dataset_id: violations.id,
            department: "jiaotong".into(),
            requested_by: id(("jiaotong", Role::Analyst))?,
            purpose: "路口信号配时优化：按卡口统计违法时段".into(),
            columns: None,
            unmasked: vec![],
            until: None,
            answer_due_at: due,
            rows: None,
        })
        .await?;
    catalog
        .decide_share_request(Decision {
            request_id: request.id,
            decided_by: id(("gongan", Role::Producer))?,
            approve: true,
            reason: Some("同意，车牌脱敏".into()),
            columns: None,
            unmasked: None,
            expires_at: Some(now + chrono::Duration::days(365)),
            rows: None,
        })
        .await?;
    let hotline = dataset("zhili.hotline_cases").await?;
    catalog
        .create_share_request(NewShareRequest {
            dataset_id: hotline.id,
            department: "gongan".into(),
            requested_by: id(("gongan", Role::Analyst))?,
            purpose: "矛盾纠纷排查：12345 热线中的治安类诉求".into(),
            columns: Some(vec![
                "case_id".into(),
                "received_at".into(),
                "region_code".into(),
                "category".into(),
                "caller_phone".into(),
            ]),
            unmasked: vec!["caller_phone".into()],
            until: Some(now + chrono::Duration::days(90)),
            answer_due_at: due,
            rows: None,
        })
        .await?;
    Ok(())
}

type Generator = fn(&[Column], usize, i64, &mut StdRng) -> anyhow::Result<Vec<RecordBatch>>;

struct DemoDataset {
    new: NewDataset,
    rows: usize,
    generate: Generator,
}

fn text(name: &str, nullable: bool) -> Column {
    Column::new(name, ColumnType::String, nullable)
}

fn dataset(
    name: &str,
    description: &str,
    columns: Vec<Column>,
    classification: Classification,
    sharing: Sharing,
    resource_code: &str,
    update_cycle: &str,
) -> NewDataset {
    let columns_have_region = columns.iter().any(|c| c.name == "region_code");
    NewDataset {
        name: DatasetName::parse(name).unwrap_or_else(|err| panic!("demo name {name}: {err}")),
        description: format!("{description}{SYNTHETIC}"),
        columns,
        classification,
        sharing,
        resource_code: Some(resource_code.into()),
        update_cycle: Some(update_cycle.into()),
        tags: vec!["demo".into(), "synthetic".into()],
        sort_key: vec![],
        primary_key: vec![],
        snapshot_retention_days: None,
        row_retention: None,
        // Every demo dataset says where its rows lie, so the counties' centres see theirs.
        region_column: columns_have_region.then(|| "region_code".to_string()),
        region_free: false,
    }
}

fn datasets() -> Vec<DemoDataset> {
    let ts = |name: &str, nullable: bool| Column::new(name, ColumnType::Timestamp, nullable);
    let int = |name: &str, nullable: bool| Column::new(name, ColumnType::Int32, nullable);
    let float = |name: &str| Column::new(name, ColumnType::Float64, true);
    vec![
        DemoDataset {
            new: dataset(
                "zhili.hotline_cases",
                "12345 市民服务热线工单 citizen hotline cases",
                vec![
                    text("case_id", false),
                    ts("received_at", false),
                    text("region_code", false),
                    text("region_name", false),
                    text("category", false),
                    text("channel", false),
                    text("caller_name", true).sensitive(Sensitivity::PersonName),
                    text("caller_phone", true).sensitive(Sensitivity::Phone),
                    text("address", true).sensitive(Sensitivity::Address),
                    text("content", true),
                    text("status", false),
                    text("assigned_department", true),
                    int("satisfaction", true),
                    ts("closed_at", true),
                ],
                Classification::Important,
                Sharing::Conditional,
                "511000-ZL-12345-001",
                "real-time",
            ),
            rows: 300_000,
            generate: hotline_cases,
        },
        DemoDataset {
            new: dataset(
                "gongan.traffic_violations",
                "交通违法记录（卡口抓拍） traffic violations from checkpoints",
                vec![
                    text("violation_id", false),
                    ts("occurred_at", false),
                    text("region_code", false),
                    text("road", false),
                    text("checkpoint_id", false),
                    text("plate_no", false).sensitive(Sensitivity::PlateNo),
                    text("vehicle_type", false),
                    text("violation_type", false),
                    Column::new(
                        "fine_yuan",
                        ColumnType::Decimal {
                            precision: 10,
                            scale: 2,
                        },
                        false,
                    ),
                    int("points", false),
                    int("speed_kmh", true),
                    int("speed_limit_kmh", true),
                ],
                Classification::Important,
                Sharing::Conditional,
                "511000-GA-JJ-002",
                "real-time",
            ),
            rows: 500_000,
            generate: traffic_violations,
        },
        DemoDataset {
            new: dataset(
                "zhili.grid_events",
                "网格化服务管理事件 grid events of the governance centre",
                vec![
                    text("event_id", false),
                    ts("reported_at", false),
                    text("region_code", false),
                    text("grid_id", false),
                    text("category", false),
                    text("description", true),
                    text("grid_worker", true).sensitive(Sensitivity::PersonName),
                    text("status", false),
                    ts("closed_at", true),
                    float("longitude"),
                    float("latitude"),
                ],
                Classification::General,
                Sharing::Unconditional,
                "511000-ZL-WG-003",
                "real-time",
            ),
            rows: 200_000,
            generate: grid_events,
        },
        DemoDataset {
            new: dataset(
                "yingji.incidents",
                "突发事件接报 emergency incidents",
                vec![
                    text("incident_id", false),
                    ts("occurred_at", false),
                    text("region_code", false),
                    text("incident_type", false),
                    text("level", false),
                    int("casualties", false),
                    text("address", true).sensitive(Sensitivity::Address),
                    float("longitude"),
                    float("latitude"),
                ],
                Classification::Important,
                Sharing::Unconditional,
                "511000-YJ-004",
                "real-time",
            ),
            rows: 100_000,
            generate: incidents,
        },
    ]
}

// ----------------------------------------------------------------------------------------
// Generators: plausible distributions, nothing real.

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "罗", "高", "林", "欧阳", "司马",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "华", "建国", "志强", "雪梅",
];
const STREETS: &[&str] = &[
    "汉安大道",
    "玉溪路",
    "新江路",
    "沱江路",
    "桂湖街",
    "大千路",
    "公园街",
    "西林大道",
    "甜城大道",
    "太白路",
];

/// Approximate centres (WGS-84) of Neijiang's county-level regions.
fn centre(region: &Region) -> (f64, f64) {
    match region.code {
        "511002" => (105.064, 29.581),
        "511011" => (105.076, 29.594),
        "511024" => (104.668, 29.527),
        "511025" => (104.852, 29.764),
        "511083" => (105.288, 29.339),
        _ => (105.058, 29.580),
    }
}

/// Picks a county, weighted by rough population.
fn county<'a>(counties: &[&'a Region], rng: &mut StdRng) -> &'a Region {
    let weights = [16, 14, 20, 30, 20];
    let total: u32 = weights.iter().take(counties.len()).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (region, weight) in counties.iter().zip(weights) {
        if pick < weight {
            return region;
        }
        pick -= weight;
    }
    counties[0]
}

fn person_name(rng: &mut StdRng) -> String {
    format!(
        "{}{}",
        SURNAMES.choose(rng).unwrap_or(&"王"),
        GIVEN.choose(rng).unwrap_or(&"伟")
    )
}

fn phone(rng: &mut StdRng) -> String {
    let prefixes = [
        "135", "138", "139", "150", "158", "180", "183", "188", "199",
    ];
    format!(
        "{}{:08}",
        prefixes.choose(rng).unwrap_or(&"138"),
        rng.random_range(0..100_000_000u32)
    )
}

fn address(region: &Region, rng: &mut StdRng) -> String {
    format!(
        "四川省内江市{}{}{}号",
        region.name,
        STREETS.choose(rng).unwrap_or(&"汉安大道"),
        rng.random_range(1..400)
    )
}

/// The start of the Beijing (UTC+8) day holding `now`, both in UTC microseconds.
fn beijing_midnight(now: i64) -> i64 {
    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    let beijing = now + 8 * HOUR;
    beijing - beijing.rem_euclid(DAY) - 8 * HOUR
}

/// A time in the last 30 days, denser in daytime hours, never in the future.
fn recent_time(now: i64, rng: &mut StdRng) -> i64 {
    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    let day_start = beijing_midnight(now);
    let day = rng.random_range(0..30);
    // 80% between 08:00 and 22:00 Beijing time.
    let hour = if rng.random_bool(0.8) {
        rng.random_range(8..22)
    } else {
        rng.random_range(0..24)
    };
    let t = day_start - day * DAY + hour * HOUR + rng.random_range(0..HOUR);
    t.min(now - rng.random_range(0..HOUR))
}

fn weighted<'a>(choices: &[(&'a str, u32)], rng: &mut StdRng) -> &'a str {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (choice, weight) in choices {
        if pick < *weight {
            return choice;
        }
        pick -= weight;
    }
    choices[0].0
}

fn batch(columns: &[Column], arrays: Vec<ArrayRef>) -> anyhow::Result<Vec<RecordBatch>> {
    let schema = cityhub_catalog::arrow_schema(columns);
    Ok(vec![RecordBatch::try_new(schema, arrays)?])
}

fn strings(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn optional_strings(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn times(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn optional_times(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn hotline_cases(
    columns: &[Column],
    rows: usize,
    now: i64,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<RecordBatch>> {
    let counties = counties_of("511000");
    let categories = [
        ("城乡建设", 18),
        ("环境保护", 14),
        ("交通出行", 12),
        ("市场监管", 11),
        ("社会保障", 10),
        ("教育", 8),
        ("医疗卫生", 8),
        ("公共安全", 7),
        ("水电气", 7),
        ("其他", 5),
    ];
    let handlers = [
        "chengguan",
        "jiaotong",
        "weijian",
        "minzheng",
        "gongan",
        "yingji",
    ];
    let mut c: Vec<Vec<String>> = (0..7).map(|_| Vec::with_capacity(rows)).collect();
    let (mut received, mut names, mut phones, mut addresses) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut assigned, mut satisfaction, mut closed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows {
        let region = county(&counties, rng);
        let at = recent_time(now, rng);
        let status = if now - at < 86_400_000_000 {
            weighted(&[("已受理", 5), ("办理中", 4), ("已办结", 1)], rng)
        } else {
            weighted(&[("办理中", 1), ("已办结", 6), ("已回访", 3)], rng)
        };
        let category = weighted(&categories, rng);
        c[0].push(format!("12345-{:08}", i + 1));
        c[1].push(region.code.to_string());
        c[2].push(region.name.to_string());
        c[3].push(category.to_string());
        c[4].push(weighted(&[("电话", 70), ("微信", 15), ("网站", 8), ("APP", 7)], rng).into());
        c[5].push(format!("反映{}问题，请尽快处理。", category));
        c[6].push(status.to_string());
        received.push(at);
        names.push(rng.random_bool(0.95).then(|| person_name(rng)));
        phones.push(rng.random_bool(0.97).then(|| phone(rng)));
        addresses.push(rng.random_bool(0.9).then(|| address(region, rng)));
        let done = matches!(status, "已办结" | "已回访");
        assigned.push(
            (status != "已受理").then(|| handlers.choose(rng).unwrap_or(&"zhili").to_string()),
        );
        satisfaction.push((status == "已回访").then(|| rng.random_range(1..=5)));
        closed.push(
            done.then(|| (at + rng.random_range(3_600_000_000..5 * 86_400_000_000)).min(now)),
        );
    }
    let mut c = c.into_iter();
    let mut next = || strings(c.next().unwrap_or_default());
    let (case_id, region_code, region_name, category, channel, content, status) =
        (next(), next(), next(), next(), next(), next(), next());
    batch(
        columns,
        vec![
            case_id,
            times(received),
            region_code,
            region_name,
            category,
            channel,
            optional_strings(names),
            optional_strings(phones),
            optional_strings(addresses),
            content,
            status,
            optional_strings(assigned),
            Arc::new(Int32Array::from(satisfaction)),
            optional_times(closed),
        ],
    )
}

fn traffic_violations(
    columns: &[Column],
    rows: usize,
    now: i64,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<RecordBatch>> {
    let counties = counties_of("511000");
    let roads = [
        "G85银昆高速",
        "G93成渝环线",
        "S207",
        "汉安大道",
        "沱江路",
        "甜城大道",
        "G321",
    ];
    let kinds: [(&str, u32, i128, i32); 6] = [
        ("违法停车", 35, 20000, 0),
        ("超速行驶", 25, 20000, 3),
        ("闯红灯", 12, 20000, 6),
        ("不按导向车道行驶", 12, 10000, 2),
        ("未系安全带", 10, 5000, 1),
        ("驾车使用手机", 6, 5000, 3),
    ];
    let letters = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    let (mut ids, mut regions, mut road, mut checkpoint) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut plates, mut vehicles, mut types) = (Vec::new(), Vec::new(), Vec::new());
    let (mut at, mut fines, mut points, mut speed, mut limit) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows {
        let region = county(&counties, rng);
        let total: u32 = kinds.iter().map(|k| k.1).sum();
        let mut pick = rng.random_range(0..total);
        let kind = kinds
            .iter()
            .find(|k| {
                let hit = pick < k.1;
                pick = pick.saturating_sub(k.1);
                hit
            })
            .unwrap_or(&kinds[0]);
        ids.push(format!("JT{:010}", i + 1));
        regions.push(region.code.to_string());
        road.push(roads.choose(rng).unwrap_or(&"S207").to_string());
        // GB/T 28181 id: centre (region + 00), industry 05 traffic checkpoint, type 121
        // video checkpoint, network 0, serial.
        checkpoint.push(format!(
            "{}00051210{:06}",
            region.code,
            rng.random_range(1..400)
        ));
        let plate: String = (0..5)
            .map(|_| {
                if rng.random_bool(0.6) {
                    char::from(b'0' + rng.random_range(0..10u8))
                } else {
                    char::from(letters[rng.random_range(0..letters.len())])
                }
            })
            .collect();
        plates.push(format!("川K{plate}"));
        vehicles.push(
            weighted(
                &[
                    ("小型汽车", 80),
                    ("大型货车", 8),
                    ("摩托车", 7),
                    ("客车", 5),
                ],
                rng,
            )
            .to_string(),
        );
        types.push(kind.0.to_string());
        at.push(recent_time(now, rng));
        fines.push(kind.2);
        points.push(kind.3);
        if kind.0 == "超速行驶" {
            let posted = *[40, 60, 80, 120].choose(rng).unwrap_or(&60);
            limit.push(Some(posted));
            speed.push(Some(
                posted + rng.random_range(posted / 10 + 1..posted / 2 + 2),
            ));
        } else {
            limit.push(None);
            speed.push(None);
        }
    }
    batch(
        columns,
        vec![
            strings(ids),
            times(at),
            strings(regions),
            strings(road),
            strings(checkpoint),
            strings(plates),
            strings(vehicles),
            strings(types),
            Arc::new(Decimal128Array::from(fines).with_precision_and_scale(10, 2)?),
            Arc::new(Int32Array::from(points)),
            Arc::new(Int32Array::from(speed)),
            Arc::new(Int32Array::from(limit)),
        ],
    )
}

fn grid_events(
    columns: &[Column],
    rows: usize,
    now: i64,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<RecordBatch>> {
    let counties = counties_of("511000");
    let categories = [
        ("矛盾纠纷", 20),
        ("安全隐患", 18),
        ("环境卫生", 22),
        ("占道经营", 12),
        ("设施损坏", 14),
        ("民生诉求", 14),
    ];
    let (mut ids, mut regions, mut grids, mut cats) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut descriptions, mut workers, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    let (mut at, mut closed, mut lon, mut lat) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows {
        let region = county(&counties, rng);
        let (x, y) = centre(region);
        let reported = recent_time(now, rng);
        let category = weighted(&categories, rng);
        let open =
            now - reported < 3 * 86_400_000_000 && rng.random_bool(0.5) || rng.random_bool(0.03);
        ids.push(format!("WG{:09}", i + 1));
        regions.push(region.code.to_string());
        grids.push(format!("{}-G{:04}", region.code, rng.random_range(1..600)));
        cats.push(category.to_string());
        descriptions.push(Some(format!("网格员巡查发现{category}事件")));
        workers.push(Some(person_name(rng)));
        statuses.push(if open { "open" } else { "closed" }.to_string());
        at.push(reported);
        closed.push(
            (!open)
                .then(|| (reported + rng.random_range(600_000_000..2 * 86_400_000_000)).min(now)),
        );
        lon.push(x + rng.random_range(-0.08..0.08));
        lat.push(y + rng.random_range(-0.06..0.06));
    }
    batch(
        columns,
        vec![
            strings(ids),
            times(at),
            strings(regions),
            strings(grids),
            strings(cats),
            optional_strings(descriptions),
            optional_strings(workers),
            strings(statuses),
            optional_times(closed),
            Arc::new(Float64Array::from(lon)),
            Arc::new(Float64Array::from(lat)),
        ],
    )
}

fn incidents(
    columns: &[Column],
    rows: usize,
    now: i64,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<RecordBatch>> {
    let counties = counties_of("511000");
    let types = [
        ("交通事故", 40),
        ("火灾", 20),
        ("防汛", 12),
        ("地质灾害", 8),
        ("危化品泄漏", 5),
        ("生产安全事故", 15),
    ];
    let (mut ids, mut regions, mut kinds, mut levels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut casualties, mut addresses, mut at, mut lon, mut lat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows {
        let region = county(&counties, rng);
        let (x, y) = centre(region);
        ids.push(format!("YJ{:09}", i + 1));
        regions.push(region.code.to_string());
        kinds.push(weighted(&types, rng).to_string());
        let level = weighted(&[("一般", 90), ("较大", 8), ("重大", 2)], rng);
        levels.push(level.to_string());
        casualties.push(match level {
            "一般" => rng.random_range(0..3),
            "较大" => rng.random_range(3..10),
            _ => rng.random_range(10..30),
        });
        addresses.push(Some(address(region, rng)));
        at.push(recent_time(now, rng));
        lon.push(x + rng.random_range(-0.08..0.08));
        lat.push(y + rng.random_range(-0.06..0.06));
    }
    batch(
        columns,
        vec![
            strings(ids),
            times(at),
            strings(regions),
            strings(kinds),
            strings(levels),
            Arc::new(Int32Array::from(casualties)),
            optional_strings(addresses),
            Arc::new(Float64Array::from(lon)),
            Arc::new(Float64Array::from(lat)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_micros(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("time")
            .timestamp_micros()
    }

    /// The demo took midnight Beijing time as UTC midnight minus 8 hours, which is the
    /// previous Beijing day from 16:00 to 24:00 UTC: for those hours the demo city had no
    /// hotline cases "today".
    #[test]
    fn demo_today_is_the_beijing_day_also_between_16_and_24_utc() {
        let evening = utc_micros("2026-11-27T17:58:00Z"); // 01:58 on the 28th in Beijing
        assert_eq!(
            beijing_midnight(evening),
            utc_micros("2026-11-27T16:00:00Z")
        );
        let morning = utc_micros("2026-11-27T03:00:00Z"); // 11:00 on the 27th in Beijing
        assert_eq!(
            beijing_midnight(morning),
            utc_micros("2026-11-26T16:00:00Z")
        );
        let mut rng = StdRng::seed_from_u64(7);
        let times: Vec<i64> = (0..3000).map(|_| recent_time(evening, &mut rng)).collect();
        assert!(times.iter().all(|t| *t <= evening), "never in the future");
        assert!(
            times.iter().any(|t| *t >= beijing_midnight(evening)),
            "some fall on the current Beijing day"
        );
    }
}

//! The demo city's video network: 94,000 GB/T 28181 channels across Neijiang's five
//! county-level regions, behind NVRs, with 7 days of status history, and a simulated
//! platform that keeps them alive while the demo hub runs.
//!
//! The mix follows what a "Sharp Eyes" network looks like: mostly network cameras on
//! public-security roads and in communities, traffic checkpoints (whose ids the demo's
//! traffic violations carry), a few percent offline (a lost video signal, or a whole NVR
//! down), a few percent with incomplete records, and some 隆昌 equipment still carrying the
//! retired 511028 centre code. Everything is generated from fixed seeds.

use cityhub_catalog::camera::status::{Event, LiveState, Notified, Status, Transition};
use cityhub_catalog::camera::{
    CameraQuery, CameraSettings, CameraSignal, ChannelFields, ChannelReport, ImportedHistory,
    SignalKind,
};
use cityhub_catalog::gb28181;
use cityhub_catalog::region::{Region, counties_of};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use cityhub_server::AppState;

/// Channels of the full-size demo city.
pub const FULL_CHANNELS: usize = 94_000;
/// Channels per NVR.
const PER_NVR: usize = 32;
const DAY: i64 = 86_400_000;
const MINUTE: i64 = 60_000;

/// Where a county's cameras stand: a centre and a radius in degrees that keeps them
/// inside the county.
fn area(code: &str) -> (f64, f64, f64) {
    match code {
        "511002" => (105.060, 29.585, 0.035),
        "511011" => (105.180, 29.620, 0.080),
        "511024" => (104.670, 29.540, 0.110),
        "511025" => (104.850, 29.780, 0.130),
        "511083" => (105.290, 29.340, 0.080),
        _ => (105.058, 29.580, 0.02),
    }
}

/// Share of the city's channels per county (rough population weights).
fn share(code: &str) -> f64 {
    match code {
        "511002" => 0.16,
        "511011" => 0.14,
        "511024" => 0.20,
        "511025" => 0.30,
        _ => 0.20,
    }
}

/// (industry, weight, owner)
const INDUSTRIES: &[(u8, u32, &str)] = &[
    (0, 45, "gongan"),
    (1, 20, "gongan"),
    (2, 4, "gongan"),
    (3, 3, "gongan"),
    (4, 8, "jiaotong"),
    (8, 8, "chengguan"),
    (9, 4, "weijian"),
    (11, 6, "gongan"),
];
const ROADS: &[&str] = &[
    "汉安大道",
    "沱江路",
    "甜城大道",
    "玉溪路",
    "东兴大道",
    "新江路",
    "西林大道",
    "兰桂大道",
    "建设路",
    "人民路",
    "北街",
    "南街",
    "滨江路",
    "大千路",
    "古湖路",
    "严陵路",
];
const MAKERS: &[(&str, &str)] = &[
    ("海康威视", "DS-2CD3T47"),
    ("海康威视", "DS-2DE4425"),
    ("大华", "DH-IPC-HFW4433"),
    ("大华", "DH-SD-6C3425"),
    ("宇视", "IPC2124LB"),
    ("天地伟业", "TC-C32GN"),
];

fn weighted<T: Copy>(choices: &[(T, u32)], rng: &mut StdRng) -> T {
    let total: u32 = choices.iter().map(|c| c.1).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (value, weight) in choices {
        if pick < *weight {
            return *value;
        }
        pick -= weight;
    }
    choices[0].0
}

/// Whether the demo platform keeps an NVR's keepalives going: about one NVR in seventy is
/// down (all its channels offline), decided by its id so that restarts agree.
pub fn nvr_is_down(id: &str) -> bool {
    let serial: u64 = id[14..].parse().unwrap_or(0);
    serial % 71 == 17
}

struct Channel {
    report: ChannelReport,
    /// Never heard of: registered, but not behind a working NVR.
    silent: bool,
}

/// The city's NVRs and channels (cameras and checkpoints) for `channels` channels.
fn network(channels: usize, rng: &mut StdRng) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    let counties = counties_of("511000");
    for county in &counties {
        let count = (channels as f64 * share(county.code)).round() as usize;
        county_network(county, count, rng, &mut out)?;
    }
    Ok(out)
}

fn report(id: String, fields: ChannelFields) -> anyhow::Result<ChannelReport> {
    let id = gb28181::parse(&id).map_err(|err| anyhow::anyhow!("demo id {id}: {err}"))?;
    fields
        .validate()
        .map_err(|err| anyhow::anyhow!("demo channel {}: {err}", id.id))?;
    Ok(ChannelReport { id, fields })
}

fn county_network(
    county: &Region,
    count: usize,
    rng: &mut StdRng,
    out: &mut Vec<Channel>,
) -> anyhow::Result<()> {
    let code = county.code;
    let (lon0, lat0, radius) = area(code);
    let position = |rng: &mut StdRng| {
        // Uniform in a disc.
        let r = radius * rng.random::<f64>().sqrt();
        let angle = rng.random_range(0.0..std::f64::consts::TAU);
        (lon0 + r * angle.cos(), lat0 + r * angle.sin() * 0.9)
    };
    // Traffic checkpoints carry the ids the demo's traffic violations name:
    // {county}00 05 121 0 {serial}, serials 1..399.
    let checkpoints = (count / 50).clamp(1, 399);
    let mut serial = 0u32;
    let mut nvr_serial = 0u32;
    let mut next_nvr = |industry: u8, centre: &str, rng: &mut StdRng, out: &mut Vec<Channel>| {
        nvr_serial += 1;
        let id = format!("{centre}{industry:02}1180{nvr_serial:06}");
        let (lon, lat) = position(rng);
        let report = report(
            id.clone(),
            ChannelFields {
                name: Some(format!("{} NVR-{nvr_serial:04}", county.name)),
                department: Some(
                    INDUSTRIES
                        .iter()
                        .find(|i| i.0 == industry)
                        .map_or("jiaotong", |i| i.2)
                        .into(),
                ),
                longitude: Some(lon),
                latitude: Some(lat),
                manufacturer: Some(MAKERS.choose(rng).map_or("海康威视", |m| m.0).into()),
                ..ChannelFields::default()
            },
        );
        report.map(|report| {
            out.push(Channel {
                report,
                silent: false,
            });
            id
        })
    };
    let mut checkpoint_nvr = next_nvr(5, &format!("{code}00"), rng, out)?;
    for cp in 1..=checkpoints {
        if cp % PER_NVR == 0 {
            checkpoint_nvr = next_nvr(5, &format!("{code}00"), rng, out)?;
        }
        let (lon, lat) = position(rng);
        let road = ROADS.choose(rng).copied().unwrap_or("建设路");
        out.push(Channel {
            report: report(
                format!("{code}00051210{cp:06}"),
                ChannelFields {
                    parent_id: Some(checkpoint_nvr.clone()),
                    name: Some(format!("{} {road} 卡口 {cp}", county.name)),
                    department: Some("jiaotong".into()),
                    address: Some(format!("四川省内江市{}{road}", county.name)),
                    longitude: Some(lon),
                    latitude: Some(lat),
                    manufacturer: Some("海康威视".into()),
                    model: Some("iDS-TCM203".into()),
                    ptz_type: Some(3),
                    position_type: Some(10),
                    room_type: Some(1),
                    use_type: Some(2),
                    supply_light_type: Some(3),
                    resolution: Some("3840x2160".into()),
                    tags: Some(vec!["卡口".into()]),
                    ..ChannelFields::default()
                },
            )?,
            silent: false,
        });
    }
    // Cameras, in groups behind NVRs of one industry; some of 隆昌's still carry 511028.
    let mut made = checkpoints;
    while made < count {
        let industry = weighted(
            &INDUSTRIES.iter().map(|i| (i.0, i.1)).collect::<Vec<_>>(),
            rng,
        );
        let owner = INDUSTRIES
            .iter()
            .find(|i| i.0 == industry)
            .map_or("gongan", |i| i.2);
        let centre = if code == "511083" && rng.random_bool(0.3) {
            "51102800".to_string()
        } else {
            format!("{code}00")
        };
        let nvr = next_nvr(industry, &centre, rng, out)?;
        for _ in 0..PER_NVR.min(count - made) {
            serial += 1;
            made += 1;
            let type_code = if rng.random_bool(0.85) { 132 } else { 131 };
            let id = format!("{centre}{industry:02}{type_code}0{serial:06}");
            let (lon, lat) = position(rng);
            let road = ROADS.choose(rng).copied().unwrap_or("建设路");
            let (maker, model) = *MAKERS.choose(rng).unwrap_or(&MAKERS[0]);
            let position_type = weighted(
                &[
                    (Some(10u8), 25),
                    (Some(9), 15),
                    (Some(8), 10),
                    (Some(6), 10),
                    (Some(4), 6),
                    (Some(3), 5),
                    (Some(2), 5),
                    (Some(5), 3),
                    (Some(7), 2),
                    (Some(1), 1),
                    (None, 18),
                ],
                rng,
            );
            // A few percent of records are incomplete (建档率 below 100 %).
            let named = rng.random_bool(0.97);
            let located = rng.random_bool(0.98);
            let owned = rng.random_bool(0.985);
            let silent = rng.random_bool(0.005);
            out.push(Channel {
                report: report(
                    id,
                    ChannelFields {
                        parent_id: (!silent).then(|| nvr.clone()),
                        name: named.then(|| format!("{} {road} {serial}号杆", county.name)),
                        department: owned.then(|| owner.to_string()),
                        civil_code: Some(code.to_string()),
                        address: Some(format!("四川省内江市{}{road}", county.name)),
                        longitude: located.then_some(lon),
                        latitude: located.then_some(lat),
                        manufacturer: Some(maker.into()),
                        model: Some(model.into()),
                        ptz_type: Some(weighted(&[(3u8, 55), (1, 30), (2, 10), (4, 5)], rng)),
                        position_type,
                        room_type: Some(if rng.random_bool(0.85) { 1 } else { 2 }),
                        use_type: Some(weighted(&[(1u8, 70), (2, 15), (3, 15)], rng)),
                        supply_light_type: Some(weighted(&[(2u8, 70), (3, 20), (1, 10)], rng)),
                        resolution: Some(
                            weighted(
                                &[("1920x1080", 60), ("2560x1440", 30), ("3840x2160", 10)],
                                rng,
                            )
                            .into(),
                        ),
                        ..ChannelFields::default()
                    },
                )?,
                silent,
            });
        }
    }
    Ok(())
}

/// A channel's seven days: outages as (start, end or ongoing, cause).
fn history(
    id: &str,
    parent_down: bool,
    registered: i64,
    now: i64,
    rng: &mut StdRng,
) -> ImportedHistory {
    let timeout = 3 * MINUTE;
    let week = now - 7 * DAY;
    let mut outages: Vec<(i64, Option<i64>, Event)> = Vec::new();
    let count = weighted(&[(0usize, 70), (1, 18), (2, 8), (4, 3), (8, 1)], rng);
    for _ in 0..count {
        let start = rng.random_range(week..now - 30 * MINUTE);
        let minutes = match rng.random_range(0..100) {
            0..50 => rng.random_range(10..60),
            50..85 => rng.random_range(60..240),
            _ => rng.random_range(240..1440),
        };
        let length = minutes * MINUTE;
        let cause = weighted(
            &[
                (Event::Update, 60), // a timeout: keepalives stopped
                (Event::Vlost, 25),
                (Event::Off, 10),
                (Event::Defect, 5),
            ],
            rng,
        );
        outages.push((start, Some((start + length).min(now - MINUTE)), cause));
    }
    // About 2 % of channels have lost their video right now (NOTIFY VLOST/OFF/DEFECT);
    // every channel of a down NVR has timed out.
    if parent_down {
        outages.push((
            now - rng.random_range(30..3 * 24 * 60) * MINUTE,
            None,
            Event::Update,
        ));
    } else if rng.random_bool(0.02) {
        let cause = weighted(
            &[(Event::Vlost, 60), (Event::Off, 25), (Event::Defect, 15)],
            rng,
        );
        outages.push((
            now - rng.random_range(20..2 * 24 * 60) * MINUTE,
            None,
            cause,
        ));
    }
    outages.sort_by_key(|o| o.0);
    let mut transitions = vec![Transition {
        at: registered,
        from: Status::Unknown,
        to: Status::Online,
        cause: "keepalive",
    }];
    let mut live = LiveState {
        last_seen_at: Some(now),
        recorded: Some(Status::Online),
        recorded_since: Some(registered),
        ..LiveState::default()
    };
    let mut free_from = registered;
    for (start, end, cause) in outages {
        if start <= free_from {
            continue;
        }
        let (down_cause, up_cause) = match cause {
            Event::Vlost => ("VLOST", "ON"),
            Event::Off => ("OFF", "ON"),
            Event::Defect => ("DEFECT", "ON"),
            _ => ("keepalive_timeout", "keepalive"),
        };
        transitions.push(Transition {
            at: start,
            from: Status::Online,
            to: Status::Offline,
            cause: down_cause,
        });
        match end {
            Some(end) => {
                transitions.push(Transition {
                    at: end,
                    from: Status::Offline,
                    to: Status::Online,
                    cause: up_cause,
                });
                free_from = end;
                live.recorded_since = Some(end);
                if up_cause == "ON" {
                    live.notified = Some(Notified::On);
                    live.notified_at = Some(end);
                }
            }
            None => {
                live.recorded = Some(Status::Offline);
                live.recorded_since = Some(start);
                match Notified::parse(down_cause) {
                    Some(notified) => {
                        live.notified = Some(notified);
                        live.notified_at = Some(start);
                    }
                    None => {
                        live.notified = None;
                        live.notified_at = None;
                        live.last_seen_at = Some(start - timeout);
                    }
                }
                break;
            }
        }
    }
    ImportedHistory {
        id: id.to_string(),
        transitions,
        live,
    }
}

/// Registers the demo network and its history, unless the registry already has channels.
/// Returns how many channels were registered.
pub async fn load(state: &AppState, scale: f64) -> anyhow::Result<usize> {
    let catalog = &state.catalog;
    let existing = catalog
        .search_cameras(
            CameraQuery {
                limit: 1,
                ..CameraQuery::default()
            },
            state.clock.now().timestamp_millis(),
            Default::default(),
        )
        .await?;
    if !existing.is_empty() {
        return Ok(0);
    }
    let channels = ((FULL_CHANNELS as f64) * scale).max(100.0) as usize;
    let now = state.clock.now().timestamp_millis();
    let registered = now - 8 * DAY;
    let built = tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(2_818_194);
        let network = network(channels, &mut rng)?;
        let mut histories = Vec::new();
        for channel in &network {
            if channel.silent {
                continue;
            }
            let id = &channel.report.id;
            let down = match id.type_code {
                118 => nvr_is_down(&id.id),
                _ => channel
                    .report
                    .fields
                    .parent_id
                    .as_deref()
                    .is_some_and(nvr_is_down),
            };
            histories.push(history(&id.id, down, registered, now, &mut rng));
        }
        anyhow::Ok((network, histories))
    })
    .await??;
    let (network, histories) = built;
    let total = network.len();
    let reports: Vec<ChannelReport> = network.into_iter().map(|c| c.report).collect();
    for chunk in reports.chunks(10_000) {
        let outcomes = catalog
            .register_cameras(chunk.to_vec(), None, registered)
            .await?;
        if let Some(Err(err)) = outcomes.into_iter().find(Result::is_err) {
            anyhow::bail!("a demo camera was refused: {err}");
        }
    }
    let mut histories = histories.into_iter().peekable();
    while histories.peek().is_some() {
        let chunk: Vec<ImportedHistory> = histories.by_ref().take(10_000).collect();
        catalog.import_camera_history(chunk, now).await?;
    }
    Ok(total)
}

/// The demo's GB/T 28181 platform: sends its NVRs' keepalives every keepalive interval
/// (NVRs that are down send none), and now and then a channel loses its video or gets it
/// back, so dashboards have something to show. Runs until aborted.
pub async fn simulate(state: AppState) {
    let settings = state.cameras.settings().clone();
    let interval = std::time::Duration::from_millis(settings.liveness.interval_ms as u64);
    let mut rng = StdRng::seed_from_u64(state.clock.now().timestamp_millis() as u64);
    loop {
        if let Err(err) = tick(&state, &settings, &mut rng).await {
            tracing::warn!(error = %err, "The demo camera platform could not report; will retry.");
        }
        tokio::time::sleep(interval).await;
    }
}

/// One round of the demo platform: keepalives of every NVR that is up, and a little churn.
pub async fn tick(
    state: &AppState,
    settings: &CameraSettings,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let now = state.clock.now().timestamp_millis();
    let nvrs = state
        .catalog
        .search_cameras(
            CameraQuery {
                type_code: Some(118),
                limit: usize::MAX,
                ..CameraQuery::default()
            },
            now,
            settings.liveness,
        )
        .await?;
    let mut signals: Vec<CameraSignal> = nvrs
        .iter()
        .filter(|nvr| !nvr_is_down(&nvr.id.id))
        .map(|nvr| CameraSignal {
            id: nvr.id.id.clone(),
            at: now,
            kind: SignalKind::Keepalive,
        })
        .collect();
    // A little churn: a few channels lose their video, a few get it back.
    for (status, event) in [(Status::Online, Event::Vlost), (Status::Offline, Event::On)] {
        let after = format!(
            "51{:018}",
            rng.random_range(0..1_000_000_000_000_000_000u64)
        );
        let picked = state
            .catalog
            .search_cameras(
                CameraQuery {
                    status: Some(status),
                    type_code: Some(132),
                    after: Some(after),
                    limit: 3,
                    ..CameraQuery::default()
                },
                now,
                settings.liveness,
            )
            .await?;
        signals.extend(
            picked
                .into_iter()
                .filter(|c| c.live.notified.is_some() || event == Event::Vlost)
                .map(|c| CameraSignal {
                    id: c.id.id,
                    at: now,
                    kind: SignalKind::Event(event, None),
                }),
        );
    }
    let sent = signals.len();
    state
        .catalog
        .camera_signals(signals, None, settings.liveness, now)
        .await?;
    tracing::debug!(signals = sent, "The demo camera platform reported.");
    Ok(())
}

//! The demo city's dashboard endpoints: what the governance centre's (社会治理中心) wall
//! screens poll. All belong to `zhili`; the demo's zhili dashboard token reads them.

use anyhow::Context;
use cityhub_catalog::DatasetName;
use cityhub_catalog::endpoint::EndpointSpec;
use cityhub_catalog::sharing::{Application, ShareAnswer};
use serde_json::json;

use cityhub_server::AppState;

/// The demo endpoints: name and definition.
pub fn definitions() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "camera-online-rate",
            json!({
                "description": "在线率 per county: video channels online now (GB/T 28181 types 121/122/131/132)",
                "sql": "SELECT county_code, county_name, count(*) AS channels, \
                        sum(CASE WHEN status = 'online' THEN 1 ELSE 0 END) AS online, \
                        round(avg(CASE WHEN status = 'online' THEN 1.0 ELSE 0.0 END), 4) AS online_rate \
                        FROM hub.cameras WHERE type_code IN (121, 122, 131, 132) \
                        GROUP BY county_code, county_name ORDER BY county_code",
                "max_age_s": 10,
                "refresh_s": 10
            }),
        ),
        (
            "camera-offline-24h",
            json!({
                "description": "Channels going offline per hour over the last 24 hours (the wall screen's 离线趋势)",
                "sql": "SELECT date_trunc('hour', at) AS hour, count(*) AS went_offline \
                        FROM hub.camera_status_events \
                        WHERE status = 'offline' AND at >= now() - INTERVAL '24 hours' \
                        GROUP BY 1 ORDER BY 1",
                "max_age_s": 30,
                "refresh_s": 60
            }),
        ),
        (
            "hotline-today",
            json!({
                "description": "12345 hotline cases by category on a day (Beijing time), today by default",
                "sql": "SELECT category, count(*) AS cases, \
                        sum(CASE WHEN closed_at IS NULL THEN 1 ELSE 0 END) AS open \
                        FROM zhili.hotline_cases \
                        WHERE CAST(received_at + INTERVAL '8 hours' AS DATE) = $day \
                        GROUP BY category ORDER BY cases DESC, category",
                "params": [{"name": "day", "type": "date", "default": "today"}],
                "max_age_s": 5
            }),
        ),
        (
            "violations-per-hour",
            json!({
                "description": "Traffic violations per hour over the last hours (24 by default), optionally in one county",
                "sql": "SELECT date_trunc('hour', occurred_at) AS hour, count(*) AS violations \
                        FROM gongan.traffic_violations \
                        WHERE to_unixtime(occurred_at) >= to_unixtime(now()) - $hours * 3600 \
                        AND ($region = '' OR region_code = $region) \
                        GROUP BY 1 ORDER BY 1",
                "params": [
                    {"name": "hours", "type": "int", "default": 24, "min": 1, "max": 168},
                    {"name": "region", "type": "text", "default": "",
                     "allowed": ["", "511002", "511011", "511024", "511025", "511083"]}
                ],
                "max_age_s": 30,
                "refresh_s": 60
            }),
        ),
        (
            "grid-events-open",
            json!({
                "description": "Open grid events per county-level region",
                "sql": "SELECT e.region_code, r.name AS region_name, count(*) AS open_events \
                        FROM zhili.grid_events e LEFT JOIN hub.regions r ON r.code = e.region_code \
                        WHERE e.status = 'open' \
                        GROUP BY e.region_code, r.name ORDER BY open_events DESC",
                "max_age_s": 5
            }),
        ),
        (
            "centre-overview",
            json!({
                "description": "The calling centre's own area: open grid events and open \
                                hotline cases (one definition for the city's and every \
                                county's screen)",
                "sql": "SELECT r.code AS region, r.name AS region_name, \
                        (SELECT count(*) FROM zhili.grid_events WHERE status = 'open') AS open_events, \
                        (SELECT count(*) FROM zhili.hotline_cases WHERE closed_at IS NULL) AS open_cases \
                        FROM hub.regions r WHERE r.code = $caller_region",
                "max_age_s": 5
            }),
        ),
    ]
}

/// Saves the demo endpoints (unchanged ones keep their version), after making sure zhili
/// may read the traffic violations it counts.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    let catalog = &state.catalog;
    let principals = catalog.list_principals().await?;
    let principal = |name: &str| {
        principals
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .with_context(|| format!("the demo principal {name} is missing"))
    };
    let analyst = principal("demo-zhili-analyst")?;
    let violations = catalog
        .dataset(&DatasetName::parse("gongan.traffic_violations")?)
        .await?
        .context("the demo's traffic violations are missing")?;
    let now = state.clock.now();
    let granted = catalog
        .grants_held_by(Some("zhili"))
        .await?
        .iter()
        .any(|g| g.dataset_id == violations.id && g.active(now));
    if !granted {
        // Through the access model's own operations, as the two departments would: the
        // endpoint cache hears of the new grant the way it hears of any.
        let request = state
            .sharing
            .apply(
                &analyst,
                "gongan.traffic_violations",
                Application {
                    purpose: "社会治理中心大屏：按小时统计交通违法".into(),
                    columns: Some(vec![
                        "occurred_at".into(),
                        "region_code".into(),
                        "checkpoint_id".into(),
                        "violation_type".into(),
                    ]),
                    unmasked: vec![],
                    until: None,
                    rows: None,
                },
            )
            .await?;
        let answer = ShareAnswer {
            reason: Some("同意，仅统计字段".into()),
            expires_at: Some(now + chrono::Duration::days(365)),
            ..ShareAnswer::default()
        };
        state
            .sharing
            .decide(
                &principal("demo-gongan-producer")?,
                request.id,
                answer,
                true,
            )
            .await?;
    }
    for (name, definition) in definitions() {
        let spec: EndpointSpec =
            serde_json::from_value(definition).with_context(|| format!("demo endpoint {name}"))?;
        state
            .endpoints
            .save(&analyst, name, Some("zhili".into()), spec)
            .await
            .map_err(|err| anyhow::anyhow!("demo endpoint {name}: {err}"))?;
    }
    Ok(())
}

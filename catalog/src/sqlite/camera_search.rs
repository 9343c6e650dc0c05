//! Reading the camera registry in SQLite: one channel with both sources of its values,
//! and searches with a cursor.

use rusqlite::{Connection, OptionalExtension};

use super::cameras::*;
use crate::camera::status::Liveness;
use crate::camera::{CameraQuery, CameraRecord, CameraSources};
use crate::error::Result;

/// A registered (not deleted) channel with both sources of its values.
pub fn camera(conn: &Connection, id: &str) -> Result<Option<(CameraRecord, CameraSources)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CAMERA_COLUMNS}, c.reported, c.curated FROM {CAMERAS_JOINED} \
         WHERE c.id = ?1 AND l.deleted_at IS NULL"
    ))?;
    Ok(stmt
        .query_row([id], |row| {
            let record = camera_from_row(row)?;
            let sources = CameraSources {
                reported: super::parse_json(row.get(26)?)?,
                curated: super::parse_json(row.get(27)?)?,
            };
            Ok((record, sources))
        })
        .optional()?)
}

pub fn search(
    conn: &Connection,
    query: &CameraQuery,
    now: i64,
    liveness: Liveness,
) -> Result<Vec<CameraRecord>> {
    let mut conditions = vec!["l.deleted_at IS NULL".to_string()];
    let mut values: Vec<(&str, rusqlite::types::Value)> = Vec::new();
    if let Some(region) = &query.region {
        conditions.push("c.region_code >= :region_low AND c.region_code < :region_high".into());
        let prefix = CameraQuery::region_prefix(region);
        values.push((":region_low", prefix.clone().into()));
        values.push((":region_high", format!("{prefix}\u{7f}").into()));
    }
    if let Some(scope) = &query.scope {
        conditions.push(crate::camera::CameraScope::of(scope).sql("c."));
    }
    if let Some(status) = query.status {
        conditions.push(format!("({STATUS_SQL}) = :status"));
        values.push((":status", status.as_str().to_string().into()));
    }
    if let Some(industry) = query.industry {
        conditions.push("c.industry = :industry".into());
        values.push((":industry", i64::from(industry).into()));
    }
    if let Some(type_code) = query.type_code {
        conditions.push("c.type_code = :type_code".into());
        values.push((":type_code", i64::from(type_code).into()));
    }
    if let Some(department) = &query.department {
        conditions.push("c.department = :department".into());
        values.push((":department", department.clone().into()));
    }
    if let Some([min_lon, min_lat, max_lon, max_lat]) = query.bbox {
        conditions.push(
            "c.longitude BETWEEN :min_lon AND :max_lon AND c.latitude BETWEEN :min_lat AND :max_lat"
                .into(),
        );
        values.push((":min_lon", min_lon.into()));
        values.push((":min_lat", min_lat.into()));
        values.push((":max_lon", max_lon.into()));
        values.push((":max_lat", max_lat.into()));
    }
    if let Some(after) = &query.after {
        conditions.push("c.id > :after".into());
        values.push((":after", after.clone().into()));
    }
    let sql = format!(
        "SELECT {CAMERA_COLUMNS} FROM {CAMERAS_JOINED} WHERE {} ORDER BY c.id LIMIT :limit",
        conditions.join(" AND ")
    );
    values.push((":limit", (query.limit.min(i64::MAX as usize) as i64).into()));
    if query.status.is_some() {
        values.push((":now", now.into()));
        values.push((":timeout", liveness.timeout_ms().into()));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let params: Vec<(&str, &dyn rusqlite::ToSql)> = values
        .iter()
        .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
        .collect();
    let rows = stmt.query_map(params.as_slice(), camera_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

//! The alarm and position histories on PostgreSQL: the SQLite store's statements
//! (`sqlite/camera_alarms.rs`) with `ON CONFLICT DO NOTHING` for a report kept before.

use super::*;
use crate::camera::alarms::{
    CameraAlarm, CameraPosition, PURGE_CHUNK, StoredAlarm, StoredPosition,
};
use crate::camera::{CameraReport, FieldError, rules};

use super::cameras::{Tx, owner};

/// A code-table number as PostgreSQL's smallint.
fn small(code: u8) -> i16 {
    i16::from(code)
}

/// A smallint read back as the code it was written from.
fn code(row: &Row, index: usize) -> Result<u8> {
    let value: i16 = row.try_get(index)?;
    u8::try_from(value)
        .map_err(|_| CatalogError::Storage(format!("code {value} out of range in camera_alarms")))
}

/// Appends one report, unless its source is unknown or not the caller's.
pub(super) async fn record_one(
    tx: &Tx<'_>,
    report: &CameraReport,
    acting_for: Option<&str>,
    received_at: i64,
) -> Result<std::result::Result<bool, FieldError>> {
    let owner = owner(tx, report.id()).await?;
    if let Err(err) = rules::may_report(
        report.id(),
        owner.as_ref().map(Option::as_deref),
        acting_for,
    ) {
        return Ok(Err(err));
    }
    let inserted = match report {
        CameraReport::Alarm(a) => {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO camera_alarms (camera_id, at, priority, method, alarm_type, \
                     description, longitude, latitude, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &a.id,
                    &a.at,
                    &small(a.priority),
                    &small(a.method),
                    &a.alarm_type.map(small),
                    &a.description,
                    &a.longitude,
                    &a.latitude,
                    &received_at,
                ],
            )
            .await?
        }
        CameraReport::Position(p) => {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO camera_positions (camera_id, at, longitude, latitude, speed, \
                     direction, altitude, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &p.id,
                    &p.at,
                    &p.longitude,
                    &p.latitude,
                    &p.speed,
                    &p.direction,
                    &p.altitude,
                    &received_at,
                ],
            )
            .await?
        }
    };
    Ok(Ok(inserted == 1))
}

impl PostgresStore {
    pub(super) async fn alarms_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredAlarm>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, camera_id, at, priority, method, alarm_type, description, \
                 longitude, latitude, received_at FROM camera_alarms WHERE seq > $1 \
                 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let alarm_type: Option<i16> = row.try_get(5)?;
                Ok(StoredAlarm {
                    seq: row.try_get(0)?,
                    received_at: row.try_get(9)?,
                    alarm: CameraAlarm {
                        id: row.try_get(1)?,
                        at: row.try_get(2)?,
                        priority: code(row, 3)?,
                        method: code(row, 4)?,
                        alarm_type: alarm_type.and_then(|t| u8::try_from(t).ok()),
                        description: row.try_get(6)?,
                        longitude: row.try_get(7)?,
                        latitude: row.try_get(8)?,
                    },
                })
            })
            .collect()
    }

    pub(super) async fn positions_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredPosition>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, camera_id, at, longitude, latitude, speed, direction, altitude, \
                 received_at FROM camera_positions WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredPosition {
                    seq: row.try_get(0)?,
                    received_at: row.try_get(8)?,
                    position: CameraPosition {
                        id: row.try_get(1)?,
                        at: row.try_get(2)?,
                        longitude: row.try_get(3)?,
                        latitude: row.try_get(4)?,
                        speed: row.try_get(5)?,
                        direction: row.try_get(6)?,
                        altitude: row.try_get(7)?,
                    },
                })
            })
            .collect()
    }

    /// Deletes in chunks of [`PURGE_CHUNK`] rows, each its own statement.
    pub(super) async fn purge_reports(
        &self,
        alarms_before: i64,
        positions_before: i64,
    ) -> Result<(u64, u64)> {
        let client = self.client().await?;
        let mut deleted = [0u64; 2];
        for (index, (table, before)) in [
            ("camera_alarms", alarms_before),
            ("camera_positions", positions_before),
        ]
        .into_iter()
        .enumerate()
        {
            let statement = format!(
                "DELETE FROM {table} WHERE seq IN \
                 (SELECT seq FROM {table} WHERE at < $1 ORDER BY at LIMIT $2)"
            );
            loop {
                let chunk = client
                    .execute(&statement, &[&before, &(PURGE_CHUNK as i64)])
                    .await?;
                deleted[index] += chunk;
                if chunk < PURGE_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok((deleted[0], deleted[1]))
    }
}

//! The daily roll-ups of the camera status history on PostgreSQL: the SQLite store's
//! statements (`sqlite/camera_daily.rs`), with the rows written as arrays (one round trip
//! per table instead of one per channel) and one node at a time (an advisory lock: the
//! sweeper's node and a node answering a statistic may roll up at the same moment).

use std::ops::RangeInclusive;

use super::*;
use crate::camera::daily::{
    self, ChannelDay, DailyRow, DayChannel, DayGroup, HistoryRow, RollUpState, day_start,
};
use crate::camera::status::Liveness;
use crate::camera::tally::{self, ChannelPass};
use crate::camera::{CameraScope, StatsGroup};
use crate::store::CameraStore;

use super::cameras::{Tx, VIDEO_TYPES};

/// Held by the transaction that rolls up days (the bytes of "cityhub daily").
const ROLL_UP_LOCK: i64 = 0x6369_7479_6461_696c;

impl PostgresStore {
    pub(super) async fn roll_up_days(
        &self,
        now: i64,
        liveness: Liveness,
        retention_days: u32,
    ) -> Result<Vec<i32>> {
        self.sweep_cameras(now, liveness).await?;
        let kept_from = daily::beijing_day(now) - retention_days as i32;
        let mut client = self.client().await?;
        let (days, history_seq) = {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLL_UP_LOCK])
                .await?;
            // Checked first: most rounds have nothing to purge (as on SQLite).
            let oldest: Option<i32> = tx
                .query_one("SELECT MIN(day) FROM camera_daily_days", &[])
                .await?
                .try_get(0)?;
            if oldest.is_some_and(|day| day < kept_from) {
                for table in ["camera_daily", "camera_daily_groups", "camera_daily_days"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE day < $1"),
                        &[&kept_from],
                    )
                    .await?;
                }
            }
            let (state, history_seq) = read_state(&tx, kept_from).await?;
            tx.commit().await?;
            match daily::days_to_roll_up(&state, now, retention_days) {
                Some(days) => (days, history_seq),
                None => return Ok(Vec::new()),
            }
        };
        let last = *days.end();
        let mut done = Vec::new();
        for chunk in daily::chunks(days) {
            let tx = client.transaction().await?;
            // One node at a time; two computing the same days write the same rows.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLL_UP_LOCK])
                .await?;
            let channels = channels_for(&tx, &chunk).await?;
            let history = history_in(&tx, &chunk).await?;
            let rows = daily::roll_up(&channels, &history, chunk.clone());
            write_days(&tx, &chunk, &channels, &rows, now).await?;
            if *chunk.end() == last {
                // Only once every day is written may the next round look at newer history
                // alone.
                tx.execute(
                    "INSERT INTO camera_daily_state (id, history_seq) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET history_seq = excluded.history_seq",
                    &[&history_seq],
                )
                .await?;
            }
            tx.commit().await?;
            done.extend(chunk);
        }
        // Millions of new rows leave the planner's statistics stale until autovacuum gets
        // to them (a minute or more); meanwhile the purge above was planned as a scan of
        // the whole table (190 ms at 100,000 channels). Analysing here closes that window
        // for every statement on these tables.
        client
            .batch_execute("ANALYZE camera_daily, camera_daily_groups, camera_daily_days")
            .await?;
        Ok(done)
    }

    pub(super) async fn daily_stats(
        &self,
        group: StatsGroup,
        days: RangeInclusive<i32>,
        now: i64,
        liveness: Liveness,
        scope: Option<crate::region::Scope>,
    ) -> Result<(Vec<crate::camera::CameraStats>, crate::camera::CameraStats)> {
        let scope = scope.as_ref().map(CameraScope::of);
        // The counts are the channels' now; their window is empty, its time comes from the
        // roll-ups.
        let mut pass = self
            .channel_pass(group, now, now, liveness, scope.as_ref())
            .await?;
        self.add_daily_time(&mut pass, group, &days, scope.as_ref())
            .await?;
        Ok(tally::combine(pass, &Default::default(), now))
    }

    /// Adds the rolled-up time of `days` to each group of `pass` (see the SQLite store).
    async fn add_daily_time(
        &self,
        pass: &mut ChannelPass,
        group: StatsGroup,
        days: &RangeInclusive<i32>,
        scope: Option<&CameraScope>,
    ) -> Result<()> {
        let column = group.column();
        let (table, condition) = daily::totals_source(scope);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {column}::text, SUM(online_ms)::bigint, SUM(observed_ms)::bigint \
                     FROM {table} WHERE day BETWEEN $1 AND $2{condition} GROUP BY {column}"
                ),
                &[days.start(), days.end()],
            )
            .await?;
        for row in &rows {
            let index = super::cameras::text_group(pass, row.try_get(0)?);
            pass.add_time(index, row.try_get(1)?, row.try_get(2)?);
        }
        Ok(())
    }

    pub(super) async fn daily_rows(
        &self,
        after: (i32, String),
        limit: usize,
    ) -> Result<Vec<DailyRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT day, camera_id, region_code, industry, type_code, position_type, \
                 department, observed_ms, online_ms, transitions, complete FROM camera_daily \
                 WHERE (day, camera_id) > ($1, $2) ORDER BY day, camera_id LIMIT $3",
                &[&after.0, &after.1, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DailyRow {
                    day: row.try_get(0)?,
                    camera_id: row.try_get(1)?,
                    group: DayGroup {
                        region_code: row.try_get(2)?,
                        industry: i64::from(row.try_get::<_, i32>(3)?),
                        type_code: i64::from(row.try_get::<_, i32>(4)?),
                        position_type: row.try_get::<_, Option<i32>>(5)?.map(i64::from),
                        department: row.try_get(6)?,
                    },
                    observed_ms: row.try_get(7)?,
                    online_ms: row.try_get(8)?,
                    transitions: row.try_get(9)?,
                    complete: row.try_get(10)?,
                })
            })
            .collect()
    }
}

/// What decides the days to roll up, and the newest history row now.
async fn read_state(tx: &Tx<'_>, kept_from: i32) -> Result<(RollUpState, i64)> {
    let first_registered_at: Option<i64> = tx
        .query_one(
            // Of any channel, video or not: the index answers at once, and a day or two
            // too many before the first video channel are rolled up empty.
            "SELECT MIN(registered_at) FROM camera_live",
            &[],
        )
        .await?
        .try_get(0)?;
    let rolled = tx
        .query(
            "SELECT day FROM camera_daily_days WHERE day >= $1 ORDER BY day",
            &[&kept_from],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<Vec<i32>, _>>()?;
    let seen: i64 = tx
        .query_opt(
            "SELECT history_seq FROM camera_daily_state WHERE id = 1",
            &[],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?
        .unwrap_or(0);
    let earliest_new_transition: Option<i64> = tx
        .query_one(
            // OFFSET 0 keeps the planner on the new rows' key range instead of walking the
            // index on `at` for the first row past `seq`.
            "SELECT MIN(at) FROM (SELECT at FROM camera_status_events WHERE seq > $1 OFFSET 0) s",
            &[&seen],
        )
        .await?
        .try_get(0)?;
    let newest: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(seq), 0)::bigint FROM camera_status_events",
            &[],
        )
        .await?
        .try_get(0)?;
    let state = RollUpState {
        first_registered_at,
        rolled,
        earliest_new_transition,
    };
    Ok((state, newest))
}

/// The video channels registered during `days`, with their status as the first starts.
async fn channels_for(tx: &Tx<'_>, days: &RangeInclusive<i32>) -> Result<Vec<DayChannel>> {
    let (start, end) = (day_start(*days.start()), day_start(days.end() + 1));
    let rows = tx
        .query(
            &format!(
                "SELECT l.id, l.region_code, l.industry, l.type_code, l.position_type, \
                 l.department, l.registered_at, l.deleted_at, e.status \
                 FROM camera_live l LEFT JOIN LATERAL \
                 (SELECT status FROM camera_status_events WHERE camera_id = l.id AND at < $1 \
                  ORDER BY at DESC, seq DESC LIMIT 1) e ON true \
                 WHERE l.type_code IN {VIDEO_TYPES} AND l.registered_at < $2 \
                 AND (l.deleted_at IS NULL OR l.deleted_at > $1)"
            ),
            &[&start, &end],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let status: Option<&str> = row.try_get(8)?;
            Ok(DayChannel {
                id: row.try_get(0)?,
                group: DayGroup {
                    region_code: row.try_get(1)?,
                    industry: i64::from(row.try_get::<_, i32>(2)?),
                    type_code: i64::from(row.try_get::<_, i32>(3)?),
                    position_type: row.try_get::<_, Option<i32>>(4)?.map(i64::from),
                    department: row.try_get(5)?,
                },
                registered_at: row.try_get(6)?,
                deleted_at: row.try_get(7)?,
                status_at_start: tally::status_of(status),
            })
        })
        .collect()
}

/// The transitions inside `days`, in time order.
async fn history_in(tx: &Tx<'_>, days: &RangeInclusive<i32>) -> Result<Vec<HistoryRow>> {
    let rows = tx
        .query(
            "SELECT camera_id, at, previous, status FROM camera_status_events \
             WHERE at >= $1 AND at < $2 ORDER BY at, seq",
            &[&day_start(*days.start()), &day_start(days.end() + 1)],
        )
        .await?;
    let mut history = Vec::with_capacity(rows.len());
    for row in &rows {
        let previous: &str = row.try_get(2)?;
        let status: &str = row.try_get(3)?;
        if let Some(transition) = HistoryRow::new(
            row.try_get(0)?,
            row.try_get(1)?,
            tally::status_of(Some(previous)),
            tally::status_of(Some(status)),
        ) {
            history.push(transition);
        }
    }
    Ok(history)
}

fn code(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Replaces the rows of `days` with the ones computed and marks the days rolled up.
async fn write_days(
    tx: &Tx<'_>,
    days: &RangeInclusive<i32>,
    channels: &[DayChannel],
    rows: &[ChannelDay],
    now: i64,
) -> Result<()> {
    let (first, last) = (*days.start(), *days.end());
    for table in ["camera_daily", "camera_daily_groups"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE day BETWEEN $1 AND $2"),
            &[&first, &last],
        )
        .await?;
    }
    let group = |row: &ChannelDay| &channels[row.channel].group;
    tx.execute(
        "INSERT INTO camera_daily (day, camera_id, region_code, industry, type_code, \
         position_type, department, observed_ms, online_ms, transitions, complete) \
         SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::integer[], \
         $5::integer[], $6::integer[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], \
         $11::boolean[])",
        &[
            &rows.iter().map(|r| r.day).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| channels[r.channel].id.as_str())
                .collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| group(r).region_code.as_str())
                .collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| code(group(r).industry))
                .collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| code(group(r).type_code))
                .collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| group(r).position_type.map(code))
                .collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| group(r).department.as_deref())
                .collect::<Vec<_>>(),
            &rows.iter().map(|r| r.observed_ms).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.online_ms).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.transitions).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.complete).collect::<Vec<_>>(),
        ],
    )
    .await?;
    let totals = daily::group_days(channels, rows);
    tx.execute(
        "INSERT INTO camera_daily_groups (day, region_code, industry, type_code, position_type, \
         department, channels, observed_ms, online_ms) \
         SELECT * FROM unnest($1::integer[], $2::text[], $3::integer[], $4::integer[], \
         $5::integer[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])",
        &[
            &totals.iter().map(|t| t.day).collect::<Vec<_>>(),
            &totals
                .iter()
                .map(|t| t.group.region_code.as_str())
                .collect::<Vec<_>>(),
            &totals
                .iter()
                .map(|t| code(t.group.industry))
                .collect::<Vec<_>>(),
            &totals
                .iter()
                .map(|t| code(t.group.type_code))
                .collect::<Vec<_>>(),
            &totals
                .iter()
                .map(|t| t.group.position_type.map(code))
                .collect::<Vec<_>>(),
            &totals
                .iter()
                .map(|t| t.group.department.as_deref())
                .collect::<Vec<_>>(),
            &totals.iter().map(|t| t.channels).collect::<Vec<_>>(),
            &totals.iter().map(|t| t.observed_ms).collect::<Vec<_>>(),
            &totals.iter().map(|t| t.online_ms).collect::<Vec<_>>(),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO camera_daily_days (day, rolled_at) \
         SELECT d, $3 FROM generate_series($1::integer, $2::integer) AS d \
         ON CONFLICT (day) DO UPDATE SET rolled_at = excluded.rolled_at",
        &[&first, &last, &now],
    )
    .await?;
    Ok(())
}

//! The rules of a dataset's life after registration: which schema changes old files can be
//! read under, which sort keys compaction can use, and what garbage collection forgets.

use serde::{Deserialize, Serialize};

use crate::error::CatalogError;
use crate::model::{Column, ColumnType, DataFile, NewDataset, RowRetention, validate_columns};

/// Validates how a dataset says where its rows lie: a region column (a string column that
/// is never masked: scopes compare its raw values), or `region_free`, not both.
pub fn validate_region(
    region_column: Option<&str>,
    region_free: bool,
    columns: &[Column],
) -> Result<(), CatalogError> {
    let Some(name) = region_column else {
        return Ok(());
    };
    if region_free {
        return Err(CatalogError::invalid(
            "region_free",
            "a dataset with a region_column has regions; region_free is for datasets without \
             one (a city-wide code table)",
        ));
    }
    let problem = match columns.iter().find(|c| c.name == name) {
        None => format!("{name:?} is not a column of the dataset"),
        Some(column) if column.column_type != ColumnType::String => format!(
            "{name:?} is a {} column; region codes (511025, 511025100) are held as strings",
            column.column_type
        ),
        Some(column) if column.sensitivity.is_some() => format!(
            "{name:?} carries a sensitivity tag; a region column is compared unmasked to \
             scope rows, so it cannot be masked"
        ),
        Some(_) => return Ok(()),
    };
    Err(CatalogError::invalid("region_column", problem))
}

/// Reads a field that may be given as `null` (to clear it) apart from one left out.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Validates a declared sort key against the columns: known, sortable, not repeated.
/// Every check a dataset's registration must pass before it reaches the database.
pub fn validate_new_dataset(new: &NewDataset) -> Result<(), CatalogError> {
    validate_columns(&new.columns)?;
    validate_sort_key(&new.sort_key, &new.columns)?;
    validate_primary_key(&new.primary_key, &new.columns)?;
    validate_region(new.region_column.as_deref(), new.region_free, &new.columns)?;
    if let Some(retention) = &new.row_retention {
        validate_row_retention(retention, &new.columns)?;
    }
    if new.snapshot_retention_days == Some(0) {
        return Err(CatalogError::invalid(
            "snapshot_retention_days",
            "must be at least 1: a replaced snapshot stays readable for at least a day",
        ));
    }
    Ok(())
}

pub fn validate_sort_key(sort_key: &[String], columns: &[Column]) -> Result<(), CatalogError> {
    let mut seen = std::collections::HashSet::new();
    for (index, name) in sort_key.iter().enumerate() {
        let field = format!("sort_key[{index}]");
        let Some(column) = columns.iter().find(|c| &c.name == name) else {
            return Err(CatalogError::invalid(
                field,
                format!("{name:?} is not a column of the dataset"),
            ));
        };
        if column.column_type == ColumnType::Binary {
            return Err(CatalogError::invalid(
                field,
                format!("{name:?} is a binary column; sort by a number, string, date or time"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(CatalogError::invalid(
                field,
                format!("{name:?} is named twice"),
            ));
        }
    }
    Ok(())
}

/// Validates a declared primary key against the columns: known, not repeated, NOT NULL, and
/// of a type whose values compare exactly and carry per-file statistics (the upsert path
/// prunes by them).
pub fn validate_primary_key(
    primary_key: &[String],
    columns: &[Column],
) -> Result<(), CatalogError> {
    let mut seen = std::collections::HashSet::new();
    for (index, name) in primary_key.iter().enumerate() {
        let field = format!("primary_key[{index}]");
        let Some(column) = columns.iter().find(|c| &c.name == name) else {
            return Err(CatalogError::invalid(
                field,
                format!("{name:?} is not a column of the dataset"),
            ));
        };
        if column.nullable {
            return Err(CatalogError::invalid(
                field,
                format!(
                    "{name:?} is nullable; a primary-key column must be declared \
                     \"nullable\": false (a row without a key cannot be replaced)"
                ),
            ));
        }
        if !matches!(
            column.column_type,
            ColumnType::Int32
                | ColumnType::Int64
                | ColumnType::String
                | ColumnType::Date
                | ColumnType::Timestamp
        ) {
            return Err(CatalogError::invalid(
                field,
                format!(
                    "{name:?} is a {} column; a key is an int32, int64, string, date or \
                     timestamp column (values that compare exactly)",
                    column.column_type
                ),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(CatalogError::invalid(
                field,
                format!("{name:?} is named twice"),
            ));
        }
    }
    Ok(())
}

/// A change of a registered dataset (`PATCH /api/v1/datasets/{name}`): the full new column
/// list, and/or a new sort key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetChange {
    #[serde(default)]
    pub columns: Option<Vec<Column>>,
    #[serde(default)]
    pub sort_key: Option<Vec<String>>,
    /// A new row retention (the hub deletes rows older than it).
    #[serde(default)]
    pub row_retention: Option<RowRetention>,
    /// A new region column; `null` removes it (region-scoped principals then cannot read
    /// the dataset unless it is marked `region_free`).
    #[serde(default, deserialize_with = "present")]
    pub region_column: Option<Option<String>>,
    #[serde(default)]
    pub region_free: Option<bool>,
}

/// A dataset's settings once a [`DatasetChange`] applies, checked against the columns
/// they will apply to. Both catalog stores resolve a change this way inside their write
/// transaction (against the schema that is current) and then write what differs.
pub struct ChangedSettings {
    /// The new columns when they differ from the current ones (a new schema version).
    pub new_columns: Option<Vec<Column>>,
    /// A row retention the change sets.
    pub row_retention: Option<RowRetention>,
    pub region_column: Option<String>,
    pub region_free: bool,
    pub sort_key: Vec<String>,
}

impl DatasetChange {
    /// Resolves the change over `current`: a schema change must keep old files readable,
    /// and the row retention, region column and sort key must fit the resulting columns
    /// (a declared region column cannot be dropped or retyped).
    pub fn resolve(self, current: &crate::model::Dataset) -> Result<ChangedSettings, CatalogError> {
        let columns = self.columns.unwrap_or_else(|| current.columns.clone());
        if columns != current.columns {
            check_evolution(&current.columns, &columns, &current.primary_key)?;
        }
        if let Some(retention) = self
            .row_retention
            .as_ref()
            .or(current.row_retention.as_ref())
        {
            validate_row_retention(retention, &columns)?;
        }
        let region_column = self
            .region_column
            .unwrap_or_else(|| current.region_column.clone());
        let region_free = self.region_free.unwrap_or(current.region_free);
        validate_region(region_column.as_deref(), region_free, &columns)?;
        let sort_key = self.sort_key.unwrap_or_else(|| current.sort_key.clone());
        validate_sort_key(&sort_key, &columns)?;
        Ok(ChangedSettings {
            new_columns: (columns != current.columns).then_some(columns),
            row_retention: self.row_retention,
            region_column,
            region_free,
            sort_key,
        })
    }
}

/// Validates a row retention against the columns: a timestamp or date column, at least a day.
pub fn validate_row_retention(
    retention: &RowRetention,
    columns: &[Column],
) -> Result<(), CatalogError> {
    let Some(column) = columns.iter().find(|c| c.name == retention.column) else {
        return Err(CatalogError::invalid(
            "row_retention.column",
            format!("{:?} is not a column of the dataset", retention.column),
        ));
    };
    if !matches!(column.column_type, ColumnType::Timestamp | ColumnType::Date) {
        return Err(CatalogError::invalid(
            "row_retention.column",
            format!(
                "{:?} is a {} column; rows are aged by a timestamp or date column",
                column.name, column.column_type
            ),
        ));
    }
    if retention.days == 0 {
        return Err(CatalogError::invalid(
            "row_retention.days",
            "must be at least 1",
        ));
    }
    Ok(())
}

/// Why a schema change is refused, one sentence per column.
fn evolution_problems(old: &[Column], new: &[Column]) -> Vec<String> {
    let mut problems = Vec::new();
    for column in old {
        if !new.iter().any(|c| c.name == column.name) {
            problems.push(format!(
                "column {}: dropping a column is not allowed (old files still hold it; a \
                 rename is a drop and an add)",
                column.name
            ));
        }
    }
    // Old columns keep their order (headerless CSV feeds rely on it); new ones come after.
    let kept: Vec<&str> = new
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| old.iter().any(|c| c.name == *name))
        .collect();
    let before: Vec<&str> = old
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| kept.contains(name))
        .collect();
    if kept != before {
        problems.push(
            "columns: the existing columns must keep their order (headerless CSV feeds \
             read by position); add new columns after them"
                .to_string(),
        );
    }
    let mut seen_new = false;
    for column in new {
        let Some(previous) = old.iter().find(|c| c.name == column.name) else {
            seen_new = true;
            if !column.nullable {
                problems.push(format!(
                    "column {}: an added column must be nullable (rows written before it have \
                     no value)",
                    column.name
                ));
            }
            continue;
        };
        if seen_new {
            problems.push(format!(
                "column {}: new columns go after the existing ones",
                column.name
            ));
        }
        if previous.nullable && !column.nullable {
            problems.push(format!(
                "column {}: making a nullable column NOT NULL is not allowed (old rows may \
                 hold NULL)",
                column.name
            ));
        }
        if let Some(why) = type_change_refusal(previous.column_type, column.column_type) {
            problems.push(format!("column {}: {why}", column.name));
        }
    }
    problems
}

/// Why changing a column from `old` to `new` is refused; `None` when it widens or keeps it.
fn type_change_refusal(old: ColumnType, new: ColumnType) -> Option<String> {
    match (old, new) {
        _ if old == new => None,
        (ColumnType::Int32, ColumnType::Int64) => None,
        (
            ColumnType::Decimal {
                precision: p1,
                scale: s1,
            },
            ColumnType::Decimal {
                precision: p2,
                scale: s2,
            },
        ) if s1 == s2 && p2 >= p1 => None,
        (ColumnType::Decimal { .. }, ColumnType::Decimal { .. }) => Some(format!(
            "changing {old} to {new} is not allowed: a decimal may only gain precision, with \
             the same scale"
        )),
        _ => Some(format!(
            "changing {old} to {new} is not allowed: only int32 to int64 and a decimal's \
             precision may widen"
        )),
    }
}

/// Checks a new column list against the current one: allowed are added nullable columns
/// (after the others), int32 to int64, a decimal's precision raised, NOT NULL dropped, and
/// any change of description or sensitivity. Everything else is refused, naming each column.
pub fn check_evolution(
    old: &[Column],
    new: &[Column],
    primary_key: &[String],
) -> Result<(), CatalogError> {
    validate_columns(new)?;
    let mut problems = evolution_problems(old, new);
    // A key identifies rows across every file, old and new: it keeps its type and stays NOT
    // NULL, even where the change would be allowed for another column.
    for name in primary_key {
        let (Some(before), Some(after)) = (
            old.iter().find(|c| &c.name == name),
            new.iter().find(|c| &c.name == name),
        ) else {
            continue;
        };
        if before.column_type != after.column_type || before.nullable != after.nullable {
            problems.push(format!(
                "column {name}: a primary-key column keeps its type and stays NOT NULL"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CatalogError::SchemaChange(problems))
    }
}

/// What garbage collection removed (or, in a dry run, would remove) from one dataset's
/// catalog entry: expired snapshots and the files that only they named.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExpiredSnapshots {
    pub snapshots: Vec<i64>,
    /// Files no kept snapshot names any more: their objects may be deleted.
    pub files: Vec<DataFile>,
}

/// A dataset's snapshot log in three numbers (`storage` of `GET /api/v1/datasets/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotSummary {
    pub snapshots: usize,
    /// The oldest snapshot still readable by time travel.
    pub oldest_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_compaction_at: Option<chrono::DateTime<chrono::Utc>>,
}

//! The metadata model: what the catalog records about departments, principals, datasets,
//! their schemas, snapshots and files.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CatalogError;

/// Department codes that may not own datasets because they name SQL schemas of the hub.
pub const RESERVED_SCHEMAS: &[&str] = &["hub", "information_schema", "public", "pg_catalog"];

/// The built-in department of the hub's operators.
pub const ADMIN_DEPARTMENT: &str = "admin";

/// A department: the unit that owns datasets and whose principals act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Department {
    /// Lowercase ASCII code such as `gongan`; the SQL schema of its datasets.
    pub code: String,
    /// Display name, usually Chinese (公安局).
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Department {
    /// A new department, checked: a valid code and a display name.
    pub fn new(code: &str, name: &str, created_at: DateTime<Utc>) -> Result<Self, CatalogError> {
        validate_department_code(code)?;
        if name.trim().is_empty() {
            return Err(CatalogError::invalid(
                "name",
                "a department needs a display name such as 公安局",
            ));
        }
        Ok(Department {
            code: code.to_string(),
            name: name.trim().to_string(),
            created_at,
        })
    }
}

/// Checks a department code: lowercase ASCII letter first, then letters, digits or `_`.
pub fn validate_department_code(code: &str) -> Result<(), CatalogError> {
    if !is_identifier(code) {
        return Err(CatalogError::invalid(
            "code",
            format!(
                "{code:?} is not a department code: use 2-32 lowercase ASCII letters, digits or \
                 underscores, starting with a letter (e.g. gongan)"
            ),
        ));
    }
    if RESERVED_SCHEMAS.contains(&code) {
        return Err(CatalogError::invalid(
            "code",
            format!("{code:?} is reserved for the hub's own SQL schemas; choose another code"),
        ));
    }
    Ok(())
}

fn is_identifier(text: &str) -> bool {
    let bytes = text.as_bytes();
    (2..=32).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages departments, tokens and everything else.
    Admin,
    /// Registers datasets in and pushes to its own department.
    Producer,
    /// Runs SQL.
    Analyst,
    /// Reads dashboard endpoints only.
    Dashboard,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Analyst => "analyst",
            Role::Dashboard => "dashboard",
        }
    }
}

impl FromStr for Role {
    type Err = CatalogError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Role::Admin),
            "producer" => Ok(Role::Producer),
            "analyst" => Ok(Role::Analyst),
            "dashboard" => Ok(Role::Dashboard),
            other => Err(CatalogError::invalid(
                "role",
                format!("{other:?} is not a role: use admin, producer, analyst or dashboard"),
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Someone (a person or a feed) that calls the hub with a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    pub id: i64,
    pub name: String,
    pub department: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// This token's own request rate limit; `None` uses the configured default.
    pub rate_limit_per_second: Option<u32>,
    /// The region this principal sees (a county's or a town's governance centre): rows,
    /// cameras and endpoint results outside it do not exist for it. `None`: the whole hub.
    #[serde(default)]
    pub region: Option<String>,
}

impl Principal {
    /// The region scope, if this principal has one (validated when the token was made).
    pub fn scope(&self) -> Option<crate::region::Scope> {
        self.region
            .as_deref()
            .and_then(|code| crate::region::Scope::of(code).ok())
    }

    /// Whoever runs the CLI on the data folder: an admin, recorded as such in the audit log.
    pub fn local_operator() -> Self {
        Principal {
            id: 0,
            name: "local operator".into(),
            department: ADMIN_DEPARTMENT.into(),
            role: Role::Admin,
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
            rate_limit_per_second: None,
            region: None,
        }
    }

    /// `active`, `revoked` or `expired` at `now`.
    pub fn token_status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A request to create a principal; the token itself is made by [`crate::token`].
#[derive(Debug, Clone)]
pub struct NewPrincipal {
    pub name: String,
    pub department: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit_per_second: Option<u32>,
    /// A region scope, already checked ([`crate::region::Scope::of`]).
    pub region: Option<String>,
}

/// `department.table`, both parts lowercase identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName {
    department: String,
    table: String,
}

impl DatasetName {
    /// Parses and validates a dataset name; the error says what a valid name looks like.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let invalid = || {
            CatalogError::invalid(
                "name",
                format!(
                    "{text:?} is not a dataset name: use department.table, each part 2-32 \
                     lowercase ASCII letters, digits or underscores starting with a letter \
                     (e.g. gongan.alarms)"
                ),
            )
        };
        let (department, table) = text.split_once('.').ok_or_else(invalid)?;
        if !is_identifier(department) || !is_identifier(table) {
            return Err(invalid());
        }
        if RESERVED_SCHEMAS.contains(&department) {
            return Err(CatalogError::invalid(
                "name",
                format!("{department:?} is a reserved schema; datasets belong to departments"),
            ));
        }
        Ok(Self {
            department: department.to_string(),
            table: table.to_string(),
        })
    }

    pub fn department(&self) -> &str {
        &self.department
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.department, self.table)
    }
}

impl Serialize for DatasetName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatasetName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DatasetName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The column types a dataset may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    Int32,
    Int64,
    Float64,
    String,
    Date,
    /// UTC, microseconds.
    Timestamp,
    Binary,
    Decimal {
        precision: u8,
        scale: i8,
    },
}

impl ColumnType {
    /// The Arrow type the column is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::String => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Binary => DataType::Binary,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        }
    }

    /// The column type an Arrow type maps to, if any (used to infer schemas from files).
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Boolean => ColumnType::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16 => ColumnType::Int32,
            DataType::Int64 | DataType::UInt32 => ColumnType::Int64,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
            DataType::Date32 | DataType::Date64 => ColumnType::Date,
            DataType::Timestamp(_, _) => ColumnType::Timestamp,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ColumnType::Binary,
            DataType::Decimal128(precision, scale) => ColumnType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Int32 => f.write_str("int32"),
            ColumnType::Int64 => f.write_str("int64"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Binary => f.write_str("binary"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
        }
    }
}

impl FromStr for ColumnType {
    type Err = CatalogError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let simple = match text.trim() {
            "bool" | "boolean" => Some(ColumnType::Bool),
            "int32" | "int" => Some(ColumnType::Int32),
            "int64" | "bigint" => Some(ColumnType::Int64),
            "float64" | "double" => Some(ColumnType::Float64),
            "string" | "text" => Some(ColumnType::String),
            "date" => Some(ColumnType::Date),
            "timestamp" => Some(ColumnType::Timestamp),
            "binary" => Some(ColumnType::Binary),
            _ => None,
        };
        if let Some(simple) = simple {
            return Ok(simple);
        }
        let bad = || {
            CatalogError::invalid(
                "type",
                format!(
                    "{text:?} is not a column type: use bool, int32, int64, float64, string, \
                     date, timestamp, binary or decimal(p,s) with 1 <= p <= 38 and 0 <= s <= p"
                ),
            )
        };
        let inner = text
            .trim()
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(bad)?;
        let (precision, scale) = inner.split_once(',').ok_or_else(bad)?;
        let precision: u8 = precision.trim().parse().map_err(|_| bad())?;
        let scale: i8 = scale.trim().parse().map_err(|_| bad())?;
        if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
            return Err(bad());
        }
        Ok(ColumnType::Decimal { precision, scale })
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A schema for a type that travels as one string: its pattern and what it means.
fn text_schema(
    pattern: Option<&str>,
    description: &str,
    example: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(pattern)
        .description(Some(description))
        .examples([example])
        .into()
}

impl utoipa::PartialSchema for DatasetName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        text_schema(
            Some("^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$"),
            "`department.table`, both parts lowercase identifiers",
            "zhili.hotline_cases",
        )
    }
}

impl utoipa::ToSchema for DatasetName {}

impl utoipa::PartialSchema for ColumnType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        text_schema(
            None,
            "A column type: bool, int32, int64, float64, string, date, timestamp (UTC, \
             microseconds), binary or decimal(precision,scale)",
            "timestamp",
        )
    }
}

impl utoipa::ToSchema for ColumnType {}

/// What kind of personal data a column holds; drives masking and auditing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    IdCard,
    Phone,
    PersonName,
    Address,
    PlateNo,
    FaceImage,
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    #[serde(default = "yes")]
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<Sensitivity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}

impl Column {
    pub fn new(name: &str, column_type: ColumnType, nullable: bool) -> Self {
        Self {
            name: name.to_string(),
            column_type,
            nullable,
            sensitivity: None,
            description: None,
        }
    }

    pub fn sensitive(mut self, sensitivity: Sensitivity) -> Self {
        self.sensitivity = Some(sensitivity);
        self
    }
}

/// Columns a Kafka feed fills from message metadata; the only names that may start with `_`.
pub const STREAM_METADATA_COLUMNS: &[&str] =
    &["_topic", "_partition", "_offset", "_key", "_timestamp"];

/// Validates a column list: names are identifiers and unique, at least one column.
pub fn validate_columns(columns: &[Column]) -> Result<(), CatalogError> {
    if columns.is_empty() {
        return Err(CatalogError::invalid(
            "columns",
            "a dataset needs at least one column",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, column) in columns.iter().enumerate() {
        let name = &column.name;
        let ok = STREAM_METADATA_COLUMNS.contains(&name.as_str())
            || (!name.is_empty()
                && name.len() <= 64
                && name.as_bytes()[0].is_ascii_lowercase()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        if !ok {
            return Err(CatalogError::invalid(
                format!("columns[{index}].name"),
                format!(
                    "{name:?} is not a column name: use 1-64 lowercase ASCII letters, digits or \
                     underscores, starting with a letter (or a Kafka metadata column: _topic, \
                     _partition, _offset, _key, _timestamp)"
                ),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(CatalogError::invalid(
                format!("columns[{index}].name"),
                format!("column {name:?} is declared twice"),
            ));
        }
    }
    Ok(())
}

/// The Arrow schema of a column list.
pub fn arrow_schema(columns: &[Column]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Data classification level (GB/T 43697): 一般 / 重要 / 核心.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    #[default]
    General,
    Important,
    Core,
}

/// Sharing type (GB/T 21063): who may read a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// 无条件共享: every department may read.
    Unconditional,
    /// 有条件共享: only departments with an approved grant.
    #[default]
    Conditional,
    /// 不予共享: the owner only.
    None,
}

macro_rules! text_enum {
    ($type:ty { $($variant:path => $text:literal),* $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $text),* }
            }
        }
        impl FromStr for $type {
            type Err = CatalogError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($variant),)*
                    other => Err(CatalogError::invalid(
                        stringify!($type).to_lowercase(),
                        format!("{other:?} is not valid: use one of {}", [$($text),*].join(", ")),
                    )),
                }
            }
        }
    };
}

text_enum!(Classification {
    Classification::General => "general",
    Classification::Important => "important",
    Classification::Core => "core",
});

text_enum!(Sharing {
    Sharing::Unconditional => "unconditional",
    Sharing::Conditional => "conditional",
    Sharing::None => "none",
});

/// A request to register a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataset {
    pub name: DatasetName,
    #[serde(default)]
    pub description: String,
    pub columns: Vec<Column>,
    #[serde(default)]
    pub classification: Classification,
    #[serde(default)]
    pub sharing: Sharing,
    #[serde(default)]
    pub resource_code: Option<String>,
    #[serde(default)]
    pub update_cycle: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Columns compaction sorts rows by (default: the first timestamp column), so that
    /// files cover narrow ranges of them and queries on them skip files.
    #[serde(default)]
    pub sort_key: Vec<String>,
    /// Columns whose values identify a row: a push, import or Kafka flush carrying a key
    /// that is already stored replaces that row (last commit wins; within one write the last
    /// row wins). Empty: every row is a new row.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Days an old snapshot stays readable by time travel after a newer one replaced it;
    /// `None`: `retention.snapshot_days`.
    #[serde(default)]
    pub snapshot_retention_days: Option<u32>,
    /// Rows older than this are deleted by the hub (e.g. personal data kept 180 days).
    #[serde(default)]
    pub row_retention: Option<RowRetention>,
    /// A string column holding each row's GB/T 2260 region code (any level): principals
    /// scoped to a region see only the rows inside it.
    #[serde(default)]
    pub region_column: Option<String>,
    /// The dataset has no region (a city-wide code table): region-scoped principals may read
    /// all of it. Without this or a region column it is refused to them.
    #[serde(default)]
    pub region_free: bool,
}

/// Rows whose `column` (a timestamp or date) is more than `days` old are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowRetention {
    pub column: String,
    pub days: u32,
}

/// A registered dataset with its current schema and snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dataset {
    #[serde(skip)]
    pub id: i64,
    pub name: DatasetName,
    pub owner: String,
    pub description: String,
    pub classification: Classification,
    pub sharing: Sharing,
    pub resource_code: Option<String>,
    pub update_cycle: Option<String>,
    pub tags: Vec<String>,
    pub columns: Vec<Column>,
    /// The declared sort key (may be empty; see [`Dataset::compaction_order`]).
    pub sort_key: Vec<String>,
    /// The columns identifying a row (empty: none; see [`NewDataset::primary_key`]).
    pub primary_key: Vec<String>,
    /// Its own snapshot retention, if it overrides `retention.snapshot_days`.
    pub snapshot_retention_days: Option<u32>,
    /// Rows the hub deletes once they are old enough.
    pub row_retention: Option<RowRetention>,
    /// The column holding each row's region code ([`NewDataset::region_column`]).
    pub region_column: Option<String>,
    /// Readable in full by region-scoped principals ([`NewDataset::region_free`]).
    pub region_free: bool,
    /// When garbage collection last went over it.
    pub last_gc_at: Option<DateTime<Utc>>,
    pub schema_version: i64,
    pub snapshot_id: Option<i64>,
    /// Sequence number of the current snapshot within this dataset (0 before the first).
    #[serde(skip)]
    pub snapshot_seq: i64,
    pub rows: i64,
    pub bytes: i64,
    pub files: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Dataset {
    /// The Arrow schema rows are stored with.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        arrow_schema(&self.columns)
    }

    /// The column a row's time is read from when a grant limits rows by time (`since`):
    /// the first timestamp column of the sort key, else the first timestamp column.
    pub fn time_column(&self) -> Option<&str> {
        let timestamp = |name: &String| {
            self.columns
                .iter()
                .any(|c| &c.name == name && c.column_type == ColumnType::Timestamp)
        };
        self.sort_key
            .iter()
            .find(|name| timestamp(name))
            .or_else(|| {
                self.columns
                    .iter()
                    .find(|c| c.column_type == ColumnType::Timestamp)
                    .map(|c| &c.name)
            })
            .map(String::as_str)
    }

    /// The columns compaction sorts by: the declared sort key, else the primary key (so that
    /// compacted files hold disjoint key ranges and an upsert rewrites few of them), else the
    /// first timestamp column, else none (rows keep their commit order).
    pub fn compaction_order(&self) -> Vec<String> {
        if !self.sort_key.is_empty() {
            return self.sort_key.clone();
        }
        if !self.primary_key.is_empty() {
            return self.primary_key.clone();
        }
        self.columns
            .iter()
            .find(|c| c.column_type == ColumnType::Timestamp)
            .map(|c| vec![c.name.clone()])
            .unwrap_or_default()
    }
}

/// One version of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchemaVersion {
    pub version: i64,
    pub columns: Vec<Column>,
    pub created_at: DateTime<Utc>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Rows pushed or imported.
    Append,
    /// Small files merged into larger ones; the rows are unchanged.
    Compact,
    /// Files holding rows that matched a delete rewritten without them.
    Delete,
    /// Rows added to a keyed dataset, with the files that held their keys rewritten
    /// without those rows.
    Upsert,
}

text_enum!(Operation {
    Operation::Append => "append",
    Operation::Compact => "compact",
    Operation::Delete => "delete",
    Operation::Upsert => "upsert",
});

/// An immutable version of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// Unique across the hub.
    pub id: i64,
    #[serde(skip)]
    pub dataset_id: i64,
    /// 1, 2, 3... within the dataset.
    pub seq: i64,
    pub parent_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub operation: Operation,
    pub schema_version: i64,
    /// Rows, bytes and files this commit added.
    pub added_rows: i64,
    pub added_bytes: i64,
    pub added_files: i64,
    /// Rows, bytes and files of the whole dataset at this snapshot.
    pub rows: i64,
    pub bytes: i64,
    pub files: i64,
}

/// Min, max and null count of one column in one file, where cheap to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ColumnStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_count: Option<i64>,
}

/// A Parquet file of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Object key relative to the store's root.
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    #[serde(default)]
    pub stats: BTreeMap<String, ColumnStats>,
}

/// What to remember of a push made with an `Idempotency-Key`, so a retry answers the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// Hash of the request body (and anything else that makes it the same request).
    pub request_hash: String,
    /// The answer given the first time, as JSON.
    pub response: String,
    pub snapshot_id: Option<i64>,
}

/// A proposed change of a dataset: one catalog transaction.
#[derive(Debug, Clone)]
pub struct Commit {
    pub dataset_id: i64,
    /// The snapshot this change was prepared against; `None` for the first commit.
    pub expected_parent: Option<i64>,
    pub operation: Operation,
    pub added: Vec<DataFile>,
    /// Paths of files this snapshot no longer includes.
    pub removed: Vec<String>,
    pub idempotency: Option<IdempotencyRecord>,
    /// Stream progress committed with the snapshot (Kafka offsets, dead letters).
    pub stream: Option<StreamProgress>,
}

/// Refuses commits that may not be made together: an idempotency key or stream progress
/// belongs to one commit alone, and two commits of one dataset would each expect the
/// parent the other replaces.
pub fn check_together(commits: &[Commit]) -> crate::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for commit in commits {
        if commit.idempotency.is_some() || commit.stream.is_some() {
            return Err(CatalogError::invalid(
                "commit",
                "commits made together carry neither an idempotency key nor stream progress",
            ));
        }
        if !seen.insert(commit.dataset_id) {
            return Err(CatalogError::invalid(
                "commit",
                format!(
                    "dataset {} appears twice among commits made together",
                    commit.dataset_id
                ),
            ));
        }
    }
    Ok(())
}

/// What a stream consumer commits together with its rows: where each partition continues,
/// and the messages it could not turn into rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamProgress {
    pub offsets: Vec<OffsetAdvance>,
    pub rejected: Vec<RejectedRecord>,
}

/// One partition moving from `expected` (the committer's view of the stored next offset;
/// `None` when it believes none is stored) to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAdvance {
    pub topic: String,
    pub partition: i32,
    pub expected: Option<i64>,
    pub next: i64,
}

impl OffsetAdvance {
    /// Refuses the advance when the stored offset (`actual`) is not the one the committer
    /// started from: another worker has consumed the partition since.
    pub fn check_stored(&self, actual: Option<i64>) -> Result<(), CatalogError> {
        if actual == self.expected {
            Ok(())
        } else {
            Err(CatalogError::OffsetConflict {
                topic: self.topic.clone(),
                partition: self.partition,
                expected: self.expected,
                actual,
            })
        }
    }
}

/// A message kept in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub error: String,
}

/// A stored offset of a dataset's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub snapshot_id: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredRejection {
    pub id: i64,
    pub dataset: String,
    #[serde(flatten)]
    pub record: RejectedRecord,
    pub at: DateTime<Utc>,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    Committed(Snapshot),
    /// The idempotency key was already used for the same request: nothing new committed.
    Replayed(IdempotencyRecord),
    /// No files: only stream progress (offsets, dead letters) was committed.
    Progressed,
}

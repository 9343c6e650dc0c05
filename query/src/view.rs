//! The per-request view of the catalog: a DataFusion catalog that holds only what one
//! principal may read, each table pinned to the snapshot that was current when the request
//! started, plus the `hub` system tables.

use cityhub_catalog::camera::CameraSettings;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cityhub_catalog::access::access;
use cityhub_catalog::{Access, AuditFilter, AuditLog, Catalog, DataFile, Dataset, Principal, Role};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::{conjunction, disjunction};

use crate::error::{NeedsGrant, NotReadable, OutOfScope};
use crate::mask::Mask;
use crate::reader::{ReadLog, ReaderTable, RowFilter, ShownColumn};
use crate::table::{SnapshotTable, scan_schema};
use crate::time_travel::{AsOf, split_table_name};

/// The catalog name the hub's tables live in (`cityhub.gongan.alarms`); queries name
/// tables as `department.table`.
pub const CATALOG_NAME: &str = "cityhub";
/// The schema of the system tables.
pub const SYSTEM_SCHEMA: &str = "hub";

/// Files of immutable snapshots, shared across requests: a snapshot's file list never
/// changes, so it is read from the catalog once.
#[derive(Default)]
pub struct FileListCache {
    entries: Mutex<HashMap<i64, Arc<Vec<DataFile>>>>,
}

/// How many snapshots' file lists are kept; old snapshots are rarely read again.
const CACHED_SNAPSHOTS: usize = 4096;

impl FileListCache {
    pub async fn files(&self, catalog: &Catalog, dataset: &Dataset) -> Result<Arc<Vec<DataFile>>> {
        let Some(snapshot_id) = dataset.snapshot_id else {
            return Ok(Arc::new(Vec::new()));
        };
        if let Some(files) = self.lock()?.get(&snapshot_id) {
            return Ok(files.clone());
        }
        let files = Arc::new(
            catalog
                .snapshot_files(dataset.id, Some(snapshot_id))
                .await
                .map_err(|err| DataFusionError::External(Box::new(err)))?,
        );
        let mut entries = self.lock()?;
        if entries.len() >= CACHED_SNAPSHOTS {
            entries.clear();
        }
        entries.insert(snapshot_id, files.clone());
        Ok(files)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<i64, Arc<Vec<DataFile>>>>> {
        self.entries
            .lock()
            .map_err(|_| DataFusionError::Internal("file list cache poisoned".into()))
    }
}

/// What every view of one engine shares.
#[derive(Clone)]
pub struct ViewContext {
    pub catalog: Catalog,
    pub files: Arc<FileListCache>,
    pub store_url: ObjectStoreUrl,
    /// Flushed before `hub.audit_log` is read.
    pub audit: AuditLog,
    /// Liveness and stream templates of `hub.cameras`.
    pub cameras: CameraSettings,
    /// The hub's clock: the camera tables' "now" (statuses, the day that just ended).
    pub clock: cityhub_catalog::clock::Clock,
}

/// Snapshots some tables must be read at (dataset id → snapshot id, `None`: empty, as
/// before its first commit), instead of the current ones.
pub type Pins = HashMap<i64, Option<i64>>;

/// Everything one request may see, resolved at its start.
pub struct RequestView {
    pub principal: Principal,
    /// Datasets whose rows the principal may read, by department and table, with how.
    readable: BTreeMap<String, BTreeMap<String, (Dataset, Access)>>,
    /// Conditional datasets the principal could apply for: naming one in SQL answers 403
    /// saying how to apply, while listings (`SHOW TABLES`, `information_schema`) omit them.
    applicable: BTreeMap<String, BTreeMap<String, Dataset>>,
    /// Datasets a region-scoped principal may not read because they say nothing of regions:
    /// naming one answers 403 saying why; listings omit them.
    out_of_scope: BTreeMap<String, BTreeMap<String, Dataset>>,
    /// Datasets whose metadata the principal may see (the shared catalogue).
    visible: Vec<Dataset>,
    catalog: Catalog,
    files: Arc<FileListCache>,
    store_url: ObjectStoreUrl,
    /// What the request read, for its audit entry.
    pub reads: Arc<ReadLog>,
    /// Flushed before `hub.audit_log` is read, so that it shows everything until now.
    audit: AuditLog,
    /// Liveness and stream templates of `hub.cameras`.
    cameras: CameraSettings,
    clock: cityhub_catalog::clock::Clock,
}

impl RequestView {
    /// Resolves what `principal` may read, with the tables of `pins` fixed at the given
    /// snapshots.
    pub async fn load(
        context: &ViewContext,
        principal: Principal,
        reads: Arc<ReadLog>,
        pins: &Pins,
    ) -> Result<Self> {
        let ViewContext {
            catalog,
            files,
            store_url,
            audit,
            cameras,
            clock,
        } = context.clone();
        let external = |err| DataFusionError::External(Box::new(err));
        let mut all = catalog.list_datasets().await.map_err(external)?;
        for dataset in &mut all {
            if let Some(pinned) = pins.get(&dataset.id) {
                dataset.snapshot_id = *pinned;
            }
        }
        let grants = if principal.role == Role::Admin {
            Vec::new()
        } else {
            catalog
                .grants_held_by(Some(&principal.department))
                .await
                .map_err(external)?
        };
        // Grants expire by the hub's clock, as the sharing service judges them.
        let now = clock.now();
        let mut readable: BTreeMap<String, BTreeMap<String, (Dataset, Access)>> = BTreeMap::new();
        let mut applicable: BTreeMap<String, BTreeMap<String, Dataset>> = BTreeMap::new();
        let mut out_of_scope: BTreeMap<String, BTreeMap<String, Dataset>> = BTreeMap::new();
        let mut visible = Vec::new();
        for dataset in all {
            let owner = dataset.owner.clone();
            let table = dataset.name.table().to_string();
            match access(&principal, &dataset, &grants, now) {
                Access::Hidden => continue,
                Access::Apply => {
                    applicable
                        .entry(owner)
                        .or_default()
                        .insert(table, dataset.clone());
                }
                Access::OutOfScope => {
                    out_of_scope
                        .entry(owner)
                        .or_default()
                        .insert(table, dataset.clone());
                }
                how => {
                    readable
                        .entry(owner)
                        .or_default()
                        .insert(table, (dataset.clone(), how));
                }
            }
            visible.push(dataset);
        }
        Ok(Self {
            principal,
            readable,
            applicable,
            out_of_scope,
            visible,
            catalog,
            files,
            store_url,
            reads,
            audit,
            cameras,
            clock,
        })
    }

    /// The DataFusion catalog of this view.
    pub fn catalog_provider(self: &Arc<Self>) -> Arc<dyn CatalogProvider> {
        Arc::new(ViewCatalog { view: self.clone() })
    }

    /// A dataset the principal may read, with how.
    pub fn readable(&self, department: &str, table: &str) -> Option<&(Dataset, Access)> {
        self.readable.get(department)?.get(table)
    }

    fn applicable(&self, department: &str, table: &str) -> Option<&Dataset> {
        self.applicable.get(department)?.get(table)
    }

    fn out_of_scope(&self, department: &str, table: &str) -> Option<&Dataset> {
        self.out_of_scope.get(department)?.get(table)
    }

    /// Whether the principal reads only some rows of `dataset` (its region scope, or a
    /// grant limited to rows): then counts of all its rows (`hub.datasets.rows`, snapshot
    /// sizes) must not be shown to it.
    pub fn rows_limited(&self, dataset: &Dataset) -> bool {
        let how = self
            .readable
            .get(&dataset.owner)
            .and_then(|tables| tables.get(dataset.name.table()))
            .map_or(&Access::Apply, |(_, how)| how);
        cityhub_catalog::access::rows_limited(&self.principal, dataset, how)
    }
}

#[derive(Clone)]
struct ViewCatalog {
    view: Arc<RequestView>,
}

impl std::fmt::Debug for ViewCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewCatalog({})", self.view.principal.name)
    }
}

impl CatalogProvider for ViewCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.view.readable.keys().cloned().collect();
        names.push(SYSTEM_SCHEMA.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_SCHEMA {
            return Some(Arc::new(SystemSchema {
                view: self.view.clone(),
            }));
        }
        let known = self.view.readable.contains_key(name)
            || self.view.applicable.contains_key(name)
            || self.view.out_of_scope.contains_key(name);
        known.then(|| {
            Arc::new(DepartmentSchema {
                view: self.view.clone(),
                department: name.to_string(),
                pinned: Mutex::new(HashMap::new()),
            }) as Arc<dyn SchemaProvider>
        })
    }
}

/// One department's readable datasets.
struct DepartmentSchema {
    view: Arc<RequestView>,
    department: String,
    /// Tables already resolved in this request, so that a table named twice in one query
    /// reads one snapshot.
    pinned: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl std::fmt::Debug for DepartmentSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DepartmentSchema({})", self.department)
    }
}

#[async_trait]
impl SchemaProvider for DepartmentSchema {
    fn table_names(&self) -> Vec<String> {
        self.view
            .readable
            .get(&self.department)
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.pinned_table(name)? {
            return Ok(Some(table));
        }
        let (table, as_of) = split_table_name(name);
        let Some((dataset, how)) = self.view.readable(&self.department, table) else {
            if let Some(dataset) = self.view.applicable(&self.department, table) {
                self.view.reads.record_refused(&dataset.name.to_string());
                return Err(DataFusionError::External(Box::new(NeedsGrant {
                    dataset: dataset.name.to_string(),
                })));
            }
            if let Some(dataset) = self.view.out_of_scope(&self.department, table) {
                self.view.reads.record_refused(&dataset.name.to_string());
                return Err(DataFusionError::External(Box::new(OutOfScope {
                    message: cityhub_catalog::access::out_of_scope_message(
                        &self.view.principal,
                        dataset,
                    ),
                })));
            }
            return Ok(None);
        };
        let travelled;
        let dataset = match as_of {
            None => dataset,
            Some(as_of) => {
                travelled = Dataset {
                    snapshot_id: Some(self.snapshot_as_of(dataset, as_of).await?),
                    ..dataset.clone()
                };
                &travelled
            }
        };
        let files = self.view.files.files(&self.view.catalog, dataset).await?;
        let snapshot = SnapshotTable::new(
            scan_schema(&dataset.arrow_schema()),
            dataset.columns.iter().map(|c| c.column_type).collect(),
            files,
            self.view.store_url.clone(),
        );
        let table: Arc<dyn TableProvider> = Arc::new(
            ReaderTable::new(
                dataset.name.to_string(),
                snapshot,
                shown_columns(dataset, how),
                self.view.reads.clone(),
            )
            .with_rows(row_filter(&self.view.principal, dataset, how)),
        );
        self.pinned
            .lock()
            .map_err(|_| DataFusionError::Internal("pinned tables poisoned".into()))?
            .insert(name.to_string(), table.clone());
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.view.readable(&self.department, name).is_some()
    }
}

/// The columns a reader sees, in the dataset's order, each with its mask.
fn shown_columns(dataset: &Dataset, how: &Access) -> Vec<ShownColumn> {
    let all = |index, column: &cityhub_catalog::Column, mask| ShownColumn {
        index,
        sensitivity: column.sensitivity,
        mask,
    };
    let Access::Read {
        columns,
        unmasked,
        trusted,
        ..
    } = how
    else {
        // Owners and admins: everything as stored.
        return dataset
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| all(index, column, None))
            .collect();
    };
    dataset
        .columns
        .iter()
        .enumerate()
        .filter(|(_, column)| columns.as_ref().is_none_or(|c| c.contains(&column.name)))
        .map(|(index, column)| {
            let mask = column
                .sensitivity
                .filter(|_| !unmasked.contains(&column.name))
                .map(|sensitivity| Mask::for_column(sensitivity, *trusted));
            all(index, column, mask)
        })
        .collect()
}

/// The rows `principal` may see of `dataset`: inside its region scope (on the dataset's
/// region column) and inside any of its grants' row limits. `None`: every row.
fn row_filter(principal: &Principal, dataset: &Dataset, how: &Access) -> Option<RowFilter> {
    use datafusion::logical_expr::{col, lit};
    use datafusion::scalar::ScalarValue;
    let text = |value: &str| lit(ScalarValue::Utf8View(Some(value.to_string())));
    // A region code lies inside a scope when it falls in one of its prefix ranges.
    let inside = |column: &str, scopes: &[cityhub_catalog::region::Scope]| {
        let mut ranges = scopes
            .iter()
            .flat_map(|scope| scope.ranges())
            .map(|(low, high)| {
                col(column)
                    .gt_eq(text(&low))
                    .and(col(column).lt(text(&high)))
            });
        let first = ranges.next().unwrap_or_else(|| lit(false));
        ranges.fold(first, |any, range| any.or(range))
    };
    let mut predicates = Vec::new();
    let mut described = Vec::new();
    if let Some(scope) = principal.scope()
        && !dataset.region_free
    {
        // `access` refused datasets without a region column to scoped principals.
        let column = dataset.region_column.as_deref()?;
        predicates.push(inside(column, std::slice::from_ref(&scope)));
        described.push(format!("{column} in region {}", scope.code()));
    }
    if let Access::Read {
        rows: Some(limits), ..
    } = how
    {
        let mut any = Vec::new();
        for limit in limits {
            let mut all = Vec::new();
            if !limit.regions.is_empty() {
                // A region limit on a dataset that no longer names its region column
                // keeps nothing.
                all.push(match dataset.region_column.as_deref() {
                    Some(column) => inside(column, &limit.scopes()),
                    None => lit(false),
                });
            }
            if let Some(since) = limit.since {
                all.push(match dataset.time_column() {
                    Some(column) => col(column).gt_eq(lit(ScalarValue::TimestampMicrosecond(
                        Some(since.timestamp_micros()),
                        Some("UTC".into()),
                    ))),
                    None => lit(false),
                });
            }
            any.push(conjunction(all).unwrap_or_else(|| lit(true)));
        }
        predicates.push(disjunction(any).unwrap_or_else(|| lit(false)));
        described.push("the rows of the department's grants".to_string());
    }
    Some(RowFilter {
        predicate: conjunction(predicates)?,
        description: described.join(" and "),
    })
}

impl DepartmentSchema {
    /// The snapshot of `dataset` a time-travelling read names, or why there is none.
    async fn snapshot_as_of(&self, dataset: &Dataset, as_of: AsOf) -> Result<i64> {
        let catalog = &self.view.catalog;
        let external = |err| DataFusionError::External(Box::new(err));
        let not_readable =
            |message: String| DataFusionError::External(Box::new(NotReadable { message }));
        match as_of {
            AsOf::Snapshot(id) => match catalog.snapshot(dataset.id, id).await.map_err(external)? {
                Some(snapshot) => Ok(snapshot.id),
                None => Err(not_readable(format!(
                    "snapshot {id} is not a readable snapshot of {}; its snapshots are listed \
                     by GET /api/v1/datasets/{}/snapshots and in hub.snapshots",
                    dataset.name, dataset.name
                ))),
            },
            AsOf::Time(at) => {
                let (current, oldest) = catalog
                    .snapshot_as_of(dataset.id, at)
                    .await
                    .map_err(external)?;
                match (current, oldest) {
                    (Some(snapshot), _) => Ok(snapshot.id),
                    (None, Some(oldest)) => Err(not_readable(format!(
                        "{} cannot be read as of {}: the oldest readable snapshot was \
                         committed at {} (older ones expire after retention.snapshot_days)",
                        dataset.name,
                        at.to_rfc3339(),
                        oldest.created_at.to_rfc3339()
                    ))),
                    (None, None) => Err(not_readable(format!(
                        "{} has no committed data to read as of {}",
                        dataset.name,
                        at.to_rfc3339()
                    ))),
                }
            }
        }
    }

    fn pinned_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .pinned
            .lock()
            .map_err(|_| DataFusionError::Internal("pinned tables poisoned".into()))?
            .get(name)
            .cloned())
    }
}

/// `hub.*`: the system tables, built from what the request may see.
struct SystemSchema {
    view: Arc<RequestView>,
}

impl std::fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SystemSchema")
    }
}

const SYSTEM_TABLES: &[&str] = &[
    "datasets",
    "regions",
    "snapshots",
    "rejected_records",
    "cameras",
    "camera_status_events",
    "camera_daily",
    "camera_alarms",
    "camera_positions",
];
/// System tables for admins only; to everyone else they do not exist.
const ADMIN_TABLES: &[&str] = &["audit_log"];

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = SYSTEM_TABLES.iter().map(|s| s.to_string()).collect();
        if self.admin() {
            names.extend(ADMIN_TABLES.iter().map(|s| s.to_string()));
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let now = self.view.clock.now().timestamp_millis();
        let batch = match name {
            "datasets" => datasets_batch(&self.view)?,
            "regions" => regions_batch()?,
            "snapshots" => self.snapshots_batch().await?,
            "rejected_records" => self.rejected_batch().await?,
            "cameras" => {
                let scope = self.view.principal.scope();
                crate::cameras::cameras_batch(&self.view.catalog, &self.view.cameras, now, scope)
                    .await?
            }
            "camera_status_events" => {
                let scope = self.view.principal.scope();
                crate::cameras::status_events_batch(
                    &self.view.catalog,
                    &self.view.cameras,
                    now,
                    scope,
                )
                .await?
            }
            "camera_daily" => {
                let scope = self.view.principal.scope();
                crate::cameras::daily_batch(&self.view.catalog, &self.view.cameras, now, scope)
                    .await?
            }
            "camera_alarms" => {
                let scope = self.view.principal.scope();
                crate::cameras::alarms_batch(&self.view.catalog, &self.view.cameras, now, scope)
                    .await?
            }
            "camera_positions" => {
                let scope = self.view.principal.scope();
                crate::cameras::positions_batch(&self.view.catalog, &self.view.cameras, now, scope)
                    .await?
            }
            "audit_log" if self.admin() => self.audit_batch().await?,
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        SYSTEM_TABLES.contains(&name) || (self.admin() && ADMIN_TABLES.contains(&name))
    }
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn datasets_batch(view: &RequestView) -> Result<RecordBatch> {
    let datasets = &view.visible;
    // Counts of every row of a dataset the caller reads only some rows of are not its to see.
    let counts = |value: fn(&Dataset) -> i64| -> ArrayRef {
        Arc::new(
            datasets
                .iter()
                .map(|d| (!view.rows_limited(d)).then(|| value(d)))
                .collect::<Int64Array>(),
        )
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("owner", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("classification", DataType::Utf8, false),
        Field::new("sharing", DataType::Utf8, false),
        Field::new("resource_code", DataType::Utf8, true),
        Field::new("update_cycle", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("bytes", DataType::Int64, true),
        Field::new("files", DataType::Int64, true),
        Field::new("snapshot_id", DataType::Int64, true),
        Field::new("schema_version", DataType::Int64, false),
        Field::new("updated_at", utc_micros(), false),
        Field::new("region_column", DataType::Utf8, true),
        Field::new("region_free", DataType::Boolean, false),
    ]));
    let names: Vec<String> = datasets.iter().map(|d| d.name.to_string()).collect();
    let columns: Vec<ArrayRef> = vec![
        strings(names.iter().map(|n| Some(n.as_str()))),
        strings(datasets.iter().map(|d| Some(d.owner.as_str()))),
        strings(datasets.iter().map(|d| Some(d.description.as_str()))),
        strings(datasets.iter().map(|d| Some(d.classification.as_str()))),
        strings(datasets.iter().map(|d| Some(d.sharing.as_str()))),
        strings(datasets.iter().map(|d| d.resource_code.as_deref())),
        strings(datasets.iter().map(|d| d.update_cycle.as_deref())),
        counts(|d| d.rows),
        counts(|d| d.bytes),
        counts(|d| d.files),
        Arc::new(
            datasets
                .iter()
                .map(|d| d.snapshot_id)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            datasets
                .iter()
                .map(|d| d.schema_version)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            datasets
                .iter()
                .map(|d| Some(d.updated_at.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        strings(datasets.iter().map(|d| d.region_column.as_deref())),
        Arc::new(
            datasets
                .iter()
                .map(|d| Some(d.region_free))
                .collect::<BooleanArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn regions_batch() -> Result<RecordBatch> {
    let regions = cityhub_catalog::region::regions();
    let schema = Arc::new(Schema::new(vec![
        Field::new("code", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("parent", DataType::Utf8, true),
        Field::new("current", DataType::Boolean, false),
        Field::new("note", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        strings(regions.iter().map(|r| Some(r.code))),
        strings(regions.iter().map(|r| Some(r.name))),
        strings(regions.iter().map(|r| Some(r.level))),
        strings(regions.iter().map(|r| r.parent)),
        Arc::new(
            regions
                .iter()
                .map(|r| Some(r.current))
                .collect::<BooleanArray>(),
        ),
        strings(
            regions
                .iter()
                .map(|r| (!r.note.is_empty()).then_some(r.note)),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

impl SystemSchema {
    fn admin(&self) -> bool {
        self.view.principal.role == Role::Admin
    }

    /// The audit log within its retention, oldest first.
    async fn audit_batch(&self) -> Result<RecordBatch> {
        self.view.audit.flush().await;
        let entries = self
            .view
            .catalog
            .audit_entries(AuditFilter {
                limit: usize::MAX >> 1,
                ..Default::default()
            })
            .await
            .map_err(|err| DataFusionError::External(Box::new(err)))?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("at", utc_micros(), false),
            Field::new("principal", DataType::Utf8, true),
            Field::new("department", DataType::Utf8, true),
            Field::new("action", DataType::Utf8, false),
            Field::new("outcome", DataType::Utf8, false),
            Field::new("dataset", DataType::Utf8, true),
            Field::new("detail", DataType::Utf8, false),
        ]));
        let details: Vec<String> = entries.iter().map(|e| e.event.detail.to_string()).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(entries.iter().map(|e| e.id).collect::<Int64Array>()),
            Arc::new(
                entries
                    .iter()
                    .map(|e| Some(e.event.at.timestamp_micros()))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            strings(entries.iter().map(|e| e.event.principal.as_deref())),
            strings(entries.iter().map(|e| e.event.department.as_deref())),
            strings(entries.iter().map(|e| Some(e.event.action.as_str()))),
            strings(entries.iter().map(|e| Some(e.event.outcome.as_str()))),
            strings(entries.iter().map(|e| e.event.dataset.as_deref())),
            strings(details.iter().map(|d| Some(d.as_str()))),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Dead letters of the Kafka feeds of datasets the caller owns; admins also see those
    /// of the camera registry's feeds (dataset `hub.cameras`, `hub.camera_keepalives`,
    /// `hub.camera_events`).
    async fn rejected_batch(&self) -> Result<RecordBatch> {
        let external = |err| DataFusionError::External(Box::new(err));
        let mut rows = Vec::new();
        for dataset in &self.view.visible {
            // Dead letters are whole payloads, from every region: not for scoped readers.
            if !self.view.principal.acts_for(&dataset.owner) || self.view.rows_limited(dataset) {
                continue;
            }
            let mut after = 0;
            loop {
                let page = self
                    .view
                    .catalog
                    .rejected_records(dataset.id, after, 10_000)
                    .await
                    .map_err(external)?;
                let Some(last) = page.last() else { break };
                after = last.id;
                rows.extend(page);
            }
        }
        if self.admin() {
            let mut after = 0;
            loop {
                let page = self
                    .view
                    .catalog
                    .camera_rejected_records(after, 10_000)
                    .await
                    .map_err(external)?;
                let Some(last) = page.last() else { break };
                after = last.id;
                rows.extend(page);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("dataset", DataType::Utf8, false),
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("payload", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, false),
            Field::new("at", utc_micros(), false),
        ]));
        let keys: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.record
                    .key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
            })
            .collect();
        let payloads: Vec<String> = rows
            .iter()
            .map(|r| String::from_utf8_lossy(&r.record.payload).into_owned())
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| r.id).collect::<Int64Array>()),
            strings(rows.iter().map(|r| Some(r.dataset.as_str()))),
            strings(rows.iter().map(|r| Some(r.record.topic.as_str()))),
            Arc::new(
                rows.iter()
                    .map(|r| r.record.partition)
                    .collect::<datafusion::arrow::array::Int32Array>(),
            ),
            Arc::new(rows.iter().map(|r| r.record.offset).collect::<Int64Array>()),
            strings(keys.iter().map(|k| k.as_deref())),
            strings(payloads.iter().map(|p| Some(p.as_str()))),
            strings(rows.iter().map(|r| Some(r.record.error.as_str()))),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.at.timestamp_micros()))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    async fn snapshots_batch(&self) -> Result<RecordBatch> {
        let mut dataset_names = Vec::new();
        let mut snapshots = Vec::new();
        let mut limited = Vec::new();
        for dataset in &self.view.visible {
            let rows_limited = self.view.rows_limited(dataset);
            let log = self
                .view
                .catalog
                .snapshots(dataset.id)
                .await
                .map_err(|err| DataFusionError::External(Box::new(err)))?;
            for snapshot in log {
                dataset_names.push(dataset.name.to_string());
                snapshots.push(snapshot);
                limited.push(rows_limited);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("dataset", DataType::Utf8, false),
            Field::new("snapshot_id", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
            Field::new("parent_id", DataType::Int64, true),
            Field::new("created_at", utc_micros(), false),
            Field::new("operation", DataType::Utf8, false),
            Field::new("added_rows", DataType::Int64, true),
            Field::new("added_files", DataType::Int64, true),
            Field::new("rows", DataType::Int64, true),
            Field::new("bytes", DataType::Int64, true),
            Field::new("files", DataType::Int64, true),
        ]));
        // Sizes of snapshots of datasets the caller reads only some rows of are hidden.
        let sizes = |value: fn(&cityhub_catalog::Snapshot) -> i64| -> ArrayRef {
            Arc::new(
                snapshots
                    .iter()
                    .zip(&limited)
                    .map(|(s, limited)| (!limited).then(|| value(s)))
                    .collect::<Int64Array>(),
            )
        };
        let columns: Vec<ArrayRef> = vec![
            strings(dataset_names.iter().map(|n| Some(n.as_str()))),
            Arc::new(snapshots.iter().map(|s| s.id).collect::<Int64Array>()),
            Arc::new(snapshots.iter().map(|s| s.seq).collect::<Int64Array>()),
            Arc::new(
                snapshots
                    .iter()
                    .map(|s| s.parent_id)
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                snapshots
                    .iter()
                    .map(|s| Some(s.created_at.timestamp_micros()))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            strings(snapshots.iter().map(|s| Some(s.operation.as_str()))),
            sizes(|s| s.added_rows),
            sizes(|s| s.added_files),
            sizes(|s| s.rows),
            sizes(|s| s.bytes),
            sizes(|s| s.files),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

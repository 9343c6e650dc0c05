//! Queries on a Ballista cluster (`query.engine = "ballista"`).
//!
//! The hub plans a query as it always does: the caller's view, the pinned snapshots, the
//! masks and the row scopes are all inside the logical plan's tables. The plan then goes
//! to the Ballista scheduler, which plans it physically, cuts it into stages at its
//! shuffles and sends the stages to the executors. The scheduler and the executors run
//! the hub's own binary (`cityhub scheduler`, `cityhub executor`), and rebuild the hub's
//! parts of a plan from bytes with the codecs here:
//! - tables ([`HubLogicalCodec`]): a reader's view of a snapshot (its exact files with
//!   their catalog statistics, the columns shown and their masks, the row scope) and the
//!   `hub.*` system tables (their rows, as the caller may see them);
//! - operators ([`HubPhysicalCodec`]): [`MaskExec`] and [`ScopedFilterExec`] (a row scope
//!   as planned on the cluster: on each scan, partition for partition, so that Ballista can
//!   give each task its own partitions; the hub's sealed `RowScopeExec` hides its scans,
//!   and Ballista would hand every task all of them);
//! - the UTC `date_trunc` / `date_part` wrapper of [`crate::utc_time`].
//!
//! Anything else goes to Ballista's own codecs. The scheduler plans the reader's table
//! exactly as the hub would, so masking sits directly on the scan in the same stage: raw
//! values never reach a shuffle. [`HubPhysicalCodec`] refuses to send a masking whose
//! input comes from a shuffle, so a plan that would do it fails instead of leaking.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cityhub_catalog::{ColumnType, DataFile, Sensitivity};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::Serializeable;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf::PhysicalExprNode;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};

use crate::mask::Mask;
use crate::reader::{
    MaskExec, ReadLog, ReaderTable, RowFilter, RowScope, ScopedFilterExec, ShownColumn,
};
use crate::table::SnapshotTable;

/// Marks the hub's own encodings, so that decoding knows them from Ballista's (protobuf).
const MAGIC: &[u8] = b"cityhub/1:";

/// A table of the hub, as the scheduler needs it to plan a scan.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EncodedTable {
    /// A dataset as one reader sees it.
    Reader {
        dataset: String,
        snapshot: Box<EncodedSnapshot>,
        columns: Vec<EncodedColumn>,
        rows: Option<EncodedRows>,
    },
    /// A `hub.*` system table: its rows, as an Arrow IPC stream.
    Memory { ipc: String },
}

#[derive(Serialize, Deserialize)]
struct EncodedSnapshot {
    schema: Schema,
    column_types: Vec<String>,
    files: Vec<DataFile>,
    store_url: String,
}

#[derive(Serialize, Deserialize)]
struct EncodedColumn {
    index: usize,
    sensitivity: Option<Sensitivity>,
    mask: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct EncodedRows {
    /// The predicate as DataFusion's protobuf bytes, base64.
    predicate: String,
    description: String,
}

/// An operator of the hub, as an executor needs it to run a stage.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EncodedPlan {
    /// [`MaskExec`]; its input is the plan's child.
    Mask {
        columns: Vec<(usize, Option<String>)>,
        schema: Schema,
    },
    /// [`ScopedFilterExec`]; its input is the plan's child.
    ScopedFilter {
        /// Protobuf bytes, base64.
        filter: Option<String>,
        shown: Vec<usize>,
        fetch: Option<usize>,
        description: String,
    },
}

/// A function of the hub.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EncodedFunction {
    /// `date_trunc` / `date_part` handed a UTC timestamp untagged.
    UtcUntagged { inner: String },
}

fn encode<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(MAGIC);
    serde_json::to_writer(buf, value)
        .map_err(|err| DataFusionError::Internal(format!("encoding a hub plan part: {err}")))
}

/// The hub's encoding in `buf`, or `None` when `buf` is not one (Ballista's own).
fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Option<Result<T>> {
    let json = buf.strip_prefix(MAGIC)?;
    Some(serde_json::from_slice(json).map_err(|err| {
        DataFusionError::Internal(format!(
            "a hub plan part does not decode (is every node of the cluster the same cityhub \
             version?): {err}"
        ))
    }))
}

/// The mask a plan names (`None`: shown as stored).
fn mask_named(name: Option<&str>) -> Result<Option<Mask>> {
    name.map(|name| {
        Mask::from_name(name)
            .ok_or_else(|| DataFusionError::Internal(format!("unknown mask {name:?} in a plan")))
    })
    .transpose()
}

fn unbase64(text: &str) -> Result<Vec<u8>> {
    BASE64
        .decode(text)
        .map_err(|err| DataFusionError::Internal(format!("a hub plan part is not base64: {err}")))
}

/// The hub's logical codec: its tables and functions, then Ballista's.
#[derive(Debug, Default)]
pub struct HubLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl HubLogicalCodec {
    fn encode_snapshot(snapshot: &SnapshotTable) -> EncodedSnapshot {
        EncodedSnapshot {
            schema: snapshot.schema.as_ref().clone(),
            column_types: snapshot
                .column_types
                .iter()
                .map(ToString::to_string)
                .collect(),
            files: snapshot.files.as_ref().clone(),
            store_url: snapshot.store_url.as_str().to_string(),
        }
    }

    fn decode_snapshot(encoded: EncodedSnapshot) -> Result<SnapshotTable> {
        let column_types = encoded
            .column_types
            .iter()
            .map(|name| {
                name.parse::<ColumnType>().map_err(|_| {
                    DataFusionError::Internal(format!("unknown column type {name:?} in a plan"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The statistics of masked columns are hidden again by `ReaderTable::new`.
        Ok(SnapshotTable::new(
            Arc::new(encoded.schema),
            column_types,
            Arc::new(encoded.files),
            ObjectStoreUrl::parse(&encoded.store_url)?,
        ))
    }
}

impl LogicalExtensionCodec for HubLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(table) = decode::<EncodedTable>(buf) else {
            return self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        Ok(match table? {
            EncodedTable::Reader {
                dataset,
                snapshot,
                columns,
                rows,
            } => {
                let columns = columns
                    .into_iter()
                    .map(|column| {
                        Ok(ShownColumn {
                            index: column.index,
                            sensitivity: column.sensitivity,
                            mask: mask_named(column.mask.as_deref())?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let rows = match rows {
                    None => None,
                    Some(rows) => Some(RowFilter {
                        predicate: Expr::from_bytes_with_ctx(&unbase64(&rows.predicate)?, ctx)?,
                        description: rows.description,
                    }),
                };
                // What this copy reads is logged by the hub that planned the query.
                let reads = Arc::new(ReadLog::default());
                let mut table =
                    ReaderTable::new(dataset, Self::decode_snapshot(*snapshot)?, columns, reads)
                        .with_rows(rows);
                table.on_cluster = true;
                Arc::new(table)
            }
            EncodedTable::Memory { ipc } => {
                let bytes = unbase64(&ipc)?;
                let reader = StreamReader::try_new(bytes.as_slice(), None)?;
                let batches = reader.collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
                Arc::new(MemTable::try_new(schema, vec![batches])?)
            }
        })
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(reader) = node.downcast_ref::<ReaderTable>() {
            let rows = match &reader.rows {
                None => None,
                Some(rows) => Some(EncodedRows {
                    predicate: BASE64.encode(rows.predicate.to_bytes()?),
                    description: rows.description.clone(),
                }),
            };
            let columns = reader
                .columns
                .iter()
                .map(|column| EncodedColumn {
                    index: column.index,
                    sensitivity: column.sensitivity,
                    mask: column.mask.map(|mask| mask.name().to_string()),
                })
                .collect();
            return encode(
                &EncodedTable::Reader {
                    dataset: reader.dataset.clone(),
                    snapshot: Box::new(Self::encode_snapshot(&reader.inner)),
                    columns,
                    rows,
                },
                buf,
            );
        }
        if let Some(memory) = node.downcast_ref::<MemTable>() {
            let mut ipc = Vec::new();
            {
                let mut writer = StreamWriter::try_new(&mut ipc, &memory.schema())?;
                for partition in &memory.batches {
                    let batches = partition.try_read().map_err(|_| {
                        DataFusionError::Internal("a system table is being written".into())
                    })?;
                    for batch in batches.iter() {
                        writer.write(batch)?;
                    }
                }
                writer.finish()?;
            }
            return encode(
                &EncodedTable::Memory {
                    ipc: BASE64.encode(ipc),
                },
                buf,
            );
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function(name, buf, |name| self.ballista.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(node, buf)
    }
}

/// The hub's functions travel by name, with a note of how the hub wrapped them.
fn encode_function(node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
    if crate::utc_time::is_untagged(node) {
        return encode(
            &EncodedFunction::UtcUntagged {
                inner: node.name().to_string(),
            },
            buf,
        );
    }
    Ok(())
}

fn decode_function(
    name: &str,
    buf: &[u8],
    otherwise: impl FnOnce(&str) -> Result<Arc<ScalarUDF>>,
) -> Result<Arc<ScalarUDF>> {
    match decode::<EncodedFunction>(buf) {
        Some(function) => match function? {
            EncodedFunction::UtcUntagged { inner } => {
                let inner = match inner.as_str() {
                    "date_trunc" => datafusion::functions::datetime::date_trunc(),
                    "date_part" => datafusion::functions::datetime::date_part(),
                    other => {
                        return Err(DataFusionError::Internal(format!(
                            "no UTC wrapper for {other}"
                        )));
                    }
                };
                Ok(Arc::new(crate::utc_time::untagged(inner)))
            }
        },
        None => otherwise(name),
    }
}

/// The hub's physical codec: its operators and functions, then Ballista's.
#[derive(Debug, Default)]
pub struct HubPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl HubPhysicalCodec {
    fn encode_mask(mask: &MaskExec) -> Result<EncodedPlan> {
        // Masking must run on the executor that scanned the rows. Were a shuffle below it,
        // raw values would already have crossed to another executor: refuse the plan.
        mask.input.apply(|node| {
            if node.name().contains("Shuffle") {
                return Err(DataFusionError::Plan(
                    "this plan would move unmasked values between executors (a shuffle \
                     below the masking); the query was not run"
                        .into(),
                ));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(EncodedPlan::Mask {
            columns: mask
                .columns
                .iter()
                .map(|(index, mask)| (*index, mask.map(|m| m.name().to_string())))
                .collect(),
            schema: mask.schema.as_ref().clone(),
        })
    }

    fn encode_scoped_filter(&self, node: &ScopedFilterExec) -> Result<EncodedPlan> {
        let filter = match &node.filter {
            None => None,
            Some(filter) => {
                Some(BASE64.encode(serialize_physical_expr(filter, self)?.encode_to_vec()))
            }
        };
        Ok(EncodedPlan::ScopedFilter {
            filter,
            shown: node.scope.shown.clone(),
            fetch: node.scope.fetch,
            description: node.scope.description.clone(),
        })
    }

    fn decode_plan(
        &self,
        plan: EncodedPlan,
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match plan {
            EncodedPlan::Mask { columns, schema } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "MaskExec takes exactly one input".into(),
                    ));
                };
                let columns = columns
                    .into_iter()
                    .map(|(index, mask)| Ok((index, mask_named(mask.as_deref())?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(MaskExec::new(
                    Arc::clone(input),
                    columns,
                    Arc::new(schema),
                )))
            }
            EncodedPlan::ScopedFilter {
                filter,
                shown,
                fetch,
                description,
            } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "ScopedFilterExec takes exactly one input".into(),
                    ));
                };
                let filter = match filter {
                    None => None,
                    Some(filter) => {
                        let node = PhysicalExprNode::decode(unbase64(&filter)?.as_slice())
                            .map_err(|err| DataFusionError::Internal(err.to_string()))?;
                        Some(parse_physical_expr(&node, ctx, &input.schema(), self)?)
                    }
                };
                let scope = RowScope {
                    shown,
                    fetch,
                    description,
                };
                Ok(Arc::new(ScopedFilterExec::new(
                    Arc::clone(input),
                    filter,
                    Arc::new(scope),
                )))
            }
        }
    }
}

impl PhysicalExtensionCodec for HubPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match decode::<EncodedPlan>(buf) {
            Some(plan) => self.decode_plan(plan?, inputs, ctx),
            None => self.ballista.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(mask) = node.downcast_ref::<MaskExec>() {
            return encode(&Self::encode_mask(mask)?, buf);
        }
        if let Some(filter) = node.downcast_ref::<ScopedFilterExec>() {
            return encode(&self.encode_scoped_filter(filter)?, buf);
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function(name, buf, |name| self.ballista.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(node, buf)
    }
}

/// Whether a planned query goes to the cluster: it reads at least one dataset, and every
/// table it reads is one the codecs carry. A query of only system tables or constants is
/// the hub's own business; one that also reads `information_schema` or `pg_catalog`
/// (which only this hub has) stays here too, and so do `EXPLAIN` and `EXPLAIN ANALYZE`:
/// the hub's plan is the one to show, and its sealed row scopes keep the counts of rows
/// outside a reader's scope out of the metrics.
pub(crate) fn runs_on_cluster(plan: &LogicalPlan) -> Result<bool> {
    if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
        return Ok(false);
    }
    let mut datasets = 0;
    let mut carried = true;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source)?;
            if provider.is::<ReaderTable>() {
                datasets += 1;
            } else if !provider.is::<MemTable>() {
                carried = false;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(datasets > 0 && carried)
}

/// Notes in the request's read log what the plan reads of each dataset: the cluster scans
/// the tables, so the scans that usually note it run elsewhere.
pub(crate) fn record_reads(plan: &LogicalPlan) -> Result<()> {
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source)?;
            if let Some(reader) = provider.downcast_ref::<ReaderTable>() {
                let shown: Vec<usize> = match &scan.projection {
                    Some(projection) => projection.clone(),
                    None => (0..reader.columns.len()).collect(),
                };
                reader.record_reads(&shown);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use cityhub_catalog::{Column as HubColumn, ColumnStats, arrow_schema};
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::physical_plan::{Partitioning, collect, displayable};
    use datafusion::prelude::{SessionContext, col, lit};
    use datafusion::scalar::ScalarValue;
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    use super::*;
    use crate::table::scan_schema;

    fn columns() -> [HubColumn; 3] {
        [
            HubColumn::new("id", ColumnType::Int64, false),
            HubColumn::new("region_code", ColumnType::String, false),
            HubColumn::new("phone", ColumnType::String, false),
        ]
    }

    /// A session whose object store holds one Parquet file of six people in two
    /// counties, and a reader's table over it: phones masked, rows of county 511025.
    async fn session_and_table() -> (SessionContext, Arc<ReaderTable>, Arc<dyn ObjectStore>) {
        let stored = arrow_schema(&columns());
        let batch = RecordBatch::try_new(
            stored.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(1..=6)),
                Arc::new(StringArray::from(vec![
                    "511025", "511011", "511025", "511011", "511025", "511011",
                ])),
                Arc::new(StringArray::from(vec![
                    "18012341999",
                    "18012342999",
                    "18012343999",
                    "18012344999",
                    "18012345999",
                    "18012346999",
                ])),
            ],
        )
        .expect("batch");
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, stored.clone(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        store
            .put(&Path::from("people/1.parquet"), bytes.clone().into())
            .await
            .expect("put");
        let context = SessionContext::new();
        let url = ObjectStoreUrl::parse(crate::STORE_URL).expect("url");
        context
            .runtime_env()
            .register_object_store(url.as_ref(), Arc::clone(&store));
        let file = DataFile {
            path: "people/1.parquet".into(),
            rows: 6,
            bytes: bytes.len() as i64,
            stats: [(
                "region_code".to_string(),
                ColumnStats {
                    min: Some("511011".into()),
                    max: Some("511025".into()),
                    null_count: Some(0),
                },
            )]
            .into(),
        };
        let snapshot = SnapshotTable::new(
            scan_schema(&stored),
            columns().iter().map(|c| c.column_type).collect(),
            Arc::new(vec![file]),
            url,
        );
        let shown = vec![
            ShownColumn {
                index: 0,
                sensitivity: None,
                mask: None,
            },
            ShownColumn {
                index: 1,
                sensitivity: None,
                mask: None,
            },
            ShownColumn {
                index: 2,
                sensitivity: Some(Sensitivity::Phone),
                mask: Some(Mask::Phone),
            },
        ];
        let text = |value: &str| lit(ScalarValue::Utf8View(Some(value.into())));
        let rows = RowFilter {
            predicate: col("region_code")
                .gt_eq(text("511025"))
                .and(col("region_code").lt(text("511026"))),
            description: "region_code in region 511025".into(),
        };
        let table = ReaderTable::new("gongan.people".into(), snapshot, shown, Arc::default())
            .with_rows(Some(rows));
        (context, Arc::new(table), store)
    }

    #[tokio::test]
    async fn a_masked_scoped_table_gives_the_same_rows_after_both_codecs() {
        let (context, table, store) = session_and_table().await;
        context.register_table("people", table).expect("register");
        let sql = "SELECT id, phone FROM people WHERE id > 1 ORDER BY id";
        let local = context
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");

        // The hub sends the logical plan; the scheduler decodes and plans it.
        let plan = context
            .state()
            .create_logical_plan(sql)
            .await
            .expect("plan");
        let plan = context.state().optimize(&plan).expect("optimize");
        let logical = HubLogicalCodec::default();
        let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &logical).expect("encode");
        let scheduler = SessionContext::new();
        scheduler.runtime_env().register_object_store(
            ObjectStoreUrl::parse(crate::STORE_URL)
                .expect("url")
                .as_ref(),
            Arc::clone(&store),
        );
        let decoded =
            logical_plan_from_bytes_with_extension_codec(&bytes, &scheduler.task_ctx(), &logical)
                .expect("decode");
        let physical = scheduler
            .state()
            .create_physical_plan(&decoded)
            .await
            .expect("physical plan");
        let shown = displayable(physical.as_ref()).indent(false).to_string();
        assert!(shown.contains("MaskExec: phone=phone"), "{shown}");
        assert!(
            shown.contains("ScopedFilterExec: region_code in region 511025"),
            "{shown}"
        );

        // The scheduler sends the physical plan; an executor decodes and runs it.
        let physical_codec = HubPhysicalCodec::default();
        let bytes =
            physical_plan_to_bytes_with_extension_codec(physical, &physical_codec).expect("encode");
        let executor = context.task_ctx();
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &executor, &physical_codec)
                .expect("decode");
        let remote = collect(decoded, executor).await.expect("run");
        let local = pretty_format_batches(&local).expect("format").to_string();
        let remote = pretty_format_batches(&remote).expect("format").to_string();
        assert_eq!(local, remote);
        assert!(remote.contains("180****3999"), "{remote}");
        assert!(!remote.contains("18012343999"), "{remote}");
        assert!(
            !remote.contains("| 2 "),
            "a row outside the scope: {remote}"
        );
    }

    #[tokio::test]
    async fn a_system_table_travels_with_its_rows() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![datafusion::arrow::datatypes::Field::new(
                "name",
                datafusion::arrow::datatypes::DataType::Utf8,
                false,
            )])),
            vec![Arc::new(StringArray::from(vec!["a", "b"]))],
        )
        .expect("batch");
        let table: Arc<dyn TableProvider> =
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table"));
        let codec = HubLogicalCodec::default();
        let reference = TableReference::bare("datasets");
        let mut buf = Vec::new();
        codec
            .try_encode_table_provider(&reference, Arc::clone(&table), &mut buf)
            .expect("encode");
        let context = SessionContext::new();
        let decoded = codec
            .try_decode_table_provider(&buf, &reference, table.schema(), &context.task_ctx())
            .expect("decode");
        context
            .register_table("datasets", decoded)
            .expect("register");
        let rows = context
            .sql("SELECT count(*) AS n FROM datasets")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let shown = pretty_format_batches(&rows).expect("format").to_string();
        assert!(shown.contains("| 2 |"), "{shown}");
    }

    #[tokio::test]
    async fn masking_fed_by_a_shuffle_is_refused() {
        let (context, table, _) = session_and_table().await;
        let full = table.schema();
        let shuffle = ballista_core::execution_plans::UnresolvedShuffleExec::new(
            1,
            full.clone(),
            Partitioning::UnknownPartitioning(2),
        );
        let mask = MaskExec::new(
            Arc::new(shuffle),
            vec![(0, None), (1, None), (2, Some(Mask::Phone))],
            full,
        );
        let err = physical_plan_to_bytes_with_extension_codec(
            Arc::new(mask),
            &HubPhysicalCodec::default(),
        )
        .expect_err("a shuffle below the masking");
        assert!(err.to_string().contains("unmasked values"), "{err}");
        drop(context);
    }

    #[test]
    fn bytes_that_are_not_the_hubs_go_to_ballista_and_bad_ones_are_named() {
        assert!(decode::<EncodedPlan>(b"\x0a\x02hi").is_none());
        let err = decode::<EncodedPlan>(b"cityhub/1:{\"kind\":\"nothing\"}")
            .expect("the hub's")
            .err()
            .expect("an unknown kind");
        assert!(err.to_string().contains("same cityhub version"), "{err}");
    }
}

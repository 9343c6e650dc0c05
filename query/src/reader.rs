//! A dataset as one reader may see it: only the columns the reader may read, sensitive ones
//! masked where the table is scanned, and a record of what was read for the audit log.
//!
//! Masking sits directly on the scan ([`MaskExec`]), below every filter, join, sort and
//! aggregate, so none of them ever sees a raw value. To keep it that way:
//! - filters on masked columns are never pushed into the scan (they run on masked values);
//! - the scan gets no min/max statistics of masked columns (they would show in
//!   `EXPLAIN VERBOSE` and could answer `min(phone)` from metadata);
//! - `MaskExec` lets no filter, projection or sort be pushed through it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cityhub_catalog::Sensitivity;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringViewBuilder, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use crate::mask::Mask;
use crate::table::SnapshotTable;

/// One column as the reader sees it.
#[derive(Debug, Clone)]
pub struct ShownColumn {
    /// Its index in the dataset's full schema.
    pub index: usize,
    pub sensitivity: Option<Sensitivity>,
    /// `None`: shown as stored.
    pub mask: Option<Mask>,
}

/// What one request read, for its audit entry: dataset → sensitive column → masked.
#[derive(Debug, Default)]
pub struct ReadLog {
    reads: Mutex<BTreeMap<String, BTreeMap<String, DatasetColumnRead>>>,
}

/// How a sensitive column was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DatasetColumnRead {
    pub sensitivity: Sensitivity,
    pub masked: bool,
}

impl ReadLog {
    fn record(&self, dataset: &str, columns: impl Iterator<Item = (String, DatasetColumnRead)>) {
        if let Ok(mut reads) = self.reads.lock() {
            reads
                .entry(dataset.to_string())
                .or_default()
                .extend(columns);
        }
    }

    /// Datasets read, each with the sensitive columns read and whether they were masked.
    pub fn reads(&self) -> BTreeMap<String, BTreeMap<String, DatasetColumnRead>> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A dataset's snapshot through one reader's eyes.
pub struct ReaderTable {
    dataset: String,
    inner: SnapshotTable,
    columns: Vec<ShownColumn>,
    schema: SchemaRef,
    log: Arc<ReadLog>,
}

impl fmt::Debug for ReaderTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReaderTable({})", self.dataset)
    }
}

impl ReaderTable {
    /// `inner` is the full snapshot; `columns` what the reader sees of it, in order.
    pub fn new(
        dataset: String,
        inner: SnapshotTable,
        columns: Vec<ShownColumn>,
        log: Arc<ReadLog>,
    ) -> Self {
        let full = inner.schema();
        let fields: Vec<Field> = columns
            .iter()
            .map(|column| {
                let field = full.field(column.index);
                match column.mask {
                    None | Some(Mask::Withheld) => field.clone(),
                    Some(_) => Field::new(field.name(), DataType::Utf8View, field.is_nullable()),
                }
                .with_nullable(field.is_nullable() || column.mask == Some(Mask::Withheld))
            })
            .collect();
        let masked: Vec<usize> = columns
            .iter()
            .filter(|c| c.mask.is_some())
            .map(|c| c.index)
            .collect();
        log.record(&dataset, std::iter::empty());
        Self {
            dataset,
            inner: inner.without_statistics_of(&masked),
            columns,
            schema: Arc::new(Schema::new(fields)),
            log,
        }
    }

    fn is_masked(&self, name: &str) -> bool {
        self.schema
            .index_of(name)
            .is_ok_and(|index| self.columns[index].mask.is_some())
    }
}

#[async_trait]
impl TableProvider for ReaderTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // A filter naming a masked column must see masked values, so it stays above the
        // scan; others prune files like on the owner's table.
        Ok(filters
            .iter()
            .map(|filter| {
                if filter
                    .column_refs()
                    .iter()
                    .any(|column| self.is_masked(&column.name))
                {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        let mut statistics = Statistics::new_unknown(&self.schema);
        if let Some(inner) = self.inner.statistics() {
            statistics.num_rows = inner.num_rows;
        }
        Some(statistics)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let shown: Vec<usize> = match projection {
            Some(indices) => indices.clone(),
            None => (0..self.columns.len()).collect(),
        };
        self.log.record(
            &self.dataset,
            shown.iter().filter_map(|&i| {
                let column = &self.columns[i];
                column.sensitivity.map(|sensitivity| {
                    (
                        self.schema.field(i).name().clone(),
                        DatasetColumnRead {
                            sensitivity,
                            masked: column.mask.is_some(),
                        },
                    )
                })
            }),
        );
        let inner_projection: Vec<usize> = shown.iter().map(|&i| self.columns[i].index).collect();
        let scan = self
            .inner
            .scan(state, Some(&inner_projection), filters, limit)
            .await?;
        let masks: Vec<Option<Mask>> = shown.iter().map(|&i| self.columns[i].mask).collect();
        if masks.iter().all(Option::is_none) {
            return Ok(scan);
        }
        let schema = Arc::new(self.schema.project(&shown)?);
        Ok(Arc::new(MaskExec::new(scan, masks, schema)))
    }
}

/// Masks columns of every batch that passes; the first node above a masked table's scan.
#[derive(Debug)]
pub struct MaskExec {
    input: Arc<dyn ExecutionPlan>,
    masks: Arc<Vec<Option<Mask>>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl MaskExec {
    fn new(input: Arc<dyn ExecutionPlan>, masks: Vec<Option<Mask>>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            input,
            masks: Arc::new(masks),
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for MaskExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked: Vec<String> = self
            .masks
            .iter()
            .zip(self.schema.fields())
            .filter_map(|(mask, field)| mask.map(|m| format!("{}={}", field.name(), m.name())))
            .collect();
        write!(f, "MaskExec: {}", masked.join(", "))
    }
}

impl ExecutionPlan for MaskExec {
    fn name(&self) -> &'static str {
        "MaskExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| DataFusionError::Internal("MaskExec takes exactly one input".into()))?;
        Ok(Arc::new(MaskExec::new(
            input,
            self.masks.as_ref().clone(),
            self.schema.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let masks = self.masks.clone();
        let schema = self.schema.clone();
        let out = schema.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out,
            input.map(move |batch| mask_batch(&batch?, &masks, &schema)),
        )))
    }
}

fn mask_batch(
    batch: &RecordBatch,
    masks: &[Option<Mask>],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(masks)
        .zip(schema.fields())
        .map(|((array, mask), field)| match mask {
            None => Ok(array.clone()),
            Some(mask) => mask_array(array, *mask, field.data_type()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn mask_array(array: &ArrayRef, mask: Mask, data_type: &DataType) -> Result<ArrayRef> {
    if mask == Mask::Withheld {
        return Ok(new_null_array(data_type, array.len()));
    }
    let text = cast(array, &DataType::Utf8View)?;
    let text = text
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringViewArray>()
        .ok_or_else(|| DataFusionError::Internal("masking expects text".into()))?;
    let mut out = StringViewBuilder::with_capacity(text.len());
    for value in text.iter() {
        out.append_option(value.and_then(|v| mask.apply(v)));
    }
    Ok(Arc::new(out.finish()))
}

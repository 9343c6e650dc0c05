//! The query side of a delete: which files of a snapshot hold rows matching a predicate,
//! and the rows of a file that remain without them. The write side (new files, the
//! `delete` commit) is the ingest crate's; the server joins the two.
//!
//! The predicate is one SQL expression over the dataset's own columns, parsed as an
//! expression (so no statement, DDL or second query can ride along), with no subquery and
//! no volatile function (a delete must mean the same rows in every file it reads).

use std::ops::ControlFlow;
use std::sync::Arc;

use cityhub_catalog::{DataFile, Dataset};
use datafusion::arrow::array::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::table::{SnapshotTable, scan_schema};
use crate::{QueryEngine, QueryError};

/// Longest predicate accepted (a delete names rows, it is not a program).
const MAX_PREDICATE: usize = 8 * 1024;

/// One file that holds rows a delete matches.
#[derive(Debug, Clone)]
pub struct Matching {
    pub file: DataFile,
    pub rows: u64,
}

impl QueryEngine {
    /// The files of `dataset`'s snapshot `files` holding rows that match `predicate`, with
    /// how many: files whose statistics rule the predicate out are not even read.
    pub async fn files_matching(
        &self,
        dataset: &Dataset,
        files: Arc<Vec<DataFile>>,
        predicate: &str,
    ) -> Result<Vec<Matching>, QueryError> {
        let ctx = self.rewrite_context();
        let table = self.table_of(dataset, files.clone());
        let expr = parse_predicate(&ctx, dataset, predicate)?;
        let candidates: Vec<DataFile> = table
            .files_passing(&ctx.state(), std::slice::from_ref(&expr))
            .into_iter()
            .cloned()
            .collect();
        let mut matching = Vec::new();
        for file in candidates {
            let table = self.table_of(dataset, Arc::new(vec![file.clone()]));
            let rows = ctx
                .read_table(Arc::new(table))
                .and_then(|frame| frame.filter(expr.clone()))
                .map_err(QueryError::from_datafusion)?
                .count()
                .await
                .map_err(QueryError::from_datafusion)?;
            if rows > 0 {
                matching.push(Matching {
                    file,
                    rows: rows as u64,
                });
            }
        }
        Ok(matching)
    }

    /// The rows of `file` that `predicate` does not match (NULL counts as not matching),
    /// in the dataset's stored schema, ready to be written again.
    pub async fn rows_kept(
        &self,
        dataset: &Dataset,
        file: &DataFile,
        predicate: &str,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let ctx = self.rewrite_context();
        let expr = parse_predicate(&ctx, dataset, predicate)?;
        let table = self.table_of(dataset, Arc::new(vec![file.clone()]));
        let batches = ctx
            .read_table(Arc::new(table))
            .and_then(|frame| frame.filter(expr.is_not_true()))
            .map_err(QueryError::from_datafusion)?
            .collect()
            .await
            .map_err(QueryError::from_datafusion)?;
        let stored = dataset.arrow_schema();
        batches
            .iter()
            .filter(|batch| batch.num_rows() > 0)
            .map(|batch| to_stored(batch, &stored))
            .collect()
    }

    fn rewrite_context(&self) -> SessionContext {
        SessionContext::new_with_config_rt(self.session_config(), self.query_runtime())
    }

    fn table_of(&self, dataset: &Dataset, files: Arc<Vec<DataFile>>) -> SnapshotTable {
        SnapshotTable::new(
            scan_schema(&dataset.arrow_schema()),
            dataset.columns.iter().map(|c| c.column_type).collect(),
            files,
            self.store_url.clone(),
        )
    }
}

/// Parses a delete's `where` into an expression over the dataset's columns.
fn parse_predicate(
    ctx: &SessionContext,
    dataset: &Dataset,
    predicate: &str,
) -> Result<Expr, QueryError> {
    let refuse = |why: String| QueryError::Invalid {
        message: format!("where: {why}"),
        line: None,
        column: None,
    };
    if predicate.trim().is_empty() {
        return Err(refuse(
            "give the rows to delete as a SQL condition, e.g. \"id = 42\"".into(),
        ));
    }
    if predicate.len() > MAX_PREDICATE {
        return Err(refuse(format!(
            "the condition is {} bytes; at most {MAX_PREDICATE}",
            predicate.len()
        )));
    }
    // Subqueries are refused on the syntax, before planning could look for their tables.
    let has_subquery = Parser::new(&GenericDialect {})
        .try_with_sql(predicate)
        .and_then(|mut parser| parser.parse_expr())
        .map(|ast| {
            visit_expressions(&ast, |e| match e {
                SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            })
            .is_break()
        })
        .unwrap_or(false);
    if has_subquery {
        return Err(refuse(
            "a subquery is not allowed; name the rows by their own columns".into(),
        ));
    }
    let schema = DFSchema::try_from(scan_schema(&dataset.arrow_schema()).as_ref().clone())
        .map_err(QueryError::from_datafusion)?;
    let expr = ctx.parse_sql_expr(predicate, &schema).map_err(|err| {
        refuse(format!(
            "not a condition on {}'s columns: {}",
            dataset.name,
            QueryError::from_datafusion(err)
        ))
    })?;
    let mut problem = None;
    expr.apply(|e| {
        let found = match e {
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                Some("a subquery is not allowed; name the rows by their own columns".to_string())
            }
            Expr::ScalarFunction(call)
                if call.func.signature().volatility == Volatility::Volatile =>
            {
                Some(format!(
                    "{}() is not allowed: a delete must match the same rows in every file",
                    call.func.name()
                ))
            }
            _ => None,
        };
        if found.is_some() {
            problem = found;
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .map_err(QueryError::from_datafusion)?;
    match problem {
        Some(why) => Err(refuse(why)),
        None => Ok(expr),
    }
}

/// A batch as scanned (strings as views) in the stored schema (plain strings).
fn to_stored(
    batch: &RecordBatch,
    stored: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, QueryError> {
    let columns = stored
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| datafusion::arrow::compute::cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(QueryError::internal)?;
    RecordBatch::try_new(stored.clone(), columns).map_err(QueryError::internal)
}

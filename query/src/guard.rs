//! The closed, read-only SQL surface: one query statement per request, no DDL, DML, COPY,
//! external tables, runtime settings, or file and URL tables.
//!
//! This is checked on the parsed statement before planning so that the refusal can say what
//! was refused; the plan is checked again by DataFusion's own `SQLOptions` after planning.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{ObjectName, Statement, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::QueryError;

/// Table functions a query may call: they compute rows and read nothing.
/// (`pg_get_keywords` is PostgreSQL's list of keywords, which DBeaver reads; it exists in
/// sessions of the PostgreSQL door only.)
const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "unnest", "pg_get_keywords"];

/// Numbers JDBC's and ADBC's `?` placeholders as the hub's `$1`, `$2`, ... in order of
/// appearance. A `?` inside a string, a quoted name or a comment is left alone (the SQL is
/// tokenized, not searched), and the rest of the text is kept as it was written.
pub fn number_question_marks(sql: &str) -> Result<String, QueryError> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|err| QueryError::Invalid {
            message: format!("the SQL does not parse: {err}"),
            line: None,
            column: None,
        })?;
    let mut numbered = String::with_capacity(sql.len() + 8);
    let mut next = 0;
    for token in tokens {
        match token {
            Token::Placeholder(text) if text == "?" => {
                next += 1;
                numbered.push_str(&format!("${next}"));
            }
            other => numbered.push_str(&other.to_string()),
        }
    }
    Ok(numbered)
}

/// Parses `sql` and checks that it is a single read-only statement.
pub fn check(sql: &str) -> Result<DFStatement, QueryError> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(QueryError::from_datafusion)?;
    if statements.len() != 1 {
        return Err(QueryError::Unsupported(format!(
            "send exactly one SQL statement per request (this request has {})",
            statements.len()
        )));
    }
    let statement = statements
        .pop_front()
        .ok_or_else(|| QueryError::Unsupported("the request holds no SQL statement".into()))?;
    check_statement(&statement)?;
    Ok(statement)
}

/// The refusal of a statement that would change something or reach outside the
/// catalogue, e.g. `refusal("COPY")`.
pub fn refusal(what: &str) -> QueryError {
    QueryError::Unsupported(format!(
        "{what} is not allowed: the SQL surface is read-only (SELECT, WITH, EXPLAIN, SHOW \
         TABLES, SHOW COLUMNS, DESCRIBE)"
    ))
}

fn check_statement(statement: &DFStatement) -> Result<(), QueryError> {
    let refuse = |what: &str| Err(refusal(what));
    match statement {
        DFStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DFStatement::CopyTo(_) => refuse("COPY"),
        DFStatement::Reset(_) => refuse("RESET"),
        DFStatement::Explain(explain) => check_statement(&explain.statement),
        DFStatement::Statement(inner) => match inner.as_ref() {
            Statement::Query(_) => check_relations(inner),
            Statement::Explain { statement, .. } => {
                check_statement(&DFStatement::Statement(statement.clone()))
            }
            Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ExplainTable { .. } => check_relations(inner),
            Statement::Set(_) | Statement::ShowVariable { .. } => refuse("SET"),
            Statement::Copy { .. } => refuse("COPY"),
            other => refuse(&statement_kind(&other.to_string())),
        },
    }
}

/// The leading keywords of a statement (`CREATE TABLE`, `INSERT INTO`, `UPDATE`), to name
/// what was refused without echoing the whole statement.
fn statement_kind(text: &str) -> String {
    const OBJECTS: &[&str] = &[
        "TABLE",
        "INTO",
        "FROM",
        "VIEW",
        "INDEX",
        "SCHEMA",
        "DATABASE",
        "FUNCTION",
        "CATALOG",
        "EXTERNAL",
        "OR",
        "TEMPORARY",
        "TEMP",
    ];
    let mut words = text.split_whitespace().map(str::to_uppercase);
    let mut kind = words.next().unwrap_or_default();
    if let Some(second) = words.next().filter(|w| OBJECTS.contains(&w.as_str())) {
        kind.push(' ');
        kind.push_str(&second);
    }
    kind
}

/// Refuses file and URL tables (`FROM '/etc/passwd'`, `FROM 's3://…'`) and table functions
/// that could read something.
fn check_relations(statement: &Statement) -> Result<(), QueryError> {
    struct Relations;
    impl Visitor for Relations {
        type Break = String;

        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
            let text = relation.to_string();
            let looks_like_path = relation.0.iter().any(|part| {
                let part = part.to_string();
                part.contains('/') || part.contains(':') || part.contains('\\')
            });
            if looks_like_path {
                ControlFlow::Break(format!(
                    "{text} looks like a file or URL; file and URL tables are not available, \
                     query department.table datasets instead"
                ))
            } else {
                ControlFlow::Continue(())
            }
        }

        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
            let function = match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                }
                | TableFactor::Function { name, .. } => Some(name.to_string()),
                TableFactor::TableFunction { expr, .. } => Some(expr.to_string()),
                _ => None,
            };
            match function {
                Some(name)
                    if !ALLOWED_TABLE_FUNCTIONS
                        .iter()
                        .any(|allowed| name.eq_ignore_ascii_case(allowed)) =>
                {
                    ControlFlow::Break(format!(
                        "the table function {name} is not available; allowed are {}",
                        ALLOWED_TABLE_FUNCTIONS.join(", ")
                    ))
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match statement.visit(&mut Relations) {
        ControlFlow::Break(message) => Err(QueryError::Unsupported(message)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        match check(sql) {
            Err(QueryError::Unsupported(message)) => message,
            other => panic!("{sql} was not refused: {other:?}"),
        }
    }

    #[test]
    fn question_marks_are_numbered_outside_strings_names_and_comments() {
        let sql = "SELECT a, '?' AS \"why?\" FROM t -- why?\nWHERE b = ? AND c IN (?, ?)";
        assert_eq!(
            number_question_marks(sql).expect("tokenizes"),
            "SELECT a, '?' AS \"why?\" FROM t -- why?\nWHERE b = $1 AND c IN ($2, $3)"
        );
        assert_eq!(
            number_question_marks("SELECT $1").expect("as is"),
            "SELECT $1"
        );
    }

    #[test]
    fn read_only_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "EXPLAIN SELECT * FROM gongan.alarms",
            "SHOW TABLES",
            "DESCRIBE gongan.alarms",
            "SELECT * FROM generate_series(1, 3)",
        ] {
            check(sql).unwrap_or_else(|err| panic!("{sql}: {err:?}"));
        }
    }

    #[test]
    fn writes_settings_files_and_batches_are_refused() {
        assert!(refused("CREATE TABLE t (x INT)").contains("CREATE TABLE"));
        assert!(refused("INSERT INTO gongan.alarms VALUES (1)").contains("INSERT INTO"));
        assert!(refused("DELETE FROM gongan.alarms").contains("DELETE FROM"));
        assert!(refused("DROP TABLE gongan.alarms").contains("DROP TABLE"));
        assert!(refused("COPY (SELECT 1) TO '/tmp/x.csv'").contains("COPY"));
        assert!(
            refused("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'")
                .contains("CREATE EXTERNAL TABLE")
        );
        assert!(refused("SET datafusion.execution.batch_size = 1").contains("SET"));
        assert!(refused("SELECT * FROM '/etc/passwd'").contains("file or URL"));
        assert!(refused("SELECT * FROM 's3://bucket/x.parquet'").contains("file or URL"));
        assert!(refused("SELECT * FROM read_parquet('/etc/passwd')").contains("read_parquet"));
        assert!(refused("SELECT 1; SELECT 2").contains("exactly one"));
        assert!(refused("EXPLAIN COPY (SELECT 1) TO '/tmp/x'").contains("COPY"));
        assert!(refused("SELECT * FROM (SELECT * FROM '/etc/shadow') t").contains("file or URL"));
    }
}

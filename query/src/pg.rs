//! PostgreSQL compatibility of a query session, for the PostgreSQL front door.
//!
//! psql, DBeaver, Grafana and Superset look around before they query: they read
//! `pg_catalog` tables and call PostgreSQL's functions (`version()`, `current_schema()`,
//! `pg_table_is_visible`, `format_type`, ...). A session planned for that door gets a
//! `pg_catalog` schema built over the caller's own view, so those tools list exactly the
//! tables the caller may read, and the functions they call. The SQL surface stays the
//! same closed, read-only one: this adds tables to read and functions to call, nothing
//! else.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use async_trait::async_trait;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider,
};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    create_udf,
};
use datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, catalog_info::CatalogInfo,
    context::EmptyContextProvider, format_type, has_privilege_udf, pg_get_expr_udf,
    quote_ident_udf,
};

use crate::view::{CATALOG_NAME, SYSTEM_SCHEMA};

/// The schema PostgreSQL clients read their metadata from.
pub const PG_CATALOG: &str = "pg_catalog";

/// What `version()` answers. Drivers read the PostgreSQL version out of it (SQLAlchemy
/// with a regular expression), so it starts like PostgreSQL's own answer.
pub const VERSION: &str = concat!(
    "PostgreSQL 16.6 on x86_64-pc-linux-gnu, cityhub ",
    env!("CARGO_PKG_VERSION"),
    " (Apache DataFusion 55)"
);

/// The server's settings as clients ask for them (`SHOW`, `current_setting`). The hub
/// reads and writes times in UTC; its SQL is read-only and every statement sees one
/// snapshot, which is what `read committed` promises and more.
pub const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, YMD"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("max_identifier_length", "63"),
    ("search_path", "hub"),
    ("server_encoding", "UTF8"),
    ("server_version", "16.6"),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
];

pub fn server_setting(name: &str) -> Option<&'static str> {
    SERVER_SETTINGS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, value)| *value)
}

/// `current_setting(name)`: the server's settings as [`SERVER_SETTINGS`] lists them (Grafana
/// reads `search_path` this way).
fn current_setting() -> ScalarUDF {
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::common::cast::as_string_array(&names[0])?;
            let values: StringArray = names
                .iter()
                .map(|name| name.and_then(server_setting))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(values)))
        }),
    )
}

/// PostgreSQL's built-in catalog tables that do not depend on the data (types, operators,
/// ...): decoded once per process, they are shared by every session.
fn static_tables() -> Result<Arc<PgCatalogStaticTables>> {
    static TABLES: OnceLock<Arc<PgCatalogStaticTables>> = OnceLock::new();
    if let Some(tables) = TABLES.get() {
        return Ok(tables.clone());
    }
    let tables = Arc::new(PgCatalogStaticTables::try_new()?);
    Ok(TABLES.get_or_init(|| tables).clone())
}

/// A PostgreSQL connection's `pg_catalog`: one per connection, so that the oids a client
/// reads in one statement name the same tables in the next (psql's `\d` reads a table's
/// oid, then asks for the columns of that oid). Each statement points it at its own view.
#[derive(Debug)]
pub struct PgSessionCatalog {
    described: CurrentView,
    pg_catalog: Arc<dyn SchemaProvider>,
}

impl PgSessionCatalog {
    pub fn new() -> Result<Self> {
        let described = CurrentView::default();
        let pg_catalog = PgCatalogSchemaProvider::try_new(
            described.clone(),
            static_tables()?,
            EmptyContextProvider,
        )?;
        Ok(Self {
            described,
            pg_catalog: Arc::new(pg_catalog),
        })
    }

    /// The view's catalog with this session's `pg_catalog` beside the departments, now
    /// describing `view`.
    ///
    /// `pg_catalog` describes the view alone, not the catalog it is added to, so that the
    /// two do not hold each other (a cycle of reference counts would keep views alive).
    pub(crate) fn with_view(&self, view: Arc<dyn CatalogProvider>) -> Arc<dyn CatalogProvider> {
        let described = Arc::new(MemoryCatalogProviderList::new());
        described.register_catalog(CATALOG_NAME.to_string(), view.clone());
        self.described.set(described);
        Arc::new(PgCompatibleCatalog {
            view,
            pg_catalog: self.pg_catalog.clone(),
        })
    }
}

/// The catalogs `pg_catalog` describes: the current statement's view. A connection runs
/// one statement at a time, and every view it sees is its own principal's.
#[derive(Debug, Clone)]
struct CurrentView(Arc<RwLock<Arc<dyn CatalogProviderList>>>);

impl Default for CurrentView {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(Arc::new(
            MemoryCatalogProviderList::new(),
        ))))
    }
}

impl CurrentView {
    fn set(&self, catalogs: Arc<dyn CatalogProviderList>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = catalogs;
    }

    fn get(&self) -> Arc<dyn CatalogProviderList> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl CatalogInfo for CurrentView {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        CatalogInfo::catalog_names(&self.get()).await
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>> {
        CatalogInfo::schema_names(&self.get(), catalog).await
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        CatalogInfo::table_names(&self.get(), catalog, schema).await
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>> {
        CatalogInfo::table_schema(&self.get(), catalog, schema, table).await
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>> {
        CatalogInfo::table_type(&self.get(), catalog, schema, table).await
    }
}

/// Makes a session planned for the PostgreSQL door answer what PostgreSQL clients call:
/// PostgreSQL's functions, `generate_series` over `int4` bounds (`array_upper` gives one),
/// and `pg_get_keywords()`.
pub(crate) fn prepare(state: &mut SessionState) -> Result<()> {
    for function in functions() {
        state.register_udf(function.clone())?;
    }
    for name in ["generate_series", "range"] {
        let inner = state
            .table_functions()
            .get(name)
            .map(|function| function.function().clone());
        if let Some(inner) = inner {
            state.register_udtf(name, Arc::new(WideIntegerArguments(inner)));
        }
    }
    state.register_udtf("pg_get_keywords", static_tables()?.pg_get_keywords.clone());
    Ok(())
}

/// A table function whose `int4` literal arguments are read as `int8`: DataFusion's
/// `generate_series` takes `int8` bounds only, PostgreSQL clients pass `int4`s.
#[derive(Debug)]
struct WideIntegerArguments(Arc<dyn TableFunctionImpl>);

impl TableFunctionImpl for WideIntegerArguments {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let widened: Vec<Expr> = args
            .exprs()
            .iter()
            .map(|arg| match arg {
                Expr::Literal(ScalarValue::Int32(value), metadata) => {
                    Expr::Literal(ScalarValue::Int64(value.map(i64::from)), metadata.clone())
                }
                other => other.clone(),
            })
            .collect();
        self.0
            .call_with_args(TableFunctionArgs::new(&widened, args.session()))
    }
}

/// The functions PostgreSQL clients call while they look around.
/// Built once per process: every PostgreSQL statement's session registers them.
fn functions() -> &'static [Arc<ScalarUDF>] {
    static FUNCTIONS: OnceLock<Vec<Arc<ScalarUDF>>> = OnceLock::new();
    FUNCTIONS.get_or_init(build_functions)
}

fn build_functions() -> Vec<Arc<ScalarUDF>> {
    use datafusion_pg_catalog::pg_catalog as pg;
    [
        pg::create_current_database_udf(CATALOG_NAME),
        text_function("current_schema", SYSTEM_SCHEMA),
        text_function("version", VERSION),
        current_setting(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        pg::create_pg_table_is_visible(),
        format_type::create_format_type_udf(),
        pg::create_session_user_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
    ]
    .into_iter()
    .chain(
        // Comments on objects: the hub keeps descriptions in its own catalogue.
        ["obj_description", "col_description", "shobj_description"]
            .map(|name| ScalarUDF::from(Nothing::new(name, DataType::Utf8))),
    )
    .chain(
        ["pg_function_is_visible", "pg_type_is_visible"]
            .map(|name| ScalarUDF::from(Nothing::new(name, DataType::Boolean))),
    )
    .map(Arc::new)
    .collect()
}

/// A function of any arguments that answers NULL: what the hub has no notion of.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Nothing {
    name: &'static str,
    returns: DataType,
    signature: Signature,
}

impl Nothing {
    fn new(name: &'static str, returns: DataType) -> Self {
        Self {
            name,
            returns,
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for Nothing {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.returns)?))
    }
}

/// A function of no arguments that answers one fixed text.
fn text_function(name: &str, answer: &'static str) -> ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        // A scalar, not a one-row array: the function may be called over many rows.
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                answer.to_string(),
            ))))
        }),
    )
}

#[derive(Debug)]
struct PgCompatibleCatalog {
    view: Arc<dyn CatalogProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
}

impl CatalogProvider for PgCompatibleCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.view.schema_names();
        names.push(PG_CATALOG.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name.eq_ignore_ascii_case(PG_CATALOG) {
            return Some(self.pg_catalog.clone());
        }
        self.view.schema(name)
    }
}

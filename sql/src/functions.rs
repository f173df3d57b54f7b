//! cohortdb's own SQL functions, registered on every session.
//!
//! Each family lives in its own module; the math is in `cohortdb_engine::stats`,
//! these wrap it for SQL (argument coercion, NULL handling, result structs).

mod ab_assign;
mod audience;
pub(crate) mod deferred;
mod experiment_report;
mod experiment_stats;
pub(crate) mod lookalike;
mod metric_moments;
mod p_adjust;
mod pg_catalog;
mod privacy;
mod recommend;
mod settings;
mod srm_test;
mod system;

use std::sync::{Arc, Mutex};

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::state::State;

pub(crate) use audience::today;

/// Registers every function on a session; the settings functions read and write
/// that session's `state`. Returns the names of cohortdb's own functions (not
/// those PostgreSQL has too), which the catalog lists in `public`.
pub(crate) fn register(
    ctx: &SessionContext,
    state: &Arc<Mutex<State>>,
    catalog: &Arc<cohortdb_engine::Catalog>,
) -> Vec<String> {
    let mut own: Vec<ScalarUDF> = experiment_stats::all();
    own.extend(experiment_stats::comoment_tests());
    own.push(ScalarUDF::from(ab_assign::AbAssignFunc::new()));
    own.push(ScalarUDF::from(ab_assign::AbInNamespaceFunc::new()));
    own.push(ScalarUDF::from(ab_assign::GbHashFunc::new()));
    own.push(ScalarUDF::from(ab_assign::Fnv1a32Func::new()));
    own.push(ScalarUDF::from(srm_test::SrmTestFunc::new()));
    own.push(ScalarUDF::from(p_adjust::PAdjustFunc::new()));
    let postgres = [
        ScalarUDF::from(settings::SettingsFunc::current_setting(state)),
        ScalarUDF::from(settings::SettingsFunc::set_config(state)),
        ScalarUDF::from(system::SystemFunc::version()),
        ScalarUDF::from(system::SystemFunc::advisory_unlock_all()),
    ];
    let aggregates = [
        AggregateUDF::from(metric_moments::MetricMomentsUdaf::single()),
        AggregateUDF::from(metric_moments::MetricMomentsUdaf::pair()),
    ];
    let mut names: Vec<String> = own.iter().map(|f| f.name().to_string()).collect();
    names.extend(aggregates.iter().map(|f| f.name().to_string()));
    names.push("experiment_report".to_string());
    let access = crate::privacy::UserAccess::new(catalog, state);
    names.extend(audience::register(ctx, &access));
    names.extend(lookalike::register(ctx, &access));
    names.extend(recommend::register(ctx, &access));
    names.extend(privacy::register(ctx, &access));
    for udf in own.into_iter().chain(postgres) {
        ctx.register_udf(udf);
    }
    ctx.register_udtf(
        "experiment_report",
        Arc::new(experiment_report::ExperimentReportFunc),
    );
    for udaf in aggregates {
        ctx.register_udaf(udaf);
    }
    // PostgreSQL's other name for the sample variance.
    let var_samp = datafusion::functions_aggregate::variance::var_samp_udaf();
    ctx.register_udaf(var_samp.as_ref().clone().with_aliases(["variance"]));
    names
}

/// How many rows a scalar function of `args` computes: one when every
/// argument is a constant (the result is then a constant too).
pub(crate) fn result_rows(
    args: &[datafusion::logical_expr::ColumnarValue],
    number_rows: usize,
) -> usize {
    if args
        .iter()
        .all(|a| matches!(a, datafusion::logical_expr::ColumnarValue::Scalar(_)))
    {
        1
    } else {
        number_rows
    }
}

/// The result `array` of a scalar function of `args`, computed for
/// [`result_rows`] rows.
pub(crate) fn result_value(
    args: &[datafusion::logical_expr::ColumnarValue],
    array: arrow::array::ArrayRef,
) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
    if args
        .iter()
        .all(|a| matches!(a, datafusion::logical_expr::ColumnarValue::Scalar(_)))
    {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            datafusion::common::ScalarValue::try_from_array(&array, 0)?,
        ))
    } else {
        Ok(datafusion::logical_expr::ColumnarValue::Array(array))
    }
}

/// Whether a value of type `t` is taken as text: text, or an integer (as its
/// digits).
pub(crate) fn text_like(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType;
    matches!(
        t,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null
    ) || t.is_integer()
}

/// An argument `coerce_types` made TEXT.
pub(crate) fn strings(array: &arrow::array::ArrayRef) -> &arrow::array::StringArray {
    array
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("coerced to TEXT")
}

/// Registers table functions under their names; returns the names.
pub(crate) fn register_table_functions(
    ctx: &SessionContext,
    functions: impl IntoIterator<
        Item = (
            &'static str,
            Arc<dyn datafusion::catalog::TableFunctionImpl>,
        ),
    >,
) -> Vec<String> {
    functions
        .into_iter()
        .map(|(name, f)| {
            ctx.register_udtf(name, f);
            name.to_string()
        })
        .collect()
}

/// The value of a constant argument of a table function (a literal, a cast,
/// any expression without columns).
pub(crate) fn constant(
    session: &dyn datafusion::catalog::Session,
    expr: &datafusion::logical_expr::Expr,
) -> datafusion::common::Result<datafusion::common::ScalarValue> {
    use arrow::array::{RecordBatch, RecordBatchOptions};
    let physical =
        session.create_physical_expr(expr.clone(), &datafusion::common::DFSchema::empty())?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    datafusion::common::ScalarValue::try_from_array(&physical.evaluate(&one_row)?.into_array(1)?, 0)
}

/// The value of an argument that may be a statement parameter (`$1`): `None`
/// while the statement is only described, before values are bound (the bound
/// statement is planned again with the values in place).
pub(crate) fn constant_or_parameter(
    session: &dyn datafusion::catalog::Session,
    expr: &datafusion::logical_expr::Expr,
) -> datafusion::common::Result<Option<datafusion::common::ScalarValue>> {
    use datafusion::common::tree_node::TreeNode;
    let parameter =
        expr.exists(|e| Ok(matches!(e, datafusion::logical_expr::Expr::Placeholder(_))))?;
    if parameter {
        return Ok(None);
    }
    constant(session, expr).map(Some)
}

/// A count argument (k, n): a non-negative integer constant up to `max`.
pub(crate) fn constant_count(
    session: &dyn datafusion::catalog::Session,
    expr: &datafusion::logical_expr::Expr,
    function: &str,
    what: &str,
    max: usize,
) -> datafusion::common::Result<usize> {
    let value = constant(session, expr)?;
    count_value(&value, function, what, max)
}

/// A count argument that may be a statement parameter (`None` until bound).
pub(crate) fn count_or_parameter(
    session: &dyn datafusion::catalog::Session,
    expr: &datafusion::logical_expr::Expr,
    function: &str,
    what: &str,
    max: usize,
) -> datafusion::common::Result<Option<usize>> {
    constant_or_parameter(session, expr)?
        .map(|value| count_value(&value, function, what, max))
        .transpose()
}

fn count_value(
    value: &datafusion::common::ScalarValue,
    function: &str,
    what: &str,
    max: usize,
) -> datafusion::common::Result<usize> {
    let n = match value {
        datafusion::common::ScalarValue::Int64(Some(n)) => Some(*n),
        datafusion::common::ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
        datafusion::common::ScalarValue::Int16(Some(n)) => Some(i64::from(*n)),
        _ => None,
    };
    n.filter(|n| (0..=max as i64).contains(n))
        .map(|n| n as usize)
        .ok_or_else(|| {
            crate::error::to_datafusion(cohortdb_engine::Error::InvalidArgument(format!(
                "{function}: {what} is a count from 0 to {max}, got {value}"
            )))
        })
}

/// The list type list arguments are coerced to: `DOUBLE[]`.
pub(crate) fn double_list() -> arrow::datatypes::DataType {
    arrow::datatypes::DataType::List(std::sync::Arc::new(
        arrow::datatypes::Field::new_list_field(arrow::datatypes::DataType::Float64, true),
    ))
}

/// Whether a type can be coerced to `DOUBLE[]`.
pub(crate) fn is_numeric_list(data_type: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType;
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            f.data_type().is_numeric() || f.data_type().is_null()
        }
        _ => false,
    }
}

/// Row `row` of a `DOUBLE[]` column, `None` when the list is NULL. NULL elements
/// become NaN, which the statistics reject.
pub(crate) fn f64_list(array: &arrow::array::ListArray, row: usize) -> Option<Vec<f64>> {
    use arrow::array::Array;
    if array.is_null(row) {
        return None;
    }
    let values = array.value(row);
    let values = values
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .expect("list arguments are coerced to DOUBLE[]");
    Some(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// The catalog functions (`format_type`, `pg_get_userbyid`, ...) over a
/// session's `pg_catalog`.
pub(crate) fn pg_catalog_functions(
    schema: &Arc<crate::pg_catalog::PgCatalogSchema>,
    state: &Arc<Mutex<State>>,
) -> Vec<ScalarUDF> {
    pg_catalog::all(schema, state)
}

/// Every function a session knows, as `pg_proc` rows: cohortdb's own (`own`)
/// in `public`, DataFusion's and the catalog functions in `pg_catalog`.
pub(crate) fn catalog_rows(
    ctx: &SessionContext,
    own: &[String],
) -> Vec<crate::pg_catalog::FunctionRow> {
    use crate::pg_catalog::{FunctionRow, PG_CATALOG_OID, PUBLIC_OID, types};
    let state = ctx.state();
    let describe =
        |signature: &datafusion::logical_expr::Signature,
         result: &dyn Fn(&[arrow::datatypes::DataType]) -> Option<arrow::datatypes::DataType>|
         -> (String, String) {
            use datafusion::logical_expr::TypeSignature;
            let arguments = match &signature.type_signature {
                TypeSignature::Exact(args) => Some(args.clone()),
                TypeSignature::Nullary => Some(Vec::new()),
                _ => None,
            };
            let name = |t: &arrow::datatypes::DataType| {
                types::format_type(types::type_oid(t), types::type_modifier(t)).unwrap_or_default()
            };
            match arguments {
                Some(args) => (
                    args.iter().map(name).collect::<Vec<_>>().join(", "),
                    result(&args).map(|t| name(&t)).unwrap_or_default(),
                ),
                None => ("VARIADIC \"any\"".to_string(), String::new()),
            }
        };
    let mut rows = Vec::new();
    let mut push = |name: &str, kind: char, (arguments, result): (String, String)| {
        let namespace = if own.iter().any(|o| o == name) {
            PUBLIC_OID
        } else {
            PG_CATALOG_OID
        };
        rows.push(FunctionRow {
            oid: crate::pg_catalog::function_oid(name),
            name: name.to_string(),
            kind,
            namespace,
            arguments,
            result,
        });
    };
    for (name, udf) in state.scalar_functions() {
        push(
            name,
            'f',
            describe(udf.signature(), &|args| udf.return_type(args).ok()),
        );
    }
    for (name, udaf) in state.aggregate_functions() {
        push(
            name,
            'a',
            describe(udaf.signature(), &|args| udaf.return_type(args).ok()),
        );
    }
    for (name, udwf) in state.window_functions() {
        push(name, 'w', describe(udwf.signature(), &|_| None));
    }
    for name in pg_catalog::names() {
        push(name, 'f', (String::new(), String::new()));
    }
    // Table functions (experiment_report, audience, ...): listed after the
    // others, so a name that is also a scalar keeps the scalar's row.
    for name in own {
        push(name, 'f', (String::new(), String::new()));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.dedup_by(|a, b| a.name == b.name);
    rows
}

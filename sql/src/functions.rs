//! cohortdb's own SQL functions, registered on every session.
//!
//! Each family lives in its own module; the math is in `cohortdb_engine::stats`,
//! these wrap it for SQL (argument coercion, NULL handling, result structs).

mod ab_assign;
mod experiment_report;
mod experiment_stats;
mod metric_moments;
mod p_adjust;
mod settings;
mod srm_test;
mod system;

use std::sync::{Arc, Mutex};

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::state::State;

/// Registers every function on a session; the settings functions read and write
/// that session's `state`.
pub(crate) fn register(ctx: &SessionContext, state: &Arc<Mutex<State>>) {
    let mut udfs: Vec<ScalarUDF> = experiment_stats::all();
    udfs.extend(experiment_stats::comoment_tests());
    udfs.push(ScalarUDF::from(ab_assign::AbAssignFunc::new()));
    udfs.push(ScalarUDF::from(ab_assign::AbInNamespaceFunc::new()));
    udfs.push(ScalarUDF::from(ab_assign::GbHashFunc::new()));
    udfs.push(ScalarUDF::from(ab_assign::Fnv1a32Func::new()));
    udfs.push(ScalarUDF::from(srm_test::SrmTestFunc::new()));
    udfs.push(ScalarUDF::from(p_adjust::PAdjustFunc::new()));
    udfs.push(ScalarUDF::from(settings::SettingsFunc::current_setting(
        state,
    )));
    udfs.push(ScalarUDF::from(settings::SettingsFunc::set_config(state)));
    udfs.push(ScalarUDF::from(system::SystemFunc::version()));
    udfs.push(ScalarUDF::from(system::SystemFunc::advisory_unlock_all()));
    for udf in udfs {
        ctx.register_udf(udf);
    }
    ctx.register_udtf(
        "experiment_report",
        Arc::new(experiment_report::ExperimentReportFunc),
    );
    ctx.register_udaf(AggregateUDF::from(
        metric_moments::MetricMomentsUdaf::single(),
    ));
    ctx.register_udaf(AggregateUDF::from(metric_moments::MetricMomentsUdaf::pair()));
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

//! `experiment_report(exposures, metrics [, weights [, alpha]])`: a table function
//! giving the whole report of an experiment, one row per metric and variation —
//! units, mean, lift against control with its confidence interval and p-value,
//! chance to win, and the sample-ratio check — so an analyst writes one query per
//! experiment.
//!
//! The report is a query over the session's own functions (`metric_moments`,
//! `welch_test_stats`, `bayes_test_stats`, `srm_test`), written when the table is
//! scanned, once the metric columns are known; `EXPLAIN` shows it like any query.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableType, col};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::constant;
use crate::names;

/// Sample-ratio mismatch is flagged below this p-value (GrowthBook's default).
const SRM_THRESHOLD: f64 = 0.001;

#[derive(Debug)]
pub(crate) struct ExperimentReportFunc;

/// A table name or a query, as given.
#[derive(Debug, Clone)]
struct Source {
    /// SQL for a derived table: `"name"` or `(query)`.
    sql: String,
}

impl Source {
    /// A query when the text starts like one, otherwise a table name.
    fn parse(argument: &str, text: &str) -> Result<Source> {
        let first = text.split_whitespace().next().unwrap_or_default();
        if ["select", "with", "values", "("]
            .iter()
            .any(|k| first.to_lowercase().starts_with(k))
        {
            return Ok(Source {
                sql: format!("({text})"),
            });
        }
        let name = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(text)
            .and_then(|mut p| {
                let name = p.parse_object_name(false)?;
                p.expect_token(&Token::EOF)?;
                Ok(name)
            })
            .ok()
            .and_then(|name| names::table_name(&name).ok());
        match name {
            Some(name) => Ok(Source {
                sql: names::quote(&name),
            }),
            None => plan_err!(
                "experiment_report: {argument} must name a table or be a SELECT query, got '{text}'"
            ),
        }
    }
}

#[derive(Debug)]
struct ExperimentReport {
    exposures: Source,
    metrics: Source,
    weights: Option<Vec<f64>>,
    alpha: f64,
}

/// The report's columns.
fn report_schema() -> SchemaRef {
    let double = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, true),
        Field::new("variation", DataType::Int64, true),
        Field::new("users", DataType::Int64, true),
        double("mean"),
        double("stddev"),
        double("diff"),
        double("lift"),
        double("lift_ci_low"),
        double("lift_ci_high"),
        double("p_value"),
        double("chance_to_win"),
        double("srm_p_value"),
        Field::new("srm_flag", DataType::Boolean, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

fn text_argument(session: &dyn Session, expr: &Expr, argument: &str) -> Result<String> {
    match constant(session, expr)?.try_as_str() {
        Some(Some(text)) => Ok(text.trim().to_string()),
        _ => plan_err!("experiment_report: {argument} must be text (a table name or a query)"),
    }
}

fn weights_argument(session: &dyn Session, expr: &Expr) -> Result<Option<Vec<f64>>> {
    let value = constant(session, expr)?;
    if value.is_null() {
        return Ok(None);
    }
    let weights: Option<Vec<f64>> = match &value {
        ScalarValue::List(list) if list.len() == 1 => {
            let values = arrow::compute::cast(&list.value(0), &DataType::Float64)?;
            let values = values.as_primitive::<arrow::datatypes::Float64Type>();
            (values.null_count() == 0).then(|| values.values().to_vec())
        }
        _ => None,
    };
    match weights {
        Some(w) if !w.is_empty() && w.iter().all(|v| v.is_finite() && *v >= 0.0) => Ok(Some(w)),
        _ => plan_err!(
            "experiment_report: weights must be an array of non-negative numbers, such as [0.5, 0.5]"
        ),
    }
}

impl TableFunctionImpl for ExperimentReportFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (session, exprs) = (args.session(), args.exprs());
        if !(2..=4).contains(&exprs.len()) {
            return plan_err!(
                "experiment_report(exposures, metrics [, weights [, alpha]]) takes 2 to 4 arguments, got {}",
                exprs.len()
            );
        }
        let exposures = text_argument(session, &exprs[0], "exposures")?;
        let metrics = text_argument(session, &exprs[1], "metrics")?;
        let weights = match exprs.get(2) {
            Some(e) => weights_argument(session, e)?,
            None => None,
        };
        let alpha = match exprs.get(3).map(|e| constant(session, e)).transpose()? {
            None => 0.05,
            Some(v) => match v.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(a)) if a > 0.0 && a < 1.0 => a,
                _ => return plan_err!("experiment_report: alpha must be between 0 and 1"),
            },
        };
        Ok(Arc::new(ExperimentReport {
            exposures: Source::parse("exposures", &exposures)?,
            metrics: Source::parse("metrics", &metrics)?,
            weights,
            alpha,
        }))
    }
}

/// A metric column of the metrics source, and how it is reduced per unit.
struct Metric {
    name: String,
    /// Booleans count once per unit (any true row), numbers are summed.
    boolean: bool,
}

impl ExperimentReport {
    /// The columns of a source, from planning it.
    async fn columns(state: &SessionState, source: &Source) -> Result<Vec<Field>> {
        let plan = state
            .create_logical_plan(&format!("SELECT * FROM {} AS s LIMIT 0", source.sql))
            .await?;
        Ok(plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect())
    }

    /// The report query over the given columns.
    fn query(&self, unit: &str, variation: &str, metric_unit: &str, metrics: &[Metric]) -> String {
        let q = names::quote;
        let measured: Vec<String> = metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let reduce = if m.boolean { "max" } else { "sum" };
                format!("{reduce}(CAST({} AS DOUBLE)) AS m{i}", q(&m.name))
            })
            .collect();
        let moments: Vec<String> = (0..metrics.len())
            .map(|i| format!("metric_moments(coalesce(m.m{i}, 0.0)) AS m{i}"))
            .collect();
        let alpha = self.alpha;
        let per_metric: Vec<String> = metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let arms = format!(
                    "c.m{i}['n'], c.m{i}['mean'], c.m{i}['variance'], t.m{i}['n'], t.m{i}['mean'], t.m{i}['variance']"
                );
                format!(
                    "SELECT {i} AS metric_order, '{name}' AS metric, t.variation, t.users, t.m{i} AS m, \
                     CASE WHEN t.variation <> c.variation THEN welch_test_stats({arms}, {alpha}) END AS w, \
                     CASE WHEN t.variation <> c.variation THEN bayes_test_stats({arms}, 0, 0, {alpha}) END AS b \
                     FROM per_variation t, control c",
                    name = m.name.replace('\'', "''"),
                )
            })
            .collect();
        let weights = match &self.weights {
            Some(w) => format!(
                "[{}]",
                w.iter().map(f64::to_string).collect::<Vec<_>>().join(", ")
            ),
            None => "array_agg(1.0)".to_string(),
        };
        format!(
            "WITH exposed AS (\
               SELECT unit, min(variation) AS variation FROM (\
                 SELECT {unit} AS unit, CAST({variation} AS BIGINT) AS variation FROM {exposures} AS x) AS x \
               WHERE unit IS NOT NULL AND variation IS NOT NULL \
               GROUP BY unit HAVING count(DISTINCT variation) = 1), \
             measured AS (\
               SELECT {metric_unit} AS unit, {measured} FROM {metrics_source} AS m GROUP BY {metric_unit}), \
             per_variation AS (\
               SELECT e.variation, count(*) AS users, {moments} \
               FROM exposed e LEFT JOIN measured m ON e.unit = m.unit GROUP BY e.variation), \
             control AS (SELECT * FROM per_variation ORDER BY variation LIMIT 1), \
             srm AS (SELECT srm_test(array_agg(users ORDER BY variation), {weights}) AS s FROM per_variation), \
             report AS ({report}) \
             SELECT metric, variation, users, \
               m['mean'] AS mean, sqrt(m['variance']) AS stddev, w['estimate'] AS diff, \
               w['rel_estimate'] AS lift, w['rel_ci_low'] AS lift_ci_low, w['rel_ci_high'] AS lift_ci_high, \
               w['rel_p_value'] AS p_value, b['chance_to_win'] AS chance_to_win, \
               s['p_value'] AS srm_p_value, s['p_value'] < {SRM_THRESHOLD} AS srm_flag, \
               coalesce(w['error'], b['error'], s['error']) AS error \
             FROM report, srm ORDER BY metric_order, variation",
            unit = q(unit),
            variation = q(variation),
            exposures = self.exposures.sql,
            metric_unit = q(metric_unit),
            measured = measured.join(", "),
            metrics_source = self.metrics.sql,
            moments = moments.join(", "),
            report = per_metric.join(" UNION ALL "),
        )
    }
}

#[async_trait]
impl TableProvider for ExperimentReport {
    fn schema(&self) -> SchemaRef {
        report_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return internal_err!("experiment_report needs a SQL session");
        };
        let exposures = Self::columns(state, &self.exposures).await?;
        let [unit, variation, ..] = exposures.as_slice() else {
            return plan_err!(
                "experiment_report: exposures needs two columns, the unit id and the variation"
            );
        };
        if !variation.data_type().is_integer() {
            return plan_err!(
                "experiment_report: the variation (second column of exposures, {}) must be an integer, got {}",
                variation.name(),
                variation.data_type()
            );
        }
        let metric_columns = Self::columns(state, &self.metrics).await?;
        let Some((metric_unit, rest)) = metric_columns.split_first() else {
            return plan_err!("experiment_report: metrics has no columns");
        };
        let metrics: Vec<Metric> = rest
            .iter()
            .filter(|f| f.data_type().is_numeric() || *f.data_type() == DataType::Boolean)
            .map(|f| Metric {
                name: f.name().clone(),
                boolean: *f.data_type() == DataType::Boolean,
            })
            .collect();
        if metrics.is_empty() {
            return plan_err!(
                "experiment_report: metrics needs a numeric or boolean column after the unit id"
            );
        }
        let sql = self.query(unit.name(), variation.name(), metric_unit.name(), &metrics);
        let mut plan = state.create_logical_plan(&sql).await?;
        if let Some(projection) = projection {
            let schema = report_schema();
            let columns: Vec<Expr> = projection
                .iter()
                .map(|i| col(schema.field(*i).name()))
                .collect();
            plan = LogicalPlanBuilder::from(plan).project(columns)?.build()?;
        }
        let physical = state.create_physical_plan(&plan).await?;
        let expected = match projection {
            Some(p) => report_schema().project(p)?,
            None => report_schema().as_ref().clone(),
        };
        let types = |s: &Schema| -> Vec<(String, DataType)> {
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect()
        };
        if types(&physical.schema()) != types(&expected) {
            return internal_err!(
                "experiment_report: the report query returned {:?}, not {:?}",
                physical.schema(),
                expected
            );
        }
        Ok(physical)
    }
}

//! Prepared queries planned once, with their parameters unbound, and bound at
//! each execution (a generic plan, as PostgreSQL calls it).
//!
//! Planning a query with DataFusion takes some 0.2 ms even for a point lookup,
//! and a prepared statement bound to new values each time would be planned
//! each time. Instead its statement, `$1` and all, is planned once:
//! - DataFusion infers each parameter's type from where it stands (`id = $1`
//!   gives `$1` the type of `id`); a query whose parameters are not all typed
//!   so, or typed as something [`BINDABLE`] does not list, is not planned
//!   generically;
//! - the optimizer runs with the parameters in place, and a comparison of a
//!   column with a parameter is pushed into the engine scan like one with a
//!   constant (provider.rs); the scan settles what it reads when it is bound
//!   (scan.rs);
//! - elsewhere each parameter becomes a call of [`Parameter`], which the
//!   physical planner carries into the filters and projections of the plan;
//!   binding replaces those calls with the values.
//!
//! A query sent as text with literals where a prepared one would have
//! parameters (`WHERE id = 5000`, each time another id) runs on the generic
//! plan of its shape the same way: [`parameterize`] takes the literals a WHERE
//! compares columns with out as parameters, and they are bound as values when
//! each is of the kind of its parameter's type (a number for a number, a
//! string for a string), where DataFusion would have converted the literal to
//! that type itself.
//!
//! The plan is kept like any other (plan_cache.rs), under the same conditions.
//! A plan that cannot take the values of one execution (a NULL where the scan
//! needs a value, a value that does not convert) leaves that execution to the
//! statement with its values written in, planned as before: the generic plan
//! only ever saves planning, it never answers differently.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Literal as LiteralExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, SetExpr, Statement, Value, ValueWithSpan, visit_expressions,
};

use cohortdb_engine::Catalog;

use crate::error::Result;
use crate::plan_cache;
use crate::prepare::ParamValue;
use crate::scan::EngineScanExec;

/// The parameter types a generic plan takes: those whose values convert from
/// text exactly as the same value written as a literal would (both are arrow
/// casts from a string).
const BINDABLE: &[DataType] = &[
    DataType::Boolean,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::UInt8,
    DataType::UInt16,
    DataType::UInt32,
    DataType::UInt64,
    DataType::Float32,
    DataType::Float64,
    DataType::Utf8,
    DataType::LargeUtf8,
    DataType::Utf8View,
    DataType::Date32,
];

/// A prepared query's physical plan with its parameters unbound.
#[derive(Debug, Clone)]
pub(crate) struct Generic {
    plan: Arc<dyn ExecutionPlan>,
    /// The type of `$1`, `$2`, ... as the plan takes them.
    types: Arc<[DataType]>,
}

/// The generic plan of `statement` (a query with parameters), or `None` when it
/// cannot have one: a parameter of no or another type, a query whose plan
/// would not be the same when planned again (plan_cache.rs), or one whose
/// parameters end up where binding does not reach.
pub(crate) async fn plan(
    state: &SessionState,
    catalog: &Catalog,
    statement: Statement,
) -> Result<Option<Generic>> {
    let logical = crate::session::plan_with(state, catalog, statement).await?;
    if !plan_cache::reusable_logical(&logical) {
        return Ok(None);
    }
    let Some(types) = parameter_types(&logical)? else {
        return Ok(None);
    };
    let optimized = state.optimize(&logical)?;
    let optimized = with_parameter_calls(optimized)?;
    let plan = state
        .query_planner()
        .create_physical_plan(&optimized, state)
        .await?;
    if !plan_cache::reusable_physical(&plan) || !parameters_bindable(&plan) {
        return Ok(None);
    }
    Ok(Some(Generic {
        plan,
        types: types.into(),
    }))
}

/// The types of `$1..$n`, when each is typed and [`BINDABLE`].
fn parameter_types(plan: &LogicalPlan) -> Result<Option<Vec<DataType>>> {
    let mut typed = plan.get_parameter_types()?;
    let mut types = Vec::with_capacity(typed.len());
    for i in 1..=typed.len() {
        match typed.remove(&format!("${i}")).flatten() {
            Some(t) if BINDABLE.contains(&t) => types.push(t),
            _ => return Ok(None),
        }
    }
    Ok(Some(types))
}

impl Generic {
    /// The plan with `values` in place of its parameters, ready to run; `None`
    /// when the values do not fit it (they are then written into the statement
    /// and planned with it). `declared` holds the types the client gave the
    /// parameters: a value converts to that type first, as its literal would.
    pub(crate) fn bind(
        &self,
        values: &[ParamValue],
        declared: &[Option<DataType>],
    ) -> Option<Arc<dyn ExecutionPlan>> {
        if values.len() != self.types.len() {
            return None;
        }
        let values = values
            .iter()
            .zip(self.types.iter())
            .enumerate()
            .map(|(i, (value, planned))| {
                scalar(value, declared.get(i).cloned().flatten().as_ref(), planned)
            })
            .collect::<Option<Vec<_>>>()?;
        bind_plan(&self.plan, &values).ok().flatten()
    }
}

impl Generic {
    /// The plan with the `literals` of a query sent as text in place of its
    /// parameters (see [`parameterize`]); `None` when one is of another kind
    /// than its parameter's type.
    pub(crate) fn bind_literals(&self, literals: &[Literal]) -> Option<Arc<dyn ExecutionPlan>> {
        let fits = literals
            .iter()
            .zip(self.types.iter())
            .all(|(literal, t)| match literal {
                // Not Float32: DataFusion compares a REAL column with a literal
                // as a DOUBLE, which a REAL value would not equal.
                Literal::Number(_) => t.is_integer() || *t == DataType::Float64,
                Literal::String(_) => {
                    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                }
            });
        if !fits {
            return None;
        }
        let values: Vec<ParamValue> = literals
            .iter()
            .map(|(Literal::Number(text) | Literal::String(text))| ParamValue::Text(text.clone()))
            .collect();
        self.bind(&values, &vec![None; values.len()])
    }
}

/// A literal [`parameterize`] took out of a query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    /// As written: `5000`, `1.5`.
    Number(String),
    /// Its value: `it's` for `'it''s'`.
    String(String),
}

/// The shape of a query sent as text: its statement with each number or
/// string literal that its WHERE compares with a column (`id = 5000`,
/// `'x' < name`, under AND, OR and parentheses) replaced by a parameter, and
/// those literals in order; `None` when there is none, and for a query that
/// has parameters of its own (sent as text, it fails for want of their values).
pub(crate) fn parameterize(statement: &Statement) -> Option<(Statement, Vec<Literal>)> {
    let Statement::Query(query) = statement else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    select.selection.as_ref()?;
    let has_parameters = visit_expressions(statement, |e| match e {
        SqlExpr::Value(ValueWithSpan {
            value: Value::Placeholder(_),
            ..
        }) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if has_parameters.is_break() {
        return None;
    }
    let mut shape = statement.clone();
    let mut literals = Vec::new();
    if let Statement::Query(query) = &mut shape
        && let SetExpr::Select(select) = query.body.as_mut()
        && let Some(selection) = &mut select.selection
    {
        take_literals(selection, &mut literals);
    }
    (!literals.is_empty()).then_some((shape, literals))
}

fn take_literals(expr: &mut SqlExpr, literals: &mut Vec<Literal>) {
    match expr {
        SqlExpr::Nested(inner) => take_literals(inner, literals),
        SqlExpr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And | BinaryOperator::Or => {
                take_literals(left, literals);
                take_literals(right, literals);
            }
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                if is_column(left) {
                    take_literal(right, literals);
                } else if is_column(right) {
                    take_literal(left, literals);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

fn is_column(expr: &SqlExpr) -> bool {
    matches!(
        expr,
        SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_)
    )
}

fn take_literal(expr: &mut SqlExpr, literals: &mut Vec<Literal>) {
    let SqlExpr::Value(ValueWithSpan { value, span }) = expr else {
        return;
    };
    let literal = match value {
        Value::Number(text, false) => Literal::Number(text.clone()),
        Value::SingleQuotedString(text) => Literal::String(text.clone()),
        _ => return,
    };
    literals.push(literal);
    let placeholder = Value::Placeholder(format!("${}", literals.len()));
    *expr = SqlExpr::Value(placeholder.with_span(*span));
}

/// A parameter value as a scalar of the plan's type `planned`.
fn scalar(
    value: &ParamValue,
    declared: Option<&DataType>,
    planned: &DataType,
) -> Option<ScalarValue> {
    let text = match value {
        ParamValue::Null => return ScalarValue::try_from(planned).ok(),
        ParamValue::Text(text) => ScalarValue::Utf8(Some(text.clone())),
        ParamValue::Bytes(_) => return None,
    };
    let declared = match declared {
        Some(t) if BINDABLE.contains(t) => text.cast_to(t).ok()?,
        Some(_) => return None,
        None => text,
    };
    declared.cast_to(planned).ok()
}

/// `plan` with `values[i]` in place of parameter `$(i+1)`; `None` when a scan
/// cannot take them.
fn bind_plan(
    plan: &Arc<dyn ExecutionPlan>,
    values: &[ScalarValue],
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<EngineScanExec>() {
        // A scan holds no state of its own run: one without parameters runs
        // again as it is.
        return match scan.is_unbound() {
            true => scan.bind(values),
            false => Ok(Some(Arc::clone(plan))),
        };
    }
    let mut children = Vec::with_capacity(plan.children().len());
    for child in plan.children() {
        match bind_plan(child, values)? {
            Some(bound) => children.push(bound),
            None => return Ok(None),
        }
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            datafusion::error::DataFusionError::Internal("a filter has one input".into())
        })?;
        let bound = FilterExecBuilder::from(filter)
            .with_predicate(bind_expr(filter.predicate(), values)?)
            .with_input(input)
            .build()?;
        return Ok(Some(Arc::new(bound)));
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let exprs = projection
            .expr()
            .iter()
            .map(|p| {
                Ok(ProjectionExpr::new(
                    bind_expr(&p.expr, values)?,
                    p.alias.clone(),
                ))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let input = children.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("a projection has one input".into())
        })?;
        return Ok(Some(Arc::new(ProjectionExec::try_new(exprs, input)?)));
    }
    // Anything else holds no parameter (parameters_bindable); new children
    // give it a fresh state to run with.
    let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    Arc::clone(plan)
        .replace_children(children, options)
        .map(Some)
}

/// `expr` with each parameter call replaced by its value.
fn bind_expr(
    expr: &Arc<dyn PhysicalExpr>,
    values: &[ScalarValue],
) -> DfResult<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| match parameter_index(&e) {
            Some(i) => match values.get(i) {
                Some(value) => Ok(Transformed::yes(
                    Arc::new(LiteralExpr::new(value.clone())) as Arc<dyn PhysicalExpr>
                )),
                None => exec_err!("parameter ${} has no value", i + 1),
            },
            None => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
}

/// The 0-based index of a parameter call.
fn parameter_index(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
    call.fun()
        .inner()
        .downcast_ref::<Parameter>()
        .map(|p| p.index)
}

/// Whether every parameter call in `plan` sits in a filter or a projection,
/// where [`bind_plan`] replaces it.
fn parameters_bindable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    !plan
        .exists(|node| {
            if node.is::<FilterExec>() || node.is::<ProjectionExec>() {
                return Ok(false);
            }
            let mut found = false;
            node.apply_expressions(&mut |expr| {
                found = expr.exists(|e| Ok(parameter_index(e).is_some()))?;
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })?;
            Ok(found)
        })
        .unwrap_or(true)
}

/// The optimized plan with each parameter outside table scans as a call of
/// [`Parameter`] (scans keep theirs: scan.rs binds them itself).
fn with_parameter_calls(plan: LogicalPlan) -> Result<LogicalPlan> {
    let plan = plan
        .transform_up_with_subqueries(|node| {
            if matches!(node, LogicalPlan::TableScan(_)) {
                return Ok(Transformed::no(node));
            }
            node.map_expressions(|expr| {
                expr.transform_up(|e| match e {
                    Expr::Placeholder(p) => Ok(Transformed::yes(parameter_call(&p)?)),
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data;
    Ok(plan)
}

/// The 0-based index of parameter `$n` (`$1` is 0).
pub(crate) fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1)
}

fn parameter_call(placeholder: &Placeholder) -> DfResult<Expr> {
    let (Some(index), Some(field)) = (index_of(&placeholder.id), &placeholder.field) else {
        return exec_err!("parameter {} has no type", placeholder.id);
    };
    let udf = ScalarUDF::new_from_impl(Parameter {
        index,
        field: Arc::clone(field),
        signature: Signature::nullary(Volatility::Volatile),
    });
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        Vec::new(),
    )))
}

/// A parameter of a generic plan: replaced by its value when the plan is bound,
/// and an error if ever evaluated unbound.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Parameter {
    /// 0-based: `$1` is 0.
    index: usize,
    field: FieldRef,
    signature: Signature,
}

impl ScalarUDFImpl for Parameter {
    fn name(&self) -> &str {
        "parameter"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.field.data_type().clone())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> DfResult<FieldRef> {
        Ok(Arc::clone(&self.field))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("parameter ${} has no value", self.index + 1)
    }
}

/// `expr` with each parameter replaced by a value of its type, or `None` when
/// one is untyped: what a filter on parameters would be like with values in
/// place, for deciding whether a scan can take it (provider.rs).
pub(crate) fn with_sample_values(expr: &Expr) -> Option<Expr> {
    expr.clone()
        .transform_up(|e| match e {
            Expr::Placeholder(Placeholder {
                field: Some(field), ..
            }) => Ok(Transformed::yes(Expr::Literal(
                ScalarValue::new_default(field.data_type())?,
                None,
            ))),
            Expr::Placeholder(p) => exec_err!("parameter {} has no type", p.id),
            other => Ok(Transformed::no(other)),
        })
        .ok()
        .map(|t| t.data)
}

/// `expr` with `values[i]` in place of `$(i+1)`.
pub(crate) fn bind_logical(expr: &Expr, values: &[ScalarValue]) -> DfResult<Expr> {
    expr.clone()
        .transform_up(|e| match e {
            Expr::Placeholder(p) => match index_of(&p.id).and_then(|i| values.get(i)) {
                Some(value) => Ok(Transformed::yes(Expr::Literal(value.clone(), None))),
                None => exec_err!("parameter {} has no value", p.id),
            },
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}

/// Whether `expr` holds a parameter.
pub(crate) fn has_placeholder(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::displayable;
    use futures::TryStreamExt;

    use super::*;
    use crate::error::Error;
    use crate::session::{ParsedStatement, Session};

    async fn session() -> Session {
        let session = Session::new(Arc::new(Catalog::in_memory()));
        session
            .execute(
                "CREATE TABLE lookup (id BIGINT NOT NULL, name TEXT);
                 INSERT INTO lookup VALUES (1, 'a'), (2, 'b'), (3, NULL)",
            )
            .await
            .expect("setup");
        session
    }

    /// The statement `sql` as prepared, with its parameter types.
    async fn prepare(session: &Session, sql: &str) -> (ParsedStatement, Vec<Option<DataType>>) {
        let statement = session.parse(sql).expect("parses").remove(0);
        let types = session.describe(&statement).await.expect("describes");
        (statement, types.parameters)
    }

    /// The rows of `statement` bound to `values`, as a table.
    async fn execute(
        session: &Session,
        (statement, types): &(ParsedStatement, Vec<Option<DataType>>),
        values: &[&str],
    ) -> Result<String> {
        let values: Vec<ParamValue> = values
            .iter()
            .map(|v| match *v {
                "NULL" => ParamValue::Null,
                v => ParamValue::Text(v.to_string()),
            })
            .collect();
        let bound = session.bind(statement, &values, types)?;
        let batches: Vec<_> = session.run(bound).await?.try_collect().await?;
        Ok(pretty_format_batches(&batches)
            .expect("formats")
            .to_string())
    }

    /// What the session keeps for prepared query `sql`.
    fn kept(session: &Session, sql: &str) -> Option<Option<Generic>> {
        let query = session.parse(sql).expect("parses")[0]
            .statement()
            .to_string();
        let version = session.catalog().version();
        let state = session.lock();
        state.plans.get_generic(&query, version, &state.settings)
    }

    #[tokio::test]
    async fn a_lookup_is_planned_once_and_bound_to_each_value() -> Result<()> {
        let session = session().await;
        let sql = "SELECT name FROM lookup WHERE id = $1";
        let lookup = prepare(&session, sql).await;
        assert_eq!(lookup.1, [Some(DataType::Int64)]);
        let one = "+------+\n| name |\n+------+\n| a    |\n+------+";
        assert_eq!(execute(&session, &lookup, &["1"]).await?, one);
        let two = "+------+\n| name |\n+------+\n| b    |\n+------+";
        assert_eq!(execute(&session, &lookup, &["2"]).await?, two);
        assert_eq!(execute(&session, &lookup, &["4"]).await?, "++\n++");
        // One plan, kept; bound, its scan evaluates the comparison itself.
        let generic = kept(&session, sql).flatten().expect("a generic plan");
        let bound = generic
            .bind(&[ParamValue::Text("2".into())], &[Some(DataType::Int64)])
            .expect("binds");
        let shown = displayable(bound.as_ref()).indent(true).to_string();
        assert!(shown.contains("EngineScanExec"), "{shown}");
        assert!(!shown.contains("FilterExec"), "{shown}");
        // A row added since is read: the plan is made again.
        session
            .execute("INSERT INTO lookup VALUES (4, 'd')")
            .await?;
        let four = "+------+\n| name |\n+------+\n| d    |\n+------+";
        assert_eq!(execute(&session, &lookup, &["4"]).await?, four);
        Ok(())
    }

    #[tokio::test]
    async fn parameters_in_projections_and_filters_are_bound() -> Result<()> {
        let session = session().await;
        let sql = "SELECT id + $1 AS next, name FROM lookup WHERE name = $2 OR id > $1";
        let query = prepare(&session, sql).await;
        assert_eq!(query.1, [Some(DataType::Int64), Some(DataType::Utf8)]);
        let rows = execute(&session, &query, &["2", "a"]).await?;
        let literal = session
            .execute("SELECT id + 2 AS next, name FROM lookup WHERE name = 'a' OR id > 2")
            .await?;
        assert_eq!(
            rows,
            pretty_format_batches(&literal)
                .expect("formats")
                .to_string()
        );
        assert!(rows.contains("| 3    | a    |"), "{rows}");
        assert!(kept(&session, sql).flatten().is_some());
        Ok(())
    }

    #[tokio::test]
    async fn values_a_plan_cannot_take_run_written_into_the_query() -> Result<()> {
        let session = session().await;
        let lookup = prepare(&session, "SELECT name FROM lookup WHERE id = $1").await;
        // NULL is no value the scan compares with; = NULL is true of no row.
        assert_eq!(execute(&session, &lookup, &["NULL"]).await?, "++\n++");
        // A value that is no BIGINT fails as its literal does.
        let bound = execute(&session, &lookup, &["x"])
            .await
            .expect_err("not a number");
        let literal = session
            .execute("SELECT name FROM lookup WHERE id = CAST('x' AS BIGINT)")
            .await
            .expect_err("not a number");
        assert_eq!(bound.to_string(), literal.to_string());
        assert_eq!(bound.sqlstate(), "22P02");
        Ok(())
    }

    #[test]
    fn literals_compared_with_columns_become_parameters() -> Result<()> {
        let sql = "SELECT a, 7 FROM t WHERE (a = 1 OR 'x''y' < t.b) AND c + 1 = 2 AND d = -3 AND e LIKE 'z'";
        let statement = crate::session::parse_sql(sql)?.remove(0);
        let (shape, literals) = parameterize(statement.statement()).expect("literals");
        assert_eq!(
            shape.to_string(),
            "SELECT a, 7 FROM t WHERE (a = $1 OR $2 < t.b) AND c + 1 = 2 AND d = -3 AND e LIKE 'z'"
        );
        assert_eq!(
            literals,
            [Literal::Number("1".into()), Literal::String("x'y".into())]
        );
        let none = crate::session::parse_sql("SELECT a FROM t WHERE a + 1 = 2")?.remove(0);
        assert!(parameterize(none.statement()).is_none());
        // A query with parameters of its own is left as it is: run as text,
        // it fails for want of their values.
        let own = crate::session::parse_sql("SELECT a FROM t WHERE a = $1 AND b = 2")?.remove(0);
        assert!(parameterize(own.statement()).is_none());
        Ok(())
    }

    #[tokio::test]
    async fn queries_sent_as_text_run_on_the_plan_of_their_shape() -> Result<()> {
        let session = session().await;
        let rows = |sql: &'static str| {
            let session = &session;
            async move {
                let batches = session.execute(sql).await?;
                Ok::<_, Error>(
                    pretty_format_batches(&batches)
                        .expect("formats")
                        .to_string(),
                )
            }
        };
        let two = "+------+\n| name |\n+------+\n| b    |\n+------+";
        let one = "+------+\n| name |\n+------+\n| a    |\n+------+";
        assert_eq!(rows("SELECT name FROM lookup WHERE id = 1").await?, one);
        assert_eq!(rows("SELECT name FROM lookup WHERE id = 2").await?, two);
        let shape = "SELECT name FROM lookup WHERE id = $1";
        assert!(kept(&session, shape).flatten().is_some());
        let id = rows("SELECT id FROM lookup WHERE name = 'b'").await?;
        assert_eq!(id, "+----+\n| id |\n+----+\n| 2  |\n+----+");
        assert!(
            kept(&session, "SELECT id FROM lookup WHERE name = $1")
                .flatten()
                .is_some()
        );
        // Literals of another kind than the column's type are DataFusion's
        // to convert: planned with the query.
        assert_eq!(rows("SELECT name FROM lookup WHERE id = '2'").await?, two);
        assert_eq!(rows("SELECT name FROM lookup WHERE id = 2.0").await?, two);
        assert_eq!(
            rows("SELECT name FROM lookup WHERE id = 2.5").await?,
            "++\n++"
        );
        // A parameter of the text's own has no value.
        let sql = "SELECT name FROM lookup WHERE id = $1 AND name = 'a'";
        assert!(rows(sql).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn queries_without_a_generic_plan_are_planned_per_execution() -> Result<()> {
        let session = session().await;
        // A limit is a number the physical plan holds, not an expression.
        let sql = "SELECT name FROM lookup WHERE id >= $1 ORDER BY id LIMIT $1";
        let query = prepare(&session, sql).await;
        let rows = execute(&session, &query, &["2"]).await?;
        assert_eq!(
            rows,
            "+------+\n| name |\n+------+\n| b    |\n|      |\n+------+"
        );
        assert!(matches!(kept(&session, sql), Some(None)));
        Ok(())
    }
}

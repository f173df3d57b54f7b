//! Translating DataFusion filter expressions into engine [`Predicate`]s.
//!
//! Only what the engine evaluates exactly as DataFusion would is translated:
//! comparisons of a column with a constant of the column's type, IN lists, NULL
//! tests, BETWEEN and their AND/OR/NOT combinations, and `in_audience(user_id,
//! 'expr')` on a column of user ids (the audience evaluated once, the scan
//! skipping row groups outside its ids). Anything else returns `None` and stays
//! in DataFusion's filter.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Schema};
use cohortdb_engine::privacy::Policy;
use cohortdb_engine::tags::{Tags, UserFilter};
use cohortdb_engine::{CmpOp, Predicate};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// The engine predicate equivalent to `expr` over a table with `schema`;
/// audiences are evaluated over `tags` under `policy`.
pub(crate) fn translate(
    expr: &Expr,
    schema: &Schema,
    tags: &Arc<Tags>,
    policy: &Policy,
) -> Option<Predicate> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => Some(Predicate::And(vec![
                translate(left, schema, tags, policy)?,
                translate(right, schema, tags, policy)?,
            ])),
            Operator::Or => Some(Predicate::Or(vec![
                translate(left, schema, tags, policy)?,
                translate(right, schema, tags, policy)?,
            ])),
            _ => comparison(left, *op, right, schema),
        },
        Expr::Not(inner) => Some(Predicate::Not(Box::new(translate(
            inner, schema, tags, policy,
        )?))),
        // Not for a role with a minimum audience size: left to the function,
        // which refuses it.
        Expr::ScalarFunction(function)
            if function.name() == "in_audience" && policy.min_audience_size == 0 =>
        {
            let [id, audience] = function.args.as_slice() else {
                return None;
            };
            let (index, data_type) = column(id, schema)?;
            let Expr::Literal(
                ScalarValue::Utf8(Some(text))
                | ScalarValue::Utf8View(Some(text))
                | ScalarValue::LargeUtf8(Some(text)),
                _,
            ) = audience
            else {
                return None;
            };
            // An expression that does not evaluate stays with the function,
            // which reports why.
            let users = tags.evaluate(text, policy).ok()?;
            let filter = UserFilter::new(Arc::clone(tags), users, &data_type).ok()?;
            Some(Predicate::InAudience {
                column: index,
                filter: Arc::new(filter),
            })
        }
        Expr::IsNull(inner) => Some(Predicate::IsNull {
            column: column(inner, schema)?.0,
            negated: false,
        }),
        Expr::IsNotNull(inner) => Some(Predicate::IsNull {
            column: column(inner, schema)?.0,
            negated: true,
        }),
        Expr::InList(in_list) => {
            let (index, data_type) = column(&in_list.expr, schema)?;
            let values = in_list
                .list
                .iter()
                .map(|e| constant(e, &data_type))
                .collect::<Option<Vec<_>>>()?;
            Some(Predicate::InList {
                column: index,
                values,
                negated: in_list.negated,
            })
        }
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            let range = Predicate::And(vec![
                comparison(expr, Operator::GtEq, low, schema)?,
                comparison(expr, Operator::LtEq, high, schema)?,
            ]);
            Some(if *negated {
                Predicate::Not(Box::new(range))
            } else {
                range
            })
        }
        _ => None,
    }
}

fn comparison(left: &Expr, op: Operator, right: &Expr, schema: &Schema) -> Option<Predicate> {
    let op = cmp_op(op)?;
    if let Some((index, data_type)) = column(left, schema) {
        return Some(Predicate::Compare {
            column: index,
            op,
            value: constant(right, &data_type)?,
        });
    }
    let (index, data_type) = column(right, schema)?;
    Some(Predicate::Compare {
        column: index,
        op: flip(op),
        value: constant(left, &data_type)?,
    })
}

fn cmp_op(op: Operator) -> Option<CmpOp> {
    Some(match op {
        Operator::Eq => CmpOp::Eq,
        Operator::NotEq => CmpOp::NotEq,
        Operator::Lt => CmpOp::Lt,
        Operator::LtEq => CmpOp::LtEq,
        Operator::Gt => CmpOp::Gt,
        Operator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

/// `a < b` is `b > a`.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::LtEq => CmpOp::GtEq,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::GtEq => CmpOp::LtEq,
        other => other,
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    )
}

/// A table column, possibly under a cast between string types (which DataFusion
/// adds to compare a TEXT column with a string literal of another string type).
fn column(expr: &Expr, schema: &Schema) -> Option<(usize, DataType)> {
    match expr {
        Expr::Column(c) => {
            let index = schema.index_of(&c.name).ok()?;
            Some((index, schema.field(index).data_type().clone()))
        }
        Expr::Cast(cast) if is_string(cast.field.data_type()) => {
            let (index, data_type) = column(&cast.expr, schema)?;
            is_string(&data_type).then_some((index, data_type))
        }
        _ => None,
    }
}

/// A non-NULL literal as a one-element array of the column's type. Literals of
/// another type are accepted only between string types, where the value is the same.
fn constant(expr: &Expr, data_type: &DataType) -> Option<ArrayRef> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    if value.is_null() {
        return None;
    }
    let value = match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
            if is_string(data_type) =>
        {
            ScalarValue::Utf8(Some(s.clone()))
        }
        other if &other.data_type() == data_type => other.clone(),
        _ => return None,
    };
    let array = value.to_array_of_size(1).ok()?;
    (array.data_type() == data_type).then(|| Arc::clone(&array))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Field;
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ])
    }

    fn translate(expr: &Expr, schema: &Schema) -> Option<Predicate> {
        super::translate(expr, schema, &Arc::new(Tags::default()), &Policy::new(0))
    }

    #[test]
    fn translates_what_the_engine_can_evaluate() {
        let s = schema();
        assert!(translate(&col("a").gt(lit(5i64)), &s).is_some());
        assert!(translate(&lit(5i64).lt(col("a")).and(col("s").eq(lit("x"))), &s).is_some());
        assert!(translate(&col("a").in_list(vec![lit(1i64), lit(2i64)], true), &s).is_some());
        assert!(
            translate(
                &col("s")
                    .is_null()
                    .or(col("a").between(lit(1i64), lit(3i64))),
                &s
            )
            .is_some()
        );
    }

    #[test]
    fn leaves_the_rest_to_datafusion() {
        let s = schema();
        // Type mismatch: an Int32 literal against an Int64 column.
        assert!(translate(&col("a").gt(lit(5i32)), &s).is_none());
        // Arithmetic, NULL literals and unknown columns.
        assert!(translate(&(col("a") + lit(1i64)).gt(lit(5i64)), &s).is_none());
        assert!(translate(&col("a").eq(lit(ScalarValue::Int64(None))), &s).is_none());
        assert!(translate(&col("b").eq(lit(1i64)), &s).is_none());
        // One untranslatable side makes the whole AND untranslatable.
        assert!(translate(&col("a").gt(lit(5i64)).and(col("s").like(lit("x%"))), &s).is_none());
    }
}

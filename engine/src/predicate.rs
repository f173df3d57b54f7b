//! Row predicates the engine evaluates inside scans.
//!
//! This is the engine's own small filter vocabulary: comparisons of a column with a
//! constant, IN lists, NULL tests and their boolean combinations. The sql crate
//! translates the parts of a WHERE clause it can into a [`Predicate`]; whatever it
//! cannot translate stays in DataFusion. Evaluation follows SQL's three-valued
//! logic and a row is kept only when the predicate is TRUE.

use arrow::array::{Array, ArrayRef, BooleanArray, Datum, RecordBatch, Scalar};
use arrow::compute::kernels::{boolean, cmp};
use arrow::compute::{filter_record_batch, is_not_null, is_null};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A predicate over the columns of one table. Columns are indexes into the table's
/// schema; constants are one-element arrays of exactly the column's type (the
/// caller casts them).
#[derive(Debug, Clone)]
pub enum Predicate {
    Compare {
        column: usize,
        op: CmpOp,
        value: ArrayRef,
    },
    InList {
        column: usize,
        values: Vec<ArrayRef>,
        negated: bool,
    },
    IsNull {
        column: usize,
        negated: bool,
    },
    /// The column holds user ids; rows of the users of an audience.
    InAudience {
        column: usize,
        filter: std::sync::Arc<crate::tags::UserFilter>,
    },
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// Every column index the predicate reads.
    pub fn columns(&self, out: &mut Vec<usize>) {
        match self {
            Predicate::Compare { column, .. }
            | Predicate::InList { column, .. }
            | Predicate::IsNull { column, .. }
            | Predicate::InAudience { column, .. } => out.push(*column),
            Predicate::And(parts) | Predicate::Or(parts) => {
                parts.iter().for_each(|p| p.columns(out))
            }
            Predicate::Not(inner) => inner.columns(out),
        }
    }

    /// The same predicate over other column indexes: column `c` becomes `to(c)`.
    /// Used to evaluate it on a batch holding only some of the table's columns.
    pub fn remap(&self, to: &impl Fn(usize) -> usize) -> Predicate {
        match self {
            Predicate::Compare { column, op, value } => Predicate::Compare {
                column: to(*column),
                op: *op,
                value: ArrayRef::clone(value),
            },
            Predicate::InList {
                column,
                values,
                negated,
            } => Predicate::InList {
                column: to(*column),
                values: values.clone(),
                negated: *negated,
            },
            Predicate::IsNull { column, negated } => Predicate::IsNull {
                column: to(*column),
                negated: *negated,
            },
            Predicate::InAudience { column, filter } => Predicate::InAudience {
                column: to(*column),
                filter: std::sync::Arc::clone(filter),
            },
            Predicate::And(parts) => Predicate::And(parts.iter().map(|p| p.remap(to)).collect()),
            Predicate::Or(parts) => Predicate::Or(parts.iter().map(|p| p.remap(to)).collect()),
            Predicate::Not(inner) => Predicate::Not(Box::new(inner.remap(to))),
        }
    }

    /// Evaluates the predicate on a batch with the table's full schema; NULL means
    /// unknown.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        Ok(match self {
            Predicate::Compare { column, op, value } => {
                compare(batch.column(*column), *op, &Scalar::new(value))?
            }
            Predicate::InList {
                column,
                values,
                negated,
            } => {
                let array = batch.column(*column);
                let mut any = BooleanArray::from(vec![false; batch.num_rows()]);
                for value in values {
                    let eq = cmp::eq(array, &Scalar::new(value))?;
                    any = boolean::or_kleene(&any, &eq)?;
                }
                if *negated { boolean::not(&any)? } else { any }
            }
            Predicate::IsNull { column, negated } => {
                let array = batch.column(*column);
                if *negated {
                    is_not_null(array)?
                } else {
                    is_null(array)?
                }
            }
            Predicate::InAudience { column, filter } => {
                filter.matches(batch.column(*column).as_ref())?
            }
            Predicate::And(parts) => fold(parts, batch, boolean::and_kleene, true)?,
            Predicate::Or(parts) => fold(parts, batch, boolean::or_kleene, false)?,
            Predicate::Not(inner) => boolean::not(&inner.evaluate(batch)?)?,
        })
    }

    /// The rows of `batch` for which the predicate is TRUE.
    pub fn filter(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mask = self.evaluate(batch)?;
        // `filter_record_batch` drops rows whose mask is NULL, which is SQL's rule.
        Ok(filter_record_batch(batch, &mask)?)
    }
}

fn compare(array: &dyn Array, op: CmpOp, value: &dyn Datum) -> Result<BooleanArray> {
    Ok(match op {
        CmpOp::Eq => cmp::eq(&array, value)?,
        CmpOp::NotEq => cmp::neq(&array, value)?,
        CmpOp::Lt => cmp::lt(&array, value)?,
        CmpOp::LtEq => cmp::lt_eq(&array, value)?,
        CmpOp::Gt => cmp::gt(&array, value)?,
        CmpOp::GtEq => cmp::gt_eq(&array, value)?,
    })
}

type Combine =
    fn(&BooleanArray, &BooleanArray) -> std::result::Result<BooleanArray, arrow::error::ArrowError>;

fn fold(
    parts: &[Predicate],
    batch: &RecordBatch,
    combine: Combine,
    identity: bool,
) -> Result<BooleanArray> {
    let Some((first, rest)) = parts.split_first() else {
        return Ok(BooleanArray::from(vec![identity; batch.num_rows()]));
    };
    let mut acc = first.evaluate(batch)?;
    for part in rest {
        acc = combine(&acc, &part.evaluate(batch)?)?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(5), None, Some(9)])),
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    None,
                    Some("y"),
                    Some("x"),
                ])),
            ],
        )
        .expect("valid batch")
    }

    fn int(v: i64) -> ArrayRef {
        Arc::new(Int64Array::from(vec![v]))
    }

    fn text(v: &str) -> ArrayRef {
        Arc::new(StringArray::from(vec![v]))
    }

    fn kept(p: &Predicate) -> Vec<Option<i64>> {
        let out = p.filter(&batch()).expect("filter");
        let a = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        a.iter().collect()
    }

    #[test]
    fn three_valued_logic() {
        let gt = Predicate::Compare {
            column: 0,
            op: CmpOp::Gt,
            value: int(3),
        };
        assert_eq!(kept(&gt), vec![Some(5), Some(9)]);
        // NOT (a > 3) keeps neither the NULL row nor the matches.
        assert_eq!(kept(&Predicate::Not(Box::new(gt.clone()))), vec![Some(1)]);
        let b_is_x = Predicate::Compare {
            column: 1,
            op: CmpOp::Eq,
            value: text("x"),
        };
        assert_eq!(
            kept(&Predicate::And(vec![gt.clone(), b_is_x.clone()])),
            vec![Some(9)]
        );
        assert_eq!(
            kept(&Predicate::Or(vec![gt, b_is_x])),
            vec![Some(1), Some(5), Some(9)]
        );
        let in_list = Predicate::InList {
            column: 0,
            values: vec![int(1), int(9)],
            negated: true,
        };
        assert_eq!(kept(&in_list), vec![Some(5)]);
        assert_eq!(
            kept(&Predicate::IsNull {
                column: 1,
                negated: false
            }),
            vec![Some(5)]
        );
    }
}

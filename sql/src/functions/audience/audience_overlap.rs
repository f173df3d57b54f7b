//! `audience_overlap(expr1, expr2 [, ...])`: the pairwise overlaps of two or
//! more audiences: one row per pair with each audience's users, the users in
//! both, and the Jaccard index (both / either).
//!
//! ```sql
//! SELECT * FROM audience_overlap('vip', 'city=beijing', 'event_type=purchase DURING LAST 30 DAYS');
//! ```

use cohortdb_engine::privacy::reportable;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::constant_text;
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

/// At most this many audiences (the pairs grow as their square).
const AUDIENCES_MAX: usize = 64;

#[derive(Debug)]
pub(crate) struct AudienceOverlapFunc {
    access: Arc<UserAccess>,
}

impl AudienceOverlapFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        AudienceOverlapFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for AudienceOverlapFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=AUDIENCES_MAX).contains(&exprs.len()) {
            return plan_err!(
                "audience_overlap(expr1, expr2 [, ...]) takes 2 to {AUDIENCES_MAX} audiences, got {}",
                exprs.len()
            );
        }
        let tags = self.access.tags();
        let policy = self.access.policy();
        let mut audiences = Vec::with_capacity(exprs.len());
        for expr in exprs {
            let text = constant_text(args.session(), expr, "audience_overlap", "an audience")?;
            let users = tags.evaluate(&text, &policy).map_err(to_datafusion)?;
            let shown = tags
                .may_count(&text, users.len(), &policy)
                .map_err(to_datafusion)?;
            audiences.push((text, users, shown));
        }
        let mut rows = Vec::new();
        // Below the role's minimum audience size a count is NULL, and so is
        // what it would give away (the Jaccard index).
        let count = |n: u64, shown: bool| shown.then_some(n as i64);
        for (i, (a, a_users, a_shown)) in audiences.iter().enumerate() {
            for (b, b_users, b_shown) in &audiences[i + 1..] {
                let both = a_users.intersection_len(b_users);
                let either = a_users.len() + b_users.len() - both;
                let both_shown = *a_shown && *b_shown && reportable(both, &policy).is_some();
                let jaccard = (either > 0 && both_shown).then(|| both as f64 / either as f64);
                rows.push((
                    a,
                    b,
                    count(a_users.len(), *a_shown),
                    count(b_users.len(), *b_shown),
                    count(both, both_shown),
                    jaccard,
                ));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.3))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.4))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.5))),
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Utf8, false),
            Field::new("a_users", DataType::Int64, true),
            Field::new("b_users", DataType::Int64, true),
            Field::new("both_users", DataType::Int64, true),
            Field::new("jaccard", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

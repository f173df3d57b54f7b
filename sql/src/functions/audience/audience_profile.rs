//! `audience_profile(expr, dimension)`: how an audience spreads over the
//! values of an indexed column, against the whole population: one row per
//! value with the audience's users having it, their share of the audience,
//! the population's users having it, and the TGI (target group index: the
//! audience's share over the population's, × 100; above 100, the value is
//! over-represented in the audience). Every figure is a bitmap cardinality;
//! users of the suppression tag are in neither the audience nor the
//! population (docs/privacy.md).
//!
//! ```sql
//! SELECT * FROM audience_profile('event_type=purchase DURING LAST 30 DAYS', 'city')
//! ORDER BY tgi DESC LIMIT 10;
//! ```

use cohortdb_engine::privacy::reportable;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::constant_text;
use crate::error::to_datafusion;
use crate::functions::deferred::Computed;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct AudienceProfileFunc {
    access: Arc<UserAccess>,
}

impl AudienceProfileFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        AudienceProfileFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for AudienceProfileFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [expr, dimension] = args.exprs() else {
            return plan_err!("audience_profile(expr, dimension) takes two arguments");
        };
        let text = constant_text(args.session(), expr, "audience_profile", "the audience")?;
        let dimension = constant_text(
            args.session(),
            dimension,
            "audience_profile",
            "the dimension",
        )?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("value", DataType::Utf8, false),
            Field::new("users", DataType::Int64, true),
            Field::new("share", DataType::Float64, true),
            Field::new("population", DataType::Int64, true),
            Field::new("tgi", DataType::Float64, true),
        ]));
        // Computed when the query runs, so a plan with it can be kept.
        let access = Arc::clone(&self.access);
        let rows_schema = Arc::clone(&schema);
        let rows = move || -> Result<RecordBatch> {
            let tags = access.tags();
            let policy = access.policy();
            let profile = tags
                .profile(&text, &dimension, &policy)
                .map_err(to_datafusion)?;
            // Counts below the role's minimum audience size are NULL; all of the
            // audience's are when the audience itself may not be counted.
            let shown = tags
                .may_count(&text, profile.size, &policy)
                .map_err(to_datafusion)?;
            let values = profile.column.values.keys();
            let counts = profile.users.iter().zip(&profile.value_populations);
            let mut rows: Vec<(String, Option<u64>, Option<u64>)> = values
                .zip(counts)
                .map(|(key, (&users, &population))| {
                    (
                        key.to_string(),
                        reportable(users, &policy).filter(|_| shown),
                        reportable(population, &policy),
                    )
                })
                .collect();
            // Most users first; values in order among equals, hidden counts last.
            rows.sort_by_key(|r| std::cmp::Reverse(r.1));
            let (size, population) = (profile.size as f64, profile.population as f64);
            let share = |n: Option<u64>| n.filter(|_| size > 0.0).map(|n| n as f64 / size);
            let tgi = |n: Option<u64>, p: Option<u64>| match (n, p) {
                (Some(n), Some(p)) if size > 0.0 && p > 0 => {
                    Some(100.0 * (n as f64 / size) / (p as f64 / population))
                }
                _ => None,
            };
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|r| r.1.map(|n| n as i64)),
                )),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| share(r.1)))),
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|r| r.2.map(|n| n as i64)),
                )),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| tgi(r.1, r.2)))),
            ];
            Ok(RecordBatch::try_new(Arc::clone(&rows_schema), columns)?)
        };
        Ok(Arc::new(Computed::new(schema, Arc::new(rows))))
    }
}

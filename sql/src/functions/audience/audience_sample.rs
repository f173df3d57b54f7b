//! `audience_sample(expr, size, seed)`: a deterministic random sample of an
//! audience's users (external ids), e.g. a holdout or a test send. `size` is
//! a number of users (an integer) or a fraction (a number in (0, 1)).
//!
//! Every user gets a pseudo-random rank from the seed and their ordinal
//! (`cohortdb_engine::sampling`); a count takes the `size` lowest ranks (so
//! the sample of n is part of the sample of n + 1), a fraction takes every
//! user whose rank falls below it (so a user sampled from one audience is
//! sampled from every audience containing it). The same seed gives the same
//! sample.
//!
//! ```sql
//! SELECT * FROM audience_sample('vip AND NOT opted_out', 1000, 42);
//! SELECT count(*) FROM audience_sample('vip', 0.1, 7);
//! ```

use std::sync::Arc;

use cohortdb_engine::sampling::{Size, sample};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};

use super::constant_text;
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct AudienceSampleFunc {
    access: Arc<UserAccess>,
}

impl AudienceSampleFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        AudienceSampleFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for AudienceSampleFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [expr, size, seed] = args.exprs() else {
            return plan_err!("audience_sample(expr, size, seed) takes three arguments");
        };
        let text = constant_text(args.session(), expr, "audience_sample", "the audience")?;
        let size = match crate::functions::constant(args.session(), size)? {
            ScalarValue::Int8(Some(n)) if n >= 0 => Size::Count(n as u64),
            ScalarValue::Int16(Some(n)) if n >= 0 => Size::Count(n as u64),
            ScalarValue::Int32(Some(n)) if n >= 0 => Size::Count(n as u64),
            ScalarValue::Int64(Some(n)) if n >= 0 => Size::Count(n as u64),
            ScalarValue::Float64(Some(f)) if f > 0.0 && f < 1.0 => Size::Fraction(f),
            ScalarValue::Decimal128(Some(v), _, scale) => {
                let f = v as f64 / 10f64.powi(i32::from(scale));
                if f > 0.0 && f < 1.0 {
                    Size::Fraction(f)
                } else {
                    return plan_err!(
                        "audience_sample: size is a count of users (an integer) or a fraction between 0 and 1, got {f}"
                    );
                }
            }
            other => {
                return plan_err!(
                    "audience_sample: size is a count of users (an integer) or a fraction between 0 and 1, got {other}"
                );
            }
        };
        let seed = match crate::functions::constant(args.session(), seed)? {
            ScalarValue::Int8(Some(n)) => n as u64,
            ScalarValue::Int16(Some(n)) => n as u64,
            ScalarValue::Int32(Some(n)) => n as u64,
            ScalarValue::Int64(Some(n)) => n as u64,
            other => return plan_err!("audience_sample: seed is an integer, got {other}"),
        };
        let access = Arc::clone(&self.access);
        super::user_ids_table(&self.access, move || {
            let policy = access.naming_users("audience_sample")?;
            let tags = access.tags();
            let audience = tags.evaluate(&text, &policy).map_err(to_datafusion)?;
            let chosen = sample(&audience, size, seed);
            tags.user_ids(&chosen).map_err(to_datafusion)
        })
    }
}

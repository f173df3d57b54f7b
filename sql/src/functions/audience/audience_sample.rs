//! `audience_sample(expr, size, seed)`: a deterministic random sample of an
//! audience's users (external ids), e.g. a holdout or a test send. `size` is
//! a number of users (an integer) or a fraction (a number in (0, 1)).
//!
//! Every user gets a pseudo-random rank from the seed and their ordinal
//! (SplitMix64); a count takes the `size` lowest ranks (so the sample of n is
//! part of the sample of n + 1), a fraction takes every user whose rank falls
//! below it (so a user sampled from one audience is sampled from every
//! audience containing it). The same seed gives the same sample.
//!
//! ```sql
//! SELECT * FROM audience_sample('vip AND NOT opted_out', 1000, 42);
//! SELECT count(*) FROM audience_sample('vip', 0.1, 7);
//! ```

use std::sync::Arc;

use cohortdb_engine::Catalog;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use roaring::RoaringBitmap;

use super::{constant_text, today};
use crate::error::to_datafusion;

#[derive(Debug)]
pub(crate) struct AudienceSampleFunc {
    catalog: Arc<Catalog>,
}

impl AudienceSampleFunc {
    pub fn new(catalog: &Arc<Catalog>) -> Self {
        AudienceSampleFunc {
            catalog: Arc::clone(catalog),
        }
    }
}

/// How much of the audience to take.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Size {
    Count(u64),
    Fraction(f64),
}

/// A user's rank for `seed`: SplitMix64 of the seed and the ordinal.
fn rank(seed: u64, ordinal: u32) -> u64 {
    let mut z = seed
        .wrapping_add(u64::from(ordinal).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sampled users of `audience`.
fn sample(audience: &RoaringBitmap, size: Size, seed: u64) -> RoaringBitmap {
    match size {
        Size::Fraction(f) => {
            let cut = (f * 2f64.powi(64)) as u64;
            audience.iter().filter(|&o| rank(seed, o) < cut).collect()
        }
        Size::Count(n) if n >= audience.len() => audience.clone(),
        Size::Count(n) => {
            // The n lowest ranks, with a bounded heap of the largest kept.
            let mut heap = std::collections::BinaryHeap::with_capacity(n as usize + 1);
            for o in audience.iter() {
                heap.push((rank(seed, o), o));
                if heap.len() as u64 > n {
                    heap.pop();
                }
            }
            heap.into_iter().map(|(_, o)| o).collect()
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
        let tags = self.catalog.tags();
        let audience = tags.evaluate(&text, today()).map_err(to_datafusion)?;
        let chosen = sample(&audience, size, seed);
        super::user_ids_table(tags.user_ids(&chosen).map_err(to_datafusion)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_nested_and_consistent() {
        let audience: RoaringBitmap = (0..10_000u32).collect();
        let ten = sample(&audience, Size::Count(10), 7);
        assert_eq!(ten.len(), 10);
        assert_eq!(sample(&audience, Size::Count(10), 7), ten);
        assert_ne!(sample(&audience, Size::Count(10), 8), ten);
        // The sample of 10 is part of the sample of 11.
        assert!(ten.is_subset(&sample(&audience, Size::Count(11), 7)));
        assert_eq!(sample(&audience, Size::Count(20_000), 7), audience);
        // A fraction keeps about that share, and the same users from a
        // smaller audience.
        let tenth = sample(&audience, Size::Fraction(0.1), 3);
        assert!((900..1100).contains(&tenth.len()), "{}", tenth.len());
        let half: RoaringBitmap = (0..5_000u32).collect();
        assert_eq!(sample(&half, Size::Fraction(0.1), 3), &tenth & &half);
    }

    #[test]
    fn ranks_are_splitmix64() {
        // SplitMix64's first output for state 0 (Vigna's reference): the rank
        // of ordinal 0 under seed 0.
        assert_eq!(rank(0, 0), 0xE220_A839_7B1D_CDAF);
    }
}

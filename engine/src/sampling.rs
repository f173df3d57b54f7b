//! Deterministic sampling of users: every user gets a pseudo-random rank
//! from a seed and their ordinal (SplitMix64), so the same seed picks the
//! same users on every machine and run. `audience_sample` and the lookalike
//! scorers (negative samples, held-out seeds, folds) draw from here.

use roaring::RoaringBitmap;

/// How many users to take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// This many users (all of them when there are fewer).
    Count(u64),
    /// This share of the users, in (0, 1).
    Fraction(f64),
}

/// A user's rank for `seed`: SplitMix64 of the seed and the ordinal.
pub fn rank(seed: u64, ordinal: u32) -> u64 {
    let mut z = seed
        .wrapping_add(u64::from(ordinal).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sample of `users`. A count takes the users with the `n` lowest ranks (so
/// the sample of n is part of the sample of n + 1); a fraction takes every
/// user whose rank falls below it (so a user sampled from one set is sampled
/// from every set containing it).
pub fn sample(users: &RoaringBitmap, size: Size, seed: u64) -> RoaringBitmap {
    match size {
        Size::Fraction(f) => {
            let cut = (f * 2f64.powi(64)) as u64;
            users.iter().filter(|&o| rank(seed, o) < cut).collect()
        }
        Size::Count(n) if n >= users.len() => users.clone(),
        Size::Count(n) => {
            // The n lowest ranks, with a bounded heap of the largest kept.
            let mut heap = std::collections::BinaryHeap::with_capacity(n as usize + 1);
            for o in users.iter() {
                heap.push((rank(seed, o), o));
                if heap.len() as u64 > n {
                    heap.pop();
                }
            }
            heap.into_iter().map(|(_, o)| o).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_nested_and_consistent() {
        let users: RoaringBitmap = (0..10_000u32).collect();
        let ten = sample(&users, Size::Count(10), 7);
        assert_eq!(ten.len(), 10);
        assert_eq!(sample(&users, Size::Count(10), 7), ten);
        assert_ne!(sample(&users, Size::Count(10), 8), ten);
        // The sample of 10 is part of the sample of 11.
        assert!(ten.is_subset(&sample(&users, Size::Count(11), 7)));
        assert_eq!(sample(&users, Size::Count(20_000), 7), users);
        // A fraction keeps about that share, and the same users from a
        // smaller set.
        let tenth = sample(&users, Size::Fraction(0.1), 3);
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

//! item-kNN built again after its interactions changed, computing only what
//! the change touched.
//!
//! An item is *changed* when its users or their weights differ from the
//! previous build's (an item new or gone counts as changed). The similarity
//! of two unchanged items depends only on their own users and weights, so
//! it is what the previous build computed, to the bit (the sums run over the
//! users in the same order). Hence:
//!
//! - a changed item's list is computed from its co-occurrences, as a build
//!   does; each of those also gives sim(j, d) for every unchanged j that
//!   shares a user with it, a *candidate* for j's list (unless j's previous
//!   list was full and ends above it);
//! - an unchanged item's list is its previous one without changed or gone
//!   items, merged with its candidates. That is exact when the previous list
//!   was not full (it held every similar item), or when the merged list is
//!   full and its last entry ranks above the previous list's last (every
//!   item the previous build left out ranked below that). Otherwise the
//!   item's list is computed from its co-occurrences.
//!
//! The result equals [`ItemKnn::build`] on the new interactions. When the
//! changed items hold more than half of a build's work (the sum over their
//! users of the users' items; new interactions favour popular items, whose
//! work is the largest), or time decay changed every weight, a whole build
//! is no dearer and is what runs.

use super::{
    Interactions, ItemKeys, ItemKnn, Likeness, Neighbour, bucket_starts, closer, per_core,
};

/// The model [`ItemKnn::build`] gives for `data` and `keys`, from the
/// `previous` model built from `previous_data` and `previous_keys` with the
/// same similarity; also how many items' lists were computed from their
/// co-occurrences (the others carried over or merged).
pub fn refresh(
    previous: &ItemKnn,
    previous_data: &Interactions,
    previous_keys: &ItemKeys,
    data: &Interactions,
    keys: &ItemKeys,
    neighbours: usize,
) -> (ItemKnn, usize) {
    let similarity = previous.similarity;
    let items = data.items;
    // Per previous item its index now, and per item its previous index.
    let now = item_map(previous_keys, keys);
    let mut before: Vec<Option<u32>> = vec![None; items];
    for (old, new) in now.iter().enumerate() {
        if let Some(new) = new {
            before[*new as usize] = Some(old as u32);
        }
    }
    let changed: Vec<bool> = (0..items)
        .map(|j| before[j].is_none_or(|o| !same_users(previous_data, o, data, j as u32)))
        .collect();
    let changed_items: Vec<u32> = (0..items as u32).filter(|&j| changed[j as usize]).collect();
    let work = co_occurrence_work(data);
    let changed_work: u64 = changed_items.iter().map(|&d| work[d as usize]).sum();
    if changed_work * 2 > work.iter().sum() {
        return (ItemKnn::build(data, similarity, neighbours), items);
    }
    // A candidate below the last similarity of a full previous list cannot
    // enter it: either the merged list ends above it, or the list is
    // computed again.
    let floor: Vec<f32> = (0..items)
        .map(|j| match before[j] {
            Some(o) if !changed[j] => {
                let old = previous.neighbours(o);
                match old.last() {
                    Some(last) if old.len() >= neighbours => last.similarity,
                    _ => 0.0,
                }
            }
            _ => 0.0,
        })
        .collect();

    let likeness = Likeness::new(data, similarity);
    // Changed items' lists, and their candidates for unchanged items' lists.
    let computed: Vec<(Vec<Neighbour>, Vec<Candidate>)> =
        per_core(changed_items.len(), |k, scratch| {
            let d = changed_items[k];
            let co = data.co_occurrences(d, scratch);
            let candidates = co
                .iter()
                .filter(|&&(j, _, _)| !changed[j as usize])
                .map(|&(j, common, dot)| {
                    let n = Neighbour {
                        item: d,
                        similarity: likeness.of(j, d, common, dot),
                        common,
                    };
                    (j, n)
                })
                .filter(|(j, n)| n.similarity > 0.0 && n.similarity >= floor[*j as usize])
                .collect();
            (likeness.nearest(d, co, neighbours), candidates)
        });
    let (changed_lists, candidates): (Vec<_>, Vec<_>) = computed.into_iter().unzip();
    let candidates: Vec<Candidate> = candidates.into_iter().flatten().collect();
    let candidate_start = bucket_starts(items, candidates.iter().map(|&(j, _)| j));
    let mut by_item = vec![Neighbour::default(); candidates.len()];
    let mut next = candidate_start.clone();
    for (j, n) in candidates {
        by_item[next[j as usize]] = n;
        next[j as usize] += 1;
    }

    let merged: Vec<Option<(Vec<Neighbour>, bool)>> = per_core(items, |j, scratch| {
        if changed[j] {
            return None;
        }
        let old = previous.neighbours(before[j].expect("an unchanged item was there before"));
        let found = &by_item[candidate_start[j]..candidate_start[j + 1]];
        Some(match merge(old, found, &now, &changed, neighbours) {
            Some(list) => (list, false),
            None => {
                let co = data.co_occurrences(j as u32, scratch);
                (likeness.nearest(j as u32, co, neighbours), true)
            }
        })
    });
    let mut recomputed = changed_items.len();
    let mut changed_lists = changed_lists.into_iter();
    let lists = merged
        .into_iter()
        .map(|list| match list {
            Some((list, computed)) => {
                recomputed += usize::from(computed);
                list
            }
            None => changed_lists.next().expect("a list per changed item"),
        })
        .collect();
    (ItemKnn::from_item_lists(similarity, lists), recomputed)
}

/// A changed item as a neighbour of an unchanged item j: (j, neighbour).
type Candidate = (u32, Neighbour);

/// An unchanged item's list from its previous one (`old`, previous item
/// indices) and its candidates among the changed items, or `None` when the
/// items the previous build left out might belong in it.
fn merge(
    old: &[Neighbour],
    candidates: &[Neighbour],
    now: &[Option<u32>],
    changed: &[bool],
    neighbours: usize,
) -> Option<Vec<Neighbour>> {
    let mut list: Vec<Neighbour> = old
        .iter()
        .filter_map(|n| {
            let item = now[n.item as usize].filter(|&j| !changed[j as usize])?;
            Some(Neighbour { item, ..*n })
        })
        .collect();
    if list.len() == old.len() && candidates.is_empty() {
        return Some(list);
    }
    list.extend_from_slice(candidates);
    list.sort_unstable_by(closer);
    list.truncate(neighbours);
    if old.len() < neighbours {
        // The previous list held every item similar to this one.
        return Some(list);
    }
    let last = old.last()?;
    let kept = list.last().filter(|_| list.len() == neighbours)?;
    let ranks_above = kept.similarity > last.similarity
        || (kept.similarity == last.similarity && now[last.item as usize] == Some(kept.item));
    ranks_above.then_some(list)
}

/// Per item, the steps of computing its co-occurrences: the items of each of
/// its users. Their sum is a whole build's.
fn co_occurrence_work(data: &Interactions) -> Vec<u64> {
    (0..data.items)
        .map(|i| {
            data.item_rows[data.item_start[i]..data.item_start[i + 1]]
                .iter()
                .map(|&row| {
                    (data.user_start[row as usize + 1] - data.user_start[row as usize]) as u64
                })
                .sum()
        })
        .collect()
}

/// Whether item `j` of `data` has the users and weights item `o` of
/// `previous` had.
fn same_users(previous: &Interactions, o: u32, data: &Interactions, j: u32) -> bool {
    let (o, j) = (o as usize, j as usize);
    let old = previous.item_start[o]..previous.item_start[o + 1];
    let new = data.item_start[j]..data.item_start[j + 1];
    old.len() == new.len()
        && previous.item_weights[old.clone()] == data.item_weights[new.clone()]
        && previous.item_rows[old]
            .iter()
            .zip(&data.item_rows[new])
            .all(|(&a, &b)| previous.users[a as usize] == data.users[b as usize])
}

/// For each item of `previous` (keys ascending), its index among `now`'s
/// (keys ascending), if it is still there.
fn item_map(previous: &ItemKeys, now: &ItemKeys) -> Vec<Option<u32>> {
    fn walk<K: Ord>(previous: &[K], now: &[K]) -> Vec<Option<u32>> {
        let mut j = 0;
        previous
            .iter()
            .map(|key| {
                while j < now.len() && now[j] < *key {
                    j += 1;
                }
                (j < now.len() && now[j] == *key).then_some(j as u32)
            })
            .collect()
    }
    match (previous, now) {
        (ItemKeys::Int(a), ItemKeys::Int(b)) => walk(a, b),
        (ItemKeys::Text(a), ItemKeys::Text(b)) => walk(a, b),
        // The item column changed type: no item is the same.
        _ => vec![None; previous.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Interaction, Similarity};
    use super::*;

    /// A deterministic generator (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Interactions over item keys (each key's index is its rank).
    fn data(rows: &[(u32, i64, f32)]) -> (ItemKeys, Interactions) {
        let mut keys: Vec<i64> = rows.iter().map(|r| r.1).collect();
        keys.sort_unstable();
        keys.dedup();
        let list = rows
            .iter()
            .map(|&(user, key, weight)| Interaction {
                user,
                item: keys.binary_search(&key).expect("listed") as u32,
                weight,
            })
            .collect();
        let data = Interactions::new(keys.len(), list).expect("valid");
        (ItemKeys::Int(keys), data)
    }

    #[test]
    fn refreshing_equals_building_whole_after_any_change() {
        let similarities = [
            Similarity::Cosine,
            Similarity::Jaccard,
            Similarity::AsymmetricCosine { alpha: 0.7 },
        ];
        let mut rng = Rng(7);
        let mut partial = 0;
        for case in 0..120 {
            // Skewed item popularity, so that lists fill and ties occur.
            let items = 20 + rng.below(40) as i64;
            let pick = |rng: &mut Rng| {
                let a = rng.below(items as u64) as i64;
                let b = rng.below(items as u64) as i64;
                a.min(b)
            };
            let weighted = case % 2 == 0;
            let weight = |rng: &mut Rng| match weighted {
                true => 1.0 + rng.below(3) as f32,
                false => 1.0,
            };
            let mut rows: Vec<(u32, i64, f32)> = (0..400)
                .map(|_| (rng.below(60) as u32, pick(&mut rng), weight(&mut rng)))
                .collect();
            let (old_keys, old_data) = data(&rows);
            let similarity = similarities[case % 3];
            let neighbours = [1, 3, 8, 100][case / 3 % 4];
            let old = ItemKnn::build(&old_data, similarity, neighbours);
            // A few rows added (some for new users and new items, some
            // repeating a pair), removed, or re-weighted.
            for _ in 0..rng.below(6) {
                match rng.below(4) {
                    0 => rows.push((rng.below(70) as u32, pick(&mut rng), 1.0)),
                    1 => rows.push((rng.below(60) as u32, items + rng.below(3) as i64, 1.0)),
                    2 => {
                        let at = rng.below(rows.len() as u64) as usize;
                        rows.swap_remove(at);
                    }
                    _ => {
                        let at = rng.below(rows.len() as u64) as usize;
                        rows[at].2 += 1.0;
                    }
                }
            }
            if case % 10 == 9 {
                // Every row of one item gone.
                let gone = pick(&mut rng);
                rows.retain(|r| r.1 != gone);
            }
            let (keys, new_data) = data(&rows);
            let whole = ItemKnn::build(&new_data, similarity, neighbours);
            let (refreshed, recomputed) =
                refresh(&old, &old_data, &old_keys, &new_data, &keys, neighbours);
            assert_eq!(refreshed, whole, "case {case}");
            assert!(recomputed <= new_data.items());
            partial += usize::from(recomputed < new_data.items());
        }
        // Most cases took the partial path.
        assert!(partial > 100, "{partial} of 120 refreshed in part");
    }

    #[test]
    fn only_what_the_change_touched_is_computed() {
        // Two groups of users and items that share nothing: users 0-9 have
        // items 0-4, users 10-19 items 10-14. A new interaction in the second
        // group changes item 12; the lists of 10, 11, 13 and 14 hold it
        // and are merged, the first group's are carried over.
        let mut rows = Vec::new();
        for user in 0..20u32 {
            let base = if user < 10 { 0 } else { 10 };
            for item in 0..5i64 {
                if (user as i64 + item) % 3 != 0 {
                    rows.push((user, base + item, 1.0));
                }
            }
        }
        let (old_keys, old_data) = data(&rows);
        let old = ItemKnn::build(&old_data, Similarity::Cosine, 10);
        rows.push((10, 12, 1.0));
        let (keys, new_data) = data(&rows);
        let (refreshed, recomputed) = refresh(&old, &old_data, &old_keys, &new_data, &keys, 10);
        assert_eq!(refreshed, ItemKnn::build(&new_data, Similarity::Cosine, 10));
        assert_eq!(recomputed, 1);
        // Nothing changed: nothing computed, the same model.
        let (same, recomputed) = refresh(&old, &old_data, &old_keys, &old_data, &old_keys, 10);
        assert_eq!((same, recomputed), (old.clone(), 0));
        // More than half the items changed: built whole.
        let doubled: Vec<_> = rows.iter().map(|&(u, i, w)| (u, i, w * 2.0)).collect();
        let (keys, new_data) = data(&doubled);
        let (_, recomputed) = refresh(&old, &old_data, &old_keys, &new_data, &keys, 10);
        assert_eq!(recomputed, 10);
    }

    #[test]
    fn items_are_matched_by_key() {
        let a = ItemKeys::Text(vec!["b".into(), "d".into(), "e".into()]);
        let b = ItemKeys::Text(vec!["a".into(), "b".into(), "c".into(), "e".into()]);
        assert_eq!(item_map(&a, &b), [Some(1), None, Some(3)]);
        assert_eq!(item_map(&a, &ItemKeys::Int(vec![1])), [None, None, None]);
    }
}

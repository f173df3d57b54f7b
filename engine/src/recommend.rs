//! Recommendations from user–item interactions: item-kNN, EASE and
//! popularity; a user's top k with filters, reasons and a fallback; and
//! offline evaluation (precision, recall, nDCG, hit rate, MAP, coverage).
//!
//! Users are the user-key dictionary's ordinals; items are dense indices
//! `0..items` the caller maps to and from its item ids. The interactions
//! are kept both ways ([`Interactions`]): each user's items, each item's
//! users.
//!
//! - **item-kNN**: the similarity of items i and j is computed from the
//!   users they share — cosine `Σ w_ui·w_uj / (‖i‖·‖j‖)`, Jaccard
//!   `|U_i ∧ U_j| / |U_i ∨ U_j|`, or asymmetric cosine
//!   `|U_i ∧ U_j| / (|U_i|^α · |U_j|^(1−α))` — and each item keeps its
//!   `neighbours` most similar items. A user's score for item j is the sum,
//!   over the items i of their history that are among j's neighbours, of
//!   `w_ui · sim(i, j)` (the target item's neighbourhood, as in Sarwar et
//!   al. 2001; on MovieLens it ranks better than summing each history
//!   item's own neighbours); the reason is the i that gave the most.
//!   Building costs one step per (user, item, item) triple, Σ_u |I_u|².
//! - **EASE** (Steck 2019): item weights B minimising
//!   `‖X − XB‖² + λ‖B‖²` with a zero diagonal, in closed form:
//!   `P = (XᵀX + λI)⁻¹`, `B_ij = −P_ij / P_jj`. A user's score for j is
//!   `Σ_i w_ui · B_ij`. The inverse of a dense items × items matrix limits
//!   it to [`EASE_MAX_ITEMS`] items.
//! - **popularity**: an item's users (or its summed, optionally
//!   time-decayed, weights); the fallback for users without history.

mod file;
mod refresh;
mod serve;
mod stored;

pub use serve::{Contribution, ItemKey, Request, Similar, top_items};
pub use stored::{
    Algorithm, Built, DEFAULT_LAMBDA, DEFAULT_NEIGHBOURS, Definition, Entry, Settings,
    StoredRecommender, build,
};
pub(crate) use stored::{DIR, path as file_path, read as read_file, write as write_file};

use std::cmp::Ordering;

use faer::linalg::solvers::DenseSolveCore;

use crate::error::{Error, Result};

/// EASE refuses catalogues with more items than this: its dense items ×
/// items matrices take 8 bytes × items² each (3.2 GB at 20,000 items), and
/// the inverse grows with items³.
pub const EASE_MAX_ITEMS: usize = 20_000;

/// EASE weights smaller than this in magnitude are taken as zero.
const EASE_ROUNDOFF: f64 = 1e-9;

/// One interaction: a user (ordinal), an item (index) and its weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    pub user: u32,
    pub item: u32,
    pub weight: f32,
}

/// Interactions both ways: per user their items, per item its users; a
/// (user, item) pair seen several times is one interaction with the weights
/// summed.
#[derive(Debug, Clone, PartialEq)]
pub struct Interactions {
    items: usize,
    /// The users with interactions, ascending ordinals; a user's row is
    /// their position here.
    users: Vec<u32>,
    user_start: Vec<usize>,
    user_items: Vec<u32>,
    user_weights: Vec<f32>,
    item_start: Vec<usize>,
    /// Rows (positions in `users`), not ordinals.
    item_rows: Vec<u32>,
    item_weights: Vec<f32>,
}

impl Interactions {
    /// Groups `interactions` over `items` items (every item index below it).
    pub fn new(items: usize, mut interactions: Vec<Interaction>) -> Result<Interactions> {
        if let Some(bad) = interactions.iter().find(|i| i.item as usize >= items) {
            return Err(Error::InvalidArgument(format!(
                "recommender: item index {} is not below the item count {items}",
                bad.item
            )));
        }
        interactions.sort_unstable_by_key(|i| (i.user, i.item));
        let mut users = Vec::new();
        let mut user_start = Vec::new();
        let mut user_items: Vec<u32> = Vec::with_capacity(interactions.len());
        let mut user_weights: Vec<f32> = Vec::with_capacity(interactions.len());
        for i in &interactions {
            if users.last() != Some(&i.user) {
                users.push(i.user);
                user_start.push(user_items.len());
            } else if user_items.last() == Some(&i.item) {
                *user_weights.last_mut().expect("a weight per item") += i.weight;
                continue;
            }
            user_items.push(i.item);
            user_weights.push(i.weight);
        }
        user_start.push(user_items.len());
        Ok(Interactions::from_rows(
            items,
            users,
            user_start,
            user_items,
            user_weights,
        ))
    }

    /// The interactions of users' rows as they are (users ascending, each
    /// row's items ascending and distinct, every item below `items`), with
    /// the items' users added.
    fn from_rows(
        items: usize,
        users: Vec<u32>,
        user_start: Vec<usize>,
        user_items: Vec<u32>,
        user_weights: Vec<f32>,
    ) -> Interactions {
        // Items' users by counting sort over the user rows.
        let item_start = bucket_starts(items, user_items.iter().copied());
        let mut next = item_start.clone();
        let mut item_rows = vec![0u32; user_items.len()];
        let mut item_weights = vec![0f32; user_items.len()];
        for row in 0..users.len() {
            for k in user_start[row]..user_start[row + 1] {
                let slot = &mut next[user_items[k] as usize];
                item_rows[*slot] = row as u32;
                item_weights[*slot] = user_weights[k];
                *slot += 1;
            }
        }
        Interactions {
            items,
            users,
            user_start,
            user_items,
            user_weights,
            item_start,
            item_rows,
            item_weights,
        }
    }

    pub fn items(&self) -> usize {
        self.items
    }

    /// How many distinct (user, item) pairs there are.
    pub fn len(&self) -> usize {
        self.user_items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.user_items.is_empty()
    }

    /// The users with at least one interaction, ascending ordinals.
    pub fn users(&self) -> &[u32] {
        &self.users
    }

    /// The users with at least one interaction.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// User `ordinal`'s items (ascending) and weights; empty without any.
    pub fn history(&self, ordinal: u32) -> (&[u32], &[f32]) {
        match self.users.binary_search(&ordinal) {
            Ok(row) => self.row(row),
            Err(_) => (&[], &[]),
        }
    }

    fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let range = self.user_start[row]..self.user_start[row + 1];
        (&self.user_items[range.clone()], &self.user_weights[range])
    }

    /// How many users have item `item`.
    pub fn item_users(&self, item: u32) -> usize {
        self.item_start[item as usize + 1] - self.item_start[item as usize]
    }

    /// For every item j sharing a user with `item`: (j, users in common,
    /// Σ w_ui · w_uj), in the order first met; `item` itself included. The
    /// sums run over the users in ascending order, so (i, j) and (j, i)
    /// come out the same to the bit.
    fn co_occurrences<'s>(&self, item: u32, scratch: &'s mut CoCounts) -> &'s [(u32, u32, f32)] {
        let CoCounts {
            count,
            dot,
            touched,
            found,
        } = scratch;
        if count.len() != self.items {
            *count = vec![0; self.items];
            *dot = vec![0.0; self.items];
        }
        found.clear();
        let range = self.item_start[item as usize]..self.item_start[item as usize + 1];
        for k in range {
            let w = self.item_weights[k];
            let (items, weights) = self.row(self.item_rows[k] as usize);
            for (&j, &wj) in items.iter().zip(weights) {
                if count[j as usize] == 0 {
                    touched.push(j);
                }
                count[j as usize] += 1;
                dot[j as usize] += w * wj;
            }
        }
        for j in touched.drain(..) {
            found.push((j, count[j as usize], dot[j as usize]));
            count[j as usize] = 0;
            dot[j as usize] = 0.0;
        }
        found
    }

    /// Each item's users (or, with `weighted`, its summed weights).
    pub fn popularity(&self, weighted: bool) -> Vec<f32> {
        (0..self.items)
            .map(|item| {
                let range = self.item_start[item]..self.item_start[item + 1];
                if weighted {
                    self.item_weights[range].iter().sum()
                } else {
                    range.len() as f32
                }
            })
            .collect()
    }
}

/// Scratch of [`Interactions::co_occurrences`]: per item a count and a sum
/// (zero between calls), the items met and what was found.
#[derive(Debug, Default)]
struct CoCounts {
    count: Vec<u32>,
    dot: Vec<f32>,
    touched: Vec<u32>,
    found: Vec<(u32, u32, f32)>,
}

/// `work(i, scratch)` for every i below `n`, in runs of consecutive i, one
/// run per core, each with its own scratch; the results in order of i.
fn per_core<S: Default, T: Send>(n: usize, work: impl Fn(usize, &mut S) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, n.max(1));
    let per_thread = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(per_thread)
            .map(|first| {
                let work = &work;
                scope.spawn(move || {
                    let mut scratch = S::default();
                    (first..(first + per_thread).min(n))
                        .map(|i| work(i, &mut scratch))
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a recommender thread panicked"))
            .collect()
    })
}

/// Where each of `buckets` buckets starts when `keys` (each below `buckets`)
/// are laid out bucket by bucket: the offsets of a counting sort, one more
/// than there are buckets.
fn bucket_starts(buckets: usize, keys: impl IntoIterator<Item = u32>) -> Vec<usize> {
    let mut start = vec![0usize; buckets + 1];
    for key in keys {
        start[key as usize + 1] += 1;
    }
    for b in 0..buckets {
        start[b + 1] += start[b];
    }
    start
}

/// How item-kNN measures two items' likeness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Similarity {
    /// Σ w_ui·w_uj over ‖i‖·‖j‖ (with weights 1, |U_i ∧ U_j| over
    /// √(|U_i|·|U_j|)).
    Cosine,
    /// |U_i ∧ U_j| / |U_i ∨ U_j|.
    Jaccard,
    /// |U_i ∧ U_j| / (|U_i|^α · |U_j|^(1−α)): α above ½ favours neighbours
    /// j that are popular.
    AsymmetricCosine { alpha: f64 },
}

/// One neighbour of an item in an item-kNN model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Neighbour {
    pub item: u32,
    pub similarity: f32,
    /// Users with both items.
    pub common: u32,
}

/// An item-kNN model: each item's nearest items, most similar first, and
/// the same lists turned around for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemKnn {
    pub similarity: Similarity,
    start: Vec<usize>,
    neighbours: Vec<Neighbour>,
    /// Per item i, the items j that have i among their neighbours, with
    /// sim(i, j).
    target_start: Vec<usize>,
    targets: Vec<(u32, f32)>,
}

impl ItemKnn {
    /// Keeps, for every item, its `neighbours` most similar items (ties to
    /// the lower index). Items share the work among the cores.
    pub fn build(data: &Interactions, similarity: Similarity, neighbours: usize) -> ItemKnn {
        let likeness = Likeness::new(data, similarity);
        let lists = per_core(data.items, |i, scratch| {
            let co = data.co_occurrences(i as u32, scratch);
            likeness.nearest(i as u32, co, neighbours)
        });
        ItemKnn::from_item_lists(similarity, lists)
    }

    /// The model of each item's neighbour list.
    fn from_item_lists(similarity: Similarity, lists: Vec<Vec<Neighbour>>) -> ItemKnn {
        let mut start = Vec::with_capacity(lists.len() + 1);
        let mut all = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        for list in lists {
            start.push(all.len());
            all.extend(list);
        }
        start.push(all.len());
        ItemKnn::from_lists(similarity, start, all)
    }

    /// The model of the neighbour lists `all` (item i's at
    /// `start[i]..start[i + 1]`), with their targets indexed for scoring.
    fn from_lists(similarity: Similarity, start: Vec<usize>, all: Vec<Neighbour>) -> ItemKnn {
        let items = start.len() - 1;
        let target_start = bucket_starts(items, all.iter().map(|n| n.item));
        let mut next = target_start.clone();
        let mut targets = vec![(0u32, 0f32); all.len()];
        for j in 0..items {
            for n in &all[start[j]..start[j + 1]] {
                let slot = &mut next[n.item as usize];
                targets[*slot] = (j as u32, n.similarity);
                *slot += 1;
            }
        }
        ItemKnn {
            similarity,
            start,
            neighbours: all,
            target_start,
            targets,
        }
    }

    /// The items that have `item` among their neighbours, and how similar.
    fn targets(&self, item: u32) -> &[(u32, f32)] {
        &self.targets[self.target_start[item as usize]..self.target_start[item as usize + 1]]
    }

    /// Item `item`'s neighbours, most similar first.
    pub fn neighbours(&self, item: u32) -> &[Neighbour] {
        &self.neighbours[self.start[item as usize]..self.start[item as usize + 1]]
    }
}

/// How similar two items of one set of interactions are, from what they
/// share.
struct Likeness<'a> {
    data: &'a Interactions,
    similarity: Similarity,
    /// Per item, √(Σ w_ui²).
    norms: Vec<f32>,
}

impl<'a> Likeness<'a> {
    fn new(data: &'a Interactions, similarity: Similarity) -> Likeness<'a> {
        let norms = (0..data.items)
            .map(|i| {
                let range = data.item_start[i]..data.item_start[i + 1];
                data.item_weights[range]
                    .iter()
                    .map(|w| w * w)
                    .sum::<f32>()
                    .sqrt()
            })
            .collect();
        Likeness {
            data,
            similarity,
            norms,
        }
    }

    /// sim(i, j) from their users in `common` and Σ w_ui · w_uj (`dot`); 0
    /// where the formula has no value.
    fn of(&self, i: u32, j: u32, common: u32, dot: f32) -> f32 {
        let data = self.data;
        let (ci, cj) = (data.item_users(i) as f64, data.item_users(j) as f64);
        let value = match self.similarity {
            Similarity::Cosine => {
                f64::from(dot)
                    / (f64::from(self.norms[i as usize]) * f64::from(self.norms[j as usize]))
            }
            Similarity::Jaccard => f64::from(common) / (ci + cj - f64::from(common)),
            Similarity::AsymmetricCosine { alpha } => {
                f64::from(common) / (ci.powf(alpha) * cj.powf(1.0 - alpha))
            }
        };
        if value.is_finite() { value as f32 } else { 0.0 }
    }

    /// Item i's `neighbours` most similar items, in [`closer`] order, from
    /// its co-occurrences `co`.
    fn nearest(&self, i: u32, co: &[(u32, u32, f32)], neighbours: usize) -> Vec<Neighbour> {
        let mut list: Vec<Neighbour> = co
            .iter()
            .filter(|&&(j, _, _)| j != i)
            .map(|&(j, common, dot)| Neighbour {
                item: j,
                similarity: self.of(i, j, common, dot),
                common,
            })
            .filter(|n| n.similarity > 0.0)
            .collect();
        if neighbours < list.len() {
            if neighbours == 0 {
                list.clear();
            } else {
                list.select_nth_unstable_by(neighbours - 1, closer);
                list.truncate(neighbours);
            }
        }
        list.sort_unstable_by(closer);
        // The list was collected from every co-occurring item; kept at that
        // capacity, the lists of a catalogue with popular items would hold
        // gigabytes.
        list.shrink_to_fit();
        list
    }
}

/// The order of a neighbour list: most similar first, ties to the lower
/// item.
fn closer(a: &Neighbour, b: &Neighbour) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then(a.item.cmp(&b.item))
}

/// An EASE model: the items × items weights, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Ease {
    pub lambda: f64,
    items: usize,
    weights: Vec<f32>,
}

impl Ease {
    /// Fits EASE with L2 strength `lambda`; more than [`EASE_MAX_ITEMS`]
    /// items is an error.
    pub fn build(data: &Interactions, lambda: f64) -> Result<Ease> {
        let n = data.items;
        if n > EASE_MAX_ITEMS {
            return Err(Error::InvalidArgument(format!(
                "recommender: EASE inverts an items × items matrix and takes at most \
                 {EASE_MAX_ITEMS} items; the interactions have {n} (use item_knn)"
            )));
        }
        if !(lambda > 0.0 && lambda.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "recommender: EASE's lambda must be a positive number, got {lambda}"
            )));
        }
        let mut gram = faer::Mat::<f64>::zeros(n, n);
        let mut scratch = CoCounts::default();
        for i in 0..n {
            for &(j, _, d) in data.co_occurrences(i as u32, &mut scratch) {
                gram[(i, j as usize)] = f64::from(d);
            }
            gram[(i, i)] += lambda;
        }
        let inverse = gram
            .llt(faer::Side::Lower)
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "recommender: EASE's Gram matrix is not positive definite ({e:?})"
                ))
            })?
            .inverse();
        let mut weights = vec![0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                let b = -inverse[(i, j)] / inverse[(j, j)];
                // Below EASE_ROUNDOFF a weight is the inverse's rounding
                // error, not a relation: kept, it would make an item with no
                // relation to the history "scored".
                if i != j && b.abs() >= EASE_ROUNDOFF {
                    weights[i * n + j] = b as f32;
                }
            }
        }
        Ok(Ease {
            lambda,
            items: n,
            weights,
        })
    }

    /// Row `item` of B: what having `item` adds to every item's score.
    pub fn row(&self, item: u32) -> &[f32] {
        let first = item as usize * self.items;
        &self.weights[first..first + self.items]
    }
}

/// The item ids a recommender's item indices stand for, index by index.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKeys {
    Int(Vec<i64>),
    Text(Vec<String>),
}

impl ItemKeys {
    pub fn len(&self) -> usize {
        match self {
            ItemKeys::Int(keys) => keys.len(),
            ItemKeys::Text(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A built recommender: its items, the interactions it was built from (the
/// users' histories), the items' popularity and its model.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommender {
    pub items: ItemKeys,
    pub interactions: Interactions,
    pub popularity: Vec<f32>,
    pub model: Model,
    /// Items by descending popularity: the fallback order.
    popular: Vec<u32>,
}

impl Recommender {
    pub fn new(
        items: ItemKeys,
        interactions: Interactions,
        popularity: Vec<f32>,
        model: Model,
    ) -> Recommender {
        let popular = popularity_order(&popularity);
        Recommender {
            items,
            interactions,
            popularity,
            model,
            popular,
        }
    }

    /// Items by descending popularity, ties to the lower index.
    pub fn popular(&self) -> &[u32] {
        &self.popular
    }
}

/// A scorer of items for a user's history.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    ItemKnn(ItemKnn),
    Ease(Ease),
    /// Every user gets the same scores: an item's popularity.
    Popularity(Vec<f32>),
}

/// An item's score for a user and the history item that gave the most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub item: u32,
    pub score: f32,
    pub reason: Option<u32>,
    /// Taken from the fallback order, not ranked by the scores (score 0).
    pub fallback: bool,
}

/// One user's item scores, kept between users so each costs what its
/// history touches: the scores, the history item behind each, and for
/// item-kNN the items scored (every other is 0), so that clearing and ranking
/// skip the rest of the catalogue.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub scores: Vec<f32>,
    /// Per item, the largest single contribution and its history item.
    reasons: Vec<(f32, u32)>,
    /// The items with a score, when not every item may have one.
    touched: Option<Vec<u32>>,
}

/// No contribution yet.
const NO_REASON: (f32, u32) = (f32::NEG_INFINITY, u32::MAX);

impl Scores {
    /// Every item at 0 with no reason: cleared where the last user touched
    /// them, or everywhere.
    fn reset(&mut self, n: usize, track: bool) {
        match self.touched.take() {
            Some(mut touched) if self.scores.len() == n => {
                for &j in &touched {
                    self.scores[j as usize] = 0.0;
                    self.reasons[j as usize] = NO_REASON;
                }
                touched.clear();
                self.touched = Some(touched);
            }
            _ => {
                self.scores.clear();
                self.scores.resize(n, 0.0);
                self.reasons.clear();
                self.reasons.resize(n, NO_REASON);
                self.touched = Some(Vec::new());
            }
        }
        if !track {
            // Scores may land anywhere: the next reset clears everything.
            self.touched = None;
        }
    }

    /// Adds `part` to item j's score, from history item `i`.
    fn credit(&mut self, j: usize, part: f32, i: u32) {
        if self.reasons[j] == NO_REASON
            && let Some(touched) = &mut self.touched
        {
            touched.push(j as u32);
        }
        self.scores[j] += part;
        if part > self.reasons[j].0 {
            self.reasons[j] = (part, i);
        }
    }

    /// The history item that added the most to item j, if any did.
    fn reason(&self, j: u32) -> Option<u32> {
        let (part, i) = self.reasons[j as usize];
        (part > f32::NEG_INFINITY).then_some(i)
    }

    /// Scores given as they are, every item a candidate (a test's).
    #[cfg(test)]
    fn dense(scores: Vec<f32>, reasons: Vec<(f32, u32)>) -> Scores {
        Scores {
            scores,
            reasons,
            touched: None,
        }
    }
}

impl Model {
    /// Every item's score for the history `(items, weights)`, and the history
    /// item that added the most to it (none for popularity), into `out`.
    pub fn score(&self, items: &[u32], weights: &[f32], out: &mut Scores) {
        let n = match self {
            Model::ItemKnn(knn) => knn.start.len() - 1,
            Model::Ease(ease) => ease.items,
            Model::Popularity(p) => p.len(),
        };
        out.reset(n, matches!(self, Model::ItemKnn(_)));
        match self {
            Model::ItemKnn(knn) => {
                for (&i, &w) in items.iter().zip(weights) {
                    for &(j, similarity) in knn.targets(i) {
                        out.credit(j as usize, w * similarity, i);
                    }
                }
            }
            Model::Ease(ease) => {
                for (&i, &w) in items.iter().zip(weights) {
                    for (j, &b) in ease.row(i).iter().enumerate() {
                        if b != 0.0 {
                            out.credit(j, w * b, i);
                        }
                    }
                }
            }
            Model::Popularity(p) => out.scores.copy_from_slice(p),
        }
    }
}

/// What a top-k may return.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Items never returned (a user's history when seen items are excluded,
    /// an exclude list), ascending.
    pub exclude: Vec<&'a [u32]>,
    /// When given, only these items, ascending.
    pub include: Option<&'a [u32]>,
    /// Per item, the category it counts against `per_category` (none:
    /// uncapped).
    pub category: Option<&'a [Option<u32>]>,
    pub per_category: Option<usize>,
    /// Multiplies an item's score (items not listed: 1).
    pub boost: Option<&'a [f32]>,
}

impl Filter<'_> {
    fn allows(&self, item: u32) -> bool {
        self.include
            .is_none_or(|inc| inc.binary_search(&item).is_ok())
            && self
                .exclude
                .iter()
                .all(|ex| ex.binary_search(&item).is_err())
    }
}

/// The `k` best items by (boosted) `scores` that `filter` allows, best
/// first (ties to the lower index). Only items with a positive score are
/// ranked; when fewer than `k` of them pass, `fallback`'s order (a
/// popularity ranking) fills the rest with score 0 and no reason, so k come
/// back whenever the fallback holds k items the filter allows.
pub fn top(
    scored: &Scores,
    k: usize,
    filter: &Filter<'_>,
    fallback: Option<&[u32]>,
) -> Vec<Scored> {
    let scores = &scored.scores;
    let boosted = |j: usize| filter.boost.map_or(scores[j], |b| scores[j] * b[j]);
    let positive = |&j: &u32| scores[j as usize] > 0.0 && filter.allows(j);
    let mut candidates: Vec<u32> = match &scored.touched {
        Some(touched) => touched.iter().copied().filter(positive).collect(),
        None => (0..scores.len() as u32).filter(positive).collect(),
    };
    let order = |a: &u32, b: &u32| -> Ordering {
        boosted(*b as usize)
            .total_cmp(&boosted(*a as usize))
            .then(a.cmp(b))
    };
    // Without a per-category cap the first k candidates are the answer:
    // select them, then sort only those.
    if filter.per_category.is_none() && k > 0 && candidates.len() > k {
        candidates.select_nth_unstable_by(k - 1, order);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(order);
    let mut taken: Vec<Scored> = Vec::with_capacity(k);
    let mut per_category: std::collections::HashMap<u32, usize> = Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut take = |j: u32, with_score: bool, taken: &mut Vec<Scored>| {
        if taken.len() >= k || !seen.insert(j) {
            return;
        }
        if let (Some(categories), Some(cap)) = (filter.category, filter.per_category)
            && let Some(c) = categories[j as usize]
        {
            let used = per_category.entry(c).or_default();
            if *used >= cap {
                return;
            }
            *used += 1;
        }
        taken.push(Scored {
            item: j,
            score: if with_score { boosted(j as usize) } else { 0.0 },
            reason: if with_score { scored.reason(j) } else { None },
            fallback: !with_score,
        });
    };
    for &j in &candidates {
        take(j, true, &mut taken);
    }
    if let Some(order) = fallback {
        for &j in order {
            if taken.len() >= k {
                break;
            }
            if filter.allows(j) {
                take(j, false, &mut taken);
            }
        }
    }
    taken
}

/// Offline quality at k, averaged over the test users.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quality {
    /// Users with at least one test item the model knows.
    pub users: usize,
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub hit_rate: f64,
    pub map: f64,
    /// Distinct items recommended over the item count.
    pub coverage: f64,
}

/// Ranking metrics of one user's recommendations `recommended` (best first)
/// against their held-out items `relevant` (ascending): (hits/k,
/// hits/|relevant|, nDCG, hit, average precision over min(k, |relevant|)).
pub fn user_metrics(recommended: &[u32], relevant: &[u32], k: usize) -> [f64; 5] {
    let mut hits = 0usize;
    let mut dcg = 0.0;
    let mut precision_sum = 0.0;
    for (rank, item) in recommended.iter().take(k).enumerate() {
        if relevant.binary_search(item).is_ok() {
            hits += 1;
            dcg += 1.0 / ((rank + 2) as f64).log2();
            precision_sum += hits as f64 / (rank + 1) as f64;
        }
    }
    let ideal: f64 = (0..k.min(relevant.len()))
        .map(|rank| 1.0 / ((rank + 2) as f64).log2())
        .sum();
    let denominator = k.min(relevant.len()).max(1) as f64;
    [
        hits as f64 / k as f64,
        hits as f64 / relevant.len().max(1) as f64,
        if ideal > 0.0 { dcg / ideal } else { 0.0 },
        if hits > 0 { 1.0 } else { 0.0 },
        precision_sum / denominator,
    ]
}

/// How `model` ranks each test user's held-out items: for every user of
/// `test` with at least one test item that someone in `train` has, the top
/// `k` items of the scores of their `train` history, seen items excluded,
/// `fallback` (a popularity order) filling in for users the model cannot
/// score. Items no one has in `train` are dropped from the test.
pub fn evaluate(
    model: &Model,
    train: &Interactions,
    test: &Interactions,
    k: usize,
    fallback: Option<&[u32]>,
) -> Quality {
    let mut sums = [0f64; 5];
    let mut users = 0usize;
    let mut recommended = vec![false; train.items];
    let mut scores = Scores::default();
    for row in 0..test.users.len() {
        let relevant: Vec<u32> = test
            .row(row)
            .0
            .iter()
            .copied()
            .filter(|&item| (item as usize) < train.items && train.item_users(item) > 0)
            .collect();
        if relevant.is_empty() {
            continue;
        }
        let (items, weights) = train.history(test.users[row]);
        model.score(items, weights, &mut scores);
        let filter = Filter {
            exclude: vec![items],
            ..Filter::default()
        };
        let best: Vec<u32> = top(&scores, k, &filter, fallback)
            .iter()
            .map(|s| s.item)
            .collect();
        for &item in &best {
            recommended[item as usize] = true;
        }
        for (sum, value) in sums.iter_mut().zip(user_metrics(&best, &relevant, k)) {
            *sum += value;
        }
        users += 1;
    }
    let known = (0..train.items as u32)
        .filter(|&i| train.item_users(i) > 0)
        .count();
    let mean = |sum: f64| if users > 0 { sum / users as f64 } else { 0.0 };
    Quality {
        users,
        precision: mean(sums[0]),
        recall: mean(sums[1]),
        ndcg: mean(sums[2]),
        hit_rate: mean(sums[3]),
        map: mean(sums[4]),
        coverage: if known > 0 {
            recommended.iter().filter(|&&r| r).count() as f64 / known as f64
        } else {
            0.0
        },
    }
}

/// Items by descending `popularity`, ties to the lower index: the fallback
/// order.
pub fn popularity_order(popularity: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..popularity.len() as u32).collect();
    order.sort_by(|&a, &b| {
        popularity[b as usize]
            .total_cmp(&popularity[a as usize])
            .then(a.cmp(&b))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interactions(items: usize, pairs: &[(u32, u32)]) -> Interactions {
        let list = pairs
            .iter()
            .map(|&(user, item)| Interaction {
                user,
                item,
                weight: 1.0,
            })
            .collect();
        Interactions::new(items, list).expect("valid")
    }

    /// Users 10: {0, 1}, 11: {0, 1, 2}, 12: {1, 2}, 13: {2}. Items' users:
    /// 0 has 2, 1 and 2 have 3; in common: (0, 1) 2, (0, 2) 1, (1, 2) 2.
    pub(super) fn small() -> Interactions {
        interactions(
            3,
            &[
                (10, 0),
                (10, 1),
                (11, 0),
                (11, 1),
                (11, 2),
                (12, 1),
                (12, 2),
                (13, 2),
            ],
        )
    }

    #[test]
    fn interactions_group_both_ways_and_sum_repeats() {
        let data = Interactions::new(
            2,
            vec![
                Interaction {
                    user: 7,
                    item: 1,
                    weight: 2.0,
                },
                Interaction {
                    user: 3,
                    item: 0,
                    weight: 1.0,
                },
                Interaction {
                    user: 7,
                    item: 1,
                    weight: 0.5,
                },
                Interaction {
                    user: 7,
                    item: 0,
                    weight: 1.0,
                },
            ],
        )
        .expect("valid");
        assert_eq!(data.len(), 3);
        assert_eq!(data.user_count(), 2);
        assert_eq!(data.history(7), (&[0u32, 1][..], &[1.0f32, 2.5][..]));
        assert_eq!(data.history(3), (&[0u32][..], &[1.0f32][..]));
        assert_eq!(data.history(5), (&[][..], &[][..]));
        assert_eq!((data.item_users(0), data.item_users(1)), (2, 1));
        assert_eq!(data.popularity(true), vec![2.0, 2.5]);
        let err = Interactions::new(
            2,
            vec![Interaction {
                user: 1,
                item: 2,
                weight: 1.0,
            }],
        )
        .expect_err("item out of range");
        assert_eq!(
            err.to_string(),
            "recommender: item index 2 is not below the item count 2"
        );
    }

    #[test]
    fn item_knn_similarities_follow_their_formulas() {
        let data = small();
        let sims = |similarity| {
            let knn = ItemKnn::build(&data, similarity, 10);
            (0..3)
                .map(|i| {
                    knn.neighbours(i)
                        .iter()
                        .map(|n| (n.item, (n.similarity * 1e4).round() / 1e4, n.common))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        // cosine: 2/√6, 1/√6, 2/3.
        assert_eq!(
            sims(Similarity::Cosine),
            [
                vec![(1, 0.8165, 2), (2, 0.4082, 1)],
                vec![(0, 0.8165, 2), (2, 0.6667, 2)],
                vec![(1, 0.6667, 2), (0, 0.4082, 1)],
            ]
        );
        // Jaccard: 2/3, 1/4, 2/4.
        assert_eq!(
            sims(Similarity::Jaccard),
            [
                vec![(1, 0.6667, 2), (2, 0.25, 1)],
                vec![(0, 0.6667, 2), (2, 0.5, 2)],
                vec![(1, 0.5, 2), (0, 0.25, 1)],
            ]
        );
        // Asymmetric cosine with α = 0.8: |i ∧ j| / (|i|^0.8 · |j|^0.2);
        // (0, 1): 2 / (2^0.8 · 3^0.2) = 0.9221, (1, 0): 2 / (3^0.8 · 2^0.2) = 0.7230.
        let asym = sims(Similarity::AsymmetricCosine { alpha: 0.8 });
        assert_eq!(asym[0][0], (1, 0.9221, 2));
        assert_eq!(asym[1], [(0, 0.723, 2), (2, 0.6667, 2)]);
        // One neighbour each: the most similar.
        let knn = ItemKnn::build(&data, Similarity::Cosine, 1);
        assert_eq!(knn.neighbours(2).len(), 1);
        assert_eq!(knn.neighbours(2)[0].item, 1);
    }

    #[test]
    fn item_knn_scores_sum_over_history_with_the_best_reason() {
        let data = small();
        let model = Model::ItemKnn(ItemKnn::build(&data, Similarity::Cosine, 10));
        let mut scores = Scores::default();
        let (items, weights) = data.history(12); // {1, 2}
        model.score(items, weights, &mut scores);
        // Item 0: sim(1, 0) + sim(2, 0) = 0.8165 + 0.4082, mostly from 1.
        assert!((scores.scores[0] - (2.0 / 6f32.sqrt() + 1.0 / 6f32.sqrt())).abs() < 1e-6);
        let filter = Filter {
            exclude: vec![items],
            ..Filter::default()
        };
        let best = top(&scores, 5, &filter, None);
        assert_eq!(best.len(), 1);
        assert_eq!((best[0].item, best[0].reason), (0, Some(1)));
        // One neighbour each: 0 → 1, 1 → 0, 2 → 1. A history of item 2
        // scores nothing (no item has 2 as its neighbour); one of item 1
        // scores 0 and 2, whose neighbour it is.
        let model = Model::ItemKnn(ItemKnn::build(&data, Similarity::Cosine, 1));
        model.score(&[2], &[1.0], &mut scores);
        assert_eq!(scores.scores, [0.0, 0.0, 0.0]);
        model.score(&[1], &[1.0], &mut scores);
        assert!((scores.scores[0] - 2.0 / 6f32.sqrt()).abs() < 1e-6);
        assert!((scores.scores[2] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(scores.scores[1], 0.0);
        // The next user starts from nothing: what the last one touched is
        // cleared, reasons too.
        model.score(&[], &[], &mut scores);
        assert_eq!(scores.scores, [0.0, 0.0, 0.0]);
        assert_eq!(top(&scores, 3, &Filter::default(), None), []);
    }

    #[test]
    fn ease_matches_its_closed_form() {
        // Users {0, 1} and {0}: XᵀX = [[2, 1], [1, 1]]; with λ = 1,
        // P = [[3, 1], [1, 2]]⁻¹ = [[2, −1], [−1, 3]] / 5, so
        // B01 = −P01 / P11 = 1/3 and B10 = −P10 / P00 = 1/2.
        let data = interactions(2, &[(1, 0), (1, 1), (2, 0)]);
        let ease = Ease::build(&data, 1.0).expect("fits");
        assert_eq!(ease.row(0)[0], 0.0);
        assert!((ease.row(0)[1] - 1.0 / 3.0).abs() < 1e-6);
        assert!((ease.row(1)[0] - 0.5).abs() < 1e-6);
        assert_eq!(ease.row(1)[1], 0.0);
        let err = Ease::build(&data, 0.0).expect_err("lambda 0");
        assert_eq!(
            err.to_string(),
            "recommender: EASE's lambda must be a positive number, got 0"
        );
        let wide = interactions(EASE_MAX_ITEMS + 1, &[(1, 0)]);
        let err = Ease::build(&wide, 1.0).expect_err("too many items");
        assert_eq!(
            err.to_string(),
            format!(
                "recommender: EASE inverts an items × items matrix and takes at most \
                 {EASE_MAX_ITEMS} items; the interactions have {} (use item_knn)",
                EASE_MAX_ITEMS + 1
            )
        );
    }

    #[test]
    fn top_applies_filters_before_k_and_falls_back() {
        // Items 0..6 scored 6, 5, 4, 3, 0, 0; categories 0, 0, 0, 1, 1, none.
        let scores = Scores::dense(vec![6.0, 5.0, 4.0, 3.0, 0.0, 0.0], vec![(1.0, 9); 6]);
        let categories = [Some(0), Some(0), Some(0), Some(1), Some(1), None];
        let seen = [1u32];
        let filter = Filter {
            exclude: vec![&seen],
            category: Some(&categories),
            per_category: Some(1),
            ..Filter::default()
        };
        let fallback = [5u32, 4, 3, 2, 1, 0];
        let best = top(&scores, 4, &filter, Some(&fallback));
        let items: Vec<(u32, f32, Option<u32>)> =
            best.iter().map(|s| (s.item, s.score, s.reason)).collect();
        // 0 (category 0), 3 (category 1); 1 is seen; 2 is category 0 again;
        // then the fallback: 5 (no category); 4 is category 1 again.
        assert_eq!(
            items,
            [(0, 6.0, Some(9)), (3, 3.0, Some(9)), (5, 0.0, None)]
        );
        // An include list and a boost: 2 × 4 beats 3 × 1.
        let include = [2u32, 3];
        let boost = [1.0, 1.0, 2.0, 1.0, 1.0, 1.0];
        let filter = Filter {
            include: Some(&include),
            boost: Some(&boost),
            ..Filter::default()
        };
        let items: Vec<(u32, f32)> = top(&scores, 5, &filter, None)
            .iter()
            .map(|s| (s.item, s.score))
            .collect();
        assert_eq!(items, [(2, 8.0), (3, 3.0)]);
    }

    #[test]
    fn user_metrics_follow_their_definitions() {
        // Relevant {3, 7}; recommended 5, 3, 9: one hit, at rank 2.
        let [p, r, ndcg, hit, ap] = user_metrics(&[5, 3, 9], &[3, 7], 3);
        assert!((p - 1.0 / 3.0).abs() < 1e-12);
        assert!((r - 0.5).abs() < 1e-12);
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((ndcg - (1.0 / 3f64.log2()) / ideal).abs() < 1e-12);
        assert_eq!(hit, 1.0);
        // Precision at the hit (1/2) over min(k, |relevant|) = 2.
        assert!((ap - 0.25).abs() < 1e-12);
        assert_eq!(user_metrics(&[1, 2], &[3], 2), [0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}

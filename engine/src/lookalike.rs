//! Lookalike audiences: from a seed audience, score candidate users by how
//! much their tags resemble the seed's, and measure how well that works.
//!
//! The features are tags: every value of an indexed column (`city=beijing`)
//! and every stored tag, each a bitmap of user ordinals ([`Feature`]). The
//! scorers ([`Method`]):
//!
//! - `log_odds` (the default): each tag gets the log odds ratio of having it
//!   in the seed against the rest of the population, with additive smoothing
//!   of the 2×2 table, shrunk by its signal-to-noise ratio: times
//!   z² / (z² + k) for z² the squared log odds over their variance
//!   ([`Settings::shrinkage`]); a user's score is the sum over the tags they
//!   have. This is naive Bayes with presence and absence of every tag, up to
//!   a constant, and needs only `|seed ∧ tag|` and `|tag|`.
//! - `iv`: the same weights on the `max_tags` tags with the highest
//!   information value, `(p − q) · ln(p(1 − q) / (q(1 − p)))` for the
//!   smoothed shares p in the seed and q elsewhere; for wide, noisy tag sets.
//! - `logistic`: L2-regularised logistic regression of the seed against a
//!   sample of the rest of the population on the tags, minimising
//!   `C · Σ log(1 + e^(−y·z)) + ½‖w‖²` (the intercept not penalised, as
//!   scikit-learn does) with L-BFGS. Cross-fitted in five folds: a user of the
//!   training sample is scored by the model fitted on the other four folds,
//!   every other user by the mean of the five models. Unless given, C is
//!   chosen from [`C_GRID`] by the folds' held-out AUC.
//! - `ensemble`: the mean of the three scorers' percentile ranks.
//!
//! Scoring is a scatter-add: each weighted tag adds its weight to a dense
//! array of scores at its users' ordinals, so the cost is the number of
//! (user, tag) pairs, not users × tags; it runs a block of 65,536 users at a
//! time, so the block's scores stay in the cache, with the blocks shared
//! among the cores. Tags with fewer than `min_support`
//! seed users get no weight. All randomness (negative samples, folds,
//! held-out seeds, ties) comes from [`crate::sampling`] and the settings'
//! seed, so results repeat exactly.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::audience::{self, Audience};
use crate::error::{Error, Result};
use crate::sampling::{self, Size};
use crate::tags::{TagSet, TagSourceKind, Tags, TagsRead};

/// A tag a user has or not.
#[derive(Debug, Clone)]
pub struct Feature<'a> {
    /// As the audience language writes it: `city=beijing`, `vip`.
    pub name: String,
    /// The column (`city`) or stored tag (`vip`) it comes from.
    pub family: String,
    pub users: &'a RoaringBitmap,
}

/// The features of the tag store: every value of every indexed column (all
/// days together for a time-indexed one) and every stored tag but dynamic
/// segments; only those of `families` (column or tag names) when given, and
/// never the columns and tags `exclude` lists: those the seed is defined by,
/// which would find the seed by how it was made (a hidden seed user has the
/// seed's value of a column, so even the column's other values give them
/// away). Only tags `policy`'s reader may use are features; naming another
/// in `families` is refused.
pub fn features<'a>(
    tags: &'a Tags,
    families: Option<&[String]>,
    exclude: &TagsRead,
    policy: &crate::privacy::Policy,
) -> Result<Vec<Feature<'a>>> {
    use crate::roles::Object;
    let usable = |object: Object, asked: bool| -> Result<bool> {
        match (policy.may_use(&object), asked) {
            (true, _) => Ok(true),
            (false, false) => Ok(false),
            (false, true) => policy.check_use(&object).map(|()| false),
        }
    };
    let mut by_column: BTreeMap<&str, usize> = BTreeMap::new();
    for table in tags.tables.values() {
        for column in &table.columns {
            *by_column.entry(column.name.as_str()).or_default() += 1;
        }
    }
    let mut wanted: Option<BTreeMap<&str, bool>> =
        families.map(|f| f.iter().map(|name| (name.as_str(), false)).collect());
    let mut take = |names: &[&str]| match wanted.as_mut() {
        None => true,
        Some(wanted) => {
            let mut any = false;
            for name in names {
                if let Some(seen) = wanted.get_mut(*name) {
                    *seen = true;
                    any = true;
                }
            }
            any
        }
    };
    let mut features = Vec::new();
    for table in tags.tables.values() {
        for column in &table.columns {
            let qualified = format!("{}.{}", table.table_name, column.name);
            let asked = families.is_some();
            if !take(&[column.name.as_str(), qualified.as_str()])
                || !usable(Object::TagIndex(table.table_name.clone()), asked)?
            {
                continue;
            }
            let family = if by_column[column.name.as_str()] > 1 {
                qualified
            } else {
                column.name.clone()
            };
            if exclude
                .columns
                .contains(&(table.table_id, column.name.clone()))
            {
                continue;
            }
            for (key, entry) in column.values.iter() {
                features.push(Feature {
                    name: format!(
                        "{}={}",
                        audience::quote_name(&family),
                        audience::quote_value(&key.to_string())
                    ),
                    family: family.clone(),
                    users: entry.all.get()?,
                });
            }
        }
    }
    for (name, tag) in &tags.stored {
        if tag.source == TagSourceKind::Segment
            || exclude.stored.contains(name)
            || !take(&[name.as_str()])
            || !usable(Object::Tag(name.clone()), families.is_some())?
        {
            continue;
        }
        features.push(Feature {
            name: audience::quote_name(name),
            family: name.clone(),
            users: tag.bits.get()?,
        });
    }
    if let Some((missing, _)) = wanted
        .iter()
        .flat_map(|w| w.iter())
        .find(|(_, seen)| !**seen)
    {
        return Err(Error::UnknownTag(format!(
            "lookalike: \"{missing}\" is neither an indexed column nor a stored tag"
        )));
    }
    Ok(features)
}

/// A scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    LogOdds,
    Iv,
    Logistic,
    Ensemble,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::LogOdds,
        Method::Iv,
        Method::Logistic,
        Method::Ensemble,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::LogOdds => "log_odds",
            Method::Iv => "iv",
            Method::Logistic => "logistic",
            Method::Ensemble => "ensemble",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(text))
    }
}

/// How to fit a scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub method: Method,
    /// Tags with fewer seed users than this get no weight.
    pub min_support: u64,
    /// Added to each cell of a tag's 2×2 table (seed or not, tag or not).
    pub smoothing: f64,
    /// k of the signal-to-noise shrinkage: a tag's weight is its log odds
    /// times z² / (z² + k), z being the log odds over its standard error;
    /// 0 keeps the log odds as they are.
    pub shrinkage: f64,
    /// How many tags `iv` keeps.
    pub max_tags: usize,
    /// The logistic regression's inverse regularisation strength; `None`
    /// chooses it from [`C_GRID`] by cross-validation.
    pub c: Option<f64>,
    /// How many non-seed users the logistic regression samples; by default
    /// four per seed user and at least 10,000.
    pub negatives: Option<u64>,
    /// Seeds every random choice.
    pub random_seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            method: Method::LogOdds,
            min_support: 5,
            smoothing: 1.0,
            shrinkage: SHRINKAGE,
            max_tags: 50,
            c: None,
            negatives: None,
            random_seed: 0,
        }
    }
}

/// The default k of the signal-to-noise shrinkage ([`Settings::shrinkage`]).
pub const SHRINKAGE: f64 = 8.0;

/// The logistic regression's cross-fitting folds: each fold's users are
/// scored by the model fitted on the others.
const FOLDS: usize = 5;

/// The inverse regularisation strengths tried when none is given, strongest
/// regularisation first: the one whose models rank their held-out folds best
/// (pooled AUC) is kept.
pub const C_GRID: [f64; 5] = [0.01, 0.03, 0.1, 0.3, 1.0];

/// Seed users the logistic regression trains on at most (a sample beyond).
const MAX_POSITIVES: u64 = 200_000;

/// What one tag says about the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct TagStat {
    /// Seed users with the tag.
    pub seed: u64,
    /// Users of the population with the tag.
    pub population: u64,
    /// The seed's share with the tag over the population's; `None` when no
    /// one has it.
    pub lift: Option<f64>,
    /// The smoothed log odds ratio.
    pub log_odds: f64,
    /// The log odds shrunk by their signal-to-noise ratio: the tag's weight
    /// in `log_odds` and `iv`.
    pub weight: f64,
    /// The information value.
    pub iv: f64,
}

/// The per-tag statistics of `seed` (a subset of `population`).
pub fn tag_stats(
    features: &[Feature<'_>],
    seed: &RoaringBitmap,
    population: &RoaringBitmap,
    settings: &Settings,
) -> Vec<TagStat> {
    let smoothing = settings.smoothing;
    let seed_len = seed.len() as f64;
    let others_len = (population.len() - seed.len()) as f64;
    let everyone = population.len() as f64;
    features
        .iter()
        .map(|f| {
            let s = f.users.intersection_len(seed);
            let n = f.users.intersection_len(population);
            let b = (n - s) as f64;
            let p = (s as f64 + smoothing) / (seed_len + 2.0 * smoothing);
            let q = (b + smoothing) / (others_len + 2.0 * smoothing);
            let log_odds = logit(p) - logit(q);
            // The log odds ratio's variance: the sum of the inverse cells.
            let variance = 1.0 / (s as f64 + smoothing)
                + 1.0 / (seed_len - s as f64 + smoothing)
                + 1.0 / (b + smoothing)
                + 1.0 / (others_len - b + smoothing);
            let z2 = log_odds * log_odds / variance;
            let shrunk = z2 + settings.shrinkage;
            TagStat {
                seed: s,
                population: n,
                lift: (n > 0 && seed_len > 0.0)
                    .then(|| (s as f64 / seed_len) / (n as f64 / everyone)),
                log_odds,
                weight: if shrunk > 0.0 {
                    log_odds * z2 / shrunk
                } else {
                    0.0
                },
                iv: (p - q) * log_odds,
            }
        })
        .collect()
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// Users per block of a scatter: one roaring container's worth, whose
/// scores (256 KiB) stay in the L2 cache while every tag adds to them.
const SCATTER_BLOCK: usize = 1 << 16;

/// A linear score: the intercept plus the weights of the tags a user has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Linear {
    pub intercept: f64,
    /// (feature index, weight).
    pub weights: Vec<(usize, f64)>,
}

impl Linear {
    /// Adds this score to `scores` (indexed by ordinal) for the users of
    /// `within`, or every user `scores` covers.
    fn scatter(
        &self,
        features: &[Feature<'_>],
        scores: &mut [f32],
        within: Option<&RoaringBitmap>,
    ) {
        let Some(users) = within else {
            return self.scatter_all(features, scores);
        };
        let limit = scores.len() as u32;
        let mut add = |o: u32, w: f64| {
            if o < limit {
                scores[o as usize] += w as f32;
            }
        };
        users.iter().for_each(|o| add(o, self.intercept));
        for &(j, w) in &self.weights {
            (features[j].users & users).iter().for_each(|o| add(o, w));
        }
    }

    /// Adds this score to every user's entry of `scores`, a block of
    /// [`SCATTER_BLOCK`] users at a time so the entries every tag adds to
    /// stay in the cache, and the blocks shared among the cores.
    fn scatter_all(&self, features: &[Feature<'_>], scores: &mut [f32]) {
        // `buffer` takes a tag's users of the block in batches: roaring's
        // next_many decodes a container far faster than one user at a time.
        let add_block = |buffer: &mut [u32], first: usize, block: &mut [f32]| {
            block.iter_mut().for_each(|s| *s += self.intercept as f32);
            let users = first as u32..=(first + block.len() - 1) as u32;
            for &(j, w) in &self.weights {
                let mut tag = features[j].users.range(users.clone());
                loop {
                    let batch = tag.next_many(buffer);
                    if batch.is_empty() {
                        break;
                    }
                    batch
                        .iter()
                        .for_each(|&o| block[o as usize - first] += w as f32);
                }
            }
        };
        let blocks = scores.len().div_ceil(SCATTER_BLOCK);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = blocks.div_ceil(threads.min(blocks).max(1)) * SCATTER_BLOCK;
        std::thread::scope(|scope| {
            for (t, part) in scores.chunks_mut(per_thread.max(1)).enumerate() {
                let add_block = &add_block;
                scope.spawn(move || {
                    let mut buffer = vec![0u32; 2048];
                    for (b, block) in part.chunks_mut(SCATTER_BLOCK).enumerate() {
                        add_block(&mut buffer, t * per_thread + b * SCATTER_BLOCK, block);
                    }
                });
            }
        });
    }

    /// `self − other`, weight by weight.
    fn minus(&self, other: &Linear) -> Linear {
        let mut weights: std::collections::BTreeMap<usize, f64> =
            self.weights.iter().copied().collect();
        for &(j, w) in &other.weights {
            *weights.entry(j).or_default() -= w;
        }
        Linear {
            intercept: self.intercept - other.intercept,
            weights: weights.into_iter().collect(),
        }
    }
}

/// One scorer of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub method: Method,
    pub linear: Linear,
    /// Cross-fitting: users of a training sample, and the score those users
    /// get instead (fitted without them).
    pub held_out: Vec<(RoaringBitmap, Linear)>,
}

/// A fitted lookalike model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub method: Method,
    /// Per feature, what it says about the seed.
    pub stats: Vec<TagStat>,
    /// One scorer, or the ensemble's three.
    pub components: Vec<Component>,
}

/// Fits `settings.method` to tell `seed` from the rest of `population`.
pub fn fit(
    features: &[Feature<'_>],
    seed: &RoaringBitmap,
    population: &RoaringBitmap,
    settings: &Settings,
) -> Result<Model> {
    let seed = seed & population;
    if seed.is_empty() {
        return Err(Error::InvalidArgument(
            "lookalike: the seed has no users in the population".to_string(),
        ));
    }
    if seed.len() == population.len() {
        return Err(Error::InvalidArgument(
            "lookalike: the seed is the whole population; there is no one to tell it from"
                .to_string(),
        ));
    }
    let stats = tag_stats(features, &seed, population, settings);
    let eligible: Vec<usize> = (0..features.len())
        .filter(|&j| stats[j].seed >= settings.min_support.max(1))
        .collect();
    let log_odds = || Component {
        method: Method::LogOdds,
        linear: Linear {
            intercept: 0.0,
            weights: eligible.iter().map(|&j| (j, stats[j].weight)).collect(),
        },
        held_out: Vec::new(),
    };
    let iv = || {
        let mut chosen = eligible.clone();
        chosen.sort_by(|&a, &b| stats[b].iv.total_cmp(&stats[a].iv).then(a.cmp(&b)));
        chosen.truncate(settings.max_tags);
        chosen.sort_unstable();
        Component {
            method: Method::Iv,
            linear: Linear {
                intercept: 0.0,
                weights: chosen.iter().map(|&j| (j, stats[j].weight)).collect(),
            },
            held_out: Vec::new(),
        }
    };
    let components = match settings.method {
        Method::LogOdds => vec![log_odds()],
        Method::Iv => vec![iv()],
        Method::Logistic => vec![logistic(features, &seed, population, &eligible, settings)],
        Method::Ensemble => vec![
            log_odds(),
            iv(),
            logistic(features, &seed, population, &eligible, settings),
        ],
    };
    Ok(Model {
        method: settings.method,
        stats,
        components,
    })
}

impl Model {
    /// The score of every user of `candidates`, in ordinal order. An
    /// ensemble's score is the mean of its scorers' percentile ranks (0 to 1).
    pub fn score(&self, features: &[Feature<'_>], candidates: &RoaringBitmap) -> Vec<(u32, f32)> {
        let Some(max) = candidates.max() else {
            return Vec::new();
        };
        let component_scores = |c: &Component| {
            let mut scores = vec![0f32; max as usize + 1];
            c.linear.scatter(features, &mut scores, None);
            for (users, linear) in &c.held_out {
                linear
                    .minus(&c.linear)
                    .scatter(features, &mut scores, Some(users));
            }
            scores
        };
        if let [only] = self.components.as_slice() {
            let scores = component_scores(only);
            return candidates.iter().map(|o| (o, scores[o as usize])).collect();
        }
        let mut mean = vec![0f32; candidates.len() as usize];
        for c in &self.components {
            let scores = component_scores(c);
            let of_candidates: Vec<f32> = candidates.iter().map(|o| scores[o as usize]).collect();
            for (m, r) in mean.iter_mut().zip(percentile_ranks(&of_candidates)) {
                *m += r as f32 / self.components.len() as f32;
            }
        }
        candidates.iter().zip(mean).collect()
    }

    /// The tags behind user `ordinal`'s score, largest contribution first:
    /// (feature, weight), from the first scorer that weighs tags (the
    /// log-odds one in an ensemble).
    pub fn explain(&self, ordinal: u32, features: &[Feature<'_>]) -> Vec<(usize, f64)> {
        let Some(component) = self.components.first() else {
            return Vec::new();
        };
        let linear = component
            .held_out
            .iter()
            .find(|(users, _)| users.contains(ordinal))
            .map_or(&component.linear, |(_, l)| l);
        let mut parts: Vec<(usize, f64)> = linear
            .weights
            .iter()
            .copied()
            .filter(|&(j, _)| features[j].users.contains(ordinal))
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        parts
    }
}

/// Each score's percentile rank among `scores`, in (0, 1]: the mean rank
/// of its ties over the count.
fn percentile_ranks(scores: &[f32]) -> Vec<f64> {
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[a as usize].total_cmp(&scores[b as usize]));
    let mut ranks = vec![0f64; scores.len()];
    let n = scores.len() as f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1] as usize] == scores[order[i] as usize] {
            j += 1;
        }
        // Ranks i + 1 ..= j + 1, averaged.
        let rank = (i + j + 2) as f64 / 2.0;
        for &k in &order[i..=j] {
            ranks[k as usize] = rank / n;
        }
        i = j + 1;
    }
    ranks
}

/// The `k` best of `scored`, best first; ties are broken by a pseudo-random
/// rank of the ordinal under `seed`, so no user is favoured by when they
/// arrived.
pub fn top(mut scored: Vec<(u32, f32)>, k: usize, seed: u64) -> Vec<(u32, f32)> {
    let order = |a: &(u32, f32), b: &(u32, f32)| {
        b.1.total_cmp(&a.1)
            .then_with(|| sampling::rank(seed, a.0).cmp(&sampling::rank(seed, b.0)))
    };
    if k < scored.len() {
        if k == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_unstable_by(order);
    scored
}

/// The logistic-regression scorer, cross-fitted in five folds.
fn logistic(
    features: &[Feature<'_>],
    seed: &RoaringBitmap,
    population: &RoaringBitmap,
    eligible: &[usize],
    settings: &Settings,
) -> Component {
    let random = settings.random_seed;
    let positives = sampling::sample(seed, Size::Count(MAX_POSITIVES), random);
    let others = population - seed;
    let wanted = settings
        .negatives
        .unwrap_or_else(|| (4 * positives.len()).max(10_000));
    let negatives = sampling::sample(&others, Size::Count(wanted), random ^ 0x5EED);
    let rows = &positives | &negatives;
    let data = Design::new(features, eligible, &rows, &positives);
    let fold: Vec<u8> = rows
        .iter()
        .map(|o| (sampling::rank(random ^ 0xF01D, o) % FOLDS as u64) as u8)
        .collect();
    let grid: Vec<f64> = match settings.c {
        Some(c) => vec![c],
        None => C_GRID.to_vec(),
    };
    // Per fold, the regularisation path (each fit starting from the last),
    // and every held-out row's score under each strength.
    let mut paths: Vec<Vec<Vec<f64>>> = Vec::with_capacity(FOLDS);
    let mut held_scores = vec![vec![0f32; fold.len()]; grid.len()];
    for k in 0..FOLDS as u8 {
        let mut x = vec![0.0; 1 + data.width];
        let mut path = Vec::with_capacity(grid.len());
        for (g, &c) in grid.iter().enumerate() {
            x = data.fit(c, |i| fold[i] != k, x);
            for i in (0..fold.len()).filter(|&i| fold[i] == k) {
                held_scores[g][i] = data.score(&x, i) as f32;
            }
            path.push(x.clone());
        }
        paths.push(path);
    }
    let best = if grid.len() == 1 {
        0
    } else {
        let aucs: Vec<f64> = held_scores
            .into_iter()
            .map(|scores| {
                let scored: Vec<(u32, f32)> = rows.iter().zip(scores).collect();
                ranking_metrics(scored, &positives, random).auc
            })
            .collect();
        (0..grid.len()).fold(0, |best, g| if aucs[g] > aucs[best] { g } else { best })
    };
    let models: Vec<Linear> = paths
        .iter()
        .map(|path| data.linear(&path[best], eligible))
        .collect();
    let k = FOLDS as f64;
    let mean = Linear {
        intercept: models.iter().map(|m| m.intercept).sum::<f64>() / k,
        weights: (0..eligible.len())
            .map(|i| {
                let j = models[0].weights[i].0;
                (j, models.iter().map(|m| m.weights[i].1).sum::<f64>() / k)
            })
            .collect(),
    };
    let held_out = models
        .into_iter()
        .enumerate()
        .map(|(k, model)| {
            let users: RoaringBitmap = rows
                .iter()
                .zip(&fold)
                .filter(|&(_, &f)| usize::from(f) == k)
                .map(|(o, _)| o)
                .collect();
            (users, model)
        })
        .collect();
    Component {
        method: Method::Logistic,
        linear: mean,
        held_out,
    }
}

/// The training rows of a logistic regression: each row's tags (indices into
/// the eligible features, compressed sparse rows) and label.
struct Design {
    starts: Vec<usize>,
    columns: Vec<u32>,
    positive: Vec<bool>,
    width: usize,
}

impl Design {
    fn new(
        features: &[Feature<'_>],
        eligible: &[usize],
        rows: &RoaringBitmap,
        positives: &RoaringBitmap,
    ) -> Design {
        let n = rows.len() as usize;
        let parts: Vec<RoaringBitmap> =
            eligible.iter().map(|&j| features[j].users & rows).collect();
        let mut starts = vec![0usize; n + 1];
        for part in &parts {
            for o in part {
                starts[rows.rank(o) as usize] += 1;
            }
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts.clone();
        let mut columns = vec![0u32; starts[n]];
        for (c, part) in parts.iter().enumerate() {
            for o in part {
                let i = rows.rank(o) as usize - 1;
                columns[fill[i]] = c as u32;
                fill[i] += 1;
            }
        }
        Design {
            starts,
            columns,
            positive: rows.iter().map(|o| positives.contains(o)).collect(),
            width: eligible.len(),
        }
    }

    /// Minimises the penalised loss over the rows `use_row` keeps; returns
    /// the intercept then the weights.
    fn fit(&self, c: f64, use_row: impl Fn(usize) -> bool, start: Vec<f64>) -> Vec<f64> {
        let used: Vec<usize> = (0..self.positive.len()).filter(|&i| use_row(i)).collect();
        let objective = |x: &[f64], grad: &mut [f64]| -> f64 {
            grad.fill(0.0);
            let mut loss = 0.0;
            for &i in &used {
                let row = &self.columns[self.starts[i]..self.starts[i + 1]];
                let z = self.score(x, i);
                let y = if self.positive[i] { 1.0 } else { -1.0 };
                let margin = y * z;
                loss += softplus(-margin);
                let g = -y * sigmoid(-margin);
                grad[0] += c * g;
                for &j in row {
                    grad[1 + j as usize] += c * g;
                }
            }
            let mut penalty = 0.0;
            for j in 1..x.len() {
                penalty += x[j] * x[j];
                grad[j] += x[j];
            }
            c * loss + 0.5 * penalty
        };
        minimize(objective, start, 500)
    }

    /// Row `i`'s linear score under `x`.
    fn score(&self, x: &[f64], i: usize) -> f64 {
        let row = &self.columns[self.starts[i]..self.starts[i + 1]];
        x[0] + row.iter().map(|&j| x[1 + j as usize]).sum::<f64>()
    }

    /// The fitted vector `x` as a linear score over feature indices.
    fn linear(&self, x: &[f64], eligible: &[usize]) -> Linear {
        Linear {
            intercept: x[0],
            weights: eligible
                .iter()
                .zip(&x[1..])
                .map(|(&j, &w)| (j, w))
                .collect(),
        }
    }
}

/// `ln(1 + e^t)` without overflow.
fn softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises a smooth convex function with L-BFGS (10 corrections) and a
/// backtracking Armijo line search, from `x`, until the largest gradient
/// component is below 1e-6 of the function's scale or progress stops.
fn minimize(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    mut x: Vec<f64>,
    max_iterations: usize,
) -> Vec<f64> {
    const MEMORY: usize = 10;
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut history: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(MEMORY);
    let (mut next_x, mut next_g) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..max_iterations {
        let g_max = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if g_max <= 1e-6 * fx.abs().max(1.0) {
            break;
        }
        // The two-loop recursion: d = −H·g.
        let mut d = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &d);
            d.iter_mut().zip(y).for_each(|(di, yi)| *di -= a * yi);
            alphas.push(a);
        }
        let gamma = match history.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / g_max,
        };
        d.iter_mut().for_each(|di| *di *= gamma);
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &d);
            d.iter_mut().zip(s).for_each(|(di, si)| *di += (a - b) * si);
        }
        d.iter_mut().for_each(|di| *di = -*di);
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            history.clear();
            d = g.iter().map(|v| -v / g_max).collect();
            slope = dot(&g, &d);
        }
        let mut step = 1.0;
        let next_f = loop {
            next_x
                .iter_mut()
                .zip(x.iter().zip(&d))
                .for_each(|(nx, (xi, di))| *nx = xi + step * di);
            let value = f(&next_x, &mut next_g);
            if value <= fx + 1e-4 * step * slope {
                break Some(value);
            }
            step *= 0.5;
            if step < 1e-12 {
                break None;
            }
        };
        let Some(next_f) = next_f else { break };
        let s: Vec<f64> = next_x.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
        let progress = fx - next_f;
        std::mem::swap(&mut x, &mut next_x);
        std::mem::swap(&mut g, &mut next_g);
        fx = next_f;
        if progress <= 1e-12 * fx.abs().max(1.0) {
            break;
        }
    }
    x
}

/// A model kept in the database (`CREATE MODEL m AS LOOKALIKE(...)`): its
/// weights by tag name, so it scores users without retraining as their tags
/// change. Stored as JSON in the manifest and the log (docs/format.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredModel {
    pub name: String,
    /// The seed and options it was trained from, as written.
    pub seed: String,
    pub options: String,
    pub method: Method,
    /// When it was trained, microseconds since 1970 UTC.
    pub trained_micros: i64,
    pub seed_users: u64,
    pub population_users: u64,
    pub components: Vec<StoredComponent>,
}

/// Weights and quantiles are finite (smoothing keeps log odds finite, the
/// regression's penalty keeps its weights so), so equality is an equivalence.
impl Eq for StoredModel {}

/// One scorer of a stored model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredComponent {
    pub method: Method,
    pub intercept: f64,
    pub weights: Vec<StoredWeight>,
    /// For an ensemble: the scorer's scores at the population's percentiles
    /// 0, 1, ..., 100, to turn a score into a percentile rank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredWeight {
    pub tag: String,
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift: Option<f64>,
}

impl Model {
    /// This model to keep: weights by tag name; an ensemble's scorers with
    /// their score quantiles over `population`.
    pub fn to_stored(
        &self,
        features: &[Feature<'_>],
        population: &RoaringBitmap,
        seed_users: u64,
    ) -> StoredModel {
        let ensemble = self.components.len() > 1;
        let components = self
            .components
            .iter()
            .map(|c| {
                let quantiles = if ensemble {
                    let alone = Model {
                        method: c.method,
                        stats: Vec::new(),
                        components: vec![Component {
                            method: c.method,
                            linear: c.linear.clone(),
                            held_out: Vec::new(),
                        }],
                    };
                    let mut scores: Vec<f32> = alone
                        .score(features, population)
                        .into_iter()
                        .map(|(_, s)| s)
                        .collect();
                    scores.sort_unstable_by(f32::total_cmp);
                    (0..=100)
                        .map(|p| {
                            let at = (p * scores.len().saturating_sub(1)) / 100;
                            scores.get(at).map_or(0.0, |s| f64::from(*s))
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                StoredComponent {
                    method: c.method,
                    intercept: c.linear.intercept,
                    weights: c
                        .linear
                        .weights
                        .iter()
                        .map(|&(j, weight)| StoredWeight {
                            tag: features[j].name.clone(),
                            weight,
                            lift: self.stats.get(j).and_then(|s| s.lift),
                        })
                        .collect(),
                    quantiles,
                }
            })
            .collect();
        StoredModel {
            name: String::new(),
            seed: String::new(),
            options: String::new(),
            method: self.method,
            trained_micros: 0,
            seed_users,
            population_users: population.len(),
            components,
        }
    }
}

/// The users of the tags a stored model weighs, by tag name.
pub type ModelTags<'a> = BTreeMap<String, Cow<'a, RoaringBitmap>>;

impl StoredModel {
    /// The users of each tag the model weighs, as the tag store has them
    /// now; a tag that no longer exists (a value no one has any more, a
    /// dropped tag) is left out and adds nothing to scores.
    pub fn tags<'a>(&self, source: &'a TagSet<'a>) -> Result<ModelTags<'a>> {
        let mut found = BTreeMap::new();
        for component in &self.components {
            for w in &component.weights {
                if found.contains_key(&w.tag) {
                    continue;
                }
                let Ok(Audience::Term(term)) = audience::parse(&w.tag) else {
                    continue;
                };
                match source.users(&term, None) {
                    Ok(users) => {
                        found.insert(w.tag.clone(), users);
                    }
                    Err(Error::UnknownTag(_)) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(found)
    }

    /// The score of each user (`None` stays `None`) given the users of the
    /// model's tags (from [`StoredModel::tags`]). An ensemble's score is the
    /// mean of its scorers' percentile ranks (0 to 1) in the population it
    /// was trained on.
    pub fn score(&self, tags: &ModelTags<'_>, users: &[Option<u32>]) -> Vec<Option<f64>> {
        let mut total = vec![0.0f64; users.len()];
        for component in &self.components {
            let mut scores = vec![component.intercept; users.len()];
            for w in &component.weights {
                let Some(bitmap) = tags.get(w.tag.as_str()) else {
                    continue;
                };
                for (score, user) in scores.iter_mut().zip(users) {
                    if user.is_some_and(|o| bitmap.contains(o)) {
                        *score += w.weight;
                    }
                }
            }
            for (t, s) in total.iter_mut().zip(scores) {
                *t += if self.components.len() > 1 {
                    percentile_of(&component.quantiles, s) / self.components.len() as f64
                } else {
                    s
                };
            }
        }
        users.iter().zip(total).map(|(u, t)| u.map(|_| t)).collect()
    }

    /// The weighed tags user `ordinal` has, largest weight first, from the
    /// first scorer (the log-odds one in an ensemble).
    pub fn explain(&self, tags: &ModelTags<'_>, ordinal: u32) -> Vec<&StoredWeight> {
        let Some(component) = self.components.first() else {
            return Vec::new();
        };
        let mut parts: Vec<&StoredWeight> = component
            .weights
            .iter()
            .filter(|w| {
                tags.get(w.tag.as_str())
                    .is_some_and(|b| b.contains(ordinal))
            })
            .collect();
        parts.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.tag.cmp(&b.tag)));
        parts
    }
}

/// The percentile rank (0 to 1) of `score` among scores whose percentiles
/// 0..=100 are `quantiles`: interpolated linearly between quantiles, and the
/// middle of a run of equal quantiles (many users with the same score) for a
/// score equal to them, as a rank with ties averaged would give.
fn percentile_of(quantiles: &[f64], score: f64) -> f64 {
    let n = quantiles.len();
    if n < 2 {
        return 0.5;
    }
    let below = quantiles.partition_point(|&q| q < score);
    let through = quantiles.partition_point(|&q| q <= score);
    let at = if through > below {
        (below + through - 1) as f64 / 2.0
    } else if below == 0 {
        0.0
    } else if below == n {
        (n - 1) as f64
    } else {
        let (lo, hi) = (quantiles[below - 1], quantiles[below]);
        (below - 1) as f64 + (score - lo) / (hi - lo)
    };
    at / (n - 1) as f64
}

/// How well a scorer finds hidden seed users, over repeated splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub method: Method,
    pub repetitions: u32,
    /// Seed users trained on, per split.
    pub train: u64,
    /// Seed users hidden among the candidates, per split.
    pub hidden: u64,
    /// Mean area under the ROC curve of the hidden users among the
    /// candidates, and its standard deviation over the splits.
    pub auc: f64,
    pub auc_stddev: f64,
    /// The hidden users' share in the top 10% of candidates over their share
    /// of all candidates (mean over splits).
    pub lift_at_10: f64,
    /// The share of the hidden users in the top 20% (mean over splits).
    pub recall_at_20: f64,
}

/// Evaluates a scorer on held-out seeds: each repetition trains on a sample
/// of `train` seed users (seeded by `settings.random_seed` plus the
/// repetition), hides the rest among the candidates (`universe` minus the
/// training seed) and measures how high the scorer ranks them.
pub fn evaluate(
    features: &[Feature<'_>],
    seed: &RoaringBitmap,
    universe: &RoaringBitmap,
    settings: &Settings,
    train: Size,
    repetitions: u32,
) -> Result<Evaluation> {
    let seed = seed & universe;
    let mut aucs = Vec::new();
    let (mut lift, mut recall) = (0.0, 0.0);
    let (mut trained, mut hidden_total) = (0, 0);
    for r in 0..repetitions.max(1) {
        let random = settings.random_seed.wrapping_add(u64::from(r));
        let training = sampling::sample(&seed, train, random);
        let hidden = &seed - &training;
        if training.is_empty() || hidden.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "lookalike_eval: a split of the seed's {} users leaves {} to train on and {} to find; both must be at least 1",
                seed.len(),
                training.len(),
                hidden.len()
            )));
        }
        let mut split_settings = settings.clone();
        split_settings.random_seed = random;
        let model = fit(features, &training, universe, &split_settings)?;
        let candidates = universe - &training;
        let scored = model.score(features, &candidates);
        let m = ranking_metrics(scored, &hidden, random);
        aucs.push(m.auc);
        lift += m.lift_at_10;
        recall += m.recall_at_20;
        trained += training.len();
        hidden_total += hidden.len();
    }
    let k = aucs.len() as f64;
    let mean = aucs.iter().sum::<f64>() / k;
    let variance = if aucs.len() > 1 {
        aucs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (k - 1.0)
    } else {
        0.0
    };
    Ok(Evaluation {
        method: settings.method,
        repetitions: aucs.len() as u32,
        train: (trained as f64 / k).round() as u64,
        hidden: (hidden_total as f64 / k).round() as u64,
        auc: mean,
        auc_stddev: variance.sqrt(),
        lift_at_10: lift / k,
        recall_at_20: recall / k,
    })
}

/// The quality of a ranking of candidates against the positives among them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankingMetrics {
    pub auc: f64,
    pub lift_at_10: f64,
    pub recall_at_20: f64,
}

/// AUC (ties count half), lift in the top 10% and recall in the top 20% of
/// `scored` (ties in the cut broken pseudo-randomly under `seed`).
pub fn ranking_metrics(
    scored: Vec<(u32, f32)>,
    positives: &RoaringBitmap,
    seed: u64,
) -> RankingMetrics {
    let n = scored.len();
    let is_positive: Vec<bool> = scored.iter().map(|(o, _)| positives.contains(*o)).collect();
    let p = is_positive.iter().filter(|&&x| x).count() as f64;
    let scores: Vec<f32> = scored.iter().map(|s| s.1).collect();
    let ranks = percentile_ranks(&scores);
    let rank_sum: f64 = ranks
        .iter()
        .zip(&is_positive)
        .filter(|&(_, &x)| x)
        .map(|(r, _)| r * n as f64)
        .sum();
    let negatives = n as f64 - p;
    let auc = (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives);
    let ranked = top(scored, n, seed);
    let hits_in = |share: f64| {
        let cut = (share * n as f64).ceil() as usize;
        ranked[..cut.min(n)]
            .iter()
            .filter(|(o, _)| positives.contains(*o))
            .count() as f64
    };
    let top_10 = (0.1 * n as f64).ceil();
    RankingMetrics {
        auc,
        lift_at_10: (hits_in(0.1) / top_10) / (p / n as f64),
        recall_at_20: hits_in(0.2) / p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(users: impl IntoIterator<Item = u32>) -> RoaringBitmap {
        users.into_iter().collect()
    }

    #[test]
    fn log_odds_and_iv_follow_the_smoothed_table() {
        // 100 users; the seed is 0..10. The tag has 8 seed users and 12 others.
        let tag = bitmap((0..8).chain(50..62));
        let features = [Feature {
            name: "t".into(),
            family: "t".into(),
            users: &tag,
        }];
        let settings = Settings {
            shrinkage: 2.0,
            ..Settings::default()
        };
        let stats = tag_stats(&features, &bitmap(0..10), &bitmap(0..100), &settings);
        let (p, q): (f64, f64) = (9.0 / 12.0, 13.0 / 92.0);
        let lor: f64 = ((p / (1.0 - p)) / (q / (1.0 - q))).ln();
        assert_eq!(stats[0].seed, 8);
        assert_eq!(stats[0].population, 20);
        assert!((stats[0].log_odds - lor).abs() < 1e-12);
        assert!((stats[0].iv - (p - q) * lor).abs() < 1e-12);
        assert_eq!(stats[0].lift, Some((8.0 / 10.0) / (20.0 / 100.0)));
        // The smoothed cells are 9, 3 (seed) and 13, 79 (the others).
        let z2 = lor * lor / (1.0 / 9.0 + 1.0 / 3.0 + 1.0 / 13.0 + 1.0 / 79.0);
        assert!((stats[0].weight - lor * z2 / (z2 + 2.0)).abs() < 1e-12);
    }

    #[test]
    fn top_breaks_ties_by_seeded_rank_and_keeps_order() {
        let scored = vec![(1, 0.5), (2, 2.0), (3, 0.5), (4, 1.0), (5, 0.5)];
        let best = top(scored.clone(), 3, 9);
        assert_eq!(&best[..2], &[(2, 2.0), (4, 1.0)]);
        assert_eq!(best[2].1, 0.5);
        assert_eq!(top(scored.clone(), 3, 9), best);
        let all = top(scored, 10, 9);
        assert_eq!(all.len(), 5);
        assert!(all.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Positives 1 and 2; scores put 1 above every negative, 2 tied with
        // one of the two negatives: AUC = (2 + 1.5) / 4.
        let scored = vec![(1, 3.0), (2, 1.0), (3, 1.0), (4, 0.0)];
        let m = ranking_metrics(scored, &bitmap([1, 2]), 0);
        assert!((m.auc - 3.5 / 4.0).abs() < 1e-12, "{}", m.auc);
        // The top 10% of 4 is 1 user, a positive: precision 1 over base 0.5.
        assert_eq!(m.lift_at_10, 2.0);
        assert_eq!(m.recall_at_20, 0.5);
    }

    #[test]
    fn minimize_finds_a_quadratic_minimum() {
        let x = minimize(
            |x, g| {
                g[0] = 2.0 * (x[0] - 3.0);
                g[1] = 20.0 * (x[1] + 1.0);
                (x[0] - 3.0).powi(2) + 10.0 * (x[1] + 1.0).powi(2)
            },
            vec![0.0, 0.0],
            100,
        );
        assert!(
            (x[0] - 3.0).abs() < 1e-6 && (x[1] + 1.0).abs() < 1e-6,
            "{x:?}"
        );
    }

    /// Random users, 40 tags of which tags 0..4 are planted: the seed is
    /// drawn with probability rising with how many planted tags a user has.
    fn planted() -> (Vec<RoaringBitmap>, RoaringBitmap, RoaringBitmap) {
        let users = 20_000u32;
        let mut tags = vec![RoaringBitmap::new(); 40];
        let mut seed = RoaringBitmap::new();
        for u in 0..users {
            let mut planted = 0;
            for (t, tag) in tags.iter_mut().enumerate() {
                let share = 0.05 + 0.01 * (t % 10) as f64;
                if (sampling::rank(1000 + t as u64, u) as f64) < share * 2f64.powi(64) {
                    tag.insert(u);
                    if t < 4 {
                        planted += 1;
                    }
                }
            }
            let p = [0.01, 0.2, 0.5, 0.8, 0.9][planted];
            if (sampling::rank(999, u) as f64) < p * 2f64.powi(64) {
                seed.insert(u);
            }
        }
        (tags, seed, (0..users).collect())
    }

    /// The planted tags as features `t0`, `t1`, ...
    fn named(tags: &[RoaringBitmap]) -> Vec<Feature<'_>> {
        tags.iter()
            .enumerate()
            .map(|(t, users)| Feature {
                name: format!("t{t}"),
                family: format!("t{t}"),
                users,
            })
            .collect()
    }

    #[test]
    fn planted_tags_rank_first_and_every_method_finds_hidden_seeds() {
        let (tags, seed, universe) = planted();
        let features = named(&tags);
        let stats = tag_stats(&features, &seed, &universe, &Settings::default());
        let mut by_weight: Vec<usize> = (0..features.len()).collect();
        by_weight.sort_by(|&a, &b| stats[b].weight.total_cmp(&stats[a].weight));
        let mut first: Vec<usize> = by_weight[..4].to_vec();
        first.sort_unstable();
        assert_eq!(first, [0, 1, 2, 3]);
        let mut aucs = Vec::new();
        for method in Method::ALL {
            let settings = Settings {
                method,
                max_tags: 4,
                ..Settings::default()
            };
            let e = evaluate(
                &features,
                &seed,
                &universe,
                &settings,
                Size::Fraction(0.5),
                3,
            )
            .expect("evaluates");
            assert_eq!(e.repetitions, 3);
            // The seed is about 5% of users; half of it is hidden.
            assert!(e.hidden > 300 && e.train > 300, "{e:?}");
            aucs.push((method, e.auc));
        }
        // The best possible ranking scores users by their planted tags (the
        // seed's generating probability rises with them); every scorer gets
        // within 0.01 of its AUC (measured: all within 0.002).
        let oracle: Vec<(u32, f32)> = universe
            .iter()
            .map(|u| (u, tags[..4].iter().filter(|t| t.contains(u)).count() as f32))
            .collect();
        let best = ranking_metrics(oracle, &seed, 0).auc;
        for (method, auc) in &aucs {
            assert!((auc - best).abs() < 0.01, "{method:?}: {auc}, best {best}");
        }
    }

    #[test]
    fn logistic_regression_matches_a_closed_form() {
        // One binary tag, no penalty to speak of (huge C): the fitted
        // intercept and weight are the empirical log odds of the two groups.
        // Users 0..100 have the tag; 30 of them are seed. Of 100..400, 60.
        let tag = bitmap(0..100);
        let seed = bitmap((0..30).chain(100..160));
        let features = [Feature {
            name: "t".into(),
            family: "t".into(),
            users: &tag,
        }];
        let settings = Settings {
            method: Method::Logistic,
            c: Some(1e9),
            min_support: 1,
            ..Settings::default()
        };
        let rows = bitmap(0..400);
        let data = Design::new(&features, &[0], &rows, &seed);
        let x = data.fit(1e9, |_| true, vec![0.0; 2]);
        let without_tag = (60.0f64 / 240.0).ln();
        let with_tag = (30.0f64 / 70.0).ln();
        assert!((x[0] - without_tag).abs() < 1e-5, "{x:?}");
        assert!((x[1] - (with_tag - without_tag)).abs() < 1e-5, "{x:?}");
        // The model through `fit` scores tagged users above the others.
        let model = fit(&features, &seed, &rows, &settings).expect("fits");
        let scored = model.score(&features, &bitmap([5, 200]));
        assert!(scored[0].1 > scored[1].1, "{scored:?}");
    }

    #[test]
    fn stored_models_score_like_the_model() {
        let (tags, seed, universe) = planted();
        let features = named(&tags);
        let all: ModelTags<'_> = features
            .iter()
            .map(|f| (f.name.clone(), Cow::Borrowed(f.users)))
            .collect();
        let users: Vec<u32> = (0..500).collect();
        let some: Vec<Option<u32>> = users.iter().map(|&u| Some(u)).collect();
        for method in [Method::LogOdds, Method::Ensemble] {
            let settings = Settings {
                method,
                ..Settings::default()
            };
            let model = fit(&features, &seed, &universe, &settings).expect("fits");
            let stored = model.to_stored(&features, &universe, seed.len());
            let json = serde_json::to_string(&stored).expect("serialises");
            let back: StoredModel = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, stored);
            let scores = back.score(&all, &some);
            let live = model.score(&features, &users.iter().copied().collect());
            if method == Method::LogOdds {
                // The same sums, up to the model's f32 accumulation.
                for ((_, l), s) in live.iter().zip(&scores) {
                    assert!((f64::from(*l) - s.expect("a user")).abs() < 1e-4);
                }
            } else {
                // Percentile ranks from 101 quantiles: within 0.02 of the
                // exact ones, for users outside the regression's training
                // sample (whose exact scores are cross-fitted; a stored
                // model has one regression for everyone).
                let exact = model.score(&features, &universe);
                let sampled: RoaringBitmap = model.components[2]
                    .held_out
                    .iter()
                    .map(|(users, _)| users)
                    .fold(RoaringBitmap::new(), |all, u| all | u);
                for ((u, _), s) in live.iter().zip(&scores) {
                    if sampled.contains(*u) {
                        continue;
                    }
                    let e = exact[*u as usize].1;
                    assert!(
                        (f64::from(e) - s.expect("a user")).abs() < 0.02,
                        "{u}: {e} {s:?}"
                    );
                }
            }
            assert_eq!(back.score(&all, &[None]), vec![None]);
        }
        // A tag that no longer exists adds nothing; explain lists the
        // weighed tags a user has.
        let model = fit(&features, &seed, &universe, &Settings::default()).expect("fits");
        let stored = model.to_stored(&features, &universe, seed.len());
        let user = (0..20_000u32)
            .find(|&u| tags[0].contains(u) && tags[1].contains(u))
            .expect("some user has both");
        let explained = stored.explain(&all, user);
        assert!(explained.iter().any(|w| w.tag == "t0"));
        assert!(explained.windows(2).all(|w| w[0].weight >= w[1].weight));
        let mut fewer = all.clone();
        fewer.remove("t0");
        let with = stored.score(&all, &[Some(user)])[0].expect("a user");
        let without = stored.score(&fewer, &[Some(user)])[0].expect("a user");
        let t0 = stored.components[0]
            .weights
            .iter()
            .find(|w| w.tag == "t0")
            .expect("t0 is weighed")
            .weight;
        assert!((with - without - t0).abs() < 1e-12);
    }

    #[test]
    fn percentiles_interpolate_between_quantiles() {
        let quantiles: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile_of(&quantiles, -1.0), 0.0);
        assert_eq!(percentile_of(&quantiles, 1000.0), 1.0);
        assert!((percentile_of(&quantiles, 42.5) - 0.425).abs() < 1e-12);
        // A score many users share sits in the middle of its run.
        let mut tied = vec![0.0; 61];
        tied.extend((1..=40).map(f64::from));
        assert!((percentile_of(&tied, 0.0) - 0.30).abs() < 1e-12);
    }

    #[test]
    fn seeds_that_cannot_be_told_apart_are_errors() {
        let tag = bitmap(0..10);
        let features = [Feature {
            name: "t".into(),
            family: "t".into(),
            users: &tag,
        }];
        let settings = Settings::default();
        let err = fit(&features, &bitmap([50]), &bitmap(0..10), &settings).expect_err("no seed");
        assert_eq!(
            err.to_string(),
            "lookalike: the seed has no users in the population"
        );
        let err = fit(&features, &bitmap(0..10), &bitmap(0..10), &settings).expect_err("everyone");
        assert!(err.to_string().contains("whole population"), "{err}");
    }
}

//! Answers from a built recommender: a user's top k (one user, or many on
//! every core), why an item was recommended, an item's similar items, and
//! popularity among an audience.

use std::cmp::Ordering;

use roaring::RoaringBitmap;

use super::{CoCounts, Filter, ItemKeys, Model, Recommender, Scored, Scores, per_core, top};

/// How a top k is chosen, besides the filter.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub k: usize,
    /// Leave out the items in the user's history (off for repeat-purchase
    /// domains).
    pub exclude_seen: bool,
    pub filter: Filter<'a>,
    /// Users with fewer history items than this get only the fallback.
    pub min_history: usize,
    /// Fill with popular items when fewer than k are scored.
    pub fallback: bool,
}

impl Default for Request<'_> {
    fn default() -> Self {
        Request {
            k: 10,
            exclude_seen: true,
            filter: Filter::default(),
            min_history: 1,
            fallback: true,
        }
    }
}

/// What one history item gave to an item's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    pub item: u32,
    /// The user's weight of the history item.
    pub weight: f32,
    /// weight × the model's item-to-item weight.
    pub contribution: f32,
}

/// An item like another, and how often the two go together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similar {
    pub item: u32,
    /// The model's item-to-item weight (item-kNN: the similarity; EASE: B;
    /// popularity: the binary cosine).
    pub score: f32,
    /// Users with both items.
    pub common: u32,
    /// common / users.
    pub support: f64,
    /// common / users of the first item.
    pub confidence: f64,
    /// confidence / (users of this item / users).
    pub lift: f64,
    /// common / √(users of one · users of the other).
    pub cosine: f64,
}

impl Recommender {
    /// The index of item id `key`, if the recommender knows it.
    pub fn item_index(&self, key: ItemKey<'_>) -> Option<u32> {
        let found = match (&self.items, key) {
            (ItemKeys::Int(keys), ItemKey::Int(k)) => keys.binary_search(&k),
            (ItemKeys::Text(keys), ItemKey::Text(k)) => {
                keys.binary_search_by(|x| x.as_str().cmp(k))
            }
            _ => return None,
        };
        found.ok().map(|i| i as u32)
    }

    /// The top `request.k` for user `ordinal` (none: unknown, cold start).
    pub fn recommend(
        &self,
        ordinal: Option<u32>,
        request: &Request<'_>,
        scratch: &mut Scores,
    ) -> Vec<Scored> {
        let (items, weights) = ordinal.map_or((&[][..], &[][..]), |o| self.interactions.history(o));
        let mut filter = request.filter.clone();
        if request.exclude_seen {
            filter.exclude.push(items);
        }
        let fallback = request.fallback.then_some(self.popular());
        if items.is_empty() || items.len() < request.min_history {
            return top(&Scores::default(), request.k, &filter, fallback);
        }
        self.model.score(items, weights, scratch);
        let mut chosen = top(scratch, request.k, &filter, fallback);
        if matches!(self.model, Model::Popularity(_)) {
            // Popularity ranks everyone alike: its picks are the fallback's.
            for s in &mut chosen {
                s.fallback = true;
            }
        }
        chosen
    }

    /// [`Recommender::recommend`] for each of `ordinals`, on every core.
    pub fn recommend_many(&self, ordinals: &[u32], request: &Request<'_>) -> Vec<Vec<Scored>> {
        per_core(ordinals.len(), |i, scratch: &mut Scores| {
            self.recommend(Some(ordinals[i]), request, scratch)
        })
    }

    /// The history items of user `ordinal` that add to `item`'s score, the
    /// largest contribution first, at most `n`.
    pub fn explain(&self, ordinal: u32, item: u32, n: usize) -> Vec<Contribution> {
        let (items, weights) = self.interactions.history(ordinal);
        let mut parts: Vec<Contribution> = match &self.model {
            Model::ItemKnn(knn) => knn
                .neighbours(item)
                .iter()
                .filter_map(|nb| {
                    let at = items.binary_search(&nb.item).ok()?;
                    Some(Contribution {
                        item: nb.item,
                        weight: weights[at],
                        contribution: weights[at] * nb.similarity,
                    })
                })
                .collect(),
            Model::Ease(ease) => items
                .iter()
                .zip(weights)
                .map(|(&i, &w)| Contribution {
                    item: i,
                    weight: w,
                    contribution: w * ease.row(i)[item as usize],
                })
                .filter(|c| c.contribution != 0.0)
                .collect(),
            Model::Popularity(_) => Vec::new(),
        };
        parts.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then(a.item.cmp(&b.item))
        });
        parts.truncate(n);
        parts
    }

    /// The `k` items most like `item` by the model's item-to-item weights
    /// (ties to the lower index), with their co-occurrence measures.
    pub fn similar(&self, item: u32, k: usize) -> Vec<Similar> {
        let data = &self.interactions;
        let mut scratch = CoCounts::default();
        let co = data.co_occurrences(item, &mut scratch);
        let mut common = vec![0u32; data.items];
        for &(j, c, _) in co {
            common[j as usize] = c;
        }
        let users = data.user_count() as f64;
        let n_i = data.item_users(item) as f64;
        let cosine =
            |j: u32| f64::from(common[j as usize]) / (n_i * data.item_users(j) as f64).sqrt();
        let mut ranked: Vec<(u32, f32)> = match &self.model {
            Model::ItemKnn(knn) => knn
                .neighbours(item)
                .iter()
                .map(|nb| (nb.item, nb.similarity))
                .collect(),
            Model::Ease(ease) => ease
                .row(item)
                .iter()
                .enumerate()
                .filter(|&(j, &b)| j != item as usize && b != 0.0)
                .map(|(j, &b)| (j as u32, b))
                .collect(),
            Model::Popularity(_) => co
                .iter()
                .filter(|&&(j, _, _)| j != item)
                .map(|&(j, _, _)| (j, cosine(j) as f32))
                .collect(),
        };
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
            .into_iter()
            .map(|(j, score)| {
                let c = f64::from(common[j as usize]);
                let n_j = data.item_users(j) as f64;
                let confidence = if n_i > 0.0 { c / n_i } else { 0.0 };
                Similar {
                    item: j,
                    score,
                    common: common[j as usize],
                    support: if users > 0.0 { c / users } else { 0.0 },
                    confidence,
                    lift: if n_j > 0.0 {
                        confidence / (n_j / users)
                    } else {
                        0.0
                    },
                    cosine: if n_j > 0.0 && n_i > 0.0 {
                        cosine(j)
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }

    /// Each item's popularity among `users` only (the histories' weights
    /// summed with `weighted`, else users counted), and how many of them
    /// have any interaction.
    pub fn popularity_among(&self, users: &RoaringBitmap, weighted: bool) -> (Vec<f32>, u64) {
        let mut popularity = vec![0f32; self.interactions.items];
        let mut active = 0;
        for ordinal in users {
            let (items, weights) = self.interactions.history(ordinal);
            if items.is_empty() {
                continue;
            }
            active += 1;
            for (&i, &w) in items.iter().zip(weights) {
                popularity[i as usize] += if weighted { w } else { 1.0 };
            }
        }
        (popularity, active)
    }
}

/// An item id to look up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ItemKey<'a> {
    Int(i64),
    Text(&'a str),
}

/// Items by descending score, ties to the lower index: the `k` first.
pub fn top_items(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ranked: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > 0.0)
        .map(|(i, &s)| (i as u32, s))
        .collect();
    let order =
        |a: &(u32, f32), b: &(u32, f32)| -> Ordering { b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)) };
    if ranked.len() > k && k > 0 {
        ranked.select_nth_unstable_by(k - 1, order);
        ranked.truncate(k);
    }
    ranked.sort_by(order);
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::super::tests::small;
    use super::super::{ItemKnn, Similarity};
    use super::*;

    /// `small()` (users 10: {0, 1}, 11: {0, 1, 2}, 12: {1, 2}, 13: {2};
    /// items ids 100, 200, 300) with cosine item-kNN: sim(0, 1) = 2/√6,
    /// sim(0, 2) = 1/√6, sim(1, 2) = 2/3.
    fn knn() -> Recommender {
        let data = small();
        let model = Model::ItemKnn(ItemKnn::build(&data, Similarity::Cosine, 2));
        let popularity = data.popularity(false);
        Recommender::new(ItemKeys::Int(vec![100, 200, 300]), data, popularity, model)
    }

    fn picks(scored: &[Scored]) -> Vec<(u32, f32, Option<u32>, bool)> {
        scored
            .iter()
            .map(|s| (s.item, (s.score * 1e4).round() / 1e4, s.reason, s.fallback))
            .collect()
    }

    #[test]
    fn a_top_k_scores_then_falls_back_to_popular_items() {
        let r = knn();
        let mut scratch = Scores::default();
        let request = Request {
            k: 3,
            ..Request::default()
        };
        // User 13 has item 2: item 1 scores 2/3, item 0 1/√6, both because
        // of item 2; seen item 2 is left out, so two come back.
        assert_eq!(
            picks(&r.recommend(Some(13), &request, &mut scratch)),
            vec![(1, 0.6667, Some(2), false), (0, 0.4082, Some(2), false)]
        );
        // Seen items allowed: item 2 itself scores nothing (it is not its own
        // neighbour), so the fallback adds it.
        let repeat = Request {
            exclude_seen: false,
            ..request.clone()
        };
        assert_eq!(
            picks(&r.recommend(Some(13), &repeat, &mut scratch)),
            vec![
                (1, 0.6667, Some(2), false),
                (0, 0.4082, Some(2), false),
                (2, 0.0, None, true)
            ]
        );
        // Unknown users and short histories get popular items (by users:
        // 1 and 2 have three, 0 two; ties to the lower index).
        assert_eq!(
            picks(&r.recommend(None, &request, &mut scratch)),
            vec![
                (1, 0.0, None, true),
                (2, 0.0, None, true),
                (0, 0.0, None, true)
            ]
        );
        let min_history = Request {
            min_history: 2,
            ..request.clone()
        };
        assert_eq!(
            picks(&r.recommend(Some(13), &min_history, &mut scratch)),
            vec![(1, 0.0, None, true), (0, 0.0, None, true)]
        );
        let no_fallback = Request {
            fallback: false,
            ..request.clone()
        };
        assert!(r.recommend(None, &no_fallback, &mut scratch).is_empty());
        // The filter applies to the fallback as well.
        let include = Request {
            filter: Filter {
                include: Some(&[0, 2]),
                ..Filter::default()
            },
            ..request.clone()
        };
        assert_eq!(
            picks(&r.recommend(None, &include, &mut scratch)),
            vec![(2, 0.0, None, true), (0, 0.0, None, true)]
        );
        assert_eq!(
            r.recommend_many(&[13, 10, 99], &request),
            vec![
                r.recommend(Some(13), &request, &mut scratch),
                r.recommend(Some(10), &request, &mut scratch),
                r.recommend(Some(99), &request, &mut scratch),
            ]
        );
    }

    #[test]
    fn explanations_similar_items_and_popularity_among_users() {
        let r = knn();
        let explained: Vec<(u32, f32)> = r
            .explain(11, 2, 5)
            .iter()
            .map(|c| (c.item, (c.contribution * 1e4).round() / 1e4))
            .collect();
        assert_eq!(explained, vec![(1, 0.6667), (0, 0.4082)]);
        assert_eq!(r.explain(11, 2, 1).len(), 1);
        assert!(r.explain(13, 2, 5).is_empty(), "13 has only item 2");

        let similar = r.similar(0, 5);
        assert_eq!(similar.len(), 2);
        let first = similar[0];
        assert_eq!((first.item, first.common), (1, 2));
        assert!((f64::from(first.score) - 2.0 / 6f64.sqrt()).abs() < 1e-6);
        assert_eq!((first.support, first.confidence), (0.5, 1.0));
        assert!((first.lift - 4.0 / 3.0).abs() < 1e-12);
        assert!((first.cosine - 2.0 / 6f64.sqrt()).abs() < 1e-12);
        let second = similar[1];
        assert_eq!((second.item, second.common), (2, 1));
        assert_eq!((second.support, second.confidence), (0.25, 0.5));
        assert!((second.lift - 2.0 / 3.0).abs() < 1e-12);

        let users: RoaringBitmap = [10, 12, 99].into_iter().collect();
        assert_eq!(r.popularity_among(&users, false), (vec![1.0, 2.0, 1.0], 2));
        assert_eq!(
            top_items(&[1.0, 2.0, 1.0, 0.0], 2),
            vec![(1, 2.0), (0, 1.0)]
        );
        assert_eq!(r.item_index(ItemKey::Int(300)), Some(2));
        assert_eq!(r.item_index(ItemKey::Int(301)), None);
        assert_eq!(r.item_index(ItemKey::Text("300")), None);
    }
}

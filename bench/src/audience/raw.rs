//! The raw lower bound: the tag store's bitmaps built directly with roaring
//! in the bench process (the same users by value and by day as cohortdb's
//! tag indexes, over the same ordinals) and each audience computed with
//! direct roaring calls, no SQL, no parsing, no lookups: terms are resolved
//! to bitmaps before timing.
//!
//! The evaluation is what a careful hand-written program would do: AND
//! chains smallest first, built without copying a borrowed bitmap, unions of
//! several bitmaps with roaring's multi-way union, and the last step of a
//! count done with `intersection_len`/`difference_len` instead of building
//! the final set.

use std::borrow::Cow;
use std::collections::BTreeMap;

use roaring::{MultiOps, RoaringBitmap};

use super::data::{EVENT_TYPES, Layout, Sink};
use super::expr::Expr;

/// The bitmaps of one dataset, by user ordinal (user id − 1).
pub struct RawTags {
    layout: Layout,
    /// By attribute, then value rank.
    values: Vec<Vec<RoaringBitmap>>,
    /// `vip=false` and `vip=true`.
    vip: [RoaringBitmap; 2],
    /// Every user: what NOT is relative to.
    users: RoaringBitmap,
    /// Users with an event.
    event_users: RoaringBitmap,
    /// By event type: every user with one, and by day.
    event_all: Vec<RoaringBitmap>,
    event_days: Vec<BTreeMap<i32, RoaringBitmap>>,
    /// Each ordinal's user id, as the user-key dictionary keeps them.
    user_ids: Vec<i64>,
}

impl RawTags {
    pub fn new(layout: &Layout) -> RawTags {
        RawTags {
            values: layout
                .attributes
                .iter()
                .map(|a| vec![RoaringBitmap::new(); a.values])
                .collect(),
            layout: layout.clone(),
            vip: [RoaringBitmap::new(), RoaringBitmap::new()],
            users: RoaringBitmap::new(),
            event_users: RoaringBitmap::new(),
            event_all: vec![RoaringBitmap::new(); EVENT_TYPES.len()],
            event_days: vec![BTreeMap::new(); EVENT_TYPES.len()],
            user_ids: Vec::new(),
        }
    }

    /// Copies every bitmap once it is complete, so each one's containers sit
    /// together in memory as a bitmap read whole from a file does (built by
    /// appends, they are strewn among the others').
    pub fn compact(&mut self) {
        let bitmaps = self
            .values
            .iter_mut()
            .flatten()
            .chain(&mut self.vip)
            .chain(std::iter::once(&mut self.users))
            .chain(&mut self.event_all)
            .chain(self.event_days.iter_mut().flat_map(|d| d.values_mut()));
        for bitmap in bitmaps {
            let mut bytes = Vec::with_capacity(bitmap.serialized_size());
            bitmap
                .serialize_into(&mut bytes)
                .expect("writing to a Vec does not fail");
            *bitmap = RoaringBitmap::deserialize_from(&bytes[..]).expect("just serialized");
        }
    }

    /// The ids of `users`, in ordinal order.
    pub fn ids(&self, users: &RoaringBitmap) -> Vec<i64> {
        users.iter().map(|o| self.user_ids[o as usize]).collect()
    }

    /// Bytes of every value and day bitmap serialized (what `cohortdb_tags`
    /// sums), and how many bitmaps.
    pub fn bytes(&self) -> (u64, usize) {
        let bitmaps = self
            .values
            .iter()
            .flatten()
            .chain(&self.vip)
            .chain(&self.event_all)
            .chain(self.event_days.iter().flat_map(|d| d.values()));
        bitmaps.fold((0, 0), |(bytes, n), b| {
            (bytes + b.serialized_size() as u64, n + 1)
        })
    }

    /// Whether every user with an event is a user (so the universe is the
    /// users table's users, as cohortdb's is the union of both tables').
    pub fn events_within_users(&self) -> bool {
        self.event_users.is_subset(&self.users)
    }

    /// The bitmaps of `expr`'s terms, resolved for evaluation.
    pub fn plan(&self, expr: &Expr) -> Result<Plan<'_>, String> {
        Ok(Plan {
            root: self.node(expr)?,
            universe: &self.users,
        })
    }

    fn value(&self, column: &str, value: &str) -> Result<&RoaringBitmap, String> {
        let (index, attribute) = self
            .layout
            .attribute(column)
            .ok_or_else(|| format!("no attribute {column}"))?;
        let rank = attribute
            .rank(value)
            .ok_or_else(|| format!("{column} has no value {value}"))?;
        Ok(&self.values[index][rank])
    }

    fn node(&self, expr: &Expr) -> Result<Node<'_>, String> {
        Ok(match expr {
            Expr::Value { column, value } => Node::Union(vec![self.value(column, value)?]),
            Expr::In { column, values } => Node::Union(
                values
                    .iter()
                    .map(|v| self.value(column, v))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Flag(column) if column == "vip" => Node::Union(vec![&self.vip[1]]),
            Expr::Flag(column) => return Err(format!("no boolean attribute {column}")),
            Expr::Event {
                event_type,
                from,
                to,
            } => {
                let t = EVENT_TYPES
                    .iter()
                    .position(|(name, _)| name == event_type)
                    .ok_or_else(|| format!("no event type {event_type}"))?;
                Node::Union(
                    self.event_days[t]
                        .range(from..=to)
                        .map(|(_, b)| b)
                        .collect(),
                )
            }
            Expr::And(parts) => Node::And(
                parts
                    .iter()
                    .map(|p| self.node(p))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(parts) => Node::Or(
                parts
                    .iter()
                    .map(|p| self.node(p))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(inner) => Node::Not(Box::new(self.node(inner)?)),
        })
    }

    /// `(value, users)` of each value of `column`, in value order.
    pub fn column_values(&self, column: &str) -> Result<Vec<(String, &RoaringBitmap)>, String> {
        let (index, attribute) = self
            .layout
            .attribute(column)
            .ok_or_else(|| format!("no attribute {column}"))?;
        let mut values: Vec<(String, &RoaringBitmap)> = self.values[index]
            .iter()
            .enumerate()
            .map(|(rank, b)| (attribute.value(rank), b))
            .collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(values)
    }

    pub fn universe(&self) -> &RoaringBitmap {
        &self.users
    }
}

/// Appends `ordinal` to `bitmap`. Users come in ordinal order and a user's
/// events together, so an ordinal is either larger than every one in the
/// bitmap or the last one again (refused by `try_push`, and already there).
fn push(bitmap: &mut RoaringBitmap, ordinal: u32) {
    let _ = bitmap.try_push(ordinal);
}

impl Sink for RawTags {
    fn user(&mut self, ordinal: u32, ranks: &[u16], vip: bool) -> Result<(), String> {
        for (bitmaps, &rank) in self.values.iter_mut().zip(ranks) {
            push(&mut bitmaps[usize::from(rank)], ordinal);
        }
        push(&mut self.vip[usize::from(vip)], ordinal);
        push(&mut self.users, ordinal);
        self.user_ids.push(i64::from(ordinal) + 1);
        Ok(())
    }

    fn event(
        &mut self,
        ordinal: u32,
        event_type: u8,
        day: i32,
        _micros: i64,
    ) -> Result<(), String> {
        let t = usize::from(event_type);
        push(&mut self.event_all[t], ordinal);
        push(self.event_days[t].entry(day).or_default(), ordinal);
        push(&mut self.event_users, ordinal);
        Ok(())
    }
}

/// An expression with its terms resolved to bitmaps.
enum Node<'a> {
    /// The union of these bitmaps (one for a single tag).
    Union(Vec<&'a RoaringBitmap>),
    And(Vec<Node<'a>>),
    Or(Vec<Node<'a>>),
    Not(Box<Node<'a>>),
}

/// An audience ready to evaluate.
pub struct Plan<'a> {
    root: Node<'a>,
    universe: &'a RoaringBitmap,
}

impl<'a> Plan<'a> {
    /// The audience's size.
    pub fn count(&self) -> u64 {
        self.count_node(&self.root)
    }

    /// The audience's users.
    pub fn evaluate(&self) -> Cow<'a, RoaringBitmap> {
        self.eval(&self.root)
    }

    fn estimate(&self, node: &Node<'a>) -> u64 {
        match node {
            Node::Union(parts) => parts.iter().map(|b| b.len()).sum(),
            Node::And(parts) => parts.iter().map(|p| self.estimate(p)).min().unwrap_or(0),
            Node::Or(parts) => parts.iter().map(|p| self.estimate(p)).sum(),
            Node::Not(_) => self.universe.len(),
        }
    }

    fn eval(&self, node: &Node<'a>) -> Cow<'a, RoaringBitmap> {
        match node {
            Node::Union(parts) if parts.len() == 1 => Cow::Borrowed(parts[0]),
            Node::Union(parts) => Cow::Owned(parts.iter().copied().union()),
            Node::Or(parts) => {
                let parts: Vec<Cow<'a, RoaringBitmap>> =
                    parts.iter().map(|p| self.eval(p)).collect();
                Cow::Owned(parts.iter().map(|p| p.as_ref()).union())
            }
            Node::Not(inner) => Cow::Owned(self.universe - self.eval(inner).as_ref()),
            Node::And(parts) => {
                let (positive, negated) = self.and_parts(parts);
                let mut result = self.intersection(&positive);
                for part in negated {
                    if result.is_empty() {
                        break;
                    }
                    *result.to_mut() -= self.eval(part).as_ref();
                }
                result
            }
        }
    }

    /// An AND's positive parts, smallest first, and its negated parts'
    /// insides.
    fn and_parts<'n>(&self, parts: &'n [Node<'a>]) -> (Vec<&'n Node<'a>>, Vec<&'n Node<'a>>) {
        let mut positive = Vec::new();
        let mut negated = Vec::new();
        for part in parts {
            match part {
                Node::Not(inner) => negated.push(inner.as_ref()),
                other => positive.push(other),
            }
        }
        positive.sort_by_cached_key(|p| self.estimate(p));
        (positive, negated)
    }

    /// The intersection of `parts` (the universe for none), smallest first.
    fn intersection(&self, parts: &[&Node<'a>]) -> Cow<'a, RoaringBitmap> {
        match parts {
            [] => Cow::Borrowed(self.universe),
            [only] => self.eval(only),
            [first, second, rest @ ..] => {
                let mut result = self.eval(first).as_ref() & self.eval(second).as_ref();
                for part in rest {
                    if result.is_empty() {
                        break;
                    }
                    result &= self.eval(part).as_ref();
                }
                Cow::Owned(result)
            }
        }
    }

    fn count_node(&self, node: &Node<'a>) -> u64 {
        match node {
            Node::Union(parts) if parts.len() == 1 => parts[0].len(),
            Node::Not(inner) => self.universe.difference_len(self.eval(inner).as_ref()),
            Node::And(parts) => {
                let (positive, mut negated) = self.and_parts(parts);
                let Some(last_negated) = negated.pop() else {
                    let (rest, last) = positive.split_at(positive.len() - 1);
                    if rest.is_empty() {
                        return self.count_node(last[0]);
                    }
                    return self
                        .intersection(rest)
                        .intersection_len(self.eval(last[0]).as_ref());
                };
                let mut result = self.intersection(&positive);
                for part in negated {
                    *result.to_mut() -= self.eval(part).as_ref();
                }
                result.difference_len(self.eval(last_negated).as_ref())
            }
            other => self.eval(other).len(),
        }
    }
}

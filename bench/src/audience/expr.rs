//! The workloads' audiences, written once as an [`Expr`] and rendered for
//! every system: cohortdb's audience language, DuckDB SQL over the wide
//! users table and over the long `user_tags` table (as set operations and as
//! GROUP BY ... HAVING), and ClickHouse bitmap functions over precomputed
//! `groupBitmap` states for chDB. The raw bound evaluates the same tree
//! (`super::raw`).

use super::data::date_text;

/// Users as a boolean combination of tags.
#[derive(Clone, Debug)]
pub enum Expr {
    /// `column=value` on the users table.
    Value {
        column: String,
        value: String,
    },
    /// `column IN (values)`: one tag per value.
    In {
        column: String,
        values: Vec<String>,
    },
    /// A boolean users column being true (`vip`).
    Flag(String),
    /// Users with an event of `event_type` on days `from..=to` (days since
    /// 1970-01-01).
    Event {
        event_type: String,
        from: i32,
        to: i32,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

pub fn value(column: &str, value: &str) -> Expr {
    Expr::Value {
        column: column.to_string(),
        value: value.to_string(),
    }
}

pub fn one_of(column: &str, values: &[&str]) -> Expr {
    Expr::In {
        column: column.to_string(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

pub fn not(inner: Expr) -> Expr {
    Expr::Not(Box::new(inner))
}

/// The long table's and chDB's name of a users tag.
fn tag_name(column: &str, value: &str) -> String {
    format!("{column}={value}")
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn quoted_list(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .map(|t| quoted(&t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The universe tag in chDB's `tag_bitmaps`: every user.
pub const CHDB_ALL: &str = "__all__";

impl Expr {
    /// Tags the expression names (an IN counts each value, a window one).
    pub fn tags(&self) -> usize {
        match self {
            Expr::Value { .. } | Expr::Flag(_) | Expr::Event { .. } => 1,
            Expr::In { values, .. } => values.len(),
            Expr::And(parts) | Expr::Or(parts) => parts.iter().map(Expr::tags).sum(),
            Expr::Not(inner) => inner.tags(),
        }
    }

    /// The expression's value for a user with none of its tags.
    fn holds_for_untagged(&self) -> bool {
        match self {
            Expr::Value { .. } | Expr::In { .. } | Expr::Flag(_) | Expr::Event { .. } => false,
            Expr::And(parts) => parts.iter().all(Expr::holds_for_untagged),
            Expr::Or(parts) => parts.iter().any(Expr::holds_for_untagged),
            Expr::Not(inner) => !inner.holds_for_untagged(),
        }
    }

    fn is_compound(&self) -> bool {
        matches!(self, Expr::And(_) | Expr::Or(_))
    }

    /// cohortdb's audience expression.
    pub fn cohortdb(&self) -> String {
        let child = |e: &Expr| {
            if e.is_compound() {
                format!("({})", e.cohortdb())
            } else {
                e.cohortdb()
            }
        };
        match self {
            Expr::Value { column, value } => format!("{column}={value}"),
            Expr::In { column, values } => format!("{column} IN ({})", values.join(", ")),
            Expr::Flag(column) => column.clone(),
            Expr::Event {
                event_type,
                from,
                to,
            } => format!(
                "event_type={event_type} DURING BETWEEN '{}' AND '{}'",
                date_text(*from),
                date_text(*to)
            ),
            Expr::And(parts) => parts.iter().map(child).collect::<Vec<_>>().join(" AND "),
            Expr::Or(parts) => parts.iter().map(child).collect::<Vec<_>>().join(" OR "),
            Expr::Not(inner) => format!("NOT {}", child(inner)),
        }
    }

    /// DuckDB's events filter for a window.
    fn events_filter(event_type: &str, from: i32, to: i32) -> String {
        format!(
            "event_type = {} AND ts >= TIMESTAMP '{} 00:00:00' AND ts < TIMESTAMP '{} 00:00:00'",
            quoted(event_type),
            date_text(from),
            date_text(to + 1)
        )
    }

    /// A predicate over DuckDB's wide users table (tags as columns).
    pub fn duckdb_wide(&self) -> String {
        let child = |e: &Expr| format!("({})", e.duckdb_wide());
        match self {
            Expr::Value { column, value } => format!("{column} = {}", quoted(value)),
            Expr::In { column, values } => {
                format!("{column} IN ({})", quoted_list(values.iter().cloned()))
            }
            Expr::Flag(column) => column.clone(),
            Expr::Event {
                event_type,
                from,
                to,
            } => format!(
                "user_id IN (SELECT user_id FROM events WHERE {})",
                Self::events_filter(event_type, *from, *to)
            ),
            Expr::And(parts) => parts.iter().map(child).collect::<Vec<_>>().join(" AND "),
            Expr::Or(parts) => parts.iter().map(child).collect::<Vec<_>>().join(" OR "),
            Expr::Not(inner) => format!("NOT {}", child(inner)),
        }
    }

    /// A query of the users' ids over DuckDB's long `user_tags(user_id, tag)`
    /// table, as set operations (INTERSECT, UNION, EXCEPT).
    pub fn duckdb_sets(&self) -> String {
        let from = |e: &Expr| format!("SELECT user_id FROM ({})", e.duckdb_sets());
        match self {
            Expr::Value { column, value } => format!(
                "SELECT user_id FROM user_tags WHERE tag = {}",
                quoted(&tag_name(column, value))
            ),
            Expr::In { column, values } => format!(
                "SELECT user_id FROM user_tags WHERE tag IN ({})",
                quoted_list(values.iter().map(|v| tag_name(column, v)))
            ),
            Expr::Flag(column) => format!(
                "SELECT user_id FROM user_tags WHERE tag = {}",
                quoted(&tag_name(column, "true"))
            ),
            Expr::Event {
                event_type,
                from,
                to,
            } => format!(
                "SELECT user_id FROM events WHERE {}",
                Self::events_filter(event_type, *from, *to)
            ),
            Expr::And(parts) => {
                let (negated, positive): (Vec<&Expr>, Vec<&Expr>) =
                    parts.iter().partition(|p| matches!(p, Expr::Not(_)));
                let mut sql = if positive.is_empty() {
                    "SELECT user_id FROM users".to_string()
                } else {
                    positive
                        .iter()
                        .map(|p| from(p))
                        .collect::<Vec<_>>()
                        .join(" INTERSECT ")
                };
                for part in negated {
                    let Expr::Not(inner) = part else {
                        unreachable!("partitioned")
                    };
                    sql = format!("SELECT user_id FROM ({sql}) EXCEPT {}", from(inner));
                }
                sql
            }
            Expr::Or(parts) => parts.iter().map(from).collect::<Vec<_>>().join(" UNION "),
            Expr::Not(inner) => format!("SELECT user_id FROM users EXCEPT {}", from(inner)),
        }
    }

    /// A query of the users' ids over `user_tags` as one GROUP BY user_id
    /// with the expression in HAVING over `bool_or(tag = ...)`; `None` when a
    /// user with none of the tags is in the audience (such users have no
    /// group).
    pub fn duckdb_having(&self) -> Option<String> {
        if self.holds_for_untagged() {
            return None;
        }
        let mut tags = Vec::new();
        let mut events = Vec::new();
        let having = self.having(&mut tags, &mut events);
        let mut rows = vec![format!(
            "SELECT user_id, tag FROM user_tags WHERE tag IN ({})",
            quoted_list(tags)
        )];
        rows.extend(events);
        Some(format!(
            "SELECT user_id FROM ({}) GROUP BY user_id HAVING {having}",
            rows.join(" UNION ALL ")
        ))
    }

    fn having(&self, tags: &mut Vec<String>, events: &mut Vec<String>) -> String {
        let mut child = |e: &Expr| format!("({})", e.having(tags, events));
        match self {
            Expr::Value { column, value } => {
                tags.push(tag_name(column, value));
                format!("bool_or(tag = {})", quoted(&tag_name(column, value)))
            }
            Expr::In { column, values } => {
                let names: Vec<String> = values.iter().map(|v| tag_name(column, v)).collect();
                tags.extend(names.iter().cloned());
                format!("bool_or(tag IN ({}))", quoted_list(names))
            }
            Expr::Flag(column) => {
                tags.push(tag_name(column, "true"));
                format!("bool_or(tag = {})", quoted(&tag_name(column, "true")))
            }
            Expr::Event {
                event_type,
                from,
                to,
            } => {
                let name = format!("event#{}", events.len());
                events.push(format!(
                    "SELECT user_id, {} AS tag FROM events WHERE {}",
                    quoted(&name),
                    Self::events_filter(event_type, *from, *to)
                ));
                format!("bool_or(tag = {})", quoted(&name))
            }
            Expr::And(parts) => parts.iter().map(child).collect::<Vec<_>>().join(" AND "),
            Expr::Or(parts) => parts.iter().map(child).collect::<Vec<_>>().join(" OR "),
            Expr::Not(inner) => format!("NOT {}", child(inner)),
        }
    }

    /// chDB: a `WITH` list binding each leaf's bitmap (a scalar subquery
    /// over the precomputed states) and the bitmap expression over them.
    pub fn chdb(&self) -> (String, String) {
        let mut leaves = Vec::new();
        let expr = self.chdb_bitmap(&mut leaves);
        (leaves.join(", "), expr)
    }

    /// chDB: the audience's size, with the last step counted without
    /// building the set (`bitmapAndCardinality` and friends) where it can be.
    pub fn chdb_count(&self) -> String {
        let mut leaves = Vec::new();
        let count = match self {
            Expr::And(parts) => {
                let (positive, negated) = Self::chdb_and_parts(parts, &mut leaves);
                match (positive.len(), negated) {
                    (0, negated) => format!(
                        "bitmapAndnotCardinality({}, {})",
                        Self::chdb_all(&mut leaves),
                        negated.expect("an AND has parts")
                    ),
                    (1, None) => format!("bitmapCardinality({})", positive[0]),
                    (n, None) => format!(
                        "bitmapAndCardinality({}, {})",
                        Self::chdb_fold("bitmapAnd", &positive[..n - 1]),
                        positive[n - 1]
                    ),
                    (_, Some(negated)) => format!(
                        "bitmapAndnotCardinality({}, {negated})",
                        Self::chdb_fold("bitmapAnd", &positive)
                    ),
                }
            }
            Expr::Or(parts) if parts.len() == 2 => {
                let a = parts[0].chdb_bitmap(&mut leaves);
                let b = parts[1].chdb_bitmap(&mut leaves);
                format!("bitmapOrCardinality({a}, {b})")
            }
            Expr::Not(inner) => {
                let inner = inner.chdb_bitmap(&mut leaves);
                format!(
                    "bitmapAndnotCardinality({}, {inner})",
                    Self::chdb_all(&mut leaves)
                )
            }
            other => format!("bitmapCardinality({})", other.chdb_bitmap(&mut leaves)),
        };
        format!("WITH {} SELECT {count}", leaves.join(", "))
    }

    /// chDB in one scan of `tag_bitmaps`, for a single users tag or an AND
    /// of them (`groupBitmapAnd` over the rows); `None` for anything else.
    pub fn chdb_one_scan(&self) -> Option<String> {
        let single = |e: &Expr| match e {
            Expr::Value { column, value } => Some(tag_name(column, value)),
            Expr::Flag(column) => Some(tag_name(column, "true")),
            _ => None,
        };
        match self {
            Expr::And(parts) => {
                let tags: Option<Vec<String>> = parts.iter().map(single).collect();
                Some(format!(
                    "SELECT groupBitmapAnd(bm) FROM tag_bitmaps WHERE tag IN ({})",
                    quoted_list(tags?)
                ))
            }
            other => Some(format!(
                "SELECT bitmapCardinality(bm) FROM tag_bitmaps WHERE tag = {}",
                quoted(&single(other)?)
            )),
        }
    }

    fn chdb_leaf(leaves: &mut Vec<String>, subquery: String) -> String {
        let name = format!("t{}", leaves.len());
        leaves.push(format!("({subquery}) AS {name}"));
        name
    }

    fn chdb_all(leaves: &mut Vec<String>) -> String {
        let all = format!(
            "SELECT bm FROM tag_bitmaps WHERE tag = {}",
            quoted(CHDB_ALL)
        );
        match leaves.iter().position(|l| l.contains(CHDB_ALL)) {
            Some(i) => format!("t{i}"),
            None => Self::chdb_leaf(leaves, all),
        }
    }

    fn chdb_fold(function: &str, parts: &[String]) -> String {
        let mut iter = parts.iter().rev();
        let mut acc = iter.next().expect("at least one part").clone();
        for part in iter {
            acc = format!("{function}({part}, {acc})");
        }
        acc
    }

    /// An AND's positive parts and the union of its negated parts' insides.
    fn chdb_and_parts(parts: &[Expr], leaves: &mut Vec<String>) -> (Vec<String>, Option<String>) {
        let mut positive = Vec::new();
        let mut negated = Vec::new();
        for part in parts {
            match part {
                Expr::Not(inner) => negated.push(inner.chdb_bitmap(leaves)),
                other => positive.push(other.chdb_bitmap(leaves)),
            }
        }
        let negated = (!negated.is_empty()).then(|| Self::chdb_fold("bitmapOr", &negated));
        (positive, negated)
    }

    fn chdb_bitmap(&self, leaves: &mut Vec<String>) -> String {
        match self {
            Expr::Value { column, value } => Self::chdb_leaf(
                leaves,
                format!(
                    "SELECT bm FROM tag_bitmaps WHERE tag = {}",
                    quoted(&tag_name(column, value))
                ),
            ),
            Expr::In { column, values } => Self::chdb_leaf(
                leaves,
                format!(
                    "SELECT groupBitmapMergeState(bm) FROM tag_bitmaps WHERE tag IN ({})",
                    quoted_list(values.iter().map(|v| tag_name(column, v)))
                ),
            ),
            Expr::Flag(column) => Self::chdb_leaf(
                leaves,
                format!(
                    "SELECT bm FROM tag_bitmaps WHERE tag = {}",
                    quoted(&tag_name(column, "true"))
                ),
            ),
            Expr::Event {
                event_type,
                from,
                to,
            } => Self::chdb_leaf(
                leaves,
                format!(
                    "SELECT groupBitmapMergeState(bm) FROM event_bitmaps \
                     WHERE event_type = {} AND day BETWEEN '{}' AND '{}'",
                    quoted(event_type),
                    date_text(*from),
                    date_text(*to)
                ),
            ),
            Expr::And(parts) => {
                let (positive, negated) = Self::chdb_and_parts(parts, leaves);
                let positive = if positive.is_empty() {
                    Self::chdb_all(leaves)
                } else {
                    Self::chdb_fold("bitmapAnd", &positive)
                };
                match negated {
                    Some(negated) => format!("bitmapAndnot({positive}, {negated})"),
                    None => positive,
                }
            }
            Expr::Or(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| p.chdb_bitmap(leaves)).collect();
                Self::chdb_fold("bitmapOr", &parts)
            }
            Expr::Not(inner) => {
                let inner = inner.chdb_bitmap(leaves);
                format!("bitmapAndnot({}, {inner})", Self::chdb_all(leaves))
            }
        }
    }
}

//! The recommendation functions: SQL over `cohortdb_engine::recommend`. Each
//! is a table function of a recommender's name (`CREATE RECOMMENDER`) in its
//! own file under `recommend/`; what they share is here: finding the
//! recommender, item ids both ways, the options of a top k (and the queries
//! in them, which run when the query runs), and the rows of top-k lists.
//!
//! ```sql
//! SELECT * FROM recommend('for_you', 4242, 10);
//! SELECT * FROM recommend('for_you', 4242, 10,
//!     'exclude=(SELECT item_id FROM out_of_stock), per_category=3,
//!      categories=(SELECT item_id, category FROM products)');
//! ```

mod explain_recommendation;
mod popular_items;
mod recommend_batch;
mod recommend_eval;
mod recommend_user;
mod similar_items;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use cohortdb_engine::recommend::{
    Filter, ItemKey, ItemKeys, Recommender, Request, Scored, StoredRecommender,
};
use cohortdb_engine::tags::Tags;
use cohortdb_engine::{Error as EngineError, options};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use crate::error::to_datafusion;
use crate::functions::audience::{constant_text, ordinals_of};
pub(crate) use crate::functions::{constant_or_parameter, count_or_parameter};
use crate::privacy::UserAccess;

/// Registers the recommendation functions; returns their names.
pub(crate) fn register(ctx: &SessionContext, access: &Arc<UserAccess>) -> Vec<String> {
    let functions: [(&str, Arc<dyn TableFunctionImpl>); 6] = [
        (
            "recommend",
            Arc::new(recommend_user::RecommendFunc::new(access)),
        ),
        (
            "recommend_batch",
            Arc::new(recommend_batch::RecommendBatchFunc::new(access)),
        ),
        (
            "similar_items",
            Arc::new(similar_items::SimilarItemsFunc::new(access)),
        ),
        (
            "popular_items",
            Arc::new(popular_items::PopularItemsFunc::new(access)),
        ),
        (
            "explain_recommendation",
            Arc::new(explain_recommendation::ExplainRecommendationFunc::new(
                access,
            )),
        ),
        (
            "recommend_eval",
            Arc::new(recommend_eval::RecommendEvalFunc::new(access)),
        ),
    ];
    super::register_table_functions(ctx, functions)
}

fn invalid(message: String) -> DataFusionError {
    to_datafusion(EngineError::InvalidArgument(message))
}

/// The recommender `name` and its model, read from its file the first time,
/// if the session may use it.
pub(crate) fn recommender(
    access: &UserAccess,
    name: &str,
) -> Result<(Arc<StoredRecommender>, Arc<Recommender>)> {
    let stored = access
        .tags()
        .recommenders
        .get(name)
        .cloned()
        .ok_or_else(|| to_datafusion(EngineError::RecommenderNotFound(name.to_string())))?;
    access
        .policy()
        .check_use(&cohortdb_engine::roles::Object::Recommender(
            name.to_string(),
        ))
        .map_err(to_datafusion)?;
    let model = stored.model().map_err(to_datafusion)?;
    Ok((stored, model))
}

/// The ordinal whose history personalises `user`'s recommendations: `None`
/// for NULL, an unknown user, or one the session's policy leaves out
/// (suppressed users get popular items only). Refused to a role with a
/// minimum audience size: `function` names a user.
pub(crate) fn personal_ordinal(
    function: &str,
    access: &UserAccess,
    tags: &Tags,
    user: &ScalarValue,
) -> Result<Option<u32>> {
    if user.is_null() {
        return Ok(None);
    }
    let mut ordinals = ordinals_of(tags, user.to_array()?.as_ref())?;
    tags.forget_suppressed(&mut ordinals, &access.naming_users(function)?)
        .map_err(to_datafusion)?;
    Ok(ordinals[0])
}

/// The SQL type of `model`'s item ids.
pub(crate) fn item_type(model: &Recommender) -> DataType {
    match model.items {
        ItemKeys::Int(_) => DataType::Int64,
        ItemKeys::Text(_) => DataType::Utf8,
    }
}

/// The ids of item indices.
pub(crate) fn item_ids(
    model: &Recommender,
    indices: impl IntoIterator<Item = Option<u32>>,
) -> ArrayRef {
    match &model.items {
        ItemKeys::Int(keys) => Arc::new(Int64Array::from_iter(
            indices.into_iter().map(|i| i.map(|i| keys[i as usize])),
        )),
        ItemKeys::Text(keys) => Arc::new(StringArray::from_iter(
            indices
                .into_iter()
                .map(|i| i.map(|i| keys[i as usize].as_str())),
        )),
    }
}

/// The indices of item ids (none where the recommender does not know one).
pub(crate) fn item_indices(model: &Recommender, ids: &ArrayRef) -> Result<Vec<Option<u32>>> {
    let ids = cast(ids, &item_type(model))?;
    Ok(match &model.items {
        ItemKeys::Int(_) => ids
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64")
            .iter()
            .map(|id| id.and_then(|id| model.item_index(ItemKey::Int(id))))
            .collect(),
        ItemKeys::Text(_) => ids
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8")
            .iter()
            .map(|id| id.and_then(|id| model.item_index(ItemKey::Text(id))))
            .collect(),
    })
}

/// The index of one item id given as a constant.
pub(crate) fn item_index(model: &Recommender, id: &ScalarValue) -> Result<Option<u32>> {
    Ok(item_indices(model, &id.to_array()?)?[0])
}

/// A list of items in an option: written out, or a query returning them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Items {
    Listed(Vec<String>),
    Query(String),
}

/// What a top k may contain and how it is filled, as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopOptions {
    pub exclude_seen: bool,
    pub include: Option<Items>,
    pub exclude: Option<Items>,
    /// A query of (item, category).
    pub categories: Option<String>,
    pub per_category: Option<usize>,
    /// A query of (item, factor).
    pub boost: Option<String>,
    pub min_history: usize,
    pub fallback: bool,
}

impl Default for TopOptions {
    fn default() -> Self {
        TopOptions {
            exclude_seen: true,
            include: None,
            exclude: None,
            categories: None,
            per_category: None,
            boost: None,
            min_history: 1,
            fallback: true,
        }
    }
}

/// The option names of a top k.
const TOP_OPTIONS: [&str; 8] = [
    "boost",
    "categories",
    "exclude",
    "exclude_seen",
    "fallback",
    "include",
    "min_history",
    "per_category",
];

impl TopOptions {
    pub(crate) fn parse(function: &str, text: &str) -> Result<TopOptions> {
        let mut parsed = TopOptions::default();
        for (key, value, position) in options::split(function, text).map_err(to_datafusion)? {
            let err = |what: &str| {
                invalid(format!(
                    "{function}: option {key} at character {position}: {what}, got {value:?}"
                ))
            };
            let count = || value.parse::<usize>().ok();
            match key.as_str() {
                "exclude_seen" => {
                    parsed.exclude_seen = options::parse_bool(&value)
                        .ok_or_else(|| err("exclude_seen is true or false"))?;
                }
                "include" | "exclude" => {
                    let items = parse_items(&value).ok_or_else(|| {
                        err("a list of items in parentheses, (1, 2) or ('a', 'b'), or a query in parentheses")
                    })?;
                    if key == "include" {
                        parsed.include = Some(items);
                    } else {
                        parsed.exclude = Some(items);
                    }
                }
                "categories" | "boost" => {
                    let Some(Items::Query(query)) = parse_items(&value) else {
                        return Err(err(if key == "boost" {
                            "a query of (item, factor) in parentheses"
                        } else {
                            "a query of (item, category) in parentheses"
                        }));
                    };
                    if key == "boost" {
                        parsed.boost = Some(query);
                    } else {
                        parsed.categories = Some(query);
                    }
                }
                "per_category" => {
                    parsed.per_category = Some(
                        count()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| err("a positive count"))?,
                    );
                }
                "min_history" => {
                    parsed.min_history = count().ok_or_else(|| err("a count"))?;
                }
                "fallback" => {
                    parsed.fallback = match value.to_ascii_lowercase().as_str() {
                        "popular" => true,
                        "none" => false,
                        _ => return Err(err("fallback is popular or none")),
                    };
                }
                other => {
                    return Err(invalid(format!(
                        "{function}: unknown option {other:?} at character {position} (options: {})",
                        TOP_OPTIONS.join(", ")
                    )));
                }
            }
        }
        if parsed.per_category.is_some() != parsed.categories.is_some() {
            return Err(invalid(format!(
                "{function}: per_category and categories go together: categories=(SELECT item, category ...), per_category=n"
            )));
        }
        Ok(parsed)
    }

    /// Runs the options' queries and looks their items up in `model`.
    pub(crate) async fn resolve(
        &self,
        session: &SessionState,
        model: &Recommender,
        function: &str,
    ) -> Result<Resolved> {
        let mut resolved = Resolved {
            exclude_seen: self.exclude_seen,
            min_history: self.min_history,
            fallback: self.fallback,
            per_category: self.per_category,
            ..Resolved::default()
        };
        if let Some(items) = &self.include {
            resolved.include = Some(item_set(session, model, items, function, "include").await?);
        }
        if let Some(items) = &self.exclude {
            resolved.exclude = item_set(session, model, items, function, "exclude").await?;
        }
        if let Some(query) = &self.categories {
            let [items, categories] = query_columns(session, query, function, "categories").await?;
            let categories = cast(&categories, &DataType::Utf8)?;
            let categories = categories
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8");
            let mut ids: HashMap<&str, u32> = HashMap::new();
            let mut of_item = vec![None; model.items.len()];
            for (row, index) in item_indices(model, &items)?.into_iter().enumerate() {
                if let Some(index) = index
                    && categories.is_valid(row)
                {
                    let category = categories.value(row);
                    let next = ids.len() as u32;
                    of_item[index as usize] = Some(*ids.entry(category).or_insert(next));
                }
            }
            resolved.category = Some(of_item);
        }
        if let Some(query) = &self.boost {
            let [items, factors] = query_columns(session, query, function, "boost").await?;
            let factors = cast(&factors, &DataType::Float64).map_err(|e| {
                invalid(format!(
                    "{function}: boost's second column is a number: {e}"
                ))
            })?;
            let factors = factors
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("cast to Float64");
            let mut boost = vec![1f32; model.items.len()];
            for (row, index) in item_indices(model, &items)?.into_iter().enumerate() {
                if let Some(index) = index
                    && factors.is_valid(row)
                {
                    let factor = factors.value(row);
                    if !(factor.is_finite() && factor >= 0.0) {
                        return Err(invalid(format!(
                            "{function}: boost factors are numbers 0 or more, got {factor}"
                        )));
                    }
                    boost[index as usize] = factor as f32;
                }
            }
            resolved.boost = Some(boost);
        }
        Ok(resolved)
    }
}

/// `(1, 2)`, `('a', 'b c')` or `(SELECT ...)`.
fn parse_items(text: &str) -> Option<Items> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?.trim();
    let first = inner
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    if ["select", "with", "values", "table"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(first))
    {
        return Some(Items::Query(inner.to_string()));
    }
    let mut listed = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (item, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_string(), &rest[end..])
        };
        if item.is_empty() {
            return None;
        }
        listed.push(item);
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(more) => more.trim_start(),
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(Items::Listed(listed))
}

/// The indices of `items` the model knows, ascending.
async fn item_set(
    session: &SessionState,
    model: &Recommender,
    items: &Items,
    function: &str,
    what: &str,
) -> Result<Vec<u32>> {
    let ids: ArrayRef = match items {
        Items::Listed(listed) => Arc::new(StringArray::from_iter_values(listed)),
        Items::Query(query) => {
            let [ids] = query_columns(session, query, function, what).await?;
            ids
        }
    };
    let ids = match (&model.items, ids.data_type()) {
        // Written-out numbers arrive as text.
        (ItemKeys::Int(_), DataType::Utf8) => {
            let text = ids.as_any().downcast_ref::<StringArray>().expect("Utf8");
            let parsed: Option<Vec<i64>> = text
                .iter()
                .map(|t| t.and_then(|t| t.parse().ok()))
                .collect();
            let parsed = parsed
                .ok_or_else(|| invalid(format!("{function}: {what}: the item ids are integers")))?;
            Arc::new(Int64Array::from(parsed)) as ArrayRef
        }
        _ => ids,
    };
    let mut set: Vec<u32> = item_indices(model, &ids)?.into_iter().flatten().collect();
    set.sort_unstable();
    set.dedup();
    Ok(set)
}

/// Runs the query of an option (or argument) `what`, which must return `N`
/// columns; each column whole.
async fn query_columns<const N: usize>(
    session: &SessionState,
    query: &str,
    function: &str,
    what: &str,
) -> Result<[ArrayRef; N]> {
    crate::functions::deferred::query_columns(session, query, |found| {
        invalid(format!(
            "{function}: the query of {what} returns {N} column{}, not {found}",
            if N == 1 { "" } else { "s" }
        ))
    })
    .await
}

/// A top k's options with their items looked up.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    exclude_seen: bool,
    min_history: usize,
    fallback: bool,
    per_category: Option<usize>,
    include: Option<Vec<u32>>,
    exclude: Vec<u32>,
    category: Option<Vec<Option<u32>>>,
    boost: Option<Vec<f32>>,
}

impl Resolved {
    pub(crate) fn request(&self, k: usize) -> Request<'_> {
        Request {
            k,
            exclude_seen: self.exclude_seen,
            filter: Filter {
                exclude: vec![&self.exclude],
                include: self.include.as_deref(),
                category: self.category.as_deref(),
                per_category: self.per_category,
                boost: self.boost.as_deref(),
            },
            min_history: self.min_history,
            fallback: self.fallback,
        }
    }
}

/// The columns of top-k lists after any leading ones: item_id, score,
/// rank, reason_item_id, source.
pub(crate) fn top_fields(model: &Recommender) -> Vec<Field> {
    vec![
        Field::new("item_id", item_type(model), false),
        Field::new("score", DataType::Float64, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("reason_item_id", item_type(model), true),
        Field::new("source", DataType::Utf8, false),
    ]
}

/// The rows of top-k lists, one list after another: the item, its score
/// (the model's, or for an item the fallback added, its popularity), its
/// rank in the list, the history item that gave the most, and whether the
/// model (`personal`) or the fallback (`popular`) chose it.
pub(crate) fn top_columns(model: &Recommender, lists: &[Vec<Scored>]) -> Vec<ArrayRef> {
    let all = || lists.iter().flatten();
    vec![
        item_ids(model, all().map(|s| Some(s.item))),
        Arc::new(Float64Array::from_iter_values(all().map(|s| {
            if s.fallback && s.reason.is_none() && s.score == 0.0 {
                f64::from(model.popularity[s.item as usize])
            } else {
                f64::from(s.score)
            }
        }))),
        Arc::new(Int64Array::from_iter_values(
            lists.iter().flat_map(|l| 1..=l.len() as i64),
        )),
        item_ids(model, all().map(|s| s.reason)),
        Arc::new(StringArray::from(
            all()
                .map(|s| if s.fallback { "popular" } else { "personal" })
                .collect::<Vec<_>>(),
        )),
    ]
}

/// The arguments of a top-k function, `f(recommender, who, k [, options])`:
/// the recommender's name, the `who` argument, k (`None` while a parameter)
/// and the options.
pub(crate) fn top_args<'a>(
    args: &'a TableFunctionArgs,
    function: &str,
    who: &str,
) -> Result<(String, &'a Expr, Option<usize>, TopOptions)> {
    let (name, target, k, options) = match args.exprs() {
        [name, target, k] => (name, target, k, None),
        [name, target, k, options] => (name, target, k, Some(options)),
        _ => {
            return datafusion::common::plan_err!(
                "{function}(recommender, {who}, k [, options]) takes three or four arguments"
            );
        }
    };
    let session = args.session();
    let name = constant_text(session, name, function, "the recommender")?;
    let k = count_or_parameter(session, k, function, "k", K_MAX)?;
    let options = match options {
        Some(o) => TopOptions::parse(
            function,
            &constant_text(session, o, function, "the options")?,
        )?,
        None => TopOptions::default(),
    };
    Ok((name, target, k, options))
}

/// An argument's value when the call runs: a parameter is bound by then.
pub(crate) fn bound<T: Clone>(value: &Option<T>, function: &str) -> Result<T> {
    value.clone().ok_or_else(|| {
        DataFusionError::Plan(format!("{function}: a parameter was not given a value"))
    })
}

/// The most items one list returns.
pub(crate) const K_MAX: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_lists_are_written_out_or_queries() {
        assert_eq!(
            parse_items("(1, 2,3)"),
            Some(Items::Listed(vec!["1".into(), "2".into(), "3".into()]))
        );
        assert_eq!(
            parse_items("('a', 'b, c', 'it''s')"),
            Some(Items::Listed(vec![
                "a".into(),
                "b, c".into(),
                "it's".into()
            ]))
        );
        assert_eq!(
            parse_items("( select item_id from t where x in (1, 2) )"),
            Some(Items::Query(
                "select item_id from t where x in (1, 2)".into()
            ))
        );
        assert_eq!(parse_items("1, 2"), None);
        assert_eq!(parse_items("('a' 'b')"), None);
        assert_eq!(parse_items("(1,,2)"), None);
    }

    #[test]
    fn top_options_parse_and_name_bad_ones() {
        let parsed = TopOptions::parse(
            "recommend",
            "exclude_seen=false, min_history=3, fallback=none, include=(1, 2), \
             per_category=2, categories=(SELECT item_id, genre FROM movies)",
        )
        .expect("parses");
        assert_eq!(
            parsed,
            TopOptions {
                exclude_seen: false,
                include: Some(Items::Listed(vec!["1".into(), "2".into()])),
                exclude: None,
                categories: Some("SELECT item_id, genre FROM movies".into()),
                per_category: Some(2),
                boost: None,
                min_history: 3,
                fallback: false,
            }
        );
        let err = |text: &str| {
            TopOptions::parse("recommend", text)
                .expect_err("fails")
                .to_string()
        };
        assert_eq!(
            err("k=3"),
            "External error: recommend: unknown option \"k\" at character 1 (options: boost, categories, exclude, exclude_seen, fallback, include, min_history, per_category)"
        );
        assert_eq!(
            err("fallback=random"),
            "External error: recommend: option fallback at character 1: fallback is popular or none, got \"random\""
        );
        assert_eq!(
            err("per_category=2"),
            "External error: recommend: per_category and categories go together: categories=(SELECT item, category ...), per_category=n"
        );
        assert_eq!(
            err("boost=(1, 2)"),
            "External error: recommend: option boost at character 1: a query of (item, factor) in parentheses, got \"(1, 2)\""
        );
    }
}

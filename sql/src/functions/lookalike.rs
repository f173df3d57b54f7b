//! The lookalike functions: SQL over `cohortdb_engine::lookalike`. Each is
//! a table function of a seed and an options string, in its own file under
//! `lookalike/`; what they share is here: the seed (an audience expression or
//! a query returning user ids), the options, the features, and the deferred
//! table that computes a result when the query runs (so a seed query can
//! run, and EXPLAIN costs nothing).
//! Options are `key=value` pairs (`cohortdb_engine::options`):
//! `'size=5%, universe=city IN (beijing, shanghai)'`.

mod lookalike_eval;
mod lookalike_explain;
mod lookalike_score;
mod lookalike_table;
mod lookalike_weights;

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use cohortdb_engine::Error as EngineError;
use cohortdb_engine::audience::{self, Audience};
use cohortdb_engine::lookalike::{Feature, Method, Settings, StoredModel, fit};
use cohortdb_engine::options;
use cohortdb_engine::privacy::Policy;
use cohortdb_engine::sampling::Size;
use cohortdb_engine::tags::{Tags, TagsRead};
use datafusion::catalog::{TableFunctionArgs, TableProvider};
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;

use super::audience::constant_text;
use super::deferred::{self, Deferred};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

/// Registers the lookalike functions; returns their names.
pub(crate) fn register(ctx: &SessionContext, access: &Arc<UserAccess>) -> Vec<String> {
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(
        lookalike_score::LookalikeScoreFunc::new(access),
    ));
    let functions: [(&str, Arc<dyn datafusion::catalog::TableFunctionImpl>); 4] = [
        (
            "lookalike_explain",
            Arc::new(lookalike_explain::LookalikeExplainFunc::new(access)),
        ),
        (
            "lookalike",
            Arc::new(lookalike_table::LookalikeFunc::new(access)),
        ),
        (
            "lookalike_weights",
            Arc::new(lookalike_weights::LookalikeWeightsFunc::new(access)),
        ),
        (
            "lookalike_eval",
            Arc::new(lookalike_eval::LookalikeEvalFunc::new(access)),
        ),
    ];
    let mut names = super::register_table_functions(ctx, functions);
    names.push("lookalike_score".to_string());
    names
}

/// Trains a model to keep (`CREATE MODEL m AS LOOKALIKE(seed, options)`):
/// `seed_ordinals` are the users of a query seed, run by the caller.
pub(crate) fn train(
    tags: &Tags,
    policy: Policy,
    seed: &str,
    seed_ordinals: Option<Vec<Option<u32>>>,
    options: &str,
) -> Result<StoredModel> {
    let parsed = Seed::parse(seed)?;
    let settings = Options::parse("CREATE MODEL", options, &[])?;
    let seed_users = seed_ordinals.map(|o| o.into_iter().flatten().collect::<RoaringBitmap>());
    let inputs = Inputs::new(tags, policy, &parsed, seed_users, &settings)?;
    let model = fit(
        &inputs.features,
        &inputs.seed,
        &inputs.universe,
        &settings.settings,
    )
    .map_err(to_datafusion)?;
    let seed_count = (&inputs.seed & &inputs.universe).len();
    let mut stored = model.to_stored(&inputs.features, &inputs.universe, seed_count);
    stored.seed = seed.to_string();
    stored.options = options.to_string();
    Ok(stored)
}

/// The stored model `name`, if `policy`'s reader may use it.
pub(crate) fn stored_model(tags: &Tags, name: &str, policy: &Policy) -> Result<Arc<StoredModel>> {
    let model = tags
        .models
        .get(name)
        .cloned()
        .ok_or_else(|| to_datafusion(EngineError::ModelNotFound(name.to_string())))?;
    policy
        .check_use(&cohortdb_engine::roles::Object::Model(name.to_string()))
        .map_err(to_datafusion)?;
    Ok(model)
}

fn invalid(message: String) -> DataFusionError {
    to_datafusion(EngineError::InvalidArgument(message))
}

/// Who the seed is.
#[derive(Debug, Clone)]
pub(crate) enum Seed {
    Audience(Audience),
    /// A query returning one column of user ids.
    Query(String),
}

impl Seed {
    pub(crate) fn parse(text: &str) -> Result<Seed> {
        let first = text
            .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("");
        if ["select", "with", "values", "table"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(first))
        {
            return Ok(Seed::Query(text.to_string()));
        }
        let parsed = audience::parse(text).map_err(to_datafusion)?;
        Ok(Seed::Audience(parsed))
    }
}

/// The options of a lookalike function, defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub settings: Settings,
    /// `lookalike_eval`'s `method=all`.
    pub all_methods: bool,
    pub size: Option<Size>,
    pub universe: Option<String>,
    pub exclude: Option<String>,
    pub include_seed: bool,
    pub features: Option<Vec<String>>,
    pub train: Size,
    pub repetitions: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            all_methods: false,
            size: None,
            universe: None,
            exclude: None,
            include_seed: false,
            features: None,
            train: Size::Fraction(0.5),
            repetitions: 10,
        }
    }
}

/// The options every lookalike function takes.
const COMMON: [&str; 10] = [
    "method",
    "universe",
    "features",
    "min_support",
    "smoothing",
    "shrinkage",
    "max_tags",
    "c",
    "negatives",
    "random_seed",
];

impl Options {
    /// Parses `text` for `function`, which also takes the options `extra`.
    pub(crate) fn parse(function: &str, text: &str, extra: &[&str]) -> Result<Options> {
        let mut options = Options::default();
        for (key, value, position) in options::split(function, text).map_err(to_datafusion)? {
            let err = |what: &str| {
                invalid(format!(
                    "{function}: option {key} at character {position}: {what}, got {value:?}"
                ))
            };
            if !COMMON.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
                let mut known: Vec<&str> = COMMON.iter().chain(extra).copied().collect();
                known.sort_unstable();
                return Err(invalid(format!(
                    "{function}: unknown option {key:?} at character {position} (options: {})",
                    known.join(", ")
                )));
            }
            let number = |v: &str| v.parse::<f64>().ok().filter(|f| f.is_finite());
            let count = |v: &str| v.parse::<u64>().ok();
            let s = &mut options.settings;
            match key.as_str() {
                "method" if value.eq_ignore_ascii_case("all") && function == "lookalike_eval" => {
                    options.all_methods = true;
                }
                "method" => {
                    s.method = Method::parse(&value).ok_or_else(|| {
                        err(if function == "lookalike_eval" {
                            "a method is log_odds, iv, logistic, ensemble or all"
                        } else {
                            "a method is log_odds, iv, logistic or ensemble"
                        })
                    })?;
                }
                "size" => {
                    options.size = Some(parse_size(&value).ok_or_else(|| {
                        err("a size is a count of users, a percentage (5%) or a fraction (0.05)")
                    })?);
                }
                "train" => {
                    options.train = parse_size(&value).ok_or_else(|| {
                        err("train is a count of seed users, a percentage (50%) or a fraction (0.5)")
                    })?;
                }
                "universe" | "exclude" => {
                    audience::parse(&value).map_err(|e| err(&format!("not an audience ({e})")))?;
                    if key == "universe" {
                        options.universe = Some(value.clone());
                    } else {
                        options.exclude = Some(value.clone());
                    }
                }
                "include_seed" => {
                    options.include_seed = options::parse_bool(&value)
                        .ok_or_else(|| err("include_seed is true or false"))?;
                }
                "features" => options.features = Some(options::parse_names(&value)),
                "min_support" => {
                    s.min_support = count(&value).ok_or_else(|| err("a count"))?;
                }
                "smoothing" => {
                    s.smoothing = number(&value)
                        .filter(|f| *f > 0.0)
                        .ok_or_else(|| err("a positive number"))?;
                }
                "shrinkage" => {
                    s.shrinkage = number(&value)
                        .filter(|f| *f >= 0.0)
                        .ok_or_else(|| err("a number, 0 or more"))?;
                }
                "max_tags" => {
                    s.max_tags = count(&value)
                        .filter(|n| *n > 0)
                        .ok_or_else(|| err("a positive count"))?
                        as usize;
                }
                "c" => {
                    s.c = if value.eq_ignore_ascii_case("auto") {
                        None
                    } else {
                        Some(
                            number(&value)
                                .filter(|f| *f > 0.0)
                                .ok_or_else(|| err("c is a positive number or auto"))?,
                        )
                    };
                }
                "negatives" => {
                    s.negatives = Some(
                        count(&value)
                            .filter(|n| *n > 0)
                            .ok_or_else(|| err("a positive count"))?,
                    );
                }
                "random_seed" => {
                    s.random_seed = value
                        .parse::<u64>()
                        .ok()
                        .or_else(|| value.parse::<i64>().ok().map(|v| v as u64))
                        .ok_or_else(|| err("an integer"))?;
                }
                "repetitions" => {
                    options.repetitions = count(&value)
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| err("a count from 1 to 1000"))?
                        as u32;
                }
                other => return internal_err!("{function}: option {other} has no parser"),
            }
        }
        Ok(options)
    }
}

/// `5%`, `0.05` (a fraction) or `5000` (a count).
fn parse_size(text: &str) -> Option<Size> {
    if let Some(percent) = text.strip_suffix('%') {
        let p: f64 = percent.trim().parse().ok()?;
        return (p > 0.0 && p <= 100.0).then_some(Size::Fraction(p / 100.0));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(Size::Count(n));
    }
    let f: f64 = text.parse().ok()?;
    (f > 0.0 && f <= 1.0).then_some(Size::Fraction(f))
}

/// The seed and options of a call: `f(seed [, options])`.
pub(crate) fn call_args(
    args: &TableFunctionArgs,
    function: &str,
    extra: &[&str],
) -> Result<(Seed, Options)> {
    let (seed, options) = match args.exprs() {
        [seed] => (seed, None),
        [seed, options] => (seed, Some(options)),
        _ => {
            return datafusion::common::plan_err!(
                "{function}(seed [, options]) takes one or two arguments"
            );
        }
    };
    let seed = Seed::parse(&constant_text(args.session(), seed, function, "the seed")?)?;
    let options = match options {
        Some(o) => Options::parse(
            function,
            &constant_text(args.session(), o, function, "the options")?,
            extra,
        )?,
        None => Options::default(),
    };
    Ok((seed, options))
}

/// What a call works on, as of the statement: the seed's users, the
/// population and the features.
pub(crate) struct Inputs<'a> {
    pub tags: &'a Tags,
    pub policy: Policy,
    pub seed: RoaringBitmap,
    pub universe: RoaringBitmap,
    pub features: Vec<Feature<'a>>,
}

impl<'a> Inputs<'a> {
    /// Resolves the seed (`seed_users` for a query seed) and options over
    /// `tags`; users `policy` leaves out are in neither the seed nor the
    /// population, so they are neither learnt from nor scored.
    pub(crate) fn new(
        tags: &'a Tags,
        policy: Policy,
        seed: &Seed,
        seed_users: Option<RoaringBitmap>,
        options: &Options,
    ) -> Result<Inputs<'a>> {
        let source = tags.source(policy.today);
        let (seed_users, read) = match (seed, seed_users) {
            (_, Some(users)) => (users, TagsRead::default()),
            (Seed::Audience(parsed), None) => (
                tags.check_usage(parsed, &policy)
                    .and_then(|()| audience::evaluate(parsed, &source))
                    .map_err(to_datafusion)?,
                source.tags_read(parsed).map_err(to_datafusion)?,
            ),
            (Seed::Query(_), None) => return internal_err!("a query seed was not run"),
        };
        let seed_users = tags
            .without_suppressed(seed_users, &policy)
            .map_err(to_datafusion)?;
        let universe = match &options.universe {
            Some(text) => tags.evaluate(text, &policy),
            None => tags.population(&policy),
        }
        .map_err(to_datafusion)?;
        let features =
            cohortdb_engine::lookalike::features(tags, options.features.as_deref(), &read, &policy)
                .map_err(to_datafusion)?;
        Ok(Inputs {
            tags,
            policy,
            seed: seed_users,
            universe,
            features,
        })
    }
}

/// The users a query seed returns (ids the dictionary does not know are
/// nobody's and left out).
async fn query_seed(
    state: &SessionState,
    tags: &Tags,
    query: &str,
    function: &str,
) -> Result<RoaringBitmap> {
    let [ids] = deferred::query_columns(state, query, |found| {
        invalid(format!(
            "{function}: the seed query returns one column of user ids, not {found}"
        ))
    })
    .await?;
    let key_type = tags
        .dictionary()
        .map_err(to_datafusion)?
        .key_type()
        .data_type();
    let cast = arrow::compute::cast(&ids, &key_type).map_err(|e| {
        invalid(format!(
            "{function}: the seed query returns user ids ({key_type}), not {}: {e}",
            ids.data_type()
        ))
    })?;
    if cast.logical_null_count() == cast.len() {
        return Ok(RoaringBitmap::new());
    }
    Ok(tags
        .ordinals(&cast)
        .map_err(to_datafusion)?
        .into_iter()
        .flatten()
        .collect())
}

/// Computes a lookalike function's rows from its inputs.
pub(crate) type Compute = fn(&Inputs<'_>, &Options) -> Result<RecordBatch>;

/// One call of a lookalike function: its seed and options, and how its rows
/// follow from them.
#[derive(Debug)]
pub(crate) struct LookalikeCall {
    pub function: &'static str,
    pub access: Arc<UserAccess>,
    pub seed: Seed,
    pub options: Options,
    pub compute: Compute,
}

impl LookalikeCall {
    /// The provider of this call's rows, in `schema`.
    pub(crate) fn provider(self, schema: SchemaRef) -> Arc<dyn TableProvider> {
        Arc::new(Deferred { schema, call: self })
    }
}

#[async_trait]
impl deferred::Compute for LookalikeCall {
    fn function(&self) -> &'static str {
        self.function
    }

    async fn compute(&self, session: &SessionState) -> Result<RecordBatch> {
        let tags = self.access.tags();
        let seed_users = match &self.seed {
            Seed::Query(query) => Some(query_seed(session, &tags, query, self.function).await?),
            Seed::Audience(_) => None,
        };
        let inputs = Inputs::new(
            &tags,
            self.access.naming_users("lookalike")?,
            &self.seed,
            seed_users,
            &self.options,
        )?;
        (self.compute)(&inputs, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_counts_percentages_or_fractions() {
        assert_eq!(parse_size("5%"), Some(Size::Fraction(0.05)));
        assert_eq!(parse_size("0.25"), Some(Size::Fraction(0.25)));
        assert_eq!(parse_size("5000"), Some(Size::Count(5000)));
        assert_eq!(parse_size("0%"), None);
        assert_eq!(parse_size("1.5"), None);
        assert_eq!(parse_size("many"), None);
    }

    #[test]
    fn option_errors_name_the_option_and_position() {
        let err =
            Options::parse("lookalike", "size=5%, method=magic", &["size"]).expect_err("fails");
        assert_eq!(
            err.to_string(),
            "External error: lookalike: option method at character 10: a method is log_odds, iv, logistic or ensemble, got \"magic\""
        );
        let err = Options::parse("lookalike", "train=5", &["size"]).expect_err("fails");
        assert!(
            err.to_string()
                .contains("unknown option \"train\" at character 1 (options: c, features,"),
            "{err}"
        );
        let options = Options::parse(
            "lookalike_eval",
            "method=all, train=50, features=(city, \"a b\")",
            &["train"],
        )
        .expect("parses");
        assert!(options.all_methods);
        assert_eq!(options.train, Size::Count(50));
        assert_eq!(
            options.features,
            Some(vec!["city".to_string(), "a b".to_string()])
        );
    }
}

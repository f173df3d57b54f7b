//! What a session keeps of the queries it runs again: their parsed
//! statements, by text, and their plans (the plan cache).
//!
//! Parsing gives the same statements for the same text, always; a session keeps
//! those of its last [`KEPT_MAX`] query strings (of up to [`PARSED_TEXT_MAX`]
//! bytes), so a client that sends the same text again (a simple-protocol
//! `SELECT 1`, a dashboard's refresh) is not parsed again.
//!
//! Planning a query with DataFusion (SQL to a logical plan, the optimizer, the
//! physical planner) takes some 0.4 ms even for `SELECT 1`, far longer than
//! running a small query. A session keeps the physical plans of the queries it
//! ran, by their text, and runs one again while nothing it was made from has
//! changed:
//! - the catalog ([`Catalog::version`](cohortdb_engine::Catalog::version): any
//!   change shown to readers: rows, tables, views, roles and grants, tags). A
//!   plan holds the snapshots of the tables it scans, and it passed the
//!   privilege checks of its time;
//! - the session's settings (its role among them).
//!
//! A query is kept only when planning it again would give the same plan: it
//! reads tables, views and the table functions whose rows are computed when
//! the plan runs ([`Computed`]: `audience`, `audience_sample`,
//! `unnest_bitmap`, `audience_profile`) only (system catalogs and
//! other table functions make their rows while planning), calls no function
//! the optimizer evaluates while
//! planning (stable ones: `now()`, `current_setting()`, `current_user`), and its
//! physical plan is made only of operators known to run again from a clean
//! state ([`reset_plan_states`]); operators that share runtime filters between
//! each other (top-k sorts, hash joins, aggregates) are planned every time.
//!
//! A kept query that reads no table and calls no volatile function (`SELECT
//! 1`, a connection pool's check) gives the same rows every time: its rows
//! are kept instead of its plan, and running it again sends them.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::view::ViewTable;
use datafusion::common::HashMap;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;

use crate::functions::deferred::Computed;
use crate::generic::Generic;
use crate::provider::EngineTable;
use crate::session::ParsedStatement;
use crate::settings::Settings;

/// Query strings (and plans) kept per session; past this the oldest half is
/// dropped.
const KEPT_MAX: usize = 64;

/// The longest query string whose parsed statements are kept.
const PARSED_TEXT_MAX: usize = 4096;

/// The physical operators a kept plan may contain.
const REUSABLE: &[&str] = &[
    "EngineScanExec",
    "CooperativeExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "RepartitionExec",
    "GlobalLimitExec",
    "LocalLimitExec",
    "PlaceholderRowExec",
    "ComputedExec",
    "EmptyExec",
    "UnionExec",
];

/// Values kept by query text, at most [`KEPT_MAX`]: when full, the oldest half
/// goes.
#[derive(Debug)]
struct Recent<V> {
    kept: HashMap<String, (V, u64)>,
    /// Incremented per value kept, to find the oldest.
    added: u64,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            kept: HashMap::default(),
            added: 0,
        }
    }
}

impl<V> Recent<V> {
    fn get(&self, query: &str) -> Option<&V> {
        self.kept.get(query).map(|(value, _)| value)
    }

    fn put(&mut self, query: String, value: V) {
        if self.kept.len() >= KEPT_MAX && !self.kept.contains_key(&query) {
            let mut ages: Vec<u64> = self.kept.values().map(|(_, added)| *added).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.kept.retain(|_, (_, added)| *added >= cutoff);
        }
        self.added += 1;
        self.kept.insert(query, (value, self.added));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

/// The parsed statements of query strings a session ran.
#[derive(Debug, Default)]
pub(crate) struct ParseCache(Recent<Vec<ParsedStatement>>);

impl ParseCache {
    /// The statements `sql` parsed into before, if it is kept.
    pub(crate) fn get(&self, sql: &str) -> Option<Vec<ParsedStatement>> {
        self.0.get(sql).cloned()
    }

    /// Keeps the statements `sql` parsed into, unless it is long.
    pub(crate) fn put(&mut self, sql: &str, statements: &[ParsedStatement]) {
        if sql.len() <= PARSED_TEXT_MAX {
            self.0.put(sql.to_string(), statements.to_vec());
        }
    }
}

/// The plans of queries a session ran, and the generic plans of its prepared
/// queries (generic.rs), each by its text.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    queries: Recent<Kept<KeptQuery>>,
    /// `None` for a prepared query that has no generic plan: its executions
    /// are planned with their values.
    prepared: Recent<Kept<Option<Generic>>>,
}

#[derive(Debug)]
struct Kept<P> {
    plan: P,
    catalog_version: u64,
    settings: Settings,
}

impl<P> Kept<P> {
    fn new(plan: P, catalog_version: u64, settings: &Settings) -> Kept<P> {
        Kept {
            plan,
            catalog_version,
            settings: settings.clone(),
        }
    }

    /// The plan, if it was made at `catalog_version` under `settings`.
    fn current(&self, catalog_version: u64, settings: &Settings) -> Option<&P> {
        (self.catalog_version == catalog_version && self.settings == *settings)
            .then_some(&self.plan)
    }
}

/// What is kept of a query.
#[derive(Debug, Clone)]
pub(crate) enum KeptQuery {
    /// Its physical plan.
    Plan(Arc<dyn ExecutionPlan>),
    /// The rows of a query that gives the same ones every time ([`constant`]).
    Rows(SchemaRef, Arc<[RecordBatch]>),
}

impl PlanCache {
    /// What is kept for `query`, a plan reset to run again, if it is still
    /// current.
    pub(crate) fn get(
        &self,
        query: &str,
        catalog_version: u64,
        settings: &Settings,
    ) -> Option<KeptQuery> {
        let kept = self
            .queries
            .get(query)?
            .current(catalog_version, settings)?;
        match kept {
            KeptQuery::Plan(plan) => reset_plan_states(Arc::clone(plan))
                .ok()
                .map(KeptQuery::Plan),
            rows @ KeptQuery::Rows(..) => Some(rows.clone()),
        }
    }

    /// Keeps the plan or rows of `query`, made at `catalog_version` under
    /// `settings`.
    pub(crate) fn put(
        &mut self,
        query: String,
        kept: KeptQuery,
        catalog_version: u64,
        settings: &Settings,
    ) {
        self.queries
            .put(query, Kept::new(kept, catalog_version, settings));
    }

    /// What is kept for prepared query `query` if it is still current: its
    /// generic plan, or `Some(None)` when it has none.
    pub(crate) fn get_generic(
        &self,
        query: &str,
        catalog_version: u64,
        settings: &Settings,
    ) -> Option<Option<Generic>> {
        let kept = self.prepared.get(query)?;
        kept.current(catalog_version, settings).cloned()
    }

    /// Keeps the generic plan of prepared query `query` (`None`: it has none).
    pub(crate) fn put_generic(
        &mut self,
        query: String,
        generic: Option<Generic>,
        catalog_version: u64,
        settings: &Settings,
    ) {
        self.prepared
            .put(query, Kept::new(generic, catalog_version, settings));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queries.len()
    }
}

/// Whether a query's logical plan (as the SQL planner made it, before the
/// optimizer) would plan the same again while the catalog and settings stay.
pub(crate) fn reusable_logical(plan: &LogicalPlan) -> bool {
    every_node(plan, |node| match node {
        LogicalPlan::TableScan(scan) => match source_as_provider(&scan.source) {
            Ok(provider) => {
                let any: &dyn std::any::Any = provider.as_ref();
                any.is::<EngineTable>()
                    || any.is::<Computed>()
                    || any
                        .downcast_ref::<ViewTable>()
                        .is_some_and(|view| reusable_logical(view.logical_plan()))
            }
            Err(_) => false,
        },
        LogicalPlan::RecursiveQuery(_) => false,
        // A stable call is evaluated once while planning (volatile calls run
        // with the plan, every time; immutable ones give the same value again).
        _ => !calls(node, Volatility::Stable),
    })
}

/// Whether a query [`reusable_logical`] passed gives the same rows every time
/// it runs: it reads no table and calls no volatile function.
pub(crate) fn constant(plan: &LogicalPlan) -> bool {
    every_node(plan, |node| {
        !matches!(node, LogicalPlan::TableScan(_)) && !calls(node, Volatility::Volatile)
    })
}

/// Whether `holds` is true of every node of `plan` and of its subqueries.
fn every_node(plan: &LogicalPlan, mut holds: impl FnMut(&LogicalPlan) -> bool) -> bool {
    let mut all = true;
    let _ = plan.apply_with_subqueries(|node| {
        all = holds(node);
        Ok(if all {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    all
}

/// Whether an expression of `node` calls a function of `volatility`.
fn calls(node: &LogicalPlan, volatility: Volatility) -> bool {
    node.expressions().iter().any(|expr| {
        expr.exists(|e| {
            Ok(matches!(e, Expr::ScalarFunction(call)
                if call.func.signature().volatility == volatility))
        })
        .unwrap_or(true)
    })
}

/// Whether a physical plan is made only of operators that run again from a
/// clean state.
pub(crate) fn reusable_physical(plan: &Arc<dyn ExecutionPlan>) -> bool {
    !plan
        .exists(|node| {
            // A whole sort keeps nothing between runs; a top-k sort (with a
            // fetch) shares a runtime filter with the scan below it.
            let whole_sort = node.name() == "SortExec" && node.fetch().is_none();
            Ok(!REUSABLE.contains(&node.name()) && !whole_sort)
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;

    fn plan() -> Arc<dyn ExecutionPlan> {
        Arc::new(PlaceholderRowExec::new(Arc::new(
            arrow::datatypes::Schema::empty(),
        )))
    }

    #[test]
    fn a_plan_is_current_while_catalog_and_settings_are() {
        let mut cache = PlanCache::default();
        let settings = Settings::default();
        cache.put("SELECT 1".into(), KeptQuery::Plan(plan()), 7, &settings);
        assert!(cache.get("SELECT 1", 7, &settings).is_some());
        assert!(cache.get("SELECT 2", 7, &settings).is_none());
        assert!(cache.get("SELECT 1", 8, &settings).is_none());
        let mut changed = settings.clone();
        changed
            .set("application_name", "x", crate::settings::Scope::Session)
            .expect("a known setting");
        assert!(cache.get("SELECT 1", 7, &changed).is_none());
    }

    #[tokio::test]
    async fn only_queries_of_no_table_and_no_volatile_call_are_constant()
    -> datafusion::error::Result<()> {
        let ctx = datafusion::prelude::SessionContext::new();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("x", arrow::datatypes::DataType::Int32, true),
        ]));
        ctx.register_batch("t", RecordBatch::new_empty(schema))?;
        for (sql, expected) in [
            ("SELECT 1", true),
            ("SELECT 1 + 2 AS three, 'a' || 'b', abs(-4)", true),
            ("SELECT 1 UNION ALL SELECT 2", true),
            ("SELECT random()", false),
            ("SELECT 1 + random() * 0", false),
            ("SELECT x FROM t", false),
            ("SELECT 1 WHERE EXISTS (SELECT x FROM t)", false),
        ] {
            let plan = ctx.state().create_logical_plan(sql).await?;
            assert_eq!(constant(&plan), expected, "{sql}");
        }
        Ok(())
    }

    #[test]
    fn parsed_statements_are_kept_by_text_unless_long() -> crate::error::Result<()> {
        let mut cache = ParseCache::default();
        let sql = "SELECT 1; SELECT 'a'";
        cache.put(sql, &crate::session::parse_sql(sql)?);
        let kept = cache.get(sql).expect("kept");
        let texts: Vec<&str> = kept.iter().map(ParsedStatement::logged_text).collect();
        assert_eq!(texts, ["SELECT ?", "SELECT ?"]);
        assert_eq!(kept[1].statement().to_string(), "SELECT 'a'");
        assert!(cache.get("SELECT 1").is_none());
        let long = format!("SELECT {}", "1 + ".repeat(PARSED_TEXT_MAX / 4) + "1");
        cache.put(&long, &crate::session::parse_sql(&long)?);
        assert!(cache.get(&long).is_none());
        Ok(())
    }

    #[test]
    fn the_oldest_half_goes_when_full() {
        let mut cache = PlanCache::default();
        let settings = Settings::default();
        for i in 0..KEPT_MAX {
            cache.put(format!("SELECT {i}"), KeptQuery::Plan(plan()), 1, &settings);
        }
        assert_eq!(cache.len(), KEPT_MAX);
        cache.put("SELECT last".into(), KeptQuery::Plan(plan()), 1, &settings);
        assert_eq!(cache.len(), KEPT_MAX / 2 + 1);
        assert!(cache.get("SELECT 0", 1, &settings).is_none());
        assert!(
            cache
                .get(&format!("SELECT {}", KEPT_MAX - 1), 1, &settings)
                .is_some()
        );
        assert!(cache.get("SELECT last", 1, &settings).is_some());
    }
}

//! The plans of queries a session runs again (the plan cache).
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
//! reads tables and views only (system catalogs and table functions make their
//! rows while planning), calls no function the optimizer evaluates while
//! planning (stable ones: `now()`, `current_setting()`, `current_user`), and its
//! physical plan is made only of operators known to run again from a clean
//! state ([`reset_plan_states`]); operators that share runtime filters between
//! each other (top-k sorts, hash joins, aggregates) are planned every time.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;

use crate::provider::EngineTable;
use crate::settings::Settings;

/// Plans kept per session; past this the oldest half is dropped.
const PLANS_MAX: usize = 64;

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
    "EmptyExec",
    "UnionExec",
];

#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    plans: HashMap<String, Kept>,
    /// Incremented per plan kept, to find the oldest.
    added: u64,
}

#[derive(Debug)]
struct Kept {
    plan: Arc<dyn ExecutionPlan>,
    catalog_version: u64,
    settings: Settings,
    added: u64,
}

impl PlanCache {
    /// The plan kept for `query`, reset to run again, if it is still current.
    pub(crate) fn get(
        &self,
        query: &str,
        catalog_version: u64,
        settings: &Settings,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        let kept = self.plans.get(query)?;
        let same_settings =
            kept.settings.version() == settings.version() || kept.settings == *settings;
        if kept.catalog_version != catalog_version || !same_settings {
            return None;
        }
        reset_plan_states(Arc::clone(&kept.plan)).ok()
    }

    /// Keeps `plan` of `query`, made at `catalog_version` under `settings`.
    pub(crate) fn put(
        &mut self,
        query: String,
        plan: Arc<dyn ExecutionPlan>,
        catalog_version: u64,
        settings: &Settings,
    ) {
        if self.plans.len() >= PLANS_MAX && !self.plans.contains_key(&query) {
            let mut ages: Vec<u64> = self.plans.values().map(|k| k.added).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.plans.retain(|_, kept| kept.added >= cutoff);
        }
        self.added += 1;
        self.plans.insert(
            query,
            Kept {
                plan,
                catalog_version,
                settings: settings.clone(),
                added: self.added,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.plans.len()
    }
}

/// Whether a query's logical plan (as the SQL planner made it, before the
/// optimizer) would plan the same again while the catalog and settings stay.
pub(crate) fn reusable_logical(plan: &LogicalPlan) -> bool {
    let mut reusable = true;
    let _ = plan.apply_with_subqueries(|node| {
        reusable = match node {
            LogicalPlan::TableScan(scan) => match source_as_provider(&scan.source) {
                Ok(provider) => {
                    let any: &dyn std::any::Any = provider.as_ref();
                    any.is::<EngineTable>()
                        || any
                            .downcast_ref::<ViewTable>()
                            .is_some_and(|view| reusable_logical(view.logical_plan()))
                }
                Err(_) => false,
            },
            LogicalPlan::RecursiveQuery(_) => false,
            _ => !node
                .expressions()
                .iter()
                .any(|expr| expr.exists(|e| Ok(is_stable_call(e))).unwrap_or(true)),
        };
        Ok(if reusable {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    reusable
}

/// A call the optimizer evaluates once while planning (volatile calls run
/// with the plan, every time; immutable ones give the same value again).
fn is_stable_call(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(call)
        if call.func.signature().volatility == Volatility::Stable)
}

/// Whether a physical plan is made only of operators that run again from a
/// clean state.
pub(crate) fn reusable_physical(plan: &Arc<dyn ExecutionPlan>) -> bool {
    !plan
        .exists(|node| Ok(!REUSABLE.contains(&node.name())))
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
        cache.put("SELECT 1".into(), plan(), 7, &settings);
        assert!(cache.get("SELECT 1", 7, &settings).is_some());
        assert!(cache.get("SELECT 2", 7, &settings).is_none());
        assert!(cache.get("SELECT 1", 8, &settings).is_none());
        let mut changed = settings.clone();
        changed
            .set("application_name", "x", crate::settings::Scope::Session)
            .expect("a known setting");
        assert!(cache.get("SELECT 1", 7, &changed).is_none());
    }

    #[test]
    fn the_oldest_half_goes_when_full() {
        let mut cache = PlanCache::default();
        let settings = Settings::default();
        for i in 0..PLANS_MAX {
            cache.put(format!("SELECT {i}"), plan(), 1, &settings);
        }
        assert_eq!(cache.len(), PLANS_MAX);
        cache.put("SELECT last".into(), plan(), 1, &settings);
        assert_eq!(cache.len(), PLANS_MAX / 2 + 1);
        assert!(cache.get("SELECT 0", 1, &settings).is_none());
        assert!(
            cache
                .get(&format!("SELECT {}", PLANS_MAX - 1), 1, &settings)
                .is_some()
        );
        assert!(cache.get("SELECT last", 1, &settings).is_some());
    }
}

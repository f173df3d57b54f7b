//! `audience(expr)`: the users of an audience expression as a table of
//! external user ids (one column, `user_id`), in ordinal order, for joining,
//! exporting (`COPY (SELECT * FROM audience('...')) TO ...`) or counting by
//! other attributes.
//!
//! ```sql
//! SELECT u.* FROM audience('vip AND city=beijing') a JOIN users u USING (user_id);
//! ```

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use cohortdb_engine::Catalog;
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::Expr;

use super::today;
use crate::error::to_datafusion;

/// Ids per batch of the result.
const BATCH_ROWS: usize = 65_536;

#[derive(Debug)]
pub(crate) struct AudienceFunc {
    catalog: Arc<Catalog>,
}

impl AudienceFunc {
    pub fn new(catalog: &Arc<Catalog>) -> Self {
        AudienceFunc {
            catalog: Arc::clone(catalog),
        }
    }
}

/// The text of a constant text argument of a table function.
pub(crate) fn constant_text(
    session: &dyn datafusion::catalog::Session,
    expr: &Expr,
    function: &str,
    what: &str,
) -> Result<String> {
    match crate::functions::constant(session, expr)?.try_as_str() {
        Some(Some(text)) => Ok(text.to_string()),
        _ => plan_err!("{function}: {what} must be a text constant"),
    }
}

impl TableFunctionImpl for AudienceFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [expr] = args.exprs() else {
            return plan_err!("audience(expr) takes one argument");
        };
        let text = constant_text(args.session(), expr, "audience", "the audience")?;
        let tags = self.catalog.tags();
        let users = tags.evaluate(&text, today()).map_err(to_datafusion)?;
        let ids = tags.user_ids(&users).map_err(to_datafusion)?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "user_id",
            ids.data_type().clone(),
            false,
        )]));
        let mut batches = Vec::new();
        let mut start = 0;
        while start < ids.len() {
            let rows = BATCH_ROWS.min(ids.len() - start);
            batches.push(RecordBatch::try_new(
                Arc::clone(&schema),
                vec![ids.slice(start, rows)],
            )?);
            start += rows;
        }
        Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
    }
}

//! `audience(expr)`: the users of an audience expression as a table of
//! external user ids (one column, `user_id`), in ordinal order, for joining,
//! exporting (`COPY (SELECT * FROM audience('...')) TO ...`) or counting by
//! other attributes.
//!
//! ```sql
//! SELECT u.* FROM audience('vip AND city=beijing') a JOIN users u USING (user_id);
//! ```

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::constant_text;
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct AudienceFunc {
    access: Arc<UserAccess>,
}

impl AudienceFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        AudienceFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for AudienceFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [expr] = args.exprs() else {
            return plan_err!("audience(expr) takes one argument");
        };
        let text = constant_text(args.session(), expr, "audience", "the audience")?;
        let access = Arc::clone(&self.access);
        super::user_ids_table(&self.access, move || {
            let policy = access.naming_users("audience")?;
            access
                .tags()
                .audience_ids(&text, &policy)
                .map_err(to_datafusion)
        })
    }
}

//! Pseudonymisation and masking of identity values (docs/privacy.md):
//! `pseudonymize(value [, key])` under a key the server holds, and
//! `mask_email`, `mask_phone` for showing a value without giving it away.

mod mask;
mod pseudonymize;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

use crate::privacy::UserAccess;

/// Registers the family's functions; returns their names.
pub(crate) fn register(ctx: &SessionContext, access: &Arc<UserAccess>) -> Vec<String> {
    let functions = [
        ScalarUDF::from(pseudonymize::PseudonymizeFunc::new(access)),
        ScalarUDF::from(mask::MaskFunc::new(mask::Mask::Email)),
        ScalarUDF::from(mask::MaskFunc::new(mask::Mask::Phone)),
    ];
    functions
        .into_iter()
        .map(|udf| {
            let name = udf.name().to_string();
            ctx.register_udf(udf);
            name
        })
        .collect()
}

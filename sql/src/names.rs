//! Turning SQL identifiers into catalog names the way PostgreSQL does: unquoted
//! identifiers fold to lower case, quoted ones keep their spelling.

use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Spanned};

use crate::error::{Error, Position, Result};
use crate::session::{CATALOG_NAME, SCHEMA_NAME};

/// The catalog name of an identifier.
pub(crate) fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Where an AST node starts in the SQL text.
pub(crate) fn position_of(node: &impl Spanned) -> Option<Position> {
    Position::from_location(node.span().start)
}

/// The table name in `name`, which may be qualified by our schema (`public.t`) or
/// catalog and schema (`cohortdb.public.t`).
pub(crate) fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| part.as_ident().map(normalize))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid(format!("invalid table name {name}"), position_of(name)))?;
    let qualifiers_ok = match parts.len() {
        1 => true,
        2 => parts[0] == SCHEMA_NAME,
        3 => parts[0] == CATALOG_NAME && parts[1] == SCHEMA_NAME,
        _ => false,
    };
    if !qualifiers_ok {
        return Err(Error::invalid(
            format!("table {name} is not in schema {CATALOG_NAME}.{SCHEMA_NAME}"),
            position_of(name),
        ));
    }
    Ok(parts
        .last()
        .expect("object names have at least one part")
        .clone())
}

/// Quotes a name as an SQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

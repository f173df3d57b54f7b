//! The privilege inquiry functions (`has_table_privilege`,
//! `has_column_privilege`, `has_schema_privilege`, `has_database_privilege`,
//! `pg_has_role`), answered from the roles' grants (docs/privacy.md §
//! Grants): for the session's role, or the role named first.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use cohortdb_engine::Catalog;
use cohortdb_engine::roles::{Object, Privilege, Role};
use datafusion::common::{DataFusionError, Result};

use crate::error::Error;
use crate::pg_catalog::{PUBLIC_OID, Snapshot, is_catalog_relation};

/// Which inquiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Inquiry {
    Table,
    Column,
    Schema,
    Database,
    Role,
}

impl Inquiry {
    /// Arguments without the optional role first.
    fn arguments(self) -> usize {
        match self {
            Inquiry::Column => 3,
            _ => 2,
        }
    }
}

/// The answers for each row of `arrays`.
pub(super) fn answer(
    inquiry: Inquiry,
    arrays: &[ArrayRef],
    snapshot: &Snapshot,
    catalog: &Catalog,
) -> Result<ArrayRef> {
    let texts = arrays
        .iter()
        .map(|a| cast(a, &DataType::Utf8))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let text = |i: usize, row: usize| {
        let column = texts[i].as_string::<i32>();
        (!column.is_null(row)).then(|| column.value(row).to_string())
    };
    let named_role = arrays.len() > inquiry.arguments();
    let first = usize::from(named_role);
    let rows = arrays.first().map_or(0, |a| a.len());
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        if (0..arrays.len()).any(|i| texts[i].is_null(row)) {
            out.push(None);
            continue;
        }
        // `None`: a superuser, who holds everything.
        let role: Option<Arc<Role>> = match named_role {
            false => snapshot.policy.reader.clone(),
            true => {
                let name = text(0, row).expect("not NULL");
                let name = match arrays[0].data_type().is_integer() {
                    true => snapshot
                        .roles
                        .iter()
                        .find(|r| r.oid.to_string() == name)
                        .map(|r| r.name.clone())
                        .unwrap_or(name),
                    false => name,
                };
                let role = catalog
                    .role(&name)
                    .ok_or_else(|| fail(cohortdb_engine::Error::RoleNotFound(name).into()))?;
                (!role.superuser).then(|| Arc::new(role))
            }
        };
        let held = |privilege: Privilege, object: &Object| {
            role.as_ref().is_none_or(|r| r.may(privilege, object))
        };
        let superuser = role.is_none();
        let privileges = text(arrays.len() - 1, row).expect("not NULL");
        let mut any = false;
        for wanted in privileges.split(',') {
            let wanted = wanted.trim().to_ascii_uppercase();
            let (name, grant_option) = match wanted.strip_suffix(" WITH GRANT OPTION") {
                Some(name) => (name.trim().to_string(), true),
                None => (wanted.clone(), false),
            };
            let yes = match inquiry {
                Inquiry::Table | Inquiry::Column => {
                    let table = arrays[first].as_ref();
                    let table = relation(snapshot, table, &text(first, row).expect("not NULL"))?;
                    let privilege = match name.as_str() {
                        "SELECT" => Some(Privilege::Select),
                        "INSERT" => Some(Privilege::Insert),
                        "UPDATE" => Some(Privilege::Update),
                        "DELETE" => Some(Privilege::Delete),
                        "TRUNCATE" | "REFERENCES" | "TRIGGER" | "MAINTAIN" => None,
                        _ => return Err(unrecognized(&wanted)),
                    };
                    match (table, privilege) {
                        (None, Some(p)) => p == Privilege::Select || superuser,
                        (Some(table), Some(p)) => held(p, &Object::Table(table)),
                        (_, None) => superuser,
                    }
                }
                Inquiry::Schema => {
                    let schema = text(first, row).expect("not NULL");
                    if !["public", "pg_catalog", "information_schema"].contains(&schema.as_str())
                        && schema != PUBLIC_OID.to_string()
                    {
                        return Err(fail(Error::UndefinedObject {
                            message: format!("schema \"{schema}\" does not exist"),
                        }));
                    }
                    match name.as_str() {
                        "USAGE" => true,
                        "CREATE" => superuser,
                        _ => return Err(unrecognized(&wanted)),
                    }
                }
                Inquiry::Database => match name.as_str() {
                    "CONNECT" => true,
                    "CREATE" | "TEMP" | "TEMPORARY" => superuser,
                    _ => return Err(unrecognized(&wanted)),
                },
                Inquiry::Role => {
                    let other = text(first, row).expect("not NULL");
                    match name.as_str() {
                        "MEMBER" | "USAGE" | "SET" => {
                            superuser || role.as_ref().is_some_and(|r| r.name == other)
                        }
                        _ => return Err(unrecognized(&wanted)),
                    }
                }
            };
            any |= yes && (!grant_option || superuser);
        }
        out.push(Some(any));
    }
    Ok(Arc::new(BooleanArray::from(out)))
}

/// The database table a privilege function names (by name, `public.name`,
/// or OID); `None` for a system catalog, which everyone may read (but the
/// audit log).
fn relation(snapshot: &Snapshot, column: &dyn Array, text: &str) -> Result<Option<String>> {
    let found = match column.data_type().is_integer() {
        true => snapshot
            .tables
            .iter()
            .find(|t| t.oid.to_string() == text)
            .map(|t| (t.name.clone(), t.namespace == PUBLIC_OID)),
        false => {
            let unquoted = |s: &str| s.trim_matches('"').to_string();
            let (schema, name) = match text.split_once('.') {
                Some((schema, name)) => (Some(unquoted(schema)), unquoted(name)),
                None => (None, unquoted(text)),
            };
            let ours = schema.as_deref().is_none_or(|s| s == "public")
                && snapshot
                    .tables
                    .iter()
                    .any(|t| t.name == name && t.namespace == PUBLIC_OID);
            let system =
                schema.as_deref().is_none_or(|s| s != "public") && is_catalog_relation(&name);
            match (ours, system) {
                (true, _) => Some((name, true)),
                (false, true) => Some((name, false)),
                (false, false) => None,
            }
        }
    };
    match found {
        Some((name, true)) => Ok(Some(name)),
        // The audit log is for superusers, whom no grant reaches.
        Some((name, false)) if name == crate::audit::TABLE => Ok(Some(name)),
        Some((_, false)) => Ok(None),
        None => Err(fail(
            cohortdb_engine::Error::TableNotFound(text.to_string()).into(),
        )),
    }
}

fn unrecognized(privilege: &str) -> DataFusionError {
    fail(Error::InvalidArgument {
        message: format!(
            "unrecognized privilege type: \"{}\"",
            privilege.to_ascii_lowercase()
        ),
        position: None,
    })
}

fn fail(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

//! The SQL-standard `information_schema` views as PostgreSQL defines them
//! (its column lists and type names), built from the same snapshot as the
//! system catalogs. BI tools read `tables` and `columns` to list what a database
//! holds (Grafana's query builder among them); the constraint views are empty,
//! as cohortdb has no constraints other than NOT NULL.

use datafusion::sql::sqlparser::ast::{Query, ShowStatementIn, Statement};

use super::types::{self, PgType};
use super::{
    CatalogRelation, NULL, PG_CATALOG, PG_CATALOG_OID, PUBLIC_OID, Relation, Row, Snapshot, int4,
    owner_name, text,
};
use cohortdb_engine::roles::Privilege;

use crate::error::{Error, Result};
use crate::session::{CATALOG_NAME, SCHEMA_NAME, Session, resolve_table};

/// The schema holding these views.
pub(crate) const INFORMATION_SCHEMA: &str = "information_schema";

/// Every view, with PostgreSQL's columns: `sql_identifier` is `name`,
/// `character_data` and `yes_or_no` are `varchar`, `cardinal_number` is `int4`
/// (clients see these domains as their base types).
pub(super) const RELATIONS: &[CatalogRelation] = &[
    CatalogRelation {
        name: "schemata",
        oid: 0,
        columns: "catalog_name name, schema_name name, schema_owner name, \
                  default_character_set_catalog name, default_character_set_schema name, \
                  default_character_set_name name, sql_path varchar",
        rows: Some(schemata_rows),
    },
    CatalogRelation {
        name: "tables",
        oid: 0,
        columns: "table_catalog name, table_schema name, table_name name, \
                  table_type varchar, self_referencing_column_name name, \
                  reference_generation varchar, user_defined_type_catalog name, \
                  user_defined_type_schema name, user_defined_type_name name, \
                  is_insertable_into varchar, is_typed varchar, commit_action varchar",
        rows: Some(tables_rows),
    },
    CatalogRelation {
        name: "columns",
        oid: 0,
        columns: "table_catalog name, table_schema name, table_name name, column_name name, \
                  ordinal_position int4, column_default varchar, is_nullable varchar, \
                  data_type varchar, character_maximum_length int4, \
                  character_octet_length int4, numeric_precision int4, \
                  numeric_precision_radix int4, numeric_scale int4, datetime_precision int4, \
                  interval_type varchar, interval_precision int4, character_set_catalog name, \
                  character_set_schema name, character_set_name name, collation_catalog name, \
                  collation_schema name, collation_name name, domain_catalog name, \
                  domain_schema name, domain_name name, udt_catalog name, udt_schema name, \
                  udt_name name, scope_catalog name, scope_schema name, scope_name name, \
                  maximum_cardinality int4, dtd_identifier name, is_self_referencing varchar, \
                  is_identity varchar, identity_generation varchar, identity_start varchar, \
                  identity_increment varchar, identity_maximum varchar, \
                  identity_minimum varchar, identity_cycle varchar, is_generated varchar, \
                  generation_expression varchar, is_updatable varchar",
        rows: Some(columns_rows),
    },
    CatalogRelation {
        name: "table_privileges",
        oid: 0,
        columns: TABLE_PRIVILEGE_COLUMNS,
        rows: Some(table_privilege_rows),
    },
    CatalogRelation {
        name: "role_table_grants",
        oid: 0,
        columns: TABLE_PRIVILEGE_COLUMNS,
        rows: Some(table_privilege_rows),
    },
    CatalogRelation {
        name: "views",
        oid: 0,
        columns: "table_catalog name, table_schema name, table_name name, \
                  view_definition varchar, check_option varchar, is_updatable varchar, \
                  is_insertable_into varchar, is_trigger_updatable varchar, \
                  is_trigger_deletable varchar, is_trigger_insertable_into varchar",
        rows: Some(views_rows),
    },
    CatalogRelation {
        name: "table_constraints",
        oid: 0,
        columns: "constraint_catalog name, constraint_schema name, constraint_name name, \
                  table_catalog name, table_schema name, table_name name, \
                  constraint_type varchar, is_deferrable varchar, initially_deferred varchar, \
                  enforced varchar, nulls_distinct varchar",
        rows: None,
    },
    CatalogRelation {
        name: "key_column_usage",
        oid: 0,
        columns: "constraint_catalog name, constraint_schema name, constraint_name name, \
                  table_catalog name, table_schema name, table_name name, column_name name, \
                  ordinal_position int4, position_in_unique_constraint int4",
        rows: None,
    },
    CatalogRelation {
        name: "referential_constraints",
        oid: 0,
        columns: "constraint_catalog name, constraint_schema name, constraint_name name, \
                  unique_constraint_catalog name, unique_constraint_schema name, \
                  unique_constraint_name name, match_option varchar, update_rule varchar, \
                  delete_rule varchar",
        rows: None,
    },
    CatalogRelation {
        name: "constraint_column_usage",
        oid: 0,
        columns: "table_catalog name, table_schema name, table_name name, column_name name, \
                  constraint_catalog name, constraint_schema name, constraint_name name",
        rows: None,
    },
];

fn yes_no(v: bool) -> datafusion::common::ScalarValue {
    text(if v { "YES" } else { "NO" })
}

/// The schema a relation is in.
fn schema_name(relation: &Relation) -> &'static str {
    match relation.namespace {
        PUBLIC_OID => SCHEMA_NAME,
        PG_CATALOG_OID => PG_CATALOG,
        _ => INFORMATION_SCHEMA,
    }
}

fn schemata_rows(s: &Snapshot) -> Vec<Row> {
    let owner = owner_name(&s.roles);
    [PG_CATALOG, SCHEMA_NAME, INFORMATION_SCHEMA]
        .into_iter()
        .map(|schema| {
            vec![
                text(CATALOG_NAME),
                text(schema),
                text(&owner),
                NULL,
                NULL,
                NULL,
                NULL,
            ]
        })
        .collect()
}

/// User tables and the system catalogs (`BASE TABLE`), catalog views such as
/// `pg_roles` and these views themselves (`VIEW`).
const TABLE_PRIVILEGE_COLUMNS: &str = "grantor name, grantee name, table_catalog name, \
    table_schema name, table_name name, privilege_type varchar, is_grantable varchar, \
    with_hierarchy varchar";

/// `table_privileges` (and `role_table_grants`, the same here): one row per
/// privilege granted on a table, by the owner. Superusers hold every
/// privilege without a grant, as in PostgreSQL, and are not listed.
fn table_privilege_rows(s: &Snapshot) -> Vec<Row> {
    let owner = owner_name(&s.roles);
    let mut rows = Vec::new();
    for (grantee, table, privileges) in &s.table_grants {
        for privilege in privileges {
            rows.push(vec![
                text(&owner),
                text(grantee),
                text(CATALOG_NAME),
                text(SCHEMA_NAME),
                text(table),
                text(privilege.as_str()),
                yes_no(false),
                yes_no(privilege == &Privilege::Select),
            ]);
        }
    }
    rows
}

/// `views`: every view, with its query.
fn views_rows(s: &Snapshot) -> Vec<Row> {
    s.tables
        .iter()
        .filter_map(|t| {
            let definition = t.definition.as_ref()?;
            Some(vec![
                text(CATALOG_NAME),
                text(SCHEMA_NAME),
                text(&t.name),
                text(definition),
                text("NONE"),
                yes_no(false),
                yes_no(false),
                yes_no(false),
                yes_no(false),
                yes_no(false),
            ])
        })
        .collect()
}

fn tables_rows(s: &Snapshot) -> Vec<Row> {
    let row = |schema: &str, name: &str, base: bool| -> Row {
        vec![
            text(CATALOG_NAME),
            text(schema),
            text(name),
            text(if base { "BASE TABLE" } else { "VIEW" }),
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            yes_no(base),
            yes_no(false),
            NULL,
        ]
    };
    let tables = s
        .tables
        .iter()
        .map(|t| row(schema_name(t), &t.name, t.definition.is_none()));
    let catalog_views = super::RELATIONS
        .iter()
        .filter(|r| r.oid == 0)
        .map(|r| row(PG_CATALOG, r.name, false));
    let views = RELATIONS
        .iter()
        .map(|r| row(INFORMATION_SCHEMA, r.name, false));
    tables.chain(catalog_views).chain(views).collect()
}

/// `numeric_precision`, its radix and `numeric_scale` of a numeric type.
fn numeric_shape(pg: &PgType, typmod: i32) -> (Option<i32>, Option<i32>, Option<i32>) {
    match pg.oid {
        types::INT2 => (Some(16), Some(2), Some(0)),
        types::INT4 => (Some(32), Some(2), Some(0)),
        types::INT8 => (Some(64), Some(2), Some(0)),
        types::FLOAT4 => (Some(24), Some(2), None),
        types::FLOAT8 => (Some(53), Some(2), None),
        types::NUMERIC if typmod >= 4 => {
            let modifier = typmod - 4;
            (Some(modifier >> 16), Some(10), Some(modifier & 0xffff))
        }
        types::NUMERIC => (None, Some(10), None),
        _ => (None, None, None),
    }
}

fn columns_rows(s: &Snapshot) -> Vec<Row> {
    let optional = |v: Option<i32>| v.map_or(NULL, int4);
    let mut rows = Vec::new();
    for table in &s.tables {
        for (i, field) in table.schema.fields().iter().enumerate() {
            let oid = types::field_type_oid(field);
            let pg = types::by_oid(oid).expect("columns map to listed types");
            let typmod = types::type_modifier(field.data_type());
            let data_type = if pg.category == 'A' {
                "ARRAY".to_string()
            } else {
                types::format_type(oid, -1).unwrap_or_default()
            };
            let (precision, radix, scale) = numeric_shape(pg, typmod);
            let datetime_precision = match oid {
                types::DATE => Some(0),
                types::TIMESTAMP | types::TIMESTAMPTZ | types::TIME => Some(6),
                _ => None,
            };
            let ordinal = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let nullable = !table.not_null.get(i).copied().unwrap_or(false);
            let mut row = vec![
                text(CATALOG_NAME),
                text(schema_name(table)),
                text(&table.name),
                text(field.name()),
                int4(ordinal),
                NULL,
                yes_no(nullable),
                text(data_type),
                NULL,
                NULL,
                optional(precision),
                optional(radix),
                optional(scale),
                optional(datetime_precision),
            ];
            // interval_type .. domain_name
            row.extend(std::iter::repeat_n(NULL, 11));
            row.extend([
                text(CATALOG_NAME),
                text(PG_CATALOG),
                text(pg.name),
                NULL,
                NULL,
                NULL,
                NULL,
                text(ordinal.to_string()),
                yes_no(false),
                yes_no(false),
                NULL,
                NULL,
                NULL,
                NULL,
                NULL,
                yes_no(false),
                text("NEVER"),
                NULL,
                yes_no(table.namespace == PUBLIC_OID),
            ]);
            rows.push(row);
        }
    }
    rows
}

/// The query `SHOW TABLES` and `SHOW COLUMNS FROM t` stand for, over these
/// views: the user's tables, and a table's columns with their PostgreSQL types.
pub(crate) fn show_query(statement: &Statement, session: &Session) -> Option<Result<Query>> {
    let sql = match statement {
        Statement::ShowTables { .. } => format!(
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = '{SCHEMA_NAME}' ORDER BY table_name"
        ),
        Statement::ShowColumns { show_options, .. } => {
            let table = match show_options.show_in.as_ref() {
                Some(ShowStatementIn {
                    parent_name: Some(name),
                    ..
                }) => resolve_table(session, name).map(|t| t.name().to_string()),
                _ => Err(Error::invalid(
                    "SHOW COLUMNS needs a table: SHOW COLUMNS FROM name".to_string(),
                    None,
                )),
            };
            let table = match table {
                Ok(table) => table,
                Err(e) => return Some(Err(e)),
            };
            format!(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE table_schema = '{SCHEMA_NAME}' AND table_name = '{}' \
                 ORDER BY ordinal_position",
                table.replace('\'', "''")
            )
        }
        _ => return None,
    };
    Some(crate::session::parse_query(&sql))
}

//! Names the way PostgreSQL makes them: unquoted identifiers fold to lower case,
//! quoted ones keep their spelling, and result columns are named as PostgreSQL
//! names them (`count`, `?column?`), which is what clients show and look up.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::{Expr as DfExpr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{
    DataType as SqlDataType, Expr, Ident, ObjectName, Query, Select, SelectItem, SetExpr, Spanned,
    TableFactor, visit_expressions_mut,
};

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

/// Marks a result column name made unique for DataFusion, which refuses two
/// output columns of one name where PostgreSQL allows them (`SELECT 1, 2` has two
/// `?column?`). What follows the marker is cut off before the client sees it.
const DUPLICATE_MARKER: char = '\0';

/// The PostgreSQL names of a query's result columns, in order; `None` stands
/// for a `*`, whose columns keep their own names.
pub(crate) struct OutputNames(Vec<Option<String>>);

/// Names result columns as PostgreSQL does: a column keeps its name, a function
/// call is named after the function, a cast after its operand or else its type,
/// anything else is `?column?`. Derived tables and CTEs get these names in the
/// tree (so an outer query can say `s.count`); the outermost select list's are
/// returned for [`rename_output`], which applies them on top of the planned
/// query, where they cannot disturb how ORDER BY resolves names.
pub(crate) fn name_columns(query: &mut Query) -> OutputNames {
    name_ctes(query);
    let mut body = query.body.as_mut();
    let mut leftmost = true;
    loop {
        match body {
            SetExpr::Select(select) => {
                name_derived(select);
                if leftmost {
                    let names = OutputNames(select.projection.iter().map(item_name).collect());
                    distinguish_repeats(select, &names);
                    return names;
                }
                return OutputNames(Vec::new());
            }
            SetExpr::SetOperation { left, right, .. } => {
                alias_set_expr(right);
                body = left.as_mut();
            }
            SetExpr::Query(inner) => {
                name_nested(inner);
                leftmost = false;
                body = inner.body.as_mut();
            }
            _ => return OutputNames(Vec::new()),
        }
    }
}

fn name_ctes(query: &mut Query) {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            name_nested(&mut cte.query);
        }
    }
}

/// Names the columns of a query whose names other queries read, in the tree.
fn name_nested(query: &mut Query) {
    name_ctes(query);
    alias_set_expr(&mut query.body);
}

fn alias_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            name_derived(select);
            alias_select(select);
        }
        SetExpr::Query(query) => name_nested(query),
        SetExpr::SetOperation { left, right, .. } => {
            alias_set_expr(left);
            alias_set_expr(right);
        }
        _ => {}
    }
}

fn name_derived(select: &mut Select) {
    for table in &mut select.from {
        let factors = std::iter::once(&mut table.relation)
            .chain(table.joins.iter_mut().map(|j| &mut j.relation));
        for factor in factors {
            if let TableFactor::Derived { subquery, .. } = factor {
                name_nested(subquery);
            }
        }
    }
}

/// The name PostgreSQL gives a select-list item; `None` for `*`.
fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(expr) => {
            Some(column_name(expr).unwrap_or_else(|| "?column?".to_string()))
        }
        SelectItem::ExprWithAlias { alias, .. } => Some(normalize(alias)),
        _ => None,
    }
}

/// Aliases an unaliased item that repeats an earlier one (`SELECT NULL, NULL`),
/// or contains a cast, which DataFusion would refuse as two columns of one
/// name.
fn distinguish_repeats(select: &mut Select, names: &OutputNames) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut texts: Vec<String> = Vec::new();
    for (item, name) in select.projection.iter_mut().zip(&names.0) {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        let text = datafusion_name(expr);
        let name = name.as_deref().unwrap_or_default();
        let unique = unique_name(&mut seen, name);
        // A cast is named as its operand: `amount::numeric` would clash with
        // `amount` itself, which ORDER BY amount adds to the projection.
        let cast = text != expr.to_string();
        if cast || texts.contains(&text) {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::with_quote('"', format!("{unique}{DUPLICATE_MARKER}")),
            };
        }
        texts.push(text);
    }
}

/// An expression's text as DataFusion names the column it makes, which leaves
/// out casts (`42::int2` and `42::int4` are both `Int64(42)` to it).
fn datafusion_name(expr: &Expr) -> String {
    let mut expr = expr.clone();
    let _ = visit_expressions_mut(&mut expr, |e| {
        while let Expr::Cast { expr: inner, .. } = e {
            *e = inner.as_ref().clone();
        }
        ControlFlow::<()>::Continue(())
    });
    expr.to_string()
}

/// Gives every computed item of a select list its PostgreSQL name as an alias.
fn alias_select(select: &mut Select) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in &mut select.projection {
        let Some(name) = item_name(item) else {
            continue;
        };
        let is_column = matches!(
            item,
            SelectItem::UnnamedExpr(Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        );
        let unique = unique_name(&mut seen, &name);
        if is_column && unique == name {
            continue;
        }
        if let SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } = item {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::with_quote('"', unique),
            };
        }
    }
}

/// `name`, or `name` with the duplicate marker and a count when already used.
fn unique_name(seen: &mut HashMap<String, usize>, name: &str) -> String {
    let count = seen.entry(name.to_string()).or_insert(0);
    *count += 1;
    if *count == 1 {
        name.to_string()
    } else {
        format!("{name}{DUPLICATE_MARKER}{count}")
    }
}

/// The planned query with its output columns named `names` (see
/// [`name_columns`]); unchanged when the names already match, or when `*`s
/// make it unclear which column an item is.
pub(crate) fn rename_output(
    plan: LogicalPlan,
    names: &OutputNames,
) -> datafusion::common::Result<LogicalPlan> {
    let columns = plan.schema().columns();
    let known = names.0.iter().flatten().count();
    let wildcards = names.0.len() - known;
    let expanded: Vec<Option<&str>> = match wildcards {
        0 if known == columns.len() => names.0.iter().map(|n| n.as_deref()).collect(),
        1 if known <= columns.len() => names
            .0
            .iter()
            .flat_map(|n| match n {
                Some(name) => vec![Some(name.as_str())],
                None => vec![None; columns.len() - known],
            })
            .collect(),
        _ => return Ok(plan),
    };
    if expanded
        .iter()
        .zip(&columns)
        .all(|(name, column)| name.is_none_or(|n| n == column.name))
    {
        return Ok(plan);
    }
    let mut seen = HashMap::new();
    let exprs: Vec<DfExpr> = columns
        .into_iter()
        .zip(expanded)
        .map(|(column, name)| {
            let name = unique_name(&mut seen, name.unwrap_or(&column.name));
            DfExpr::Column(column).alias(name)
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}

/// PostgreSQL's name for a result column computed by `expr` (its
/// FigureColname), or `None` for `?column?`.
fn column_name(expr: &Expr) -> Option<String> {
    figure(expr).map(|(name, _)| name)
}

/// A name for `expr` with its strength: 2 for a name from a column, function
/// or keyword, 1 for a type name, which an enclosing cast's type overrides
/// (`'t'::regclass::text` is `text`).
fn figure(expr: &Expr) -> Option<(String, u8)> {
    let strong = |name: &str| Some((name.to_string(), 2));
    match expr {
        Expr::Identifier(ident) => Some((normalize(ident), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| (normalize(p), 2)),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| (normalize(i), 2)),
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some((type_column_name(data_type), 1)),
        },
        Expr::Nested(expr) => figure(expr),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some(("case".to_string(), 1)),
        },
        Expr::Subquery(query) => match query.body.as_ref() {
            SetExpr::Select(select) => match select.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => Some((normalize(alias), 2)),
                Some(SelectItem::UnnamedExpr(expr)) => Some((
                    column_name(expr).unwrap_or_else(|| "?column?".to_string()),
                    2,
                )),
                _ => None,
            },
            _ => None,
        },
        Expr::Exists { .. } => strong("exists"),
        Expr::Array(_) => strong("array"),
        Expr::TypedString(typed) => Some((type_column_name(&typed.data_type), 1)),
        Expr::Extract { .. } => strong("extract"),
        Expr::Substring {
            shorthand: true, ..
        } => strong("substr"),
        Expr::Substring { .. } => strong("substring"),
        Expr::Position { .. } => strong("position"),
        Expr::Trim { .. } => strong("btrim"),
        Expr::Overlay { .. } => strong("overlay"),
        Expr::Ceil { .. } => strong("ceil"),
        Expr::Floor { .. } => strong("floor"),
        Expr::AtTimeZone { .. } => strong("timezone"),
        _ => None,
    }
}

/// The column name a cast to `data_type` gives: the type's internal name.
fn type_column_name(data_type: &SqlDataType) -> String {
    let text = data_type.to_string().to_ascii_lowercase();
    let base = text.split('(').next().unwrap_or(&text).trim();
    let base = base
        .strip_prefix("pg_catalog.")
        .unwrap_or(base)
        .trim_matches('"');
    if base.ends_with("[]") {
        return "array".to_string();
    }
    crate::pg_catalog::types::by_name(base).map_or_else(|| base.to_string(), |t| t.name.to_string())
}

/// `schema` with the names the client sees: duplicate names made unique by
/// [`name_columns`] lose their suffix.
pub(crate) fn client_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| f.name().contains(DUPLICATE_MARKER))
    {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().split(DUPLICATE_MARKER).next().unwrap_or_default();
            f.as_ref().clone().with_name(name)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

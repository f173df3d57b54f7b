//! PostgreSQL syntax that clients send and DataFusion does not plan, rewritten
//! in the syntax tree into what it means, before planning:
//!
//! - `a OPERATOR(pg_catalog.~) b` → `a ~ b`; `x COLLATE c` → `x` (one collation);
//! - `pg_catalog.f(...)` → `f(...)`; an unqualified system catalog (`pg_type`)
//!   → `pg_catalog.pg_type` unless a table or CTE of that name exists;
//! - casts to the object-identifier types (`'t'::regclass`, `oid::regtype::text`)
//!   → the functions that look the names up; `::oid` → an unsigned integer;
//!   `::name` → text;
//! - `current_user`, `session_user`, `current_schema`, ... without parentheses
//!   → the functions;
//! - `ARRAY(subquery)` → a subquery aggregating its rows into an array;
//! - in a SELECT that reads an always-empty catalog (`pg_index`, ...) through
//!   inner joins, and so has no rows: subqueries and `_pg_expandarray` in the
//!   select list → values of the same shape (pgjdbc's key and index queries);
//! - a correlated scalar subquery that is not aggregated → the same subquery
//!   with its value taken by `first_value`, which DataFusion can decorrelate
//!   (a scalar subquery yields at most one row, so the value is the same);
//! - `LIKE p ESCAPE '/'` → the same pattern escaped with backslash;
//! - `(composite).field` → `get_field(composite, 'field')`;
//! - `generate_subscripts(a, 1)` → `unnest(generate_series(1, array_length(a, 1)))`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, BinaryOperator, CaseWhen, DataType, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentClause, FunctionArgumentList, FunctionArguments, GroupByExpr,
    Ident, JoinOperator, LambdaFunction, LambdaFunctionParameter, LambdaSyntax, LimitClause,
    ObjectName, ObjectNamePart, OneOrManyWithParens, OrderByExpr, OrderByKind, OrderByOptions,
    Query, Select, SelectItem, SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
    visit_expressions, visit_expressions_mut,
};

use super::{PG_CATALOG, is_catalog_relation};
use crate::names::normalize;

/// The function that turns a name or number into an object identifier.
pub(crate) const TO_REG: &str = "__cohortdb_to_reg";
/// The function that rewrites a LIKE pattern written with another escape
/// character (`ESCAPE '/'`) into one with backslash, the only one DataFusion
/// takes.
pub(crate) const LIKE_ESCAPE: &str = "__cohortdb_like_escape";
/// The function that turns an object identifier into its name.
pub(crate) const REG_TEXT: &str = "__cohortdb_reg_text";

/// Rewrites `statement` in place. `is_table` says whether a user table of that
/// name exists (it wins over a system catalog of the same name).
pub(crate) fn rewrite(statement: &mut Statement, is_table: &dyn Fn(&str) -> bool) {
    let mut ctes = HashSet::new();
    collect_ctes(statement, &mut ctes);
    show_object_names(statement);
    let mut rewriter = Rewriter { ctes, is_table };
    let _ = statement.visit(&mut rewriter);
    int4_literals(statement);
}

/// Integer literals that fit are `integer`, as PostgreSQL types them (DataFusion
/// reads every one as bigint): `SELECT 7 / 2` and `coalesce(x, 0)` over an
/// integer column are int4, `ARRAY[1, 2]` is int4[]. Literals that are not
/// values keep their form: ORDER BY and GROUP BY positions, LIMIT, OFFSET and
/// FETCH counts, and the arguments of table functions (`generate_series(1, 3)`
/// takes bigint literals).
fn int4_literals(statement: &mut Statement) {
    /// Marks and wraps; the marked literals are compared by address only.
    struct Int4 {
        keep: HashSet<*const Expr>,
    }
    impl Int4 {
        fn keep_number(&mut self, expr: &Expr) {
            if matches!(expr, Expr::Value(v) if matches!(v.value, Value::Number(..))) {
                self.keep.insert(expr as *const Expr);
            }
        }
        fn keep_positions(&mut self, body: &SetExpr) {
            match body {
                SetExpr::Select(select) => {
                    if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
                        exprs.iter().for_each(|e| self.keep_number(e));
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    self.keep_positions(left);
                    self.keep_positions(right);
                }
                _ => {}
            }
        }
    }
    impl VisitorMut for Int4 {
        type Break = ();

        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let Some(order_by) = &query.order_by
                && let OrderByKind::Expressions(items) = &order_by.kind
            {
                items.iter().for_each(|item| self.keep_number(&item.expr));
            }
            match &query.limit_clause {
                Some(LimitClause::LimitOffset { limit, offset, .. }) => {
                    limit.iter().for_each(|e| self.keep_number(e));
                    offset.iter().for_each(|o| self.keep_number(&o.value));
                }
                Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                    self.keep_number(offset);
                    self.keep_number(limit);
                }
                None => {}
            }
            if let Some(quantity) = query.fetch.as_ref().and_then(|f| f.quantity.as_ref()) {
                self.keep_number(quantity);
            }
            self.keep_positions(&query.body);
            ControlFlow::Continue(())
        }

        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let args = match factor {
                TableFactor::Table {
                    args: Some(args), ..
                } => &args.args,
                TableFactor::Function { args, .. } => args,
                _ => return ControlFlow::Continue(()),
            };
            for arg in args {
                let (FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                }) = arg
                else {
                    continue;
                };
                let _ = visit_expressions(e, |e| {
                    self.keep_number(e);
                    ControlFlow::<()>::Continue(())
                });
            }
            ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = expr
                && let Value::Number(n, false) = &v.value
                && n.parse::<i32>().is_ok()
                && !self.keep.contains(&(expr as *const Expr))
            {
                *expr = cast(expr.clone(), DataType::Integer(None));
            }
            ControlFlow::Continue(())
        }
    }
    if matches!(statement, Statement::Query(_) | Statement::Explain { .. }) {
        let _ = statement.visit(&mut Int4 {
            keep: HashSet::new(),
        });
    }
}

/// A value of an object-identifier type in the result shows as the object's
/// name (`'int4'::regtype` is `integer`), so such a cast standing alone in the
/// outermost select list is read as text.
fn show_object_names(statement: &mut Statement) {
    let Statement::Query(query) = statement else {
        return;
    };
    let mut body = query.body.as_mut();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    let SetExpr::Select(select) = body else {
        return;
    };
    for item in &mut select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
            && let Expr::Cast { data_type, .. } = e
            && reg_kind(&type_name(data_type)).is_some()
        {
            *e = cast(e.clone(), DataType::Text);
        }
    }
}

fn collect_ctes(statement: &Statement, ctes: &mut HashSet<String>) {
    struct Ctes<'a>(&'a mut HashSet<String>);
    impl datafusion::sql::sqlparser::ast::Visitor for Ctes<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.0.insert(normalize(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = datafusion::sql::sqlparser::ast::Visit::visit(statement, &mut Ctes(ctes));
}

struct Rewriter<'a> {
    ctes: HashSet<String>,
    is_table: &'a dyn Fn(&str) -> bool,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        empty_selects_without_subqueries(&mut query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `FROM [pg_catalog.]unnest(a) x` is DataFusion's UNNEST relation.
        if let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = factor
            && name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize)
                .as_deref()
                == Some("unnest")
            && let Some(array_exprs) = args.args.iter().map(arg_expr).collect::<Option<Vec<_>>>()
        {
            *factor = TableFactor::UNNEST {
                alias: alias.clone(),
                array_exprs,
                with_offset: false,
                with_offset_alias: None,
                with_ordinality: false,
            };
        }
        ControlFlow::Continue(())
    }

    fn post_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(normalize))
            .collect();
        match parts.as_slice() {
            // A function in FROM (`pg_catalog.generate_series(...)`).
            [schema, name] if schema == PG_CATALOG && !is_catalog_relation(name) => {
                relation.0.remove(0);
            }
            [name]
                if is_catalog_relation(name)
                    && !self.ctes.contains(name)
                    && !(self.is_table)(name) =>
            {
                relation
                    .0
                    .insert(0, ObjectNamePart::Identifier(Ident::new(PG_CATALOG)));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(rewritten) = rewrite_expr(expr) {
            *expr = rewritten;
        }
        ControlFlow::Continue(())
    }
}

/// `x.typtype = 'd'` (a domain) or `= 'c'` (a composite type).
fn is_domain_or_composite_test(condition: &Expr) -> bool {
    let Some((left, right)) = equality(condition) else {
        return false;
    };
    let column = match left {
        Expr::Identifier(ident) => ident,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(ident) => ident,
            None => return false,
        },
        _ => return false,
    };
    normalize(column) == "typtype"
        && matches!(right, Expr::Value(v)
            if matches!(&v.value, Value::SingleQuotedString(s) if s == "d" || s == "c"))
}

/// The two sides of `left = right`.
fn equality(condition: &Expr) -> Option<(&Expr, &Expr)> {
    match condition {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => Some((left, right)),
        _ => None,
    }
}

/// A SELECT reading an always-empty system catalog (`pg_policy`,
/// `pg_publication_rel`, ...) through inner joins yields no rows, so its select
/// list is never evaluated: select-list expressions holding subqueries become
/// NULL there, sparing DataFusion subqueries it cannot plan (a table function
/// over outer columns, comparisons with array literals).
fn empty_selects_without_subqueries(body: &mut SetExpr) {
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            empty_selects_without_subqueries(left);
            empty_selects_without_subqueries(right);
        }
        SetExpr::Select(select) if reads_empty_relation(select) => {
            for item in &mut select.projection {
                let expr = match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                    _ => continue,
                };
                let mut has_subquery = false;
                let _ = visit_expressions(&*expr, |e| {
                    has_subquery |= matches!(
                        e,
                        Expr::Subquery(_)
                            | Expr::Function(Function {
                                args: FunctionArguments::Subquery(_),
                                ..
                            })
                    );
                    ControlFlow::<()>::Continue(())
                });
                if has_subquery {
                    *expr = Expr::value(Value::Null);
                }
                let _ = visit_expressions_mut(expr, |e| {
                    if is_expandarray(e) {
                        *e = crate::session::parse_expr(EXPANDED_ELEMENT);
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        _ => {}
    }
}

/// A row of `information_schema._pg_expandarray(array)` (the element and its
/// 1-based position), which pgjdbc reads over `pg_index.indkey`. With no
/// indexes that select has no rows, so only the shape of its value matters.
const EXPANDED_ELEMENT: &str = "named_struct('x', CAST(NULL AS SMALLINT), 'n', CAST(NULL AS INT))";

fn is_expandarray(expr: &Expr) -> bool {
    matches!(expr, Expr::Function(f) if f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| normalize(i) == "_pg_expandarray"))
}

/// Whether every row of `select` must come from an always-empty catalog.
fn reads_empty_relation(select: &Select) -> bool {
    let empty = |factor: &TableFactor| match factor {
        TableFactor::Table { name, .. } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| super::is_empty_relation(&normalize(i))),
        _ => false,
    };
    select.from.iter().any(|table| {
        empty(&table.relation)
            || table.joins.iter().any(|join| {
                matches!(
                    join.join_operator,
                    JoinOperator::Join(_) | JoinOperator::Inner(_)
                ) && empty(&join.relation)
            })
    })
}

/// What `expr` becomes, if it needs rewriting. Children are already rewritten.
fn rewrite_expr(expr: &mut Expr) -> Option<Expr> {
    match expr {
        // cohortdb has no domain or composite types, so a CASE arm for one
        // (asyncpg's type introspection looks up a domain's base type with a
        // correlated recursive subquery there) never runs: it is dropped,
        // sparing DataFusion a subquery it cannot plan.
        Expr::Case {
            operand: None,
            conditions,
            else_result,
            ..
        } if conditions
            .iter()
            .any(|c| is_domain_or_composite_test(&c.condition)) =>
        {
            conditions.retain(|c| !is_domain_or_composite_test(&c.condition));
            if conditions.is_empty() {
                return Some(
                    else_result
                        .as_deref()
                        .cloned()
                        .unwrap_or(Expr::value(Value::Null)),
                );
            }
            None
        }
        Expr::BinaryOp { left, op, right } => {
            let BinaryOperator::PGCustomBinaryOperator(parts) = op else {
                return None;
            };
            let op = standard_operator(parts.last()?)?;
            Some(Expr::BinaryOp {
                left: left.clone(),
                op,
                right: right.clone(),
            })
        }
        Expr::Collate { expr, .. } => Some((**expr).clone()),
        // `(composite).field`, which DataFusion spells `get_field(composite, 'field')`.
        Expr::CompoundFieldAccess { root, access_chain }
            if access_chain
                .iter()
                .all(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_)))) =>
        {
            let mut value = (**root).clone();
            for access in access_chain.iter() {
                if let AccessExpr::Dot(Expr::Identifier(field)) = access {
                    value = call("get_field", vec![value, string(&normalize(field))]);
                }
            }
            Some(value)
        }
        Expr::Like {
            negated,
            any,
            expr,
            pattern,
            escape_char: Some(escape),
        } => {
            let Value::SingleQuotedString(c) = &escape.value else {
                return None;
            };
            (c != "\\").then(|| Expr::Like {
                negated: *negated,
                any: *any,
                expr: expr.clone(),
                pattern: Box::new(call(LIKE_ESCAPE, vec![(**pattern).clone(), string(c)])),
                escape_char: None,
            })
        }
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => rewrite_cast(inner, data_type),
        Expr::Identifier(ident) if ident.quote_style.is_none() => {
            let name = ident.value.to_ascii_lowercase();
            session_function(&name).then(|| call(&name, Vec::new()))
        }
        Expr::Function(function) => rewrite_function(function),
        // A scalar subquery over an always-empty catalog is NULL.
        Expr::Subquery(query) if matches!(query.body.as_ref(), SetExpr::Select(select) if reads_empty_relation(select)) => {
            Some(Expr::value(Value::Null))
        }
        Expr::Subquery(query) => first_value_of_correlated(query),
        _ => None,
    }
}

/// The built-in operator a `OPERATOR(pg_catalog.op)` names.
fn standard_operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" | "!=" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        "+" => BinaryOperator::Plus,
        "-" => BinaryOperator::Minus,
        "||" => BinaryOperator::StringConcat,
        _ => return None,
    })
}

/// Functions PostgreSQL lets you call without parentheses.
fn session_function(name: &str) -> bool {
    matches!(
        name,
        "current_user" | "session_user" | "current_role" | "current_catalog" | "current_schema"
    )
}

/// The object-identifier types a cast may name.
fn reg_kind(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "regclass" => "regclass",
        "regtype" => "regtype",
        "regnamespace" => "regnamespace",
        "regrole" => "regrole",
        _ => return None,
    })
}

/// The type name of a cast target, lower case, without a `pg_catalog.` prefix.
fn type_name(data_type: &DataType) -> String {
    let text = data_type.to_string().to_ascii_lowercase();
    text.strip_prefix("pg_catalog.")
        .unwrap_or(&text)
        .trim_matches('"')
        .to_string()
}

fn rewrite_cast(inner: &Expr, data_type: &DataType) -> Option<Expr> {
    let name = type_name(data_type);
    // Functions are named in the catalog (`typinput`), so a function name stays
    // a name, without its schema.
    if name == "regproc" || name == "regprocedure" {
        return Some(match inner {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(text) => string(text.rsplit('.').next().unwrap_or(text)),
                _ => cast(inner.clone(), DataType::Text),
            },
            _ => cast(inner.clone(), DataType::Text),
        });
    }
    if let Some(kind) = reg_kind(&name) {
        return Some(call(TO_REG, vec![string(kind), inner.clone()]));
    }
    // Arrays of object identifiers (`$1::oid[]`).
    if let Some(element) = name.strip_suffix("[]")
        && matches!(
            element,
            "oid" | "regclass" | "regtype" | "regnamespace" | "regrole"
        )
    {
        return Some(cast(
            inner.clone(),
            DataType::Array(ArrayElemTypeDef::SquareBracket(
                Box::new(DataType::IntUnsigned(None)),
                None,
            )),
        ));
    }
    match name.as_str() {
        // A string literal read as bytea is PostgreSQL's text input form
        // (`'\x0102'`), not the characters' own bytes.
        "bytea" => {
            let Expr::Value(v) = inner else {
                return None;
            };
            let Value::SingleQuotedString(text) = &v.value else {
                return None;
            };
            let hex = match super::types::bytea_input(text) {
                Ok(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
                // Not valid input: decoding it as hex fails with an error.
                Err(_) => text.clone(),
            };
            Some(call("decode", vec![string(&hex), string("hex")]))
        }
        "oid" => Some(cast(inner.clone(), DataType::IntUnsigned(None))),
        "name" | "char" => Some(cast(inner.clone(), DataType::Text)),
        "text" | "varchar" | "character varying" => {
            // `x::regclass::text` is the object's name.
            let Expr::Function(f) = inner else {
                return None;
            };
            if !is_named(&f.name, TO_REG) {
                return None;
            }
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            let args = list.args.iter().map(arg_expr).collect::<Option<Vec<_>>>()?;
            Some(call(REG_TEXT, args))
        }
        _ => {
            // `pg_catalog.int2[]` and friends: the same type unqualified.
            let plain = data_type.to_string();
            let stripped = plain
                .strip_prefix("pg_catalog.")
                .or_else(|| plain.strip_prefix("PG_CATALOG."))?;
            let data_type = parse_type(stripped)?;
            Some(cast(inner.clone(), data_type))
        }
    }
}

fn rewrite_function(function: &mut Function) -> Option<Expr> {
    let parts: Vec<String> = function
        .name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(normalize))
        .collect();
    if parts.len() == 2 && parts[0] == PG_CATALOG {
        function.name.0.remove(0);
    }
    let name = parts.last()?.as_str();
    match (&function.args, name) {
        (FunctionArguments::None, name) if session_function(name) => Some(call(name, Vec::new())),
        (FunctionArguments::Subquery(query), "array") => Some(array_of_rows(query)),
        (FunctionArguments::List(list), "generate_subscripts") if list.args.len() == 2 => {
            let array = arg_expr(&list.args[0])?;
            let dimension = arg_expr(&list.args[1])?;
            let length = call("array_length", vec![array, dimension]);
            let series = call("generate_series", vec![number("1"), length]);
            Some(call("unnest", vec![series]))
        }
        _ => None,
    }
}

/// `ARRAY(SELECT x FROM ... [ORDER BY 1])` as
/// `(SELECT array_agg(x [ORDER BY x]) FROM ...)`; a subquery of another shape
/// (grouped, limited, a set operation) is aggregated over as a derived table.
/// No rows give an empty array, as in PostgreSQL (`coalesce` with
/// `make_array()`, which takes the aggregate's type).
fn array_of_rows(query: &Query) -> Expr {
    let mut inner = query.clone();
    let order = match inner.order_by.as_ref().map(|o| &o.kind) {
        Some(OrderByKind::Expressions(exprs))
            if exprs.len() == 1 && exprs[0].expr.to_string() == "1" =>
        {
            let descending = exprs[0].options.asc == Some(false);
            inner.order_by = None;
            Some(descending)
        }
        _ => None,
    };
    if order.is_none()
        && let Some(transformed) = transform_of_unnest(&inner)
    {
        return transformed;
    }
    let aggregated = match plain_select(&inner) {
        Some((select, value, _)) => {
            let mut select = select.clone();
            select.projection = vec![SelectItem::UnnamedExpr(or_empty(array_agg(
                value.clone(),
                order,
            )))];
            let mut outer = inner.clone();
            outer.body = Box::new(SetExpr::Select(Box::new(select)));
            outer
        }
        None => {
            let template = "SELECT 1 FROM (SELECT 1) AS __cohortdb_a(__cohortdb_v)";
            let mut outer = crate::session::parse_query(template).expect("template parses");
            if let SetExpr::Select(select) = outer.body.as_mut() {
                let value = Expr::Identifier(Ident::new("__cohortdb_v"));
                select.projection =
                    vec![SelectItem::UnnamedExpr(or_empty(array_agg(value, order)))];
                if let Some(from) = select.from.first_mut()
                    && let TableFactor::Derived { subquery, .. } = &mut from.relation
                {
                    **subquery = inner;
                }
            }
            outer
        }
    };
    Expr::Subquery(Box::new(aggregated))
}

/// `ARRAY(SELECT f(x) FROM unnest(a) x)` as `array_transform(a, x -> f(x))`,
/// which needs no subquery (`a` is often an outer column, which DataFusion
/// cannot read inside a FROM).
fn transform_of_unnest(query: &Query) -> Option<Expr> {
    let (select, value, _) = plain_select(query)?;
    if select.selection.is_some() || select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return None;
    }
    let (array, alias) = match &select.from[0].relation {
        TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias),
        _ => return None,
    };
    let parameter = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [column] => column.name.clone(),
        _ => return None,
    };
    if matches!(value, Expr::Identifier(i) if normalize(i) == normalize(&parameter)) {
        return Some(array);
    }
    let lambda = Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: parameter,
            data_type: None,
        }),
        body: Box::new(value.clone()),
        syntax: LambdaSyntax::Arrow,
    });
    Some(call("array_transform", vec![array, lambda]))
}

/// `coalesce(array, make_array())`: an empty array for NULL.
fn or_empty(array: Expr) -> Expr {
    call("coalesce", vec![array, call("make_array", Vec::new())])
}

/// `array_agg(value [ORDER BY value [DESC]])`.
fn array_agg(value: Expr, order: Option<bool>) -> Expr {
    let mut call = call("array_agg", vec![value.clone()]);
    if let (Expr::Function(f), Some(descending)) = (&mut call, order)
        && let FunctionArguments::List(list) = &mut f.args
    {
        list.clauses
            .push(FunctionArgumentClause::OrderBy(vec![OrderByExpr {
                expr: value,
                options: OrderByOptions {
                    asc: Some(!descending),
                    nulls_first: None,
                },
                with_fill: None,
            }]));
    }
    call
}

/// A query that is one plain SELECT of one value: no grouping, DISTINCT,
/// ordering or limit. Returns the select, its value and the value's alias.
fn plain_select(query: &Query) -> Option<(&Select, &Expr, Option<Ident>)> {
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if select.projection.len() != 1
        || select.distinct.is_some()
        || select.having.is_some()
        || !ungrouped
    {
        return None;
    }
    match &select.projection[0] {
        SelectItem::UnnamedExpr(e) => Some((select, e, None)),
        SelectItem::ExprWithAlias { expr, alias } => Some((select, expr, Some(alias.clone()))),
        _ => None,
    }
}

/// Aggregate functions: a scalar subquery over one of these already yields one
/// row.
fn is_aggregate(name: &str) -> bool {
    matches!(
        name,
        "count"
            | "sum"
            | "min"
            | "max"
            | "avg"
            | "array_agg"
            | "string_agg"
            | "bool_and"
            | "bool_or"
            | "every"
            | "first_value"
            | "last_value"
            | "json_agg"
            | "stddev"
            | "variance"
    )
}

/// A correlated, unaggregated scalar subquery `(SELECT e FROM ... WHERE ...)` as
/// `(SELECT first_value(e) FROM ... WHERE ...)`.
///
/// DataFusion decorrelates only equalities between an inner and an outer
/// column, so the other conditions move out of the subquery: one on outer
/// columns alone (`AND a.atthasdef`) guards it from outside, and one mixing
/// both (`a.attcollation <> t.typcollation`) is checked outside with each inner
/// column read by its own subquery. That holds when the remaining conditions
/// select at most one row, as joins on object identifiers do.
fn first_value_of_correlated(query: &Query) -> Option<Expr> {
    let (select, value, alias) = plain_select(query)?;
    let own = own_relations(select);
    if !references(&Expr::Nested(Box::new(value.clone())), &own).1
        && !select
            .selection
            .as_ref()
            .is_some_and(|w| references(w, &own).1)
    {
        return None;
    }
    if let Expr::Function(f) = value
        && let Some(name) = f.name.0.last().and_then(|p| p.as_ident())
        && is_aggregate(&normalize(name))
    {
        return None;
    }
    let mut kept = Vec::new();
    let mut outside = Vec::new();
    let mut mixed = Vec::new();
    for condition in conjuncts(select.selection.clone()) {
        let (inner, outer) = references(&condition, &own);
        match (inner, outer) {
            (_, false) => kept.push(condition),
            (false, true) => outside.push(condition),
            (true, true) if is_correlation(&condition, &own) => kept.push(condition),
            (true, true) => mixed.push(condition),
        }
    }
    let mut select: Select = select.clone();
    select.selection = conjunction(kept);
    let subquery = |value: Expr, select: &Select| {
        let mut select = select.clone();
        select.projection = vec![SelectItem::UnnamedExpr(call("first_value", vec![value]))];
        let mut query = query.clone();
        query.body = Box::new(SetExpr::Select(Box::new(select)));
        Expr::Subquery(Box::new(query))
    };
    for mut condition in mixed {
        let _ = visit_expressions_mut(&mut condition, |e| {
            if is_inner_column(e, &own) {
                *e = subquery(e.clone(), &select);
            }
            ControlFlow::<()>::Continue(())
        });
        outside.push(condition);
    }
    let mut result = subquery(value.clone(), &select);
    if let Some(alias) = alias
        && let Expr::Subquery(q) = &mut result
        && let SetExpr::Select(s) = q.body.as_mut()
        && let Some(SelectItem::UnnamedExpr(e)) = s.projection.pop()
    {
        s.projection
            .push(SelectItem::ExprWithAlias { expr: e, alias });
    }
    Some(match conjunction(outside) {
        None => result,
        Some(guard) => Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition: guard,
                result,
            }],
            else_result: None,
        },
    })
}

/// The conditions of a WHERE clause joined by AND.
fn conjuncts(selection: Option<Expr>) -> Vec<Expr> {
    match selection {
        None => Vec::new(),
        Some(Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        }) => {
            let mut all = conjuncts(Some(*left));
            all.extend(conjuncts(Some(*right)));
            all
        }
        Some(Expr::Nested(inner))
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(Some(*inner))
        }
        Some(other) => vec![other],
    }
}

fn conjunction(conditions: Vec<Expr>) -> Option<Expr> {
    conditions.into_iter().reduce(|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    })
}

/// Whether `expr` reads columns of the subquery's own relations (or columns
/// it does not qualify, which SQL resolves innermost first), and whether it
/// reads columns of outer relations. A nested subquery counts as the
/// subquery's own.
fn references(expr: &Expr, own: &HashSet<String>) -> (bool, bool) {
    let (mut inner, mut outer) = (false, false);
    let _ = visit_expressions(expr, |e| {
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => inner = true,
            Expr::Identifier(_) => inner = true,
            Expr::CompoundIdentifier(_) if is_inner_column(e, own) => inner = true,
            Expr::CompoundIdentifier(_) => outer = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    (inner, outer)
}

fn is_inner_column(expr: &Expr, own: &HashSet<String>) -> bool {
    match expr {
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            own.contains(&normalize(&parts[parts.len() - 2]))
        }
        _ => false,
    }
}

/// `inner = outer`: a correlation DataFusion can decorrelate.
fn is_correlation(condition: &Expr, own: &HashSet<String>) -> bool {
    let Some((left, right)) = equality(condition) else {
        return false;
    };
    let (l, r) = (references(left, own), references(right, own));
    (l == (true, false) && r == (false, true)) || (l == (false, true) && r == (true, false))
}

/// The names by which a select's own relations can be referred to.
fn own_relations(select: &Select) -> HashSet<String> {
    let mut own: HashSet<String> = HashSet::new();
    for table in &select.from {
        let factors =
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation));
        for factor in factors {
            match factor {
                TableFactor::Table { name, alias, .. } => {
                    own.insert(match alias {
                        Some(alias) => normalize(&alias.name),
                        None => name
                            .0
                            .last()
                            .and_then(|p| p.as_ident())
                            .map(normalize)
                            .unwrap_or_default(),
                    });
                    // `pg_catalog.pg_attrdef.adnum` qualifies by schema too.
                    for part in &name.0 {
                        if let Some(ident) = part.as_ident() {
                            own.insert(normalize(ident));
                        }
                    }
                }
                TableFactor::Derived {
                    alias: Some(alias), ..
                } => {
                    own.insert(normalize(&alias.name));
                }
                _ => {}
            }
        }
    }
    own
}

fn is_named(name: &ObjectName, expected: &str) -> bool {
    name.0.len() == 1 && name.0[0].as_ident().is_some_and(|i| i.value == expected)
}

fn arg_expr(arg: &FunctionArg) -> Option<Expr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
        _ => None,
    }
}

/// A call of function `name` on `args`.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: Vec::<FunctionArgumentClause>::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// `CAST(expr AS data_type)`.
pub(crate) fn cast(expr: Expr, data_type: DataType) -> Expr {
    Expr::Cast {
        kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

fn string(text: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(text.to_string()))
}

fn number(text: &str) -> Expr {
    Expr::value(Value::Number(text.to_string(), false))
}

fn parse_type(text: &str) -> Option<DataType> {
    datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(text)
    .and_then(|mut p| p.parse_data_type())
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements = crate::session::parse_sql(sql).expect("test SQL parses");
        let mut statement = statements.remove(0).statement().clone();
        rewrite(&mut statement, &|name| name == "pg_user_table");
        statement.to_string()
    }

    #[test]
    fn integer_literals_are_int4_where_they_are_values() {
        assert_eq!(
            rewritten(
                "SELECT 1, x + 2, -3, 2147483648, 1.5, ARRAY[4] FROM generate_series(1, 5) AS g(x) \
                 WHERE x IN (SELECT 6 FROM t ORDER BY 1 LIMIT 7) GROUP BY 1 ORDER BY 2 DESC LIMIT 8 OFFSET 9"
            ),
            "SELECT CAST(1 AS INTEGER), x + CAST(2 AS INTEGER), -CAST(3 AS INTEGER), 2147483648, 1.5, \
             ARRAY[CAST(4 AS INTEGER)] FROM generate_series(1, 5) AS g (x) \
             WHERE x IN (SELECT CAST(6 AS INTEGER) FROM t ORDER BY 1 LIMIT 7) GROUP BY 1 ORDER BY 2 DESC LIMIT 8 OFFSET 9"
        );
        // Not in statements other than queries (SET takes the literal as it is).
        assert_eq!(
            rewritten("SET datafusion.execution.batch_size = 1024"),
            "SET datafusion.execution.batch_size = 1024"
        );
    }

    #[test]
    fn case_arms_for_domains_and_composites_are_dropped() {
        assert_eq!(
            rewritten(
                "SELECT CASE WHEN t.typtype = 'd' THEN (SELECT 1) ELSE NULL END, \
                 CASE WHEN typtype = 'c' THEN 'x' WHEN typtype = 'b' THEN 'y' END FROM pg_type t"
            ),
            "SELECT NULL, CASE WHEN typtype = 'b' THEN 'y' END FROM pg_catalog.pg_type t"
        );
    }

    #[test]
    fn operators_collations_and_qualified_functions() {
        assert_eq!(
            rewritten(
                "SELECT relname FROM pg_catalog.pg_class WHERE relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(oid)"
            ),
            "SELECT relname FROM pg_catalog.pg_class WHERE relname ~ '^(t)$' AND pg_table_is_visible(oid)"
        );
    }

    #[test]
    fn unqualified_catalogs_unless_shadowed() {
        assert_eq!(
            rewritten(
                "WITH pg_roles AS (SELECT 'r') SELECT * FROM pg_type, pg_roles, pg_user_table, t"
            ),
            "WITH pg_roles AS (SELECT 'r') SELECT * FROM pg_catalog.pg_type, pg_roles, pg_user_table, t"
        );
    }

    #[test]
    fn object_identifier_casts() {
        assert_eq!(
            rewritten(
                "SELECT c.oid = 'pg_class'::regclass, c.oid::pg_catalog.regclass::pg_catalog.text, '16384'::oid, relname::name, 'int4'::regtype"
            ),
            "SELECT c.oid = __cohortdb_to_reg('regclass', 'pg_class'), __cohortdb_reg_text('regclass', c.oid), CAST('16384' AS INT UNSIGNED), CAST(relname AS TEXT), __cohortdb_reg_text('regtype', 'int4')"
        );
    }

    #[test]
    fn session_functions_without_parentheses() {
        assert_eq!(
            rewritten("SELECT current_user, session_user, current_schema"),
            "SELECT current_user(), session_user(), current_schema()"
        );
    }

    #[test]
    fn array_subquery_and_correlated_subquery() {
        assert_eq!(
            rewritten(
                "SELECT ARRAY(SELECT b.rolname FROM pg_roles b WHERE b.oid = r.oid ORDER BY 1) FROM pg_roles r"
            ),
            "SELECT (SELECT coalesce(array_agg(b.rolname ORDER BY b.rolname ASC), make_array()) FROM pg_catalog.pg_roles b WHERE b.oid = r.oid) FROM pg_catalog.pg_roles r"
        );
        assert_eq!(
            rewritten(
                "SELECT (SELECT c.relname FROM pg_class c WHERE c.oid = a.attrelid AND a.attnum > 0 AND c.relnatts > a.attnum) FROM pg_attribute a"
            ),
            "SELECT CASE WHEN a.attnum > CAST(0 AS INTEGER) AND (SELECT first_value(c.relnatts) FROM pg_catalog.pg_class c WHERE c.oid = a.attrelid) > a.attnum THEN (SELECT first_value(c.relname) FROM pg_catalog.pg_class c WHERE c.oid = a.attrelid) END FROM pg_catalog.pg_attribute a"
        );
        // Uncorrelated or aggregated subqueries stay as they are.
        assert_eq!(
            rewritten(
                "SELECT (SELECT max(c.relname) FROM pg_class c WHERE c.oid = a.attrelid), (SELECT x FROM t) FROM pg_attribute a"
            ),
            "SELECT (SELECT max(c.relname) FROM pg_catalog.pg_class c WHERE c.oid = a.attrelid), (SELECT x FROM t) FROM pg_catalog.pg_attribute a"
        );
        // One over an always-empty catalog is NULL.
        assert_eq!(
            rewritten(
                "SELECT (SELECT d.adbin FROM pg_attrdef d WHERE d.adrelid = a.attrelid) FROM pg_attribute a"
            ),
            "SELECT NULL FROM pg_catalog.pg_attribute a"
        );
    }
}

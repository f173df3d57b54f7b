//! Statements with parameters (`$1`, `$2`, ...), as the wire protocol's extended
//! query uses them: [`Session::describe`] tells the parameter types and the
//! result columns without running anything, and [`Session::bind`] puts values in
//! place of the parameters, giving a statement that runs like any other.
//!
//! Values are bound as typed literals in the statement's syntax tree, so every
//! kind of statement (queries, INSERT, UPDATE, DELETE, COPY, CREATE TABLE AS)
//! takes parameters the same way.

use std::collections::HashMap;
use std::ops::ControlFlow;

use arrow::datatypes::{DataType, SchemaRef};
use cohortdb_engine::ColumnType;
use datafusion::sql::sqlparser::ast::{
    Expr, Statement, Value, ValueWithSpan, visit_expressions, visit_expressions_mut,
};

use crate::error::{Error, Result};
use crate::pg_catalog::types;
use crate::session::{ParsedStatement, Session, parse_expr};

/// What a statement takes and returns.
#[derive(Debug, Clone)]
pub struct Description {
    /// One entry per parameter `$1..$n`; `None` where the type is not implied.
    pub parameters: Vec<Option<DataType>>,
    /// The result columns of a statement that returns rows; `None` for one that
    /// does not (INSERT, CREATE TABLE, ...).
    pub columns: Option<SchemaRef>,
}

/// A parameter value, as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Null,
    /// The value in PostgreSQL's text form (`42`, `2026-01-31`, `true`).
    Text(String),
    /// Raw bytes, for BYTEA parameters.
    Bytes(Vec<u8>),
}

impl Session {
    /// The parameter types and result columns of a statement.
    pub async fn describe(&self, statement: &ParsedStatement) -> Result<Description> {
        // Statements cohortdb answers itself describe their own results.
        let own = match statement.statement() {
            Statement::ShowVariable { variable } => Some(self.show_schema(variable)?),
            Statement::Fetch { name, .. } => Some(self.cursor_schema(name)?),
            _ => None,
        };
        if let Some(schema) = own {
            return Ok(Description {
                parameters: Vec::new(),
                columns: Some(schema),
            });
        }
        let count = statement.parameter_count();
        let returns_rows = returns_rows(statement.statement());
        // Planning infers parameter types for every statement DataFusion plans;
        // the statements cohortdb runs itself may not plan, and then only the
        // count is known.
        let plan = self.plan(statement.statement().clone()).await;
        let plan = match plan {
            Ok(plan) => Some(plan),
            Err(e) if returns_rows => return Err(e),
            Err(_) => None,
        };
        let mut types: HashMap<String, Option<DataType>> = match &plan {
            Some(plan) => plan.get_parameter_types().unwrap_or_default(),
            None => HashMap::new(),
        };
        let casts = cast_parameter_types(statement);
        let parameters = (1..=count)
            .map(|i| {
                types
                    .remove(&format!("${i}"))
                    .flatten()
                    .or_else(|| casts.get(&i).cloned())
            })
            .collect();
        let columns = match plan {
            Some(plan) if returns_rows => Some(crate::names::client_schema(plan.schema().inner())),
            _ => None,
        };
        Ok(Description {
            parameters,
            columns,
        })
    }

    /// The statement with `values[i]` in place of `$(i+1)`, each cast to
    /// `types[i]` when that is known. A query keeps its placeholders, with
    /// the values beside them: it runs on its generic plan (generic.rs) when
    /// it has one, and has the values written in only when it has none.
    pub fn bind(
        &self,
        statement: &ParsedStatement,
        values: &[ParamValue],
        types: &[Option<DataType>],
    ) -> Result<ParsedStatement> {
        let count = statement.parameter_count();
        if values.len() != count {
            return Err(Error::protocol(format!(
                "bind message supplies {} parameters, but the statement requires {count}",
                values.len()
            )));
        }
        if count == 0 {
            return Ok(statement.clone());
        }
        let parameters = Parameters {
            values: values.to_vec(),
            declared: types.to_vec(),
        };
        Ok(match statement.statement() {
            Statement::Query(_) => statement.with_parameters(parameters),
            other => statement.bound(write_in(other, &parameters)),
        })
    }
}

/// The values bound to a prepared query's placeholders.
#[derive(Debug)]
pub(crate) struct Parameters {
    pub(crate) values: Vec<ParamValue>,
    /// The types the client gave them, or that were inferred when it did not.
    pub(crate) declared: Vec<Option<DataType>>,
}

/// `statement` with each `$n` replaced by the value bound to it, cast to its
/// declared type when that is known.
pub(crate) fn write_in(statement: &Statement, parameters: &Parameters) -> Statement {
    let mut bound = statement.clone();
    let _ = visit_expressions_mut(&mut bound, |expr| {
        if let Some(i) = placeholder(expr) {
            *expr = literal(
                &parameters.values[i - 1],
                parameters.declared.get(i - 1).cloned().flatten(),
            );
        }
        ControlFlow::<()>::Continue(())
    });
    bound
}

/// The 1-based index of a `$n` placeholder.
fn placeholder(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) => crate::generic::index_of(p).map(|i| i + 1),
        _ => None,
    }
}

/// The types parameters are cast to (`$1::int`), which is what PostgreSQL
/// infers for them when nothing else says.
fn cast_parameter_types(statement: &ParsedStatement) -> HashMap<usize, DataType> {
    let mut types = HashMap::new();
    let _ = visit_expressions(statement.statement(), |expr| {
        if let Expr::Cast {
            expr, data_type, ..
        } = expr
            && let Some(i) = placeholder(expr)
        {
            let arrow = match crate::ddl::column_type(data_type) {
                Ok(column_type) => Some(column_type.to_arrow()),
                // `$1::oid`, `$1::oid[]`, `$1::int4[]`: PostgreSQL's own types.
                Err(_) => types::parameter_type(&data_type.to_string()),
            };
            if let Some(arrow) = arrow {
                types.entry(i).or_insert(arrow);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    types
}

/// The highest `$n` in the statement.
pub(crate) fn parameter_count(statement: &Statement) -> usize {
    let mut count = 0;
    let _ = visit_expressions(statement, |expr| {
        count = count.max(placeholder(expr).unwrap_or(0));
        ControlFlow::<()>::Continue(())
    });
    count
}

fn returns_rows(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowVariable { .. }
    )
}

/// The elements of a one-dimensional array in PostgreSQL's text form
/// (`{1,NULL,"a b"}`), `None` for an element that is NULL; `None` when `text`
/// is not such an array.
fn array_items(text: &str) -> Option<Vec<Option<String>>> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if body.trim().is_empty() {
        return Some(items);
    }
    let mut chars = body.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let item = if chars.next_if_eq(&'"').is_some() {
            let mut item = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            Some(item)
        } else {
            let mut item = String::new();
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if matches!(c, '{' | '}' | '"') {
                    return None;
                }
                item.push(c);
            }
            let item = item.trim().to_string();
            (!item.eq_ignore_ascii_case("NULL")).then_some(item)
        };
        items.push(item);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// A value as an SQL literal, cast to its type when that is one of ours.
fn literal(value: &ParamValue, data_type: Option<DataType>) -> Expr {
    let quoted = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let inner = match value {
        ParamValue::Null => "NULL".to_string(),
        ParamValue::Text(text) => quoted(text),
        ParamValue::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            return parse_expr(&format!("decode('{hex}', 'hex')"));
        }
    };
    if let (Some(DataType::List(element)), ParamValue::Text(text)) = (&data_type, value)
        && let Some(items) = array_items(text)
        && let Ok(element) = ColumnType::from_arrow(element.data_type())
    {
        let items: Vec<String> = items
            .iter()
            .map(|item| item.as_deref().map_or_else(|| "NULL".to_string(), quoted))
            .collect();
        return parse_expr(&format!("CAST(ARRAY[{}] AS {element}[])", items.join(", ")));
    }
    let sql_type = data_type
        .as_ref()
        .and_then(|t| ColumnType::from_arrow(t).ok());
    parse_expr(&match sql_type {
        Some(t) => format!("CAST({inner} AS {t})"),
        None => inner,
    })
}

#[cfg(test)]
mod tests {
    use super::array_items;

    #[test]
    fn array_text_is_read_as_postgresql_writes_it() {
        let some = |v: &str| Some(v.to_string());
        assert_eq!(array_items("{}"), Some(vec![]));
        assert_eq!(
            array_items("{1, NULL,3}"),
            Some(vec![some("1"), None, some("3")])
        );
        assert_eq!(
            array_items(r#"{"a b","x\"y","NULL",null}"#),
            Some(vec![some("a b"), some("x\"y"), some("NULL"), None])
        );
        assert_eq!(array_items("{{1,2},{3,4}}"), None);
        assert_eq!(array_items("1,2"), None);
        assert_eq!(array_items(r#"{"open}"#), None);
    }
}

//! The catalog functions PostgreSQL clients call when they describe a database
//! (`format_type`, `pg_get_userbyid`, `pg_table_is_visible`, `current_schema`,
//! ...), answered from the same snapshot as the `pg_catalog` relations, and the
//! two functions behind casts to `regclass`, `regtype` and the other
//! object-identifier types (see `pg_catalog::rewrite`).
//!
//! Objects cohortdb does not have (indexes, constraints, comments, column
//! defaults, publications) have no definitions: the functions describing them
//! return NULL, as PostgreSQL does for an OID it does not know.

use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringArray, UInt32Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use crate::error::Error;
use crate::pg_catalog::rewrite::{LIKE_ESCAPE, REG_TEXT, TO_REG};
use crate::pg_catalog::{
    INFORMATION_SCHEMA_OID, PG_CATALOG, PG_CATALOG_OID, PUBLIC_OID, PgCatalogSchema, Snapshot,
    owner_name, types,
};
use crate::session::{CATALOG_NAME, SCHEMA_NAME};
use crate::state::State;

mod privilege;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    UserById,
    /// `pg_get_viewdef(oid [, pretty])`: a view's query.
    ViewDef,
    IsVisible,
    FormatType,
    GetExpr,
    Undefined,
    NotPublishable,
    EncodingToChar,
    FunctionResult,
    FunctionArguments,
    HasPrivilege(privilege::Inquiry),
    CurrentSchema,
    CurrentSchemas,
    CurrentDatabase,
    CurrentUser,
    ArrayUpper,
    ArrayLower,
    ToReg,
    ToRegOrNull,
    RegText,
    JsonBuildObject,
    LikeEscape,
    SizePretty,
    RelationSize,
    DatabaseSize,
}

/// Every function of the family, by SQL name.
const FUNCTIONS: &[(&str, Kind)] = &[
    ("pg_get_userbyid", Kind::UserById),
    ("pg_table_is_visible", Kind::IsVisible),
    ("pg_type_is_visible", Kind::IsVisible),
    ("pg_function_is_visible", Kind::IsVisible),
    ("pg_collation_is_visible", Kind::IsVisible),
    ("pg_operator_is_visible", Kind::IsVisible),
    ("format_type", Kind::FormatType),
    ("pg_get_expr", Kind::GetExpr),
    ("pg_get_indexdef", Kind::Undefined),
    ("pg_get_constraintdef", Kind::Undefined),
    ("pg_get_statisticsobjdef_columns", Kind::Undefined),
    ("pg_get_serial_sequence", Kind::Undefined),
    ("pg_get_viewdef", Kind::ViewDef),
    ("pg_tablespace_location", Kind::Undefined),
    ("obj_description", Kind::Undefined),
    ("col_description", Kind::Undefined),
    ("shobj_description", Kind::Undefined),
    ("pg_relation_is_publishable", Kind::NotPublishable),
    ("pg_encoding_to_char", Kind::EncodingToChar),
    ("pg_get_function_result", Kind::FunctionResult),
    ("pg_get_function_arguments", Kind::FunctionArguments),
    (
        "pg_get_function_identity_arguments",
        Kind::FunctionArguments,
    ),
    (
        "has_table_privilege",
        Kind::HasPrivilege(privilege::Inquiry::Table),
    ),
    (
        "has_schema_privilege",
        Kind::HasPrivilege(privilege::Inquiry::Schema),
    ),
    (
        "has_database_privilege",
        Kind::HasPrivilege(privilege::Inquiry::Database),
    ),
    (
        "has_column_privilege",
        Kind::HasPrivilege(privilege::Inquiry::Column),
    ),
    ("pg_has_role", Kind::HasPrivilege(privilege::Inquiry::Role)),
    ("pg_size_pretty", Kind::SizePretty),
    ("pg_table_size", Kind::RelationSize),
    ("pg_relation_size", Kind::RelationSize),
    ("pg_total_relation_size", Kind::RelationSize),
    ("pg_indexes_size", Kind::RelationSize),
    ("pg_database_size", Kind::DatabaseSize),
    ("current_schema", Kind::CurrentSchema),
    ("current_schemas", Kind::CurrentSchemas),
    ("current_database", Kind::CurrentDatabase),
    ("current_catalog", Kind::CurrentDatabase),
    ("current_user", Kind::CurrentUser),
    ("session_user", Kind::CurrentUser),
    ("current_role", Kind::CurrentUser),
    ("array_upper", Kind::ArrayUpper),
    ("array_lower", Kind::ArrayLower),
    (TO_REG, Kind::ToReg),
    ("to_regclass", Kind::ToRegOrNull),
    ("to_regtype", Kind::ToRegOrNull),
    ("to_regnamespace", Kind::ToRegOrNull),
    ("to_regrole", Kind::ToRegOrNull),
    (REG_TEXT, Kind::RegText),
    ("json_build_object", Kind::JsonBuildObject),
    (LIKE_ESCAPE, Kind::LikeEscape),
];

/// Every catalog function, over the session's `pg_catalog` and state.
pub(crate) fn all(schema: &Arc<PgCatalogSchema>, state: &Arc<Mutex<State>>) -> Vec<ScalarUDF> {
    FUNCTIONS
        .iter()
        .map(|(name, kind)| {
            ScalarUDF::from(CatalogFunc {
                name,
                kind: *kind,
                signature: Signature::one_of(
                    vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
                    Volatility::Stable,
                ),
                schema: Arc::clone(schema),
                state: Arc::clone(state),
            })
        })
        .collect()
}

/// The names of the family, so the catalog can list them.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !name.starts_with("__"))
}

struct CatalogFunc {
    name: &'static str,
    kind: Kind,
    signature: Signature,
    schema: Arc<PgCatalogSchema>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for CatalogFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for CatalogFunc {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CatalogFunc {}

impl std::hash::Hash for CatalogFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// How many arguments each kind takes, at least and at most.
fn arity(kind: Kind) -> (usize, usize) {
    match kind {
        Kind::CurrentSchema | Kind::CurrentDatabase | Kind::CurrentUser => (0, 0),
        Kind::UserById
        | Kind::IsVisible
        | Kind::NotPublishable
        | Kind::EncodingToChar
        | Kind::FunctionResult
        | Kind::FunctionArguments
        | Kind::CurrentSchemas
        | Kind::ToRegOrNull => (1, 1),
        Kind::FormatType | Kind::ArrayUpper | Kind::ArrayLower | Kind::ToReg | Kind::RegText => {
            (2, 2)
        }
        Kind::GetExpr | Kind::LikeEscape => (2, 3),
        Kind::ViewDef => (1, 2),
        Kind::Undefined => (1, 3),
        Kind::HasPrivilege(privilege::Inquiry::Column) => (3, 4),
        Kind::HasPrivilege(_) => (2, 3),
        Kind::SizePretty | Kind::DatabaseSize => (1, 1),
        Kind::RelationSize => (1, 2),
        Kind::JsonBuildObject => (0, 100),
    }
}

impl ScalarUDFImpl for CatalogFunc {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let (least, most) = arity(self.kind);
        if arg_types.len() < least || arg_types.len() > most {
            return plan_err!(
                "function {}() takes {least} to {most} arguments, not {}",
                self.name,
                arg_types.len()
            );
        }
        Ok(match self.kind {
            Kind::IsVisible | Kind::NotPublishable | Kind::HasPrivilege(_) => DataType::Boolean,
            // bigint, not PostgreSQL's integer: generate_series takes bigint bounds.
            Kind::ArrayUpper | Kind::ArrayLower => DataType::Int64,
            Kind::RelationSize | Kind::DatabaseSize => DataType::Int64,
            Kind::ToReg | Kind::ToRegOrNull => DataType::UInt32,
            Kind::CurrentSchemas => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let result: ArrayRef = match self.kind {
            Kind::CurrentSchema => Arc::new(StringArray::from(vec![SCHEMA_NAME; rows])),
            Kind::CurrentDatabase => Arc::new(StringArray::from(vec![CATALOG_NAME; rows])),
            Kind::CurrentUser => {
                let user = self
                    .state
                    .lock()
                    .expect("session state lock")
                    .settings
                    .get("session_authorization")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Arc::new(StringArray::from(vec![user; rows]))
            }
            Kind::CurrentSchemas => current_schemas(&arrays[0])?,
            Kind::IsVisible => Arc::new(BooleanArray::from(vec![true; rows])),
            Kind::HasPrivilege(inquiry) => privilege::answer(
                inquiry,
                &arrays,
                &self.schema.snapshot(),
                self.schema.catalog(),
            )?,
            Kind::NotPublishable => Arc::new(BooleanArray::from(vec![false; rows])),
            Kind::Undefined => arrow::array::new_null_array(&DataType::Utf8, rows),
            Kind::GetExpr => cast(&arrays[0], &DataType::Utf8)?,
            Kind::EncodingToChar => {
                let codes = cast(&arrays[0], &DataType::Int32)?;
                let codes = codes.as_primitive::<arrow::datatypes::Int32Type>();
                Arc::new(
                    codes
                        .iter()
                        .map(|c| {
                            c.map(|c| match c {
                                0 => "SQL_ASCII",
                                6 => "UTF8",
                                _ => "",
                            })
                        })
                        .collect::<StringArray>(),
                )
            }
            Kind::ArrayUpper | Kind::ArrayLower => self.array_bound(&arrays)?,
            Kind::JsonBuildObject => json_build_object(&arrays, rows)?,
            Kind::LikeEscape => like_escape(&arrays)?,
            Kind::SizePretty => {
                let sizes = cast(&arrays[0], &DataType::Int64)?;
                Arc::new(
                    sizes
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .iter()
                        .map(|v| v.map(size_pretty))
                        .collect::<StringArray>(),
                )
            }
            Kind::DatabaseSize => {
                let total: u64 = self.schema.snapshot().tables.iter().map(|t| t.bytes).sum();
                Arc::new(Int64Array::from(vec![total as i64; rows]))
            }
            Kind::RelationSize => {
                let snapshot = self.schema.snapshot();
                let oids = cast(&arrays[0], &DataType::UInt32)?;
                Arc::new(
                    oids.as_primitive::<arrow::datatypes::UInt32Type>()
                        .iter()
                        .map(|oid| {
                            let relation = snapshot.tables.iter().find(|t| Some(t.oid) == oid)?;
                            // A table is its main fork: no indexes, no TOAST.
                            Some(if self.name == "pg_indexes_size" {
                                0
                            } else {
                                relation.bytes as i64
                            })
                        })
                        .collect::<Int64Array>(),
                )
            }
            _ => self.by_snapshot(&arrays, &self.schema.snapshot())?,
        };
        Ok(ColumnarValue::Array(result))
    }
}

impl CatalogFunc {
    /// The functions that look objects up.
    fn by_snapshot(&self, arrays: &[ArrayRef], snapshot: &Snapshot) -> Result<ArrayRef> {
        match self.kind {
            Kind::ToReg | Kind::ToRegOrNull => {
                let (kind, values) = match self.kind {
                    Kind::ToReg => (Some(&arrays[0]), &arrays[1]),
                    _ => (None, &arrays[0]),
                };
                let kinds = kind.map(|k| cast(k, &DataType::Utf8)).transpose()?;
                let default_kind = self.name.trim_start_matches("to_");
                let mut out = Vec::with_capacity(values.len());
                let text = cast(values, &DataType::Utf8)?;
                let text = text.as_string::<i32>();
                for row in 0..values.len() {
                    let kind = kinds
                        .as_ref()
                        .map_or(default_kind, |k| k.as_string::<i32>().value(row));
                    out.push(if text.is_null(row) {
                        None
                    } else {
                        let found = to_oid(snapshot, kind, text.value(row));
                        match (found, self.kind) {
                            (Some(oid), _) => Some(oid),
                            (None, Kind::ToRegOrNull) => None,
                            (None, _) => return Err(not_found(kind, text.value(row))),
                        }
                    });
                }
                Ok(Arc::new(UInt32Array::from(out)))
            }
            _ => {
                let oids = match self.kind {
                    // A name or a number, as a cast to the type takes it.
                    Kind::RegText => {
                        let kind = cast(&arrays[0], &DataType::Utf8)?;
                        let text = cast(&arrays[1], &DataType::Utf8)?;
                        let (kind, text) = (kind.as_string::<i32>(), text.as_string::<i32>());
                        let mut oids = Vec::with_capacity(text.len());
                        for row in 0..text.len() {
                            oids.push(if text.is_null(row) {
                                None
                            } else {
                                let (kind, value) = (kind.value(row), text.value(row));
                                Some(
                                    to_oid(snapshot, kind, value)
                                        .ok_or_else(|| not_found(kind, value))?,
                                )
                            });
                        }
                        Arc::new(UInt32Array::from(oids)) as ArrayRef
                    }
                    _ => cast(&arrays[0], &DataType::UInt32)?,
                };
                let oids = oids.as_primitive::<arrow::datatypes::UInt32Type>();
                let typmods = match self.kind {
                    Kind::FormatType => Some(cast(&arrays[1], &DataType::Int32)?),
                    _ => None,
                };
                let kinds = match self.kind {
                    Kind::RegText => Some(cast(&arrays[0], &DataType::Utf8)?),
                    _ => None,
                };
                let names: StringArray = (0..oids.len())
                    .map(|row| {
                        if oids.is_null(row) {
                            return None;
                        }
                        let oid = oids.value(row);
                        match self.kind {
                            Kind::UserById => Some(user_name(snapshot, oid)),
                            Kind::ViewDef => snapshot
                                .tables
                                .iter()
                                .find(|t| t.oid == oid)
                                .and_then(|t| t.definition.clone()),
                            Kind::FormatType => {
                                let typmod = typmods
                                    .as_ref()
                                    .map(|t| t.as_primitive::<arrow::datatypes::Int32Type>())
                                    .and_then(|t| (!t.is_null(row)).then(|| t.value(row)))
                                    .unwrap_or(-1);
                                Some(
                                    types::format_type(oid, typmod)
                                        .unwrap_or_else(|| "???".to_string()),
                                )
                            }
                            Kind::FunctionResult | Kind::FunctionArguments => snapshot
                                .functions
                                .iter()
                                .find(|f| f.oid == oid)
                                .map(|f| match self.kind {
                                    Kind::FunctionResult => f.result.clone(),
                                    _ => f.arguments.clone(),
                                }),
                            Kind::RegText => {
                                let kind = kinds
                                    .as_ref()
                                    .map(|k| k.as_string::<i32>().value(row).to_string())
                                    .unwrap_or_default();
                                Some(
                                    oid_name(snapshot, &kind, oid)
                                        .unwrap_or_else(|| oid.to_string()),
                                )
                            }
                            _ => None,
                        }
                    })
                    .collect();
                Ok(Arc::new(names))
            }
        }
    }

    fn array_bound(&self, arrays: &[ArrayRef]) -> Result<ArrayRef> {
        let dimension = cast(&arrays[1], &DataType::Int32)?;
        let dimension = dimension.as_primitive::<arrow::datatypes::Int32Type>();
        let lists: ListArray = match arrays[0].data_type() {
            DataType::List(_) => arrays[0].as_list::<i32>().clone(),
            DataType::Null => {
                return Ok(arrow::array::new_null_array(
                    &DataType::Int64,
                    arrays[0].len(),
                ));
            }
            other => return exec_err!("{}() needs an array, not {other}", self.name),
        };
        let bounds: Int64Array = (0..lists.len())
            .map(|row| {
                if lists.is_null(row) || dimension.is_null(row) || dimension.value(row) != 1 {
                    return None;
                }
                let length = lists.value_length(row);
                match (self.kind, length) {
                    (_, 0) => None,
                    (Kind::ArrayUpper, n) => Some(i64::from(n)),
                    _ => Some(1),
                }
            })
            .collect();
        Ok(Arc::new(bounds))
    }
}

/// The error for a name a cast to an object-identifier type does not find.
fn not_found(kind: &str, name: &str) -> DataFusionError {
    let error = match kind {
        "regclass" => Error::engine_at(
            cohortdb_engine::Error::TableNotFound(name.to_string()),
            None,
        ),
        "regtype" => Error::UndefinedObject {
            message: format!("type \"{name}\" does not exist"),
        },
        "regnamespace" => Error::UndefinedObject {
            message: format!("schema \"{name}\" does not exist"),
        },
        "regrole" => Error::UndefinedObject {
            message: format!("role \"{name}\" does not exist"),
        },
        _ => Error::UndefinedObject {
            message: format!("function \"{name}\" does not exist"),
        },
    };
    DataFusionError::External(Box::new(error))
}

/// The OID a name (or a number) stands for as an object of `kind`.
fn to_oid(snapshot: &Snapshot, kind: &str, value: &str) -> Option<u32> {
    if let Ok(oid) = value.trim().parse::<u32>() {
        return Some(oid);
    }
    let name = unqualified(value.trim());
    match kind {
        "regclass" => snapshot
            .tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.oid),
        "regtype" => types::by_name(&name).map(|t| t.oid),
        "regnamespace" => namespace_oid(&name),
        "regrole" => snapshot
            .roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.oid),
        _ => snapshot
            .functions
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.oid),
    }
}

/// A possibly qualified, possibly quoted name as the catalog spells it.
fn unqualified(name: &str) -> String {
    let last = name.rsplit('.').next().unwrap_or(name);
    match last.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => last.to_lowercase(),
    }
}

fn namespace_oid(name: &str) -> Option<u32> {
    match name {
        PG_CATALOG => Some(PG_CATALOG_OID),
        SCHEMA_NAME => Some(PUBLIC_OID),
        "information_schema" => Some(INFORMATION_SCHEMA_OID),
        _ => None,
    }
}

/// The name of the object of `kind` with `oid`.
fn oid_name(snapshot: &Snapshot, kind: &str, oid: u32) -> Option<String> {
    match kind {
        "regclass" => snapshot
            .tables
            .iter()
            .find(|t| t.oid == oid)
            .map(|t| t.name.clone()),
        "regtype" => types::format_type(oid, -1),
        "regnamespace" => [
            (PG_CATALOG_OID, PG_CATALOG),
            (PUBLIC_OID, SCHEMA_NAME),
            (INFORMATION_SCHEMA_OID, "information_schema"),
        ]
        .into_iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| n.to_string()),
        "regrole" => snapshot
            .roles
            .iter()
            .find(|r| r.oid == oid)
            .map(|r| r.name.clone()),
        _ => snapshot
            .functions
            .iter()
            .find(|f| f.oid == oid)
            .map(|f| f.name.clone()),
    }
}

/// `pg_get_userbyid`: the role's name, or PostgreSQL's text for an unknown OID.
/// PostgreSQL's `pg_size_pretty`: bytes below 10 kB, then kB, MB, GB, TB and
/// PB, each up to 20 × 1024 − 1 of its unit, rounded half away from zero.
fn size_pretty(size: i64) -> String {
    // (name, limit, rounds, unit bits)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (i, (name, limit, rounds, bits)) in UNITS.iter().enumerate() {
        let Some(next) = UNITS.get(i + 1) else {
            let size = if *rounds { half_rounded(size) } else { size };
            return format!("{size} {name}");
        };
        if size.unsigned_abs() < *limit as u64 {
            let size = if *rounds { half_rounded(size) } else { size };
            return format!("{size} {name}");
        }
        let shift = next.3 - bits - u32::from(next.2) + u32::from(*rounds);
        size /= 1i64 << shift;
    }
    unreachable!("the last unit returns")
}

fn user_name(snapshot: &Snapshot, oid: u32) -> String {
    if oid == crate::pg_catalog::OWNER_OID {
        return owner_name(&snapshot.roles);
    }
    snapshot
        .roles
        .iter()
        .find(|r| r.oid == oid)
        .map_or_else(|| format!("unknown (OID={oid})"), |r| r.name.clone())
}

/// `current_schemas(include_implicit)`: the search path, with `pg_catalog`
/// first when asked for.
fn current_schemas(include_implicit: &ArrayRef) -> Result<ArrayRef> {
    let flags = cast(include_implicit, &DataType::Boolean)?;
    let flags = flags.as_boolean();
    let mut builder = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
    for row in 0..flags.len() {
        if flags.is_null(row) {
            builder.append_null();
            continue;
        }
        if flags.value(row) {
            builder.values().append_value(PG_CATALOG);
        }
        builder.values().append_value(SCHEMA_NAME);
        builder.append(true);
    }
    Ok(Arc::new(builder.finish()))
}

/// `json_build_object(key, value, ...)` as JSON text; values are written as JSON
/// numbers, booleans, strings or null.
fn json_build_object(arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    if !arrays.len().is_multiple_of(2) {
        return exec_err!("argument list must have even number of elements");
    }
    let options = arrow::util::display::FormatOptions::new();
    let formatters = arrays
        .iter()
        .map(|a| arrow::util::display::ArrayFormatter::try_new(a.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let out: StringArray = (0..rows)
        .map(|row| {
            let pairs: Vec<String> = arrays
                .chunks(2)
                .zip(formatters.chunks(2))
                .map(|(pair, format)| {
                    let key = json_string(&format[0].value(row).to_string());
                    let value = if pair[1].is_null(row) {
                        "null".to_string()
                    } else if pair[1].data_type().is_numeric()
                        || pair[1].data_type() == &DataType::Boolean
                    {
                        format[1].value(row).to_string()
                    } else {
                        json_string(&format[1].value(row).to_string())
                    };
                    format!("{key} : {value}")
                })
                .collect();
            Some(format!("{{{}}}", pairs.join(", ")))
        })
        .collect();
    Ok(Arc::new(out))
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    cohortdb_engine::json::push_string(&mut out, text);
    out
}

/// LIKE patterns written with escape character `escape` (the second argument),
/// rewritten to escape with backslash: `pg/_%` with `/` becomes `pg\_%`.
fn like_escape(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let patterns = cast(&arrays[0], &DataType::Utf8)?;
    let escapes = cast(&arrays[1], &DataType::Utf8)?;
    let (patterns, escapes) = (patterns.as_string::<i32>(), escapes.as_string::<i32>());
    let mut out = arrow::array::StringBuilder::new();
    for row in 0..patterns.len() {
        if patterns.is_null(row) || escapes.is_null(row) {
            out.append_null();
            continue;
        }
        let mut escape = escapes.value(row).chars();
        let (Some(escape), None) = (escape.next(), escape.next()) else {
            return exec_err!("invalid escape string: it must be one character");
        };
        let mut pattern = String::new();
        let mut chars = patterns.value(row).chars();
        while let Some(c) = chars.next() {
            match c {
                c if c == escape => {
                    pattern.push('\\');
                    if let Some(next) = chars.next() {
                        pattern.push(next);
                    }
                }
                '\\' => pattern.push_str("\\\\"),
                c => pattern.push(c),
            }
        }
        out.append_value(pattern);
    }
    Ok(Arc::new(out.finish()))
}

//! Column types the engine stores, their Arrow representation and their canonical
//! names. The canonical name is what the manifest records and what `DESCRIBE` and
//! error messages show, so it is part of the on-disk format.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};
use crate::limits;

/// The timezone stored with `TIMESTAMPTZ` values: instants are kept in UTC.
pub const UTC: &str = "UTC";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    Decimal { precision: u8, scale: i8 },
    Text,
    Date,
    Timestamp,
    TimestampTz,
    Bytea,
}

impl ColumnType {
    pub fn to_arrow(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::SmallInt => DataType::Int16,
            ColumnType::Int => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Real => DataType::Float32,
            ColumnType::Double => DataType::Float64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            ColumnType::Text => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC)))
            }
            ColumnType::Bytea => DataType::Binary,
        }
    }

    /// The column type that stores values of an Arrow type, if there is one.
    pub fn from_arrow(data_type: &DataType) -> Result<ColumnType> {
        Ok(match data_type {
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::SmallInt,
            DataType::Int32 | DataType::UInt16 => ColumnType::Int,
            DataType::Int64 | DataType::UInt32 => ColumnType::BigInt,
            DataType::Float16 | DataType::Float32 => ColumnType::Real,
            DataType::Float64 => ColumnType::Double,
            DataType::Decimal128(precision, scale) => ColumnType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
            DataType::Date32 | DataType::Date64 => ColumnType::Date,
            DataType::Timestamp(_, None) => ColumnType::Timestamp,
            DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ColumnType::Bytea,
            DataType::Null => ColumnType::Text,
            other => return Err(Error::UnsupportedType(other.to_string())),
        })
    }

    /// Parses a canonical name as written by `Display`.
    pub fn parse(name: &str) -> Option<ColumnType> {
        Some(match name {
            "BOOLEAN" => ColumnType::Boolean,
            "SMALLINT" => ColumnType::SmallInt,
            "INTEGER" => ColumnType::Int,
            "BIGINT" => ColumnType::BigInt,
            "REAL" => ColumnType::Real,
            "DOUBLE PRECISION" => ColumnType::Double,
            "TEXT" => ColumnType::Text,
            "DATE" => ColumnType::Date,
            "TIMESTAMP" => ColumnType::Timestamp,
            "TIMESTAMPTZ" => ColumnType::TimestampTz,
            "BYTEA" => ColumnType::Bytea,
            other => {
                let args = other.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
                let (precision, scale) = args.split_once(',')?;
                ColumnType::decimal(precision.trim().parse().ok()?, scale.trim().parse().ok()?)
                    .ok()?
            }
        })
    }

    /// A DECIMAL type, checked against Arrow's 128-bit decimal range.
    pub fn decimal(precision: u8, scale: i8) -> Result<ColumnType> {
        if precision == 0 || precision > 38 || scale < 0 || scale as u8 > precision {
            return Err(Error::UnsupportedType(format!(
                "DECIMAL({precision},{scale}): precision must be 1..=38 and scale 0..=precision"
            )));
        }
        Ok(ColumnType::Decimal { precision, scale })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => f.write_str("BOOLEAN"),
            ColumnType::SmallInt => f.write_str("SMALLINT"),
            ColumnType::Int => f.write_str("INTEGER"),
            ColumnType::BigInt => f.write_str("BIGINT"),
            ColumnType::Real => f.write_str("REAL"),
            ColumnType::Double => f.write_str("DOUBLE PRECISION"),
            ColumnType::Decimal { precision, scale } => write!(f, "DECIMAL({precision},{scale})"),
            ColumnType::Text => f.write_str("TEXT"),
            ColumnType::Date => f.write_str("DATE"),
            ColumnType::Timestamp => f.write_str("TIMESTAMP"),
            ColumnType::TimestampTz => f.write_str("TIMESTAMPTZ"),
            ColumnType::Bytea => f.write_str("BYTEA"),
        }
    }
}

/// One column of a table: name, type and whether NULL is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// Whether the column holds the table's user ids (`USER KEY`: at most one
    /// column, NOT NULL, SMALLINT/INTEGER/BIGINT or TEXT).
    pub user_key: bool,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, column_type: ColumnType, nullable: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            column_type,
            nullable,
            user_key: false,
        }
    }

    /// The same column declared as the user key.
    pub fn user_key(self) -> ColumnDef {
        ColumnDef {
            user_key: true,
            nullable: false,
            ..self
        }
    }
}

/// Checks a table or column name: non-empty, within the length limit, and not in
/// the namespace the engine reserves for itself.
pub fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "names must not be empty"
    } else if name.len() > limits::NAME_BYTES_MAX {
        "names are at most 63 bytes long"
    } else if name.starts_with(RESERVED_PREFIX) {
        "names starting with \"__cohortdb\" are reserved"
    } else if name.contains('\0') {
        "names must not contain NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// Names starting with this prefix belong to the engine (hidden columns, internal
/// relations) and are refused for user tables and columns.
pub const RESERVED_PREFIX: &str = "__cohortdb";

/// Builds the Arrow schema of a table from its column definitions, after checking
/// names, duplicates and the column-count limit.
pub fn table_schema(columns: &[ColumnDef]) -> Result<SchemaRef> {
    if columns.len() > limits::COLUMNS_PER_TABLE_MAX {
        return Err(Error::LimitExceeded {
            what: "number of columns",
            limit: limits::COLUMNS_PER_TABLE_MAX as u64,
        });
    }
    if columns.iter().filter(|c| c.user_key).count() > 1 {
        return Err(Error::UserKey(
            "a table has at most one USER KEY column".to_string(),
        ));
    }
    let mut fields = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        if column.user_key && crate::users::UserKeyType::of(column.column_type).is_none() {
            return Err(Error::UserKey(format!(
                "a user key is SMALLINT, INTEGER, BIGINT or TEXT, not {}",
                column.column_type
            )));
        }
        check_name(&column.name)?;
        if columns[..i].iter().any(|c| c.name == column.name) {
            return Err(Error::DuplicateColumn {
                column: column.name.clone(),
            });
        }
        fields.push(Field::new(
            &column.name,
            column.column_type.to_arrow(),
            column.nullable,
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The column definitions of a table schema (the inverse of [`table_schema`]).
pub fn columns_of(schema: &Schema) -> Result<Vec<ColumnDef>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(ColumnDef::new(
                f.name(),
                ColumnType::from_arrow(f.data_type())?,
                f.is_nullable(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        let all = [
            ColumnType::Boolean,
            ColumnType::SmallInt,
            ColumnType::Int,
            ColumnType::BigInt,
            ColumnType::Real,
            ColumnType::Double,
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
            ColumnType::Text,
            ColumnType::Date,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Bytea,
        ];
        for t in all {
            assert_eq!(ColumnType::parse(&t.to_string()), Some(t));
            assert_eq!(ColumnType::from_arrow(&t.to_arrow()).ok(), Some(t));
        }
        assert_eq!(ColumnType::parse("DECIMAL(39,2)"), None);
        assert_eq!(ColumnType::parse("NUMBER"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("users").is_ok());
        let err = check_name("__cohortdb_x")
            .expect_err("reserved")
            .to_string();
        assert_eq!(
            err,
            "invalid name \"__cohortdb_x\": names starting with \"__cohortdb\" are reserved"
        );
        assert!(check_name(&"x".repeat(64)).is_err());
        let dup = table_schema(&[
            ColumnDef::new("a", ColumnType::Int, true),
            ColumnDef::new("a", ColumnType::Text, true),
        ]);
        assert_eq!(
            dup.expect_err("duplicate").to_string(),
            "column \"a\" specified more than once"
        );
    }
}

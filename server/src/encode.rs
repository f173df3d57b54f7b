//! Arrow values on the wire: rows encoded in text or binary format, with the
//! PostgreSQL type of each Arrow type from the sql crate's one mapping
//! (`cohortdb_sql::type_oid`), which the catalog uses too.
//!
//! | Arrow | PostgreSQL |
//! |---|---|
//! | Boolean | bool |
//! | Int8, Int16, UInt8 | int2 |
//! | Int32, UInt16 | int4 |
//! | Int64, UInt64 | int8 (UInt64 above 2⁶³ − 1 is an error) |
//! | UInt32 | oid (the catalog's object identifiers) |
//! | Float32 / Float64 | float4 / float8 |
//! | Decimal128 | numeric |
//! | Utf8, LargeUtf8, Utf8View | text |
//! | Binary, LargeBinary, BinaryView | bytea |
//! | Date32 | date |
//! | Timestamp without / with time zone | timestamp / timestamptz |
//! | List of the above scalars | the array type (`int8[]`, `oid[]`, `text[]`, ...) |
//! | anything else (structs, maps, ...) | text, in PostgreSQL's record syntax for structs |

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions as TextOptions;
use postgres_types::Kind;
use postgres_types::{IsNull, ToSql};
use rust_decimal::Decimal;

/// The PostgreSQL type a column of `data_type` is sent as: the sql crate's one
/// mapping (`cohortdb_sql::type_oid`), which the catalog describes columns with.
pub(crate) fn pg_type(data_type: &DataType) -> Type {
    Type::from_oid(cohortdb_sql::type_oid(data_type)).unwrap_or(Type::TEXT)
}

/// The Arrow type a parameter of PostgreSQL type `pg` is bound as, for the types
/// cohortdb has; `None` leaves the parameter's type to the statement.
pub(crate) fn arrow_type(pg: &Type) -> Option<DataType> {
    Some(match *pg {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Type::OID => DataType::UInt32,
        _ => match pg.kind() {
            Kind::Array(element) => {
                DataType::List(Arc::new(Field::new_list_field(arrow_type(element)?, true)))
            }
            _ => return None,
        },
    })
}

/// Row descriptions for a result, with the client's requested formats.
pub(crate) fn fields(schema: &arrow::datatypes::Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                Type::from_oid(cohortdb_sql::field_type_oid(f)).unwrap_or(Type::TEXT),
                format.format_for(i),
            )
        })
        .collect()
}

/// Every row of a batch as a DataRow.
pub(crate) fn rows(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(array, field)| Column::new(array, field))
        .collect::<PgWireResult<_>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            column.encode(&mut encoder, row)?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// Every row of a batch as its cells in PostgreSQL's text form (`None` for
/// NULL), exactly as a text-format DataRow carries them; `fields` must ask for
/// text.
pub(crate) fn text_cells(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<Vec<Option<String>>>> {
    rows(batch, fields)?
        .iter()
        .map(|row| {
            let mut data: &[u8] = &row.data;
            let mut cells = Vec::with_capacity(fields.len());
            for _ in 0..row.field_count {
                let (length, rest) = data.split_at_checked(4).ok_or_else(malformed_row)?;
                let length = i32::from_be_bytes(length.try_into().map_err(|_| malformed_row())?);
                data = rest;
                if length < 0 {
                    cells.push(None);
                    continue;
                }
                let (value, rest) = data
                    .split_at_checked(length as usize)
                    .ok_or_else(malformed_row)?;
                cells.push(Some(String::from_utf8_lossy(value).into_owned()));
                data = rest;
            }
            Ok(cells)
        })
        .collect()
}

fn malformed_row() -> PgWireError {
    PgWireError::ApiError("an encoded row is shorter than its fields".into())
}

/// A column and, for types sent as text, its formatter.
struct Column<'a> {
    array: &'a ArrayRef,
    text: Option<ArrayFormatter<'a>>,
    /// Floats and timestamps in text format are written as PostgreSQL writes them.
    pg_text: bool,
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, field: &FieldInfo) -> PgWireResult<Column<'a>> {
        let pg_text = field.format() == FieldFormat::Text
            && match array.data_type() {
                DataType::Float32 | DataType::Float64 | DataType::Timestamp(..) => true,
                DataType::List(element) | DataType::LargeList(element) => {
                    matches!(element.data_type(), DataType::Float32 | DataType::Float64)
                }
                _ => false,
            };
        let needs_text = cohortdb_sql::type_oid(array.data_type()) == Type::TEXT.oid()
            && !matches!(
                array.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
        let text = if needs_text {
            let options = FormatOptions::new().with_null("");
            Some(ArrayFormatter::try_new(array.as_ref(), &options).map_err(api_error)?)
        } else {
            None
        };
        Ok(Column {
            array,
            text,
            pg_text,
        })
    }

    fn encode(&self, encoder: &mut DataRowEncoder, row: usize) -> PgWireResult<()> {
        let array = self.array.as_ref();
        if self.pg_text {
            // Already PostgreSQL's text, sent as it is (pgwire would quote a
            // string in a column of an array type as if it were one element).
            return encoder.encode_field_with_type_and_format(
                &(!array.is_null(row)).then(|| pg_text(array, row)),
                &Type::TEXT,
                FieldFormat::Text,
                &TEXT_OPTIONS,
            );
        }
        if let Some(text) = &self.text {
            // A NullArray has no validity buffer: its cells are null only logically.
            let null = array.is_null(row) || array.data_type() == &DataType::Null;
            let value = (!null).then(|| match array.data_type() {
                DataType::Struct(_) => record(array, row),
                _ => text.value(row).to_string(),
            });
            return encoder.encode_field(&value);
        }
        encode_value(encoder, array, row)
    }
}

fn api_error(e: arrow::error::ArrowError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// One cell of a column whose type maps to a PostgreSQL type.
fn encode_value(encoder: &mut DataRowEncoder, array: &dyn Array, row: usize) -> PgWireResult<()> {
    fn int<T>(value: T) -> PgWireResult<Integer<T>> {
        Ok(Integer(value))
    }
    macro_rules! primitive {
        ($arrow:ty) => {
            primitive!($arrow, |v| Ok::<_, PgWireError>(v))
        };
        ($arrow:ty, $convert:expr) => {{
            let a = array.as_primitive::<$arrow>();
            let value = if a.is_null(row) {
                None
            } else {
                Some($convert(a.value(row))?)
            };
            encoder.encode_field(&value)
        }};
    }
    match array.data_type() {
        DataType::Boolean => {
            let a = array.as_boolean();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::Int8 => primitive!(Int8Type, |v: i8| int(i16::from(v))),
        DataType::Int16 => primitive!(Int16Type, int),
        DataType::UInt8 => primitive!(UInt8Type, |v: u8| int(i16::from(v))),
        DataType::Int32 => primitive!(Int32Type, int),
        DataType::UInt16 => primitive!(UInt16Type, |v: u16| int(i32::from(v))),
        DataType::Int64 => primitive!(Int64Type, int),
        DataType::UInt32 => primitive!(UInt32Type, int),
        DataType::UInt64 => primitive!(UInt64Type, |v: u64| i64::try_from(v)
            .map(Integer)
            .map_err(|_| PgWireError::ApiError(format!("{v} is out of range for bigint").into()))),
        DataType::Float32 => primitive!(Float32Type),
        DataType::Float64 => primitive!(Float64Type),
        DataType::Decimal128(_, scale) => {
            let scale = u32::try_from(*scale).unwrap_or(0);
            primitive!(Decimal128Type, |v: i128| Decimal::try_from_i128_with_scale(
                v, scale
            )
            .map(Numeric)
            .map_err(|e| PgWireError::ApiError(Box::new(e))))
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::LargeBinary => {
            let a = array.as_binary::<i64>();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            encoder.encode_field(&(!a.is_null(row)).then(|| a.value(row)))
        }
        DataType::Date32 => primitive!(Date32Type, |v: i32| {
            NaiveDate::from_num_days_from_ce_opt(v + 719_163)
                .ok_or_else(|| PgWireError::ApiError(format!("date {v} is out of range").into()))
        }),
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(array, *unit, row);
            let time = match micros {
                None => None,
                Some(m) => Some(DateTime::<Utc>::from_timestamp_micros(m).ok_or_else(|| {
                    PgWireError::ApiError(format!("timestamp {m} is out of range").into())
                })?),
            };
            if tz.is_some() {
                encoder.encode_field(&time)
            } else {
                encoder.encode_field(&time.map(|t| t.naive_utc()))
            }
        }
        DataType::List(_) => list(
            encoder,
            array.as_list::<i32>().value(row).as_ref(),
            array.is_null(row),
        ),
        DataType::LargeList(_) => list(
            encoder,
            array.as_list::<i64>().value(row).as_ref(),
            array.is_null(row),
        ),
        other => Err(PgWireError::ApiError(
            format!("cannot send a {other} value").into(),
        )),
    }
}

/// A NUMERIC value. Binary: as rust_decimal encodes it, except zero, which
/// keeps its display scale as PostgreSQL's does (`0.00` reads back as `0.00`).
#[derive(Debug)]
struct Numeric(Decimal);

impl ToSql for Numeric {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if !self.0.is_zero() {
            return self.0.to_sql(ty, out);
        }
        // No digits, weight 0, positive, then the display scale.
        out.put_u16(0);
        out.put_i16(0);
        out.put_u16(0);
        out.put_u16(u16::try_from(self.0.scale())?);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        <Decimal as ToSql>::accepts(ty)
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for Numeric {
    fn to_sql_text(
        &self,
        ty: &Type,
        out: &mut BytesMut,
        options: &TextOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql_text(ty, out, options)
    }
}

/// Options for the text form of the values pgwire writes (floats, timestamps):
/// made once, not for every cell (it holds four strings).
static TEXT_OPTIONS: LazyLock<TextOptions> = LazyLock::new(TextOptions::default);

/// An integer cell: binary as the Rust integer it holds (`i16`, `i32`, `i64`,
/// `u32` for `oid`), text written with itoa (pgwire's text goes through
/// `fmt::Write`, several times the instructions).
#[derive(Debug)]
struct Integer<T>(T);

impl<T: ToSql> ToSql for Integer<T> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        T::accepts(ty)
    }

    postgres_types::to_sql_checked!();
}

impl<T: itoa::Integer + Copy + std::fmt::Debug> ToSqlText for Integer<T> {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _options: &TextOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(itoa::Buffer::new().format(self.0).as_bytes());
        Ok(IsNull::No)
    }
}

/// A timestamp cell in microseconds since the epoch.
fn timestamp_micros(array: &dyn Array, unit: TimeUnit, row: usize) -> Option<i64> {
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    if array.is_null(row) {
        return None;
    }
    Some(match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row) * 1_000_000,
        TimeUnit::Millisecond => {
            array.as_primitive::<TimestampMillisecondType>().value(row) * 1_000
        }
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row) / 1_000,
    })
}

/// A list cell as a PostgreSQL array of its element type.
fn list(encoder: &mut DataRowEncoder, values: &dyn Array, null: bool) -> PgWireResult<()> {
    macro_rules! elements {
        ($arrow:ty, $rust:ty) => {{
            let a = values.as_primitive::<$arrow>();
            let v: Option<Vec<Option<$rust>>> =
                (!null).then(|| a.iter().map(|v| v.map(<$rust>::from)).collect());
            encoder.encode_field(&v)
        }};
    }
    match values.data_type() {
        DataType::Boolean => {
            let v: Option<Vec<Option<bool>>> =
                (!null).then(|| values.as_boolean().iter().collect());
            encoder.encode_field(&v)
        }
        DataType::Int8 => elements!(Int8Type, i16),
        DataType::Int16 => elements!(Int16Type, i16),
        DataType::UInt8 => elements!(UInt8Type, i16),
        DataType::Int32 => elements!(Int32Type, i32),
        DataType::UInt16 => elements!(UInt16Type, i32),
        DataType::Int64 => elements!(Int64Type, i64),
        DataType::UInt32 => elements!(UInt32Type, u32),
        DataType::UInt64 => {
            let a = values.as_primitive::<UInt64Type>();
            let v: Option<Vec<Option<i64>>> = if null {
                None
            } else {
                Some(
                    a.iter()
                        .map(|v| v.map(i64::try_from).transpose())
                        .collect::<Result<_, _>>()
                        .map_err(|e| PgWireError::ApiError(Box::new(e)))?,
                )
            };
            encoder.encode_field(&v)
        }
        DataType::Float32 => elements!(Float32Type, f32),
        DataType::Float64 => elements!(Float64Type, f64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = arrow::compute::cast(values, &DataType::Utf8).map_err(api_error)?;
            let v: Option<Vec<Option<&str>>> =
                (!null).then(|| text.as_string::<i32>().iter().collect());
            encoder.encode_field(&v)
        }
        other => Err(PgWireError::ApiError(
            format!("cannot send a list of {other}").into(),
        )),
    }
}

/// A struct cell in PostgreSQL's record syntax: `(1,abc,"a b",)`.
fn record(array: &dyn Array, row: usize) -> String {
    let s = array.as_struct();
    let options = FormatOptions::new().with_null("");
    let fields: Vec<String> = s
        .columns()
        .iter()
        .map(|c| {
            if c.is_null(row) {
                return String::new();
            }
            let text = match c.data_type() {
                DataType::Struct(_) => record(c.as_ref(), row),
                DataType::Float32 | DataType::Float64 | DataType::Timestamp(..) => {
                    pg_text(c.as_ref(), row)
                }
                _ => ArrayFormatter::try_new(c.as_ref(), &options)
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_default(),
            };
            let plain = !text.is_empty()
                && !text
                    .chars()
                    .any(|ch| matches!(ch, ',' | '(' | ')' | '"' | '\\') || ch.is_whitespace());
            if plain {
                text
            } else {
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("({})", fields.join(","))
}

/// A float, timestamp or float array cell as PostgreSQL prints it
/// ([`float_text`], [`timestamp_text`]).
fn pg_text(array: &dyn Array, row: usize) -> String {
    match array.data_type() {
        DataType::List(_) => float_array_text(array.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => float_array_text(array.as_list::<i64>().value(row).as_ref()),
        DataType::Timestamp(unit, tz) => timestamp_text(
            timestamp_micros(array, *unit, row).unwrap_or_default(),
            tz.is_some(),
        ),
        DataType::Float32 => float_text(
            f64::from(array.as_primitive::<Float32Type>().value(row)),
            true,
        ),
        _ => float_text(array.as_primitive::<Float64Type>().value(row), false),
    }
}

/// A float array as PostgreSQL prints it: `{0.5,1,NULL}`.
fn float_array_text(values: &dyn Array) -> String {
    let items: Vec<String> = (0..values.len())
        .map(|i| {
            if values.is_null(i) {
                "NULL".to_string()
            } else {
                pg_text(values, i)
            }
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

/// A timestamp (microseconds since 1970-01-01) as PostgreSQL prints it in text
/// format: `2026-01-31 12:30:00`, the fraction only when non-zero and without
/// trailing zeros, and `+00` for timestamptz (sessions run in UTC).
pub fn timestamp_text(micros: i64, with_zone: bool) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let mut text = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    if with_zone {
        text.push_str("+00");
    }
    text
}

/// A float as PostgreSQL prints it in text format: `real` for float4, which
/// switches to exponent form from 1e6 on rather than 1e15.
pub fn float_text(v: f64, real: bool) -> String {
    if real {
        let v = v as f32;
        pg_float(f64::from(v), format!("{v:e}"), 6)
    } else {
        pg_float(v, format!("{v:e}"), 15)
    }
}

/// Every cell of a batch in PostgreSQL's text form (`None` for NULL), exactly
/// as psql would show it after a text-format query.
pub fn text_rows(batch: &RecordBatch) -> PgWireResult<Vec<Vec<Option<String>>>> {
    let fields = Arc::new(fields(&batch.schema(), &Format::UnifiedText));
    text_cells(batch, &fields)
}

/// The shortest text that reads back exactly, in exponent form below 1e-4 and
/// from 10^`digits` on; `scientific` is Rust's shortest exponent form of the
/// value (`1.5e-7`).
fn pg_float(v: f64, scientific: String, digits: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let (mantissa, exponent) = scientific.split_once('e').expect("exponent form has an e");
    let exponent: i32 = exponent.parse().expect("exponent is a number");
    if v == 0.0 || (-4..digits).contains(&exponent) {
        // Plain notation from the same digits.
        let negative = mantissa.starts_with('-');
        let digits_only: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{digits_only}", "0".repeat((-point) as usize))
        } else if point as usize >= digits_only.len() {
            format!(
                "{digits_only}{}",
                "0".repeat(point as usize - digits_only.len())
            )
        } else {
            let (int, frac) = digits_only.split_at(point as usize);
            format!("{int}.{frac}")
        };
        let body = if v == 0.0 { "0".to_string() } else { body };
        return if negative { format!("-{body}") } else { body };
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

#[cfg(test)]
mod tests {
    use super::float_text;

    /// The expected texts are what PostgreSQL 15 prints for the same values.
    #[test]
    fn floats_print_as_postgresql_prints_them() {
        let cases: [(f64, &str); 12] = [
            (1.0, "1"),
            (0.1, "0.1"),
            (-0.25, "-0.25"),
            (1e-6, "1e-06"),
            (0.0001, "0.0001"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (1.2345678901234567e17, "1.2345678901234566e+17"),
            (-2.5e-10, "-2.5e-10"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (v, expected) in cases {
            assert_eq!(float_text(v, false), expected, "{v}");
        }
        for (v, expected) in [(1e6f32, "1e+06"), (123456f32, "123456")] {
            assert_eq!(float_text(f64::from(v), true), expected, "{v}");
        }
    }
}

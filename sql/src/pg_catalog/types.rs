//! The PostgreSQL types cohortdb speaks of: their OIDs, names and properties as
//! `pg_type` lists them, and which one each Arrow type is. This is the one
//! mapping between Arrow and PostgreSQL types; the server sends columns with
//! [`field_type_oid`] and the catalog describes them with the same function.

use arrow::datatypes::{DataType, Field};

/// One row of `pg_type`, for a built-in type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgType {
    pub oid: u32,
    pub name: &'static str,
    /// Storage size in bytes; -1 for variable length, -2 for C strings.
    pub len: i16,
    /// `typcategory`: B boolean, N numeric, S string, D date/time, U user, A array...
    pub category: char,
    /// The element type of an array type, else 0.
    pub elem: u32,
    /// The array type whose elements are this type, else 0.
    pub array: u32,
    /// The name `format_type` gives (SQL spelling: `integer`, `timestamp with
    /// time zone`), without the `[]` of array types.
    pub sql_name: &'static str,
}

const fn scalar(
    oid: u32,
    name: &'static str,
    len: i16,
    category: char,
    array: u32,
    sql_name: &'static str,
) -> PgType {
    PgType {
        oid,
        name,
        len,
        category,
        elem: 0,
        array,
        sql_name,
    }
}

const fn array_of(oid: u32, name: &'static str, elem: u32, sql_name: &'static str) -> PgType {
    PgType {
        oid,
        name,
        len: -1,
        category: 'A',
        elem,
        array: 0,
        sql_name,
    }
}

pub(crate) const BOOL: u32 = 16;
pub(crate) const BYTEA: u32 = 17;
pub(crate) const CHAR: u32 = 18;
pub(crate) const NAME: u32 = 19;
pub(crate) const INT8: u32 = 20;
pub(crate) const INT2: u32 = 21;
pub(crate) const INT2VECTOR: u32 = 22;
pub(crate) const INT4: u32 = 23;
pub(crate) const REGPROC: u32 = 24;
pub(crate) const TEXT: u32 = 25;
pub(crate) const OID: u32 = 26;
pub(crate) const OIDVECTOR: u32 = 30;
pub(crate) const JSON: u32 = 114;
pub(crate) const FLOAT4: u32 = 700;
pub(crate) const FLOAT8: u32 = 701;
pub(crate) const UNKNOWN: u32 = 705;
pub(crate) const BPCHAR: u32 = 1042;
pub(crate) const VARCHAR: u32 = 1043;
pub(crate) const DATE: u32 = 1082;
pub(crate) const TIME: u32 = 1083;
pub(crate) const TIMESTAMP: u32 = 1114;
pub(crate) const TIMESTAMPTZ: u32 = 1184;
pub(crate) const INTERVAL: u32 = 1186;
pub(crate) const NUMERIC: u32 = 1700;
pub(crate) const REGCLASS: u32 = 2205;
pub(crate) const REGTYPE: u32 = 2206;
pub(crate) const RECORD: u32 = 2249;
pub(crate) const VOID: u32 = 2278;
pub(crate) const UUID: u32 = 2950;
pub(crate) const JSONB: u32 = 3802;
pub(crate) const REGNAMESPACE: u32 = 4089;
pub(crate) const REGROLE: u32 = 4096;

/// Every built-in type the catalog lists, by OID.
pub(crate) const TYPES: &[PgType] = &[
    scalar(BOOL, "bool", 1, 'B', 1000, "boolean"),
    scalar(BYTEA, "bytea", -1, 'U', 1001, "bytea"),
    scalar(CHAR, "char", 1, 'Z', 1002, "\"char\""),
    scalar(NAME, "name", 64, 'S', 1003, "name"),
    scalar(INT8, "int8", 8, 'N', 1016, "bigint"),
    scalar(INT2, "int2", 2, 'N', 1005, "smallint"),
    PgType {
        oid: INT2VECTOR,
        name: "int2vector",
        len: -1,
        category: 'A',
        elem: INT2,
        array: 1006,
        sql_name: "int2vector",
    },
    scalar(INT4, "int4", 4, 'N', 1007, "integer"),
    scalar(REGPROC, "regproc", 4, 'N', 1008, "regproc"),
    scalar(TEXT, "text", -1, 'S', 1009, "text"),
    scalar(OID, "oid", 4, 'N', 1028, "oid"),
    PgType {
        oid: OIDVECTOR,
        name: "oidvector",
        len: -1,
        category: 'A',
        elem: OID,
        array: 1013,
        sql_name: "oidvector",
    },
    scalar(JSON, "json", -1, 'U', 199, "json"),
    array_of(199, "_json", JSON, "json"),
    scalar(FLOAT4, "float4", 4, 'N', 1021, "real"),
    scalar(FLOAT8, "float8", 8, 'N', 1022, "double precision"),
    scalar(UNKNOWN, "unknown", -2, 'X', 0, "unknown"),
    array_of(1000, "_bool", BOOL, "boolean"),
    array_of(1001, "_bytea", BYTEA, "bytea"),
    array_of(1002, "_char", CHAR, "\"char\""),
    array_of(1003, "_name", NAME, "name"),
    array_of(1005, "_int2", INT2, "smallint"),
    array_of(1006, "_int2vector", INT2VECTOR, "int2vector"),
    array_of(1007, "_int4", INT4, "integer"),
    array_of(1008, "_regproc", REGPROC, "regproc"),
    array_of(1009, "_text", TEXT, "text"),
    array_of(1013, "_oidvector", OIDVECTOR, "oidvector"),
    array_of(1014, "_bpchar", BPCHAR, "character"),
    array_of(1015, "_varchar", VARCHAR, "character varying"),
    array_of(1016, "_int8", INT8, "bigint"),
    array_of(1021, "_float4", FLOAT4, "real"),
    array_of(1022, "_float8", FLOAT8, "double precision"),
    array_of(1028, "_oid", OID, "oid"),
    scalar(BPCHAR, "bpchar", -1, 'S', 1014, "character"),
    scalar(VARCHAR, "varchar", -1, 'S', 1015, "character varying"),
    scalar(DATE, "date", 4, 'D', 1182, "date"),
    scalar(TIME, "time", 8, 'D', 1183, "time without time zone"),
    scalar(
        TIMESTAMP,
        "timestamp",
        8,
        'D',
        1115,
        "timestamp without time zone",
    ),
    array_of(1115, "_timestamp", TIMESTAMP, "timestamp without time zone"),
    array_of(1182, "_date", DATE, "date"),
    array_of(1183, "_time", TIME, "time without time zone"),
    scalar(
        TIMESTAMPTZ,
        "timestamptz",
        8,
        'D',
        1185,
        "timestamp with time zone",
    ),
    array_of(
        1185,
        "_timestamptz",
        TIMESTAMPTZ,
        "timestamp with time zone",
    ),
    scalar(INTERVAL, "interval", 16, 'T', 1187, "interval"),
    array_of(1187, "_interval", INTERVAL, "interval"),
    array_of(1231, "_numeric", NUMERIC, "numeric"),
    scalar(NUMERIC, "numeric", -1, 'N', 1231, "numeric"),
    scalar(REGCLASS, "regclass", 4, 'N', 2210, "regclass"),
    scalar(REGTYPE, "regtype", 4, 'N', 2211, "regtype"),
    array_of(2210, "_regclass", REGCLASS, "regclass"),
    array_of(2211, "_regtype", REGTYPE, "regtype"),
    scalar(RECORD, "record", -1, 'P', 2287, "record"),
    array_of(2287, "_record", RECORD, "record"),
    scalar(VOID, "void", 4, 'P', 0, "void"),
    scalar(UUID, "uuid", 16, 'U', 2951, "uuid"),
    array_of(2951, "_uuid", UUID, "uuid"),
    scalar(JSONB, "jsonb", -1, 'U', 3807, "jsonb"),
    array_of(3807, "_jsonb", JSONB, "jsonb"),
    scalar(REGNAMESPACE, "regnamespace", 4, 'N', 4090, "regnamespace"),
    array_of(4090, "_regnamespace", REGNAMESPACE, "regnamespace"),
    scalar(REGROLE, "regrole", 4, 'N', 4097, "regrole"),
    array_of(4097, "_regrole", REGROLE, "regrole"),
];

/// The built-in type with this OID.
pub(crate) fn by_oid(oid: u32) -> Option<&'static PgType> {
    TYPES.iter().find(|t| t.oid == oid)
}

/// The built-in type with this name (`int4`, `_text`) or SQL name (`integer`).
pub(crate) fn by_name(name: &str) -> Option<&'static PgType> {
    let name = name.to_ascii_lowercase();
    let alias = match name.as_str() {
        "int" | "integer" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "decimal" => "numeric",
        "character varying" => "varchar",
        "character" => "bpchar",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        other => other,
    };
    TYPES.iter().find(|t| t.name == alias)
}

/// Field metadata naming a column's PostgreSQL type where its Arrow type says
/// less: catalog columns of type `name`, `"char"` and `varchar` hold Utf8 but
/// are described and sent as those types. The metadata follows the column
/// through projections, joins and subqueries, and is gone from anything
/// computed from it, as PostgreSQL's own typing would have it.
pub(crate) const PG_TYPE_METADATA: &str = "cohortdb.pg_type";

/// The PostgreSQL type a column is sent and described as: the one its field
/// metadata names (see [`PG_TYPE_METADATA`]), else that of its Arrow type.
pub fn field_type_oid(field: &Field) -> u32 {
    field
        .metadata()
        .get(PG_TYPE_METADATA)
        .and_then(|name| by_name(name))
        .map_or_else(|| type_oid(field.data_type()), |t| t.oid)
}

/// The PostgreSQL type a column of Arrow type `data_type` is sent as. Lists are
/// arrays of their element's type when PostgreSQL has that array type; anything
/// else (structs, maps, lists of those) travels as text.
pub fn type_oid(data_type: &DataType) -> u32 {
    match data_type {
        DataType::Boolean => BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => INT2,
        DataType::Int32 | DataType::UInt16 => INT4,
        DataType::Int64 | DataType::UInt64 => INT8,
        // Unsigned 32-bit integers are what PostgreSQL's object identifiers are.
        DataType::UInt32 => OID,
        DataType::Float32 => FLOAT4,
        DataType::Float64 => FLOAT8,
        DataType::Decimal128(..) => NUMERIC,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TEXT,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => BYTEA,
        DataType::Date32 => DATE,
        DataType::Timestamp(_, None) => TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => TIMESTAMPTZ,
        DataType::List(f) | DataType::LargeList(f) => match type_oid(f.data_type()) {
            element @ (BOOL | INT2 | INT4 | INT8 | OID | FLOAT4 | FLOAT8 | TEXT) => {
                by_oid(element).map_or(TEXT, |t| t.array)
            }
            _ => TEXT,
        },
        _ => TEXT,
    }
}

/// The Arrow type a parameter cast to PostgreSQL type `name` is bound as, for
/// the types the table column types do not cover: `oid` and one-dimensional
/// arrays of the scalar types cohortdb sends as arrays (`oid[]`, `int4[]`,
/// `text[]`, ...).
pub(crate) fn parameter_type(name: &str) -> Option<DataType> {
    let scalar = |pg: &PgType| -> Option<DataType> {
        Some(match pg.oid {
            BOOL => DataType::Boolean,
            INT2 => DataType::Int16,
            INT4 => DataType::Int32,
            INT8 => DataType::Int64,
            OID => DataType::UInt32,
            FLOAT4 => DataType::Float32,
            FLOAT8 => DataType::Float64,
            TEXT | VARCHAR => DataType::Utf8,
            _ => return None,
        })
    };
    match name.trim().strip_suffix("[]") {
        Some(element) => {
            let element = scalar(by_name(element.trim())?)?;
            Some(DataType::List(std::sync::Arc::new(Field::new_list_field(
                element, true,
            ))))
        }
        None => by_name(name.trim())
            .filter(|pg| pg.oid == OID)
            .and_then(scalar),
    }
}

/// The bytes of a `bytea` value written in PostgreSQL's text input forms: hex
/// (`\x0102ff`, whitespace between digit pairs allowed) or escape (characters
/// as their UTF-8 bytes, `\\` a backslash, `\nnn` an octal byte).
pub(crate) fn bytea_input(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("invalid input syntax for type bytea: \"{text}\"");
    if let Some(hex) = text
        .strip_prefix("\\x")
        .or_else(|| text.strip_prefix("\\X"))
    {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(invalid());
        }
        return digits
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(invalid)
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4).ok_or_else(invalid)?;
            let valid = octal[0].is_ascii_digit()
                && octal[0] <= b'3'
                && octal[1..].iter().all(|d| (b'0'..=b'7').contains(d));
            if !valid {
                return Err(invalid());
            }
            out.push(octal.iter().fold(0u8, |v, d| v * 8 + (d - b'0')));
            i += 4;
        }
    }
    Ok(out)
}

/// The type modifier PostgreSQL records for a column of `data_type`
/// (`atttypmod`): precision and scale for numeric, else -1.
pub(crate) fn type_modifier(data_type: &DataType) -> i32 {
    match data_type {
        DataType::Decimal128(precision, scale) => {
            ((i32::from(*precision) << 16) | i32::from(*scale as u8)) + 4
        }
        _ => -1,
    }
}

/// `format_type(oid, typmod)`: the type's SQL name, with its modifier.
pub(crate) fn format_type(oid: u32, typmod: i32) -> Option<String> {
    let t = by_oid(oid)?;
    let modifier = match oid {
        NUMERIC if typmod >= 4 => {
            let m = typmod - 4;
            format!("({},{})", m >> 16, m & 0xffff)
        }
        VARCHAR | BPCHAR if typmod >= 4 => format!("({})", typmod - 4),
        _ => String::new(),
    };
    let brackets = if t.category == 'A' && t.elem != 0 && !t.name.ends_with("vector") {
        "[]"
    } else {
        ""
    };
    Some(format!("{}{modifier}{brackets}", t.sql_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_text_input_reads_both_forms() {
        assert_eq!(bytea_input("\\x0102ff"), Ok(vec![1, 2, 255]));
        assert_eq!(bytea_input("\\X01 02"), Ok(vec![1, 2]));
        assert_eq!(bytea_input("\\x"), Ok(vec![]));
        assert_eq!(
            bytea_input("ab\\\\c\\001"),
            Ok(vec![b'a', b'b', b'\\', b'c', 1])
        );
        assert_eq!(bytea_input("é"), Ok("é".as_bytes().to_vec()));
        for bad in ["\\x0", "\\xzz", "\\9", "a\\0"] {
            assert!(bytea_input(bad).is_err(), "{bad}");
        }
    }
    use std::sync::Arc;

    use arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn arrays_name_their_elements() {
        for t in TYPES {
            if t.array != 0 {
                let array = by_oid(t.array).expect("array type listed");
                assert_eq!(array.elem, t.oid, "{}", t.name);
            }
            if t.category == 'A' && t.elem != 0 {
                assert!(by_oid(t.elem).is_some(), "{}", t.name);
            }
        }
        let oids: std::collections::BTreeSet<u32> = TYPES.iter().map(|t| t.oid).collect();
        assert_eq!(oids.len(), TYPES.len(), "OIDs are unique");
    }

    #[test]
    fn format_type_spells_as_postgres() {
        assert_eq!(format_type(INT4, -1).as_deref(), Some("integer"));
        assert_eq!(
            format_type(NUMERIC, (12 << 16 | 2) + 4).as_deref(),
            Some("numeric(12,2)")
        );
        assert_eq!(format_type(1009, -1).as_deref(), Some("text[]"));
        assert_eq!(
            format_type(VARCHAR, 34).as_deref(),
            Some("character varying(30)")
        );
        assert_eq!(
            format_type(TIMESTAMPTZ, -1).as_deref(),
            Some("timestamp with time zone")
        );
        assert_eq!(format_type(INT2VECTOR, -1).as_deref(), Some("int2vector"));
        assert_eq!(format_type(12345, -1), None);
    }

    #[test]
    fn arrow_types_map_to_postgres_types() {
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        assert_eq!(type_oid(&DataType::Int32), INT4);
        assert_eq!(type_oid(&DataType::UInt32), OID);
        assert_eq!(type_oid(&DataType::Decimal128(12, 2)), NUMERIC);
        assert_eq!(
            type_oid(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            TIMESTAMPTZ
        );
        assert_eq!(type_oid(&list(DataType::Int64)), 1016);
        assert_eq!(type_oid(&list(DataType::Utf8)), 1009);
        assert_eq!(type_oid(&list(DataType::UInt32)), 1028);
        assert_eq!(type_oid(&list(DataType::Date32)), TEXT);
        assert_eq!(type_oid(&list(list(DataType::Int64))), TEXT);
        assert_eq!(
            type_modifier(&DataType::Decimal128(12, 2)),
            (12 << 16 | 2) + 4
        );
    }
}

//! PostgreSQL's COPY text format, as `COPY ... FROM STDIN` receives it: one row
//! per line, columns split by a delimiter (tab by default), `\N` for NULL, and
//! backslash escapes (`\t`, `\n`, `\\`, octal `\101`, hex `\x41`). A line `\.`
//! ends the data.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{bad_input, decode_bytea, nullable};
use crate::error::Result;
use crate::limits;

/// Reads text-format COPY data into batches of `schema`. `source` names where
/// the data came from in error messages; errors give the line and column.
pub(super) fn read(
    source: &Path,
    data: &[u8],
    delimiter: u8,
    null: &str,
    header: bool,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let text = std::str::from_utf8(data)
        .map_err(|e| bad_input(source, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let schema = &nullable(schema);
    let width = schema.fields().len();
    let mut batches = Vec::new();
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); width];
    let mut lines = text.split_inclusive('\n').enumerate();
    let mut first_line = 1;
    if header {
        lines.next();
        first_line = 2;
    }
    for (index, line) in lines {
        let number = index + 1;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        let cells = split(line, char::from(delimiter));
        if cells.len() != width {
            return Err(bad_input(
                source,
                format!(
                    "line {number} has {} columns, the table has {width}",
                    cells.len()
                ),
            ));
        }
        for (column, cell) in columns.iter_mut().zip(cells) {
            column.push(if cell == null {
                None
            } else {
                Some(unescape(cell).map_err(|e| bad_input(source, format!("line {number}: {e}")))?)
            });
        }
        if columns[0].len() == limits::IMPORT_BATCH_ROWS {
            batches.push(batch(source, &mut columns, schema, first_line)?);
            first_line = number + 1;
        }
    }
    if columns.first().is_some_and(|c| !c.is_empty()) {
        batches.push(batch(source, &mut columns, schema, first_line)?);
    }
    Ok(batches)
}

/// The cells of a line, still escaped. A delimiter after a backslash belongs to
/// its cell.
fn split(line: &str, delimiter: char) -> Vec<&str> {
    let mut cells = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delimiter {
            cells.push(&line[start..i]);
            start = i + c.len_utf8();
        }
    }
    cells.push(&line[start..]);
    cells
}

/// A cell with its backslash escapes resolved.
fn unescape(cell: &str) -> std::result::Result<String, String> {
    if !cell.contains('\\') {
        return Ok(cell.to_string());
    }
    let bytes = cell.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let (value, used) = digits(&bytes[i - 1..], 8, 3);
                out.push(value);
                i += used - 1;
            }
            b'x' if bytes.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let (value, used) = digits(&bytes[i..], 16, 2);
                out.push(value);
                i += used;
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| "an escape makes invalid UTF-8".to_string())
}

/// The byte value of up to `most` leading digits in `radix`, and how many there
/// were (at least one: the caller saw the first).
fn digits(bytes: &[u8], radix: u32, most: usize) -> (u8, usize) {
    let mut value = 0u32;
    let mut used = 0;
    for byte in bytes.iter().take(most) {
        match char::from(*byte).to_digit(radix) {
            Some(d) => {
                value = value * radix + d;
                used += 1;
            }
            None => break,
        }
    }
    ((value & 0xff) as u8, used)
}

/// The collected cells as one batch of `schema`, each column converted from
/// text to its type; a value that does not convert is reported with its line.
fn batch(
    source: &Path,
    columns: &mut [Vec<Option<String>>],
    schema: &SchemaRef,
    first_line: usize,
) -> Result<RecordBatch> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    let mut text_fields = Vec::with_capacity(columns.len());
    for (field, cells) in schema.fields().iter().zip(columns.iter_mut()) {
        let text: ArrayRef = Arc::new(StringArray::from(std::mem::take(cells)));
        // BYTEA is read in its hex text form and decoded below.
        let target = match field.data_type() {
            DataType::Binary => DataType::Utf8,
            other => other.clone(),
        };
        let array = cast_with_options(&text, &target, &options).map_err(|_| {
            let row = first_bad_row(&text, &target);
            let value = text
                .as_any()
                .downcast_ref::<StringArray>()
                .map(|t| t.value(row).to_string())
                .unwrap_or_default();
            let type_name = crate::types::ColumnType::from_arrow(field.data_type())
                .map_or_else(|_| field.data_type().to_string(), |t| t.to_string());
            bad_input(
                source,
                format!(
                    "invalid value {value:?} for column \"{}\" ({type_name}) at line {}",
                    field.name(),
                    first_line + row
                ),
            )
        })?;
        text_fields.push(field.as_ref().clone().with_data_type(target));
        arrays.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(text_fields)), arrays)?;
    decode_bytea(source, batch, schema)
}

/// The first row whose text does not convert to `target`.
fn first_bad_row(text: &ArrayRef, target: &DataType) -> usize {
    match cast_with_options(text, target, &CastOptions::default()) {
        Ok(converted) => (0..text.len())
            .find(|&i| text.is_valid(i) && converted.is_null(i))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("blob", DataType::Binary, true),
        ]))
    }

    #[test]
    fn reads_nulls_escapes_and_the_end_marker() {
        let data =
            b"1\ta\\tb\\\\c\t\\\\x0aff\n2\t\\N\t\\N\r\n3\t\\101\\x42\t\\N\n\\.\n4\tignored\t\\N\n";
        let batches =
            read(Path::new("STDIN"), data, b'\t', "\\N", false, &schema()).expect("valid data");
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 3);
        let names = batch.column(1).as_any().downcast_ref::<StringArray>();
        let names = names.expect("text column");
        assert_eq!(names.value(0), "a\tb\\c");
        assert!(names.is_null(1));
        assert_eq!(names.value(2), "AB");
        let blobs = batch
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::BinaryArray>();
        assert_eq!(blobs.expect("bytea column").value(0), [0x0a, 0xff]);
    }

    #[test]
    fn bad_values_and_widths_name_the_line() {
        let data = b"1\ta\t\\N\nx\tb\t\\N\n";
        let error = read(Path::new("STDIN"), data, b'\t', "\\N", false, &schema())
            .expect_err("x is no BIGINT");
        assert_eq!(
            error.to_string(),
            "STDIN: invalid value \"x\" for column \"id\" (BIGINT) at line 2"
        );
        let error = read(
            Path::new("STDIN"),
            b"h\n1,a\n",
            b',',
            "\\N",
            true,
            &schema(),
        )
        .expect_err("two cells for three columns");
        assert_eq!(
            error.to_string(),
            "STDIN: line 2 has 2 columns, the table has 3"
        );
    }
}

//! psql-style aligned tables: headers centred, numbers right-aligned, text left,
//! NULL as an empty cell, and a `(n rows)` footer.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Renders `batches` (all of `schema`) as an aligned table.
pub fn table(schema: &Schema, batches: &[RecordBatch]) -> Result<String, String> {
    let options = FormatOptions::default()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"));
    let headers: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let right: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| is_numeric(f.data_type()))
        .collect();
    let mut out = String::new();
    let header_cells: Vec<String> = headers
        .iter()
        .zip(&widths)
        .map(|(h, &w)| centre(h, w))
        .collect();
    push_line(&mut out, &header_cells);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&right)
            .map(|((cell, &w), &right)| {
                if right {
                    format!(" {cell:>w$} ")
                } else {
                    format!(" {cell:<w$} ")
                }
            })
            .collect();
        push_line(&mut out, &cells);
    }
    let n = rows.len();
    out.push_str(&format!("({n} {})\n", if n == 1 { "row" } else { "rows" }));
    Ok(out)
}

fn push_line(out: &mut String, cells: &[String]) {
    out.push_str(cells.join("|").trim_end());
    out.push('\n');
}

fn centre(text: &str, width: usize) -> String {
    let pad = width - text.chars().count();
    let left = pad / 2;
    format!(" {}{}{} ", " ".repeat(left), text, " ".repeat(pad - left))
}

fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_numeric()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn aligned_like_psql() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("city", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(20), None])),
                Arc::new(StringArray::from(vec![Some("beijing"), None, Some("xi")])),
            ],
        )
        .expect("batch");
        let expected = concat!(
            " id |  city\n",
            "----+---------\n",
            "  1 | beijing\n",
            " 20 |\n",
            "    | xi\n",
            "(3 rows)\n",
        );
        assert_eq!(table(&schema, &[batch]).expect("render"), expected);
    }
}

//! Result normalisation for cross-checking engines: every value becomes a string
//! the same way bench/peers/runner.py does it (numbers with four decimals,
//! timestamps as `YYYY-MM-DD HH:MM:SS`, NULL as `NULL`).

use cohortdb::arrow::array::{Array, RecordBatch};
use cohortdb::arrow::datatypes::DataType;
use cohortdb::arrow::util::display::{ArrayFormatter, FormatOptions};

pub type Rows = Vec<Vec<String>>;

pub fn normalise(batches: &[RecordBatch]) -> Rows {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("result types format"))
            .collect();
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, formatter)| {
                    value(column.as_ref(), row, &formatter.value(row).to_string())
                })
                .collect();
            rows.push(values);
        }
    }
    rows
}

fn value(column: &dyn Array, row: usize, text: &str) -> String {
    if column.is_null(row) {
        return "NULL".to_string();
    }
    match column.data_type() {
        t if t.is_numeric() => text
            .parse::<f64>()
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|_| text.to_string()),
        DataType::Timestamp(..) => text.replacen('T', " ", 1),
        _ => text.to_string(),
    }
}

/// The first difference between two results, if any.
pub fn difference(expected: &Rows, actual: &Rows) -> Option<String> {
    if expected.len() != actual.len() {
        return Some(format!(
            "{} rows, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .map(|i| format!("row {i}: {:?}, expected {:?}", actual[i], expected[i]))
}

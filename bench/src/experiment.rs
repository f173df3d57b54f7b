//! The `experiment` suite: a 3-variation experiment report over an exposures
//! table (user, variation, revenue, converted), on cohortdb with its experiment
//! functions and on DuckDB with the same computation written as sums followed by
//! closed-form math in SQL. Both report, per treatment against control, the
//! absolute lift, its standard error and Welch's t statistic, cross-checked.

use std::path::PathBuf;
use std::sync::Arc;

use cohortdb::arrow::array::{ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch};
use cohortdb::arrow::datatypes::{DataType, Field, Schema};
use cohortdb_engine::demo::Rng;
use cohortdb_engine::export::FileWriter;
use cohortdb_engine::import::{CsvOptions, FileFormat};
use cohortdb_engine::stats::assignment;

/// The planted effects: revenue multipliers of variations 0, 1, 2.
const REVENUE_LIFT: [f64; 3] = [1.0, 1.02, 1.05];

/// Writes (once) `exposures` rows as Parquet and returns the file.
pub fn prepare(exposures: u64, seed: u64) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join("cohortdb-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("exposures{exposures}-seed{seed}.parquet"));
    if path.exists() {
        return Ok(path);
    }
    eprintln!("generating {exposures} exposures into {}", path.display());
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("variation", DataType::Int32, false),
        Field::new("revenue", DataType::Float64, false),
        Field::new("converted", DataType::Int32, false),
    ]));
    let mut writer =
        FileWriter::create(&path, FileFormat::Parquet, &CsvOptions::default(), &schema)
            .map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    let weights = [0.34, 0.33, 0.33];
    let mut next = 1u64;
    while next <= exposures {
        let n = (exposures - next + 1).min(65_536);
        let (mut id, mut variation, mut revenue, mut converted) = (
            Int64Builder::new(),
            Int32Builder::new(),
            Float64Builder::new(),
            Int32Builder::new(),
        );
        for _ in 0..n {
            let v = assignment::assign(&next.to_string(), "bench-experiment", &weights, 1.0, 2)
                .unwrap_or(0);
            let buys = rng.f64() < 0.1;
            // Heavy-tailed spend (Pareto, alpha 3) for buyers.
            let spend = if buys {
                20.0 / (1.0 - rng.f64()).powf(1.0 / 3.0) * REVENUE_LIFT[v]
            } else {
                0.0
            };
            id.append_value(next as i64);
            variation.append_value(v as i32);
            revenue.append_value(spend);
            converted.append_value(i32::from(buys));
            next += 1;
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(variation.finish()),
            Arc::new(revenue.finish()),
            Arc::new(converted.finish()),
        ];
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    Ok(path)
}

pub const CREATE: &str = "CREATE TABLE exposures (user_id BIGINT NOT NULL, variation INTEGER NOT NULL, \
                          revenue DOUBLE PRECISION NOT NULL, converted INTEGER NOT NULL)";

/// cohortdb: moments per variation, then the test function per treatment.
pub const COHORTDB_REPORT: &str = "\
WITH per_variation AS (
  SELECT variation, metric_moments(revenue) AS m FROM exposures GROUP BY variation),
control AS (SELECT m AS c FROM per_variation WHERE variation = 0),
tests AS (
  SELECT t.variation, welch_test_stats(c['n'], c['mean'], c['variance'], t.m['n'], t.m['mean'], t.m['variance']) AS w
  FROM per_variation t, control WHERE t.variation <> 0)
SELECT variation, w['estimate'] AS lift, w['se'] AS se, w['statistic'] AS t FROM tests ORDER BY variation";

/// DuckDB: sums per variation, then the same closed-form math in SQL.
pub const SUMS_REPORT: &str = "\
WITH sums AS (
  SELECT variation, count(*) AS n, sum(revenue) AS s, sum(revenue * revenue) AS ss FROM exposures GROUP BY variation),
stats AS (
  SELECT variation, n, s / n AS mean, (ss - s * s / n) / (n - 1) AS var FROM sums),
control AS (SELECT n AS cn, mean AS cm, var AS cv FROM stats WHERE variation = 0)
SELECT variation, mean - cm AS lift, sqrt(var / n + cv / cn) AS se, (mean - cm) / sqrt(var / n + cv / cn) AS t
FROM stats, control WHERE variation <> 0 ORDER BY variation";

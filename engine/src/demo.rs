//! The seeded demo dataset: a small marketing world of users, items and events.
//!
//! Everything is a pure function of ([`DemoConfig::seed`], [`DemoConfig::users`]):
//! the same pair always yields the same rows, on any machine and in any version that
//! keeps this generator (tests and benchmarks rely on it). Frequencies are skewed the
//! way real data is: city and category sizes and item popularity follow Zipf laws,
//! and user activity is heavy-tailed (Pareto), so a few users produce many events.
//!
//! Rows are produced in batches through a callback so that a large scale streams
//! to files without holding everything in memory.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int16Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::types::{self, ColumnDef, ColumnType};

/// Parameters of a demo dataset.
#[derive(Debug, Clone, Copy)]
pub struct DemoConfig {
    pub users: u64,
    pub seed: u64,
    /// Mean number of events per user.
    pub events_per_user: f64,
}

impl Default for DemoConfig {
    fn default() -> DemoConfig {
        DemoConfig {
            users: 100_000,
            seed: 42,
            events_per_user: 10.0,
        }
    }
}

impl DemoConfig {
    /// Number of items in the catalogue: one per hundred users, at least 100.
    pub fn items(&self) -> u64 {
        (self.users / 100).max(100)
    }
}

pub const CITIES: [&str; 20] = [
    "shanghai",
    "beijing",
    "shenzhen",
    "guangzhou",
    "chengdu",
    "hangzhou",
    "wuhan",
    "chongqing",
    "xian",
    "nanjing",
    "tianjin",
    "suzhou",
    "changsha",
    "zhengzhou",
    "qingdao",
    "shenyang",
    "dalian",
    "xiamen",
    "kunming",
    "harbin",
];
pub const CATEGORIES: [&str; 12] = [
    "game_cards",
    "electronics",
    "apparel",
    "beauty",
    "books",
    "home",
    "sports",
    "toys",
    "grocery",
    "music",
    "travel",
    "pets",
];
const SPEND_TIERS: [(&str, f64); 4] = [("low", 0.50), ("mid", 0.30), ("high", 0.15), ("vip", 0.05)];
const CHANNELS: [(&str, f64); 5] = [
    ("organic", 0.35),
    ("search", 0.25),
    ("social", 0.20),
    ("referral", 0.10),
    ("ads", 0.10),
];
const EVENT_TYPES: [(&str, f64); 4] = [
    ("view", 0.70),
    ("click", 0.18),
    ("add_to_cart", 0.08),
    ("purchase", 0.04),
];

/// Days since 1970-01-01 of 2019-01-01, the first signup date.
const SIGNUP_FIRST_DAY: i32 = 17_897;
/// Number of possible signup days (2019-01-01 ..= 2026-04-30).
const SIGNUP_DAYS: u64 = 2_677;
/// Microseconds since the epoch of 2026-05-01 00:00:00, the start of the event window.
const EVENTS_START_US: i64 = 1_777_593_600_000_000;
/// Length of the event window in seconds: 184 days (May to October 2026).
const EVENTS_WINDOW_S: u64 = 184 * 86_400;
/// Most events one user can have, as a multiple of the mean.
const ACTIVITY_CAP: f64 = 50.0;

const BATCH_ROWS: usize = 65_536;

/// The demo tables and their columns, in load order.
pub fn tables() -> Vec<(&'static str, Vec<ColumnDef>)> {
    let money = ColumnType::Decimal {
        precision: 10,
        scale: 2,
    };
    vec![
        (
            "users",
            vec![
                ColumnDef::new("user_id", ColumnType::BigInt, false).user_key(),
                ColumnDef::new("gender", ColumnType::Text, true),
                ColumnDef::new("age", ColumnType::SmallInt, true),
                ColumnDef::new("city", ColumnType::Text, true),
                ColumnDef::new("signup_date", ColumnType::Date, true),
                ColumnDef::new("spend_tier", ColumnType::Text, true),
                ColumnDef::new("channel", ColumnType::Text, true),
            ],
        ),
        (
            "items",
            vec![
                ColumnDef::new("item_id", ColumnType::BigInt, false),
                ColumnDef::new("category", ColumnType::Text, true),
                ColumnDef::new("price", money, true),
            ],
        ),
        (
            "events",
            vec![
                ColumnDef::new("user_id", ColumnType::BigInt, false).user_key(),
                ColumnDef::new("ts", ColumnType::Timestamp, false),
                ColumnDef::new("event_type", ColumnType::Text, false),
                ColumnDef::new("item_id", ColumnType::BigInt, true),
                ColumnDef::new("amount", money, true),
            ],
        ),
    ]
}

/// Generates the dataset, handing each batch to `sink` with its table name. Tables
/// come in the order of [`tables`].
pub fn generate(
    config: &DemoConfig,
    sink: &mut dyn FnMut(&str, RecordBatch) -> Result<()>,
) -> Result<()> {
    let schemas: Vec<_> = tables()
        .into_iter()
        .map(|(name, columns)| Ok((name, types::table_schema(&columns)?)))
        .collect::<Result<_>>()?;
    let rng = Rng::new(config.seed);
    let mut users = rng.fork(1);
    generate_users(config, &mut users, &mut |b| sink("users", b), &schemas[0].1)?;
    let mut items_rng = rng.fork(2);
    let prices = generate_items(
        config,
        &mut items_rng,
        &mut |b| sink("items", b),
        &schemas[1].1,
    )?;
    let mut events = rng.fork(3);
    generate_events(
        config,
        &mut events,
        &prices,
        &mut |b| sink("events", b),
        &schemas[2].1,
    )
}

/// The demo's tag indexes: (table, columns, time column), made after the
/// rows are loaded.
pub fn tag_indexes() -> Vec<(&'static str, Vec<&'static str>, Option<&'static str>)> {
    vec![
        (
            "users",
            vec!["gender", "age", "city", "spend_tier", "channel"],
            None,
        ),
        ("events", vec!["event_type"], Some("ts")),
    ]
}

/// Creates the demo tables in `catalog`, fills them (one commit per table)
/// and makes their tag indexes ([`tag_indexes`]). `progress` hears each
/// table's name and rows generated so far. Fails with
/// [`crate::Error::TableExists`] if a demo table already exists.
pub fn load(
    catalog: &Catalog,
    config: &DemoConfig,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<()> {
    for (name, columns) in tables() {
        if catalog.table(name).is_ok() {
            return Err(crate::Error::TableExists(name.to_string()));
        }
        catalog.create_table(name, &columns, false)?;
    }
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut current = "users";
    let mut rows = 0u64;
    generate(config, &mut |table, batch| {
        if table != current {
            let done = catalog.table(current)?;
            catalog.append(&done, std::mem::take(&mut pending))?;
            current = tables()
                .into_iter()
                .find(|(n, _)| *n == table)
                .map(|(n, _)| n)
                .expect("demo table");
            rows = 0;
        }
        rows += batch.num_rows() as u64;
        progress(table, rows);
        pending.push(batch);
        Ok(())
    })?;
    let table = catalog.table(current)?;
    catalog.append(&table, pending)?;
    for (table, columns, time) in tag_indexes() {
        let columns: Vec<String> = columns.into_iter().map(String::from).collect();
        catalog.create_tag_index(table, &columns, time)?;
    }
    Ok(())
}

type BatchSink<'a> = dyn FnMut(RecordBatch) -> Result<()> + 'a;

fn generate_users(
    config: &DemoConfig,
    rng: &mut Rng,
    sink: &mut BatchSink,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<()> {
    let cities = Zipf::new(CITIES.len(), 1.0);
    let mut next = 1u64;
    while next <= config.users {
        let n = (config.users - next + 1).min(BATCH_ROWS as u64) as usize;
        let mut id = Int64Builder::with_capacity(n);
        let mut gender = StringBuilder::new();
        let mut age = Int16Builder::with_capacity(n);
        let mut city = StringBuilder::new();
        let mut signup = Date32Builder::with_capacity(n);
        let mut tier = StringBuilder::new();
        let mut channel = StringBuilder::new();
        for _ in 0..n {
            id.append_value(next as i64);
            next += 1;
            let g = rng.f64();
            gender.append_option(if g < 0.52 {
                Some("f")
            } else if g < 0.99 {
                Some("m")
            } else {
                None
            });
            age.append_value(18 + (rng.f64().powf(1.6) * 57.0) as i16);
            city.append_value(CITIES[cities.sample(rng)]);
            signup.append_value(SIGNUP_FIRST_DAY + rng.below(SIGNUP_DAYS) as i32);
            tier.append_value(pick(&SPEND_TIERS, rng));
            channel.append_value(pick(&CHANNELS, rng));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(gender.finish()),
            Arc::new(age.finish()),
            Arc::new(city.finish()),
            Arc::new(signup.finish()),
            Arc::new(tier.finish()),
            Arc::new(channel.finish()),
        ];
        sink(RecordBatch::try_new(Arc::clone(schema), columns)?)?;
    }
    Ok(())
}

/// Generates the items and returns their prices in cents (index = item_id − 1).
fn generate_items(
    config: &DemoConfig,
    rng: &mut Rng,
    sink: &mut BatchSink,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Vec<i64>> {
    let categories = Zipf::new(CATEGORIES.len(), 0.8);
    let count = config.items();
    let mut prices = Vec::with_capacity(count as usize);
    let mut next = 1u64;
    while next <= count {
        let n = (count - next + 1).min(BATCH_ROWS as u64) as usize;
        let mut id = Int64Builder::with_capacity(n);
        let mut category = StringBuilder::new();
        let mut price = Decimal128Builder::with_capacity(n).with_precision_and_scale(10, 2)?;
        for _ in 0..n {
            id.append_value(next as i64);
            next += 1;
            category.append_value(CATEGORIES[categories.sample(rng)]);
            let cents = (100.0 * (rng.f64() * 6.2).exp()) as i64 + rng.below(100) as i64;
            prices.push(cents);
            price.append_value(i128::from(cents));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(category.finish()),
            Arc::new(price.finish()),
        ];
        sink(RecordBatch::try_new(Arc::clone(schema), columns)?)?;
    }
    Ok(prices)
}

struct EventColumns {
    user: Int64Builder,
    ts: TimestampMicrosecondBuilder,
    event_type: StringBuilder,
    item: Int64Builder,
    amount: Decimal128Builder,
    rows: usize,
}

impl EventColumns {
    fn new() -> Result<EventColumns> {
        Ok(EventColumns {
            user: Int64Builder::with_capacity(BATCH_ROWS),
            ts: TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS),
            event_type: StringBuilder::new(),
            item: Int64Builder::with_capacity(BATCH_ROWS),
            amount: Decimal128Builder::with_capacity(BATCH_ROWS).with_precision_and_scale(10, 2)?,
            rows: 0,
        })
    }

    fn finish(&mut self, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.user.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.item.finish()),
            Arc::new(self.amount.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

fn generate_events(
    config: &DemoConfig,
    rng: &mut Rng,
    prices: &[i64],
    sink: &mut BatchSink,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<()> {
    let items = Zipf::new(prices.len(), 1.0);
    let mut out = EventColumns::new()?;
    // Pareto(alpha = 2) has mean 2 * x_min; x_min = mean / 2 gives the configured mean.
    let x_min = config.events_per_user / 2.0;
    for user in 1..=config.users {
        let activity =
            (x_min / (1.0 - rng.f64()).sqrt()).min(ACTIVITY_CAP * config.events_per_user);
        for _ in 0..activity as u64 {
            let item = items.sample(rng);
            let kind = pick(&EVENT_TYPES, rng);
            out.user.append_value(user as i64);
            // Whole seconds, as event logs usually record them.
            let second = rng.below(EVENTS_WINDOW_S) as i64;
            out.ts.append_value(EVENTS_START_US + second * 1_000_000);
            out.event_type.append_value(kind);
            out.item.append_value(item as i64 + 1);
            if kind == "purchase" {
                let quantity = 1 + rng.below(3) as i64;
                out.amount.append_value(i128::from(prices[item] * quantity));
            } else {
                out.amount.append_null();
            }
            out.rows += 1;
            if out.rows == BATCH_ROWS {
                sink(out.finish(schema)?)?;
            }
        }
    }
    if out.rows > 0 {
        sink(out.finish(schema)?)?;
    }
    Ok(())
}

fn pick<'a>(choices: &[(&'a str, f64)], rng: &mut Rng) -> &'a str {
    let mut u = rng.f64();
    for (name, p) in choices {
        if u < *p {
            return name;
        }
        u -= p;
    }
    choices[choices.len() - 1].0
}

/// SplitMix64: tiny, fast, and fixed forever, so datasets never change under a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream derived from this one's seed.
    pub fn fork(&self, stream: u64) -> Rng {
        let mut r = Rng(self.0 ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Rng(r.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (Lemire's multiply-shift, n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A Zipf distribution over ranks 0..n: P(k) ∝ 1 / (k + 1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cdf = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Zipf {
            cdf: cdf.into_iter().map(|c| c / total).collect(),
        }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(config: &DemoConfig) -> (u64, u64, u64, u64) {
        let (mut users, mut items, mut events) = (0, 0, 0);
        let mut checksum = 0u64;
        generate(config, &mut |table, batch| {
            match table {
                "users" => users += batch.num_rows() as u64,
                "items" => items += batch.num_rows() as u64,
                _ => events += batch.num_rows() as u64,
            }
            for column in batch.columns() {
                checksum = checksum.wrapping_mul(31).wrapping_add(
                    column
                        .to_data()
                        .buffers()
                        .iter()
                        .map(|b| b.as_slice().iter().map(|&x| u64::from(x)).sum::<u64>())
                        .sum(),
                );
            }
            Ok(())
        })
        .expect("generate");
        (users, items, events, checksum)
    }

    #[test]
    fn same_seed_same_data() {
        let config = DemoConfig {
            users: 2_000,
            seed: 7,
            events_per_user: 10.0,
        };
        let a = counts(&config);
        assert_eq!(a, counts(&config));
        assert_eq!((a.0, a.1), (2_000, 100));
        // The Pareto activity has the configured mean (within sampling noise).
        assert!((15_000..25_000).contains(&a.2), "events: {}", a.2);
        let other = counts(&DemoConfig { seed: 8, ..config });
        assert_ne!(a.3, other.3);
    }

    #[test]
    fn zipf_is_skewed() {
        let zipf = Zipf::new(20, 1.0);
        let mut rng = Rng::new(1);
        let mut hist = [0u32; 20];
        for _ in 0..100_000 {
            hist[zipf.sample(&mut rng)] += 1;
        }
        // P(rank 0) = 1 / H(20) ≈ 0.278; P(rank 19) ≈ 0.0139.
        assert!((27_000..28_600).contains(&hist[0]), "{hist:?}");
        assert!((1_200..1_600).contains(&hist[19]), "{hist:?}");
    }
}

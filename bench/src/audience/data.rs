//! The `audience` suite's data: seeded users with twenty categorical
//! attributes of skewed (Zipf) value frequencies, and a 90-day history of
//! events, written once as Parquet under the system temp directory and
//! reused; generated again (without writing) to build the raw bitmaps.
//!
//! Everything is a function of (users, tags, seed): user `i` (0-based) has
//! id `i + 1`, so loaded in id order it gets user-key ordinal `i`, and its
//! attributes and events come from two SplitMix64 streams
//! ([`cohortdb_engine::demo::Rng`]) forked from the seed. Time is relative to
//! the fixed day [`TODAY`], so cached data stays valid on any later day.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use cohortdb::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use cohortdb::arrow::datatypes::SchemaRef;
use cohortdb_engine::demo::Rng;
use cohortdb_engine::export::FileWriter;
use cohortdb_engine::import::{CsvOptions, FileFormat};
use cohortdb_engine::types::{ColumnDef, ColumnType, table_schema};

/// The last day of the event history: what "the last 30 days" end with.
pub const TODAY: &str = "2026-11-30";
/// Days of event history, [`TODAY`] included.
pub const HISTORY_DAYS: i32 = 90;
/// Event types and their shares of events.
pub const EVENT_TYPES: [(&str, f64); 5] = [
    ("view", 0.55),
    ("click", 0.22),
    ("add_to_cart", 0.12),
    ("share", 0.07),
    ("purchase", 0.04),
];
/// Events per user: uniform in 0..EVENTS_PER_USER_MAX (3 on average).
const EVENTS_PER_USER_MAX: u64 = 7;
/// Share of users with `vip` true.
const VIP_SHARE: f64 = 0.08;
/// Rows per Parquet batch.
const BATCH_ROWS: usize = 65_536;

/// A categorical attribute: a TEXT column whose value of rank `r` is
/// `{prefix}{r:03}` (or `labels[r]`), drawn with P(r) ∝ 1 / (r + 1)^skew.
#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: &'static str,
    prefix: &'static str,
    labels: &'static [&'static str],
    pub values: usize,
    skew: f64,
}

/// The attributes at their base sizes: 413 values, with `vip` 415 tags.
/// `city` (200 values) is the profile's column and never rescaled.
const ATTRIBUTES: [(&str, &str, usize, f64); 19] = [
    ("gender", "", 3, 0.4),
    ("age_band", "a", 8, 0.6),
    ("city", "c", 200, 1.0),
    ("province", "p", 31, 0.9),
    ("city_tier", "t", 5, 0.7),
    ("device", "d", 12, 1.1),
    ("os", "o", 4, 1.2),
    ("channel", "ch", 10, 1.0),
    ("spend_tier", "s", 5, 0.8),
    ("membership", "m", 6, 1.3),
    ("language", "l", 15, 1.5),
    ("interest", "i", 40, 0.9),
    ("education", "e", 7, 0.6),
    ("occupation", "oc", 25, 0.8),
    ("income_band", "ib", 10, 0.7),
    ("marital", "ms", 4, 0.9),
    ("app_version", "v", 12, 1.0),
    ("carrier", "cr", 6, 1.0),
    ("signup_year", "y", 10, 0.5),
];
const GENDERS: &[&str] = &["f", "m", "u"];
/// Values per column at most (ranks are u16).
const VALUES_MAX: usize = 60_000;

/// The user columns: the attributes, then the boolean `vip`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub attributes: Vec<Attribute>,
}

impl Layout {
    /// The base layout, or one whose tag count (attribute values plus
    /// `vip`'s two) is about `tags`: every attribute but `gender` and `city`
    /// scaled by the same factor.
    pub fn new(tags: Option<usize>) -> Layout {
        let mut attributes: Vec<Attribute> = ATTRIBUTES
            .iter()
            .map(|&(name, prefix, values, skew)| Attribute {
                name,
                prefix,
                labels: if name == "gender" { GENDERS } else { &[] },
                values,
                skew,
            })
            .collect();
        if let Some(target) = tags {
            let fixed: usize = 2 + attributes
                .iter()
                .filter(|a| !Self::scales(a))
                .map(|a| a.values)
                .sum::<usize>();
            let scalable: usize = attributes
                .iter()
                .filter(|a| Self::scales(a))
                .map(|a| a.values)
                .sum();
            let factor = target.saturating_sub(fixed) as f64 / scalable as f64;
            for a in attributes.iter_mut().filter(|a| Self::scales(a)) {
                a.values = ((a.values as f64 * factor).round() as usize).clamp(2, VALUES_MAX);
            }
        }
        Layout { attributes }
    }

    fn scales(a: &Attribute) -> bool {
        !matches!(a.name, "gender" | "city")
    }

    /// Column tags of the users table: every attribute value and vip's two.
    pub fn tag_count(&self) -> usize {
        self.attributes.iter().map(|a| a.values).sum::<usize>() + 2
    }

    /// The attribute named `name` and its position.
    pub fn attribute(&self, name: &str) -> Option<(usize, &Attribute)> {
        self.attributes
            .iter()
            .enumerate()
            .find(|(_, a)| a.name == name)
    }

    pub fn users_columns(&self) -> Vec<ColumnDef> {
        let mut columns = vec![ColumnDef::new("user_id", ColumnType::BigInt, false).user_key()];
        columns.extend(
            self.attributes
                .iter()
                .map(|a| ColumnDef::new(a.name, ColumnType::Text, false)),
        );
        columns.push(ColumnDef::new("vip", ColumnType::Boolean, false));
        columns
    }

    pub fn events_columns() -> Vec<ColumnDef> {
        vec![
            ColumnDef::new("user_id", ColumnType::BigInt, false).user_key(),
            ColumnDef::new("event_type", ColumnType::Text, false),
            ColumnDef::new("ts", ColumnType::Timestamp, false),
        ]
    }
}

impl Attribute {
    /// The value of rank `rank`.
    pub fn value(&self, rank: usize) -> String {
        match self.labels.get(rank) {
            Some(label) => label.to_string(),
            None => format!("{}{rank:03}", self.prefix),
        }
    }

    /// Each value's probability, by rank.
    pub fn shares(&self) -> Vec<f64> {
        let weights: Vec<f64> = (0..self.values)
            .map(|r| 1.0 / ((r + 1) as f64).powf(self.skew))
            .collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total).collect()
    }

    /// The rank of `value`, if it is one of this attribute's.
    pub fn rank(&self, value: &str) -> Option<usize> {
        (0..self.values).find(|&r| self.value(r) == value)
    }
}

/// A Zipf sampler over ranks 0..n by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(attribute: &Attribute) -> Zipf {
        let mut acc = 0.0;
        let cdf = attribute
            .shares()
            .iter()
            .map(|share| {
                acc += share;
                acc
            })
            .collect();
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u16 {
        let x = rng.f64();
        let rank = self.cdf.partition_point(|&c| c <= x);
        rank.min(self.cdf.len() - 1) as u16
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn day_number(date: &str) -> i32 {
    cohortdb_engine::tags::parse_date(date).expect("a valid date")
}

/// `YYYY-MM-DD` of a day number (proleptic Gregorian, days since 1970-01-01).
pub fn date_text(day: i32) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What the generator produces, user by user in ordinal order.
pub trait Sink {
    /// User `ordinal` (id `ordinal + 1`) with the rank of each attribute's
    /// value.
    fn user(&mut self, ordinal: u32, ranks: &[u16], vip: bool) -> Result<(), String>;
    /// One event of user `ordinal` (after that user's `user` call).
    fn event(&mut self, ordinal: u32, event_type: u8, day: i32, micros: i64) -> Result<(), String>;
}

/// Generates `users` users and their events into `sink`.
pub fn generate(users: u64, seed: u64, layout: &Layout, sink: &mut dyn Sink) -> Result<(), String> {
    let base = Rng::new(seed);
    let mut attribute_rng = base.fork(1);
    let mut event_rng = base.fork(2);
    let samplers: Vec<Zipf> = layout.attributes.iter().map(Zipf::new).collect();
    let mut event_cdf = Vec::new();
    let mut acc = 0.0;
    for (_, share) in EVENT_TYPES {
        acc += share;
        event_cdf.push(acc);
    }
    let today = day_number(TODAY);
    let mut ranks = vec![0u16; samplers.len()];
    for ordinal in 0..users {
        let ordinal = u32::try_from(ordinal).map_err(|_| "more users than u32 ordinals")?;
        for (rank, sampler) in ranks.iter_mut().zip(&samplers) {
            *rank = sampler.sample(&mut attribute_rng);
        }
        let vip = attribute_rng.f64() < VIP_SHARE;
        sink.user(ordinal, &ranks, vip)?;
        for _ in 0..event_rng.below(EVENTS_PER_USER_MAX) {
            let x = event_rng.f64();
            let event_type = event_cdf
                .partition_point(|&c| c <= x)
                .min(EVENT_TYPES.len() - 1) as u8;
            let day = today - event_rng.below(HISTORY_DAYS as u64) as i32;
            let second = event_rng.below(86_400) as i64;
            let micros = (i64::from(day) * 86_400 + second) * 1_000_000;
            sink.event(ordinal, event_type, day, micros)?;
        }
    }
    Ok(())
}

/// Where one dataset's files are.
pub struct AudienceFiles {
    pub dir: PathBuf,
    pub users: u64,
    pub events: u64,
    pub layout: Layout,
    pub seed: u64,
    /// `--tags` as given (the layout's scaling), for the load child.
    pub tags: Option<usize>,
}

impl AudienceFiles {
    pub fn users_path(&self) -> PathBuf {
        self.dir.join("users.parquet")
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.parquet")
    }
}

/// Writes the dataset for (users, tags, seed) unless it is already there.
pub fn prepare(users: u64, tags: Option<usize>, seed: u64) -> Result<AudienceFiles, String> {
    let layout = Layout::new(tags);
    let dir = std::env::temp_dir().join("cohortdb-bench").join(format!(
        "audience-users{users}-tags{}-seed{seed}",
        layout.tag_count()
    ));
    let done = dir.join("COMPLETE");
    let mut files = AudienceFiles {
        dir,
        users,
        events: 0,
        layout,
        seed,
        tags,
    };
    if let Ok(text) = fs::read_to_string(&done) {
        files.events = text
            .trim()
            .strip_prefix("events ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{}: unreadable", done.display()))?;
        eprintln!("using the data in {}", files.dir.display());
        return Ok(files);
    }
    fs::create_dir_all(&files.dir).map_err(|e| format!("{}: {e}", files.dir.display()))?;
    eprintln!(
        "generating {users} users with {} tags (seed {seed}) into {}",
        files.layout.tag_count(),
        files.dir.display()
    );
    let mut sink = ParquetSink::new(&files)?;
    generate(users, seed, &files.layout, &mut sink)?;
    files.events = sink.finish()?;
    fs::write(&done, format!("events {}\n", files.events)).map_err(|e| e.to_string())?;
    Ok(files)
}

/// Writes users and events as Parquet, a batch at a time.
struct ParquetSink {
    users_schema: SchemaRef,
    events_schema: SchemaRef,
    users: FileWriter,
    events: FileWriter,
    /// Each attribute's values by rank, written once.
    values: Vec<Vec<String>>,
    user_id: Int64Builder,
    attributes: Vec<StringBuilder>,
    vip: BooleanBuilder,
    event_user: Int64Builder,
    event_type: StringBuilder,
    event_ts: TimestampMicrosecondBuilder,
    event_rows: u64,
}

impl ParquetSink {
    fn new(files: &AudienceFiles) -> Result<ParquetSink, String> {
        let users_schema =
            table_schema(&files.layout.users_columns()).map_err(|e| e.to_string())?;
        let events_schema = table_schema(&Layout::events_columns()).map_err(|e| e.to_string())?;
        let create = |path: PathBuf, schema: &SchemaRef| {
            FileWriter::create(&path, FileFormat::Parquet, &CsvOptions::default(), schema)
                .map_err(|e| e.to_string())
        };
        Ok(ParquetSink {
            users: create(files.users_path(), &users_schema)?,
            events: create(files.events_path(), &events_schema)?,
            users_schema,
            events_schema,
            values: files
                .layout
                .attributes
                .iter()
                .map(|a| (0..a.values).map(|r| a.value(r)).collect())
                .collect(),
            user_id: Int64Builder::new(),
            attributes: files
                .layout
                .attributes
                .iter()
                .map(|_| StringBuilder::new())
                .collect(),
            vip: BooleanBuilder::new(),
            event_user: Int64Builder::new(),
            event_type: StringBuilder::new(),
            event_ts: TimestampMicrosecondBuilder::new(),
            event_rows: 0,
        })
    }

    fn flush_users(&mut self) -> Result<(), String> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.user_id.finish())];
        columns.extend(
            self.attributes
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.vip.finish()));
        let batch = RecordBatch::try_new(Arc::clone(&self.users_schema), columns)
            .map_err(|e| e.to_string())?;
        self.users.write(&batch).map_err(|e| e.to_string())
    }

    fn flush_events(&mut self) -> Result<(), String> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_user.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.event_ts.finish()),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&self.events_schema), columns)
            .map_err(|e| e.to_string())?;
        self.events.write(&batch).map_err(|e| e.to_string())
    }

    /// Writes what is left and closes both files; returns the events written.
    fn finish(mut self) -> Result<u64, String> {
        if !self.user_id.is_empty() {
            self.flush_users()?;
        }
        if !self.event_user.is_empty() {
            self.flush_events()?;
        }
        self.users.finish().map_err(|e| e.to_string())?;
        self.events.finish().map_err(|e| e.to_string())?;
        Ok(self.event_rows)
    }
}

impl Sink for ParquetSink {
    fn user(&mut self, ordinal: u32, ranks: &[u16], vip: bool) -> Result<(), String> {
        self.user_id.append_value(i64::from(ordinal) + 1);
        for ((builder, values), &rank) in self.attributes.iter_mut().zip(&self.values).zip(ranks) {
            builder.append_value(&values[usize::from(rank)]);
        }
        self.vip.append_value(vip);
        if self.user_id.len() == BATCH_ROWS {
            self.flush_users()?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        ordinal: u32,
        event_type: u8,
        _day: i32,
        micros: i64,
    ) -> Result<(), String> {
        self.event_user.append_value(i64::from(ordinal) + 1);
        self.event_type
            .append_value(EVENT_TYPES[usize::from(event_type)].0);
        self.event_ts.append_value(micros);
        self.event_rows += 1;
        if self.event_user.len() == BATCH_ROWS {
            self.flush_events()?;
        }
        Ok(())
    }
}

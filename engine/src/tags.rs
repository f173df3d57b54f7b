//! The tag store: named sets of users as roaring bitmaps over user-key
//! ordinals ([`crate::users`]), and the view of them an audience expression
//! is evaluated over (docs/format.md § Tags).
//!
//! Two kinds of tags:
//! - **column tags**, kept by a table's tag index ([`TableTags`]): every table
//!   with a `USER KEY` column has one, holding which users have a live row
//!   (what `NOT` is relative to) and, for each column named by `CREATE TAG
//!   INDEX`, one bitmap per distinct value (`city=beijing`), per day too when
//!   the index is time-bucketed (`... TIME ts BY DAY`). They are kept current
//!   by the changes that write the table: appended rows add their users; for
//!   deleted rows, the users they belonged to are looked up again in the rows
//!   left, so a user leaves a tag only with the last row that gave it.
//! - **stored tags** ([`StoredTag`]): a set written whole, by a query (`CREATE
//!   TAG t AS SELECT ...`), an audience, a bitmap, or a frozen segment; and
//!   **segments** kept as their audience expression and evaluated when used.
//!
//! Everything here is a function of the changes applied, so replaying the log
//! after the manifest rebuilds exactly what was in memory: a tag can never be
//! out of step with its table. Checkpoints write tag files ([`write_file`]);
//! their bitmaps are read lazily from a memory map, each on first use.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType,
};
use bytes::Bytes;
use roaring::{MultiOps, RoaringBitmap};
use serde::{Deserialize, Serialize};

use crate::audience::{self, Audience, CompareOp, Sets, TagSource, Term, Value, Window};
use crate::durable;
use crate::error::{Error, Result};
use crate::framing;
use crate::frozen::Frozen;
use crate::io::Storage;
use crate::types::ColumnType;
use crate::users::Dictionary;

/// A set of users, in memory or (until first used) in a tag file.
#[derive(Debug, Clone)]
pub struct Bits {
    len: u64,
    inner: Arc<BitsInner>,
}

#[derive(Debug)]
enum BitsInner {
    Loaded {
        bitmap: RoaringBitmap,
        /// Its portable bytes, written on first use by audience evaluation.
        frozen: OnceLock<Frozen>,
    },
    /// Portable roaring bytes in a memory-mapped tag file, read on first use.
    Mapped {
        bytes: Bytes,
        crc32c: u32,
        path: Arc<PathBuf>,
        /// The bytes read in place (audience evaluation)...
        frozen: OnceLock<Frozen>,
        /// ...and read into a bitmap (everything else).
        loaded: OnceLock<RoaringBitmap>,
    },
}

impl Default for Bits {
    fn default() -> Bits {
        Bits::from(RoaringBitmap::new())
    }
}

impl From<RoaringBitmap> for Bits {
    fn from(bitmap: RoaringBitmap) -> Bits {
        Bits {
            len: bitmap.len(),
            inner: Arc::new(BitsInner::Loaded {
                bitmap,
                frozen: OnceLock::new(),
            }),
        }
    }
}

impl Bits {
    /// How many users: known without reading the bitmap.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size of its portable bytes: known without reading the bitmap.
    pub fn bytes(&self) -> u64 {
        match self.inner.as_ref() {
            BitsInner::Loaded { bitmap, .. } => bitmap.serialized_size() as u64,
            BitsInner::Mapped { bytes, .. } => bytes.len() as u64,
        }
    }

    /// The bitmap, read from its file (checksum verified) on first use.
    pub fn get(&self) -> Result<&RoaringBitmap> {
        match self.inner.as_ref() {
            BitsInner::Loaded { bitmap, .. } => Ok(bitmap),
            BitsInner::Mapped { bytes, loaded, .. } => {
                if let Some(bitmap) = loaded.get() {
                    return Ok(bitmap);
                }
                let frozen = self.frozen()?;
                let bitmap = RoaringBitmap::deserialize_from(&bytes[..])
                    .map_err(|e| self.corrupted(format!("not a portable roaring bitmap: {e}")))?;
                if bitmap.len() != frozen.len() {
                    return Err(self.corrupted(format!(
                        "a bitmap holds {} users where its containers say {}",
                        bitmap.len(),
                        frozen.len()
                    )));
                }
                Ok(loaded.get_or_init(|| bitmap))
            }
        }
    }

    /// The bitmap read in place from its portable bytes: a tag file's, its
    /// checksum and directory verified on first use, or, for a bitmap in
    /// memory, written once.
    pub fn frozen(&self) -> Result<&Frozen> {
        match self.inner.as_ref() {
            BitsInner::Loaded { bitmap, frozen } => {
                Ok(frozen.get_or_init(|| Frozen::from_bitmap(bitmap)))
            }
            BitsInner::Mapped {
                bytes,
                crc32c,
                frozen,
                ..
            } => {
                if let Some(f) = frozen.get() {
                    return Ok(f);
                }
                if crc32c::crc32c(bytes) != *crc32c {
                    return Err(self.corrupted("a bitmap's checksum does not match".to_string()));
                }
                let f = Frozen::parse(bytes.clone())
                    .map_err(|e| self.corrupted(format!("not a portable roaring bitmap: {e}")))?;
                if f.len() != self.len {
                    return Err(self.corrupted(format!(
                        "a bitmap holds {} users where the directory says {}",
                        f.len(),
                        self.len
                    )));
                }
                Ok(frozen.get_or_init(|| f))
            }
        }
    }

    fn corrupted(&self, reason: String) -> Error {
        let path = match self.inner.as_ref() {
            BitsInner::Mapped { path, .. } => path.as_ref().clone(),
            BitsInner::Loaded { .. } => PathBuf::new(),
        };
        Error::Corrupted { path, reason }
    }

    /// Whether the bitmap is in memory (not waiting in a file).
    fn is_loaded(&self) -> bool {
        match self.inner.as_ref() {
            BitsInner::Loaded { .. } => true,
            BitsInner::Mapped { loaded, .. } => loaded.get().is_some(),
        }
    }

    /// Adds `more`: in place when this bitmap is in memory and not shared
    /// (so adding batch after batch to an index being built copies each
    /// bitmap at most once), into a new bitmap otherwise.
    fn insert_all(&mut self, more: &RoaringBitmap) -> Result<()> {
        if more.is_empty() {
            return Ok(());
        }
        if let Some(BitsInner::Loaded { bitmap, frozen }) = Arc::get_mut(&mut self.inner) {
            *bitmap |= more;
            frozen.take();
            self.len = bitmap.len();
            return Ok(());
        }
        *self = Bits::from(self.get()? | more);
        Ok(())
    }

    /// `self − remove ∪ add`.
    fn replace(&self, remove: &RoaringBitmap, add: &RoaringBitmap) -> Result<Bits> {
        let current = self.get()?;
        if current.is_disjoint(remove) && add.is_subset(current) {
            return Ok(self.clone());
        }
        Ok(Bits::from((current - remove) | add))
    }
}

/// A value of an indexed column, ordered within its column's type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    Bool(bool),
    /// Integers, and dates as days since 1970-01-01.
    Int(i64),
    /// Floating point and decimal values, by [`OrderedFloat`].
    Float(OrderedFloat),
    Text(String),
}

/// An `f64` with a total order (IEEE 754 totalOrder), kept as the text of its
/// shortest round-tripping form in files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct OrderedFloat(pub f64);

impl PartialEq for OrderedFloat {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for OrderedFloat {}
impl PartialOrd for OrderedFloat {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedFloat {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for OrderedFloat {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}
impl From<OrderedFloat> for String {
    fn from(value: OrderedFloat) -> String {
        format!("{:?}", value.0)
    }
}
impl TryFrom<String> for OrderedFloat {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
        text.parse()
            .map(OrderedFloat)
            .map_err(|e| format!("{text:?}: {e}"))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Bool(v) => write!(f, "{v}"),
            Key::Int(v) => write!(f, "{v}"),
            Key::Float(v) => write!(f, "{}", v.0),
            Key::Text(v) => f.write_str(v),
        }
    }
}

/// Whether a column of this type can be a tag index column.
pub fn indexable(column_type: ColumnType) -> bool {
    !matches!(
        column_type,
        ColumnType::Bytea | ColumnType::Timestamp | ColumnType::TimestampTz
    )
}

/// The key `value` (as written in an audience expression) names in a column
/// of type `column_type`; `None` when it cannot be such a value.
pub fn parse_key(column_type: ColumnType, value: &str) -> Option<Key> {
    Some(match column_type {
        ColumnType::Boolean => Key::Bool(match value.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => true,
            "false" | "f" | "no" | "n" | "off" | "0" => false,
            _ => return None,
        }),
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
            Key::Int(value.parse().ok()?)
        }
        ColumnType::Real | ColumnType::Double | ColumnType::Decimal { .. } => {
            let v: f64 = value.parse().ok()?;
            if v.is_nan() {
                return None;
            }
            Key::Float(OrderedFloat(v))
        }
        ColumnType::Text => Key::Text(value.to_string()),
        ColumnType::Date => Key::Int(i64::from(parse_date(value)?)),
        ColumnType::Bytea | ColumnType::Timestamp | ColumnType::TimestampTz => return None,
    })
}

/// Today, in days since 1970-01-01 UTC: where `DURING LAST n DAYS` ends.
pub fn today() -> i32 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (seconds / 86_400) as i32
}

/// Now, in microseconds since 1970 UTC: when a tag, model or recommender was
/// made.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Days since 1970-01-01 of an ISO date `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<i32> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    i32::try_from(days_from_civil(year, month, day)).ok()
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The distinct keys of a column and, for each row, the index of its key
/// (`None` for NULL).
fn row_keys(column: &dyn Array) -> Result<(Vec<Key>, Vec<Option<u32>>)> {
    fn group<T: std::hash::Hash + Eq + Clone>(
        values: impl Iterator<Item = Option<T>>,
        key: impl Fn(T) -> Key,
    ) -> (Vec<Key>, Vec<Option<u32>>) {
        let mut seen: std::collections::HashMap<T, u32> = std::collections::HashMap::new();
        let mut keys = Vec::new();
        let rows = values
            .map(|v| {
                v.map(|v| {
                    *seen.entry(v.clone()).or_insert_with(|| {
                        keys.push(key(v));
                        (keys.len() - 1) as u32
                    })
                })
            })
            .collect();
        (keys, rows)
    }
    let float = |v: f64| Key::Float(OrderedFloat(v));
    Ok(match column.data_type() {
        DataType::Boolean => group(column.as_boolean().iter(), Key::Bool),
        DataType::Int16 => group(column.as_primitive::<Int16Type>().iter(), |v| {
            Key::Int(i64::from(v))
        }),
        DataType::Int32 => group(column.as_primitive::<Int32Type>().iter(), |v| {
            Key::Int(i64::from(v))
        }),
        DataType::Int64 => group(column.as_primitive::<Int64Type>().iter(), Key::Int),
        DataType::Date32 => group(column.as_primitive::<Date32Type>().iter(), |v| {
            Key::Int(i64::from(v))
        }),
        DataType::Float32 => group(
            column
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(|v| f64::from(v).to_bits())),
            |bits| float(f64::from_bits(bits)),
        ),
        DataType::Float64 => group(
            column
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(f64::to_bits)),
            |bits| float(f64::from_bits(bits)),
        ),
        DataType::Decimal128(_, scale) => {
            let divisor = 10f64.powi(i32::from(*scale));
            group(column.as_primitive::<Decimal128Type>().iter(), |v| {
                float(v as f64 / divisor)
            })
        }
        DataType::Utf8 => group(column.as_string::<i32>().iter(), |v: &str| {
            Key::Text(v.to_string())
        }),
        other => {
            return Err(Error::UnsupportedType(format!("{other} in a tag index")));
        }
    })
}

/// The day (since 1970-01-01, UTC) of each row of a time column.
fn row_days(column: &dyn Array) -> Result<Vec<Option<i32>>> {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    Ok(match column.data_type() {
        DataType::Date32 => column.as_primitive::<Date32Type>().iter().collect(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|v| v.map(|v| v.div_euclid(MICROS_PER_DAY) as i32))
            .collect(),
        other => {
            return Err(Error::UnsupportedType(format!(
                "{other} as the time of a tag index"
            )));
        }
    })
}

/// The users of one value of a column: all of them, and by day when the
/// index is time-bucketed.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub all: Bits,
    pub days: Arc<BTreeMap<i32, Bits>>,
}

/// One indexed column of a table and its values' users.
#[derive(Debug, Clone)]
pub struct ColumnTags {
    /// The column's position in the table.
    pub column: usize,
    pub name: String,
    pub column_type: ColumnType,
    pub values: Arc<ValueTags>,
}

/// The values of one indexed column and their users, in key order (read as
/// the map it derefs to), with the range levels and each user's value built
/// from them on first use. Any change through `DerefMut` drops both, so
/// they never outlive the values they were built from.
#[derive(Debug, Clone, Default)]
pub struct ValueTags {
    map: BTreeMap<Key, Entry>,
    levels: OnceLock<Arc<RangeLevels>>,
    user_values: OnceLock<Option<Arc<UserValues>>>,
}

impl std::ops::Deref for ValueTags {
    type Target = BTreeMap<Key, Entry>;
    fn deref(&self) -> &BTreeMap<Key, Entry> {
        &self.map
    }
}

impl std::ops::DerefMut for ValueTags {
    fn deref_mut(&mut self) -> &mut BTreeMap<Key, Entry> {
        self.levels = OnceLock::new();
        self.user_values = OnceLock::new();
        &mut self.map
    }
}

/// Each user's value of a column where no user has two (a column of a table
/// with one row per user): the value's rank in key order, by ordinal
/// ([`NO_VALUE`] for users without one). A profile counts an audience's
/// users by value with it, one lookup per user, instead of intersecting
/// the audience with every value's bitmap. One byte per user for columns of
/// fewer than 255 values, two for more (a profile's lookups read the array
/// at the audience's users, so its size is what they cost); built in memory
/// when a profile first needs it (one pass over the values' users), not
/// stored.
#[derive(Debug)]
pub struct UserValues {
    ranks: Ranks,
}

/// The ranks by ordinal; each width's largest number means no value.
#[derive(Debug)]
enum Ranks {
    Narrow(Vec<u8>),
    Wide(Vec<u16>),
}

/// The rank of users without a value.
pub const NO_VALUE: u16 = u16::MAX;

/// A rank's width ([`Ranks`]).
trait Rank: Copy + PartialEq {
    const NONE: Self;
    fn of(rank: usize) -> Self;
    fn wide(self) -> u16;
}

impl Rank for u8 {
    const NONE: u8 = u8::MAX;
    fn of(rank: usize) -> u8 {
        rank as u8
    }
    fn wide(self) -> u16 {
        if self == u8::NONE {
            NO_VALUE
        } else {
            u16::from(self)
        }
    }
}

impl Rank for u16 {
    const NONE: u16 = NO_VALUE;
    fn of(rank: usize) -> u16 {
        rank as u16
    }
    fn wide(self) -> u16 {
        self
    }
}

impl UserValues {
    /// `None` when some user has two values or there are more values than
    /// ranks (65,535).
    fn build(values: &BTreeMap<Key, Entry>) -> Result<Option<UserValues>> {
        let ranks = if values.len() < usize::from(u8::NONE) {
            Self::ranks::<u8>(values)?.map(Ranks::Narrow)
        } else if values.len() <= usize::from(NO_VALUE) {
            Self::ranks::<u16>(values)?.map(Ranks::Wide)
        } else {
            None
        };
        Ok(ranks.map(|ranks| UserValues { ranks }))
    }

    /// Each user's rank, `None` when some user has two values.
    fn ranks<R: Rank>(values: &BTreeMap<Key, Entry>) -> Result<Option<Vec<R>>> {
        let mut end = 0;
        for entry in values.values() {
            end = end.max(entry.all.frozen()?.end());
        }
        let mut ranks = vec![R::NONE; end as usize];
        for (rank, entry) in values.values().enumerate() {
            let mut twice = false;
            entry.all.frozen()?.for_each(|user| {
                let slot = &mut ranks[user as usize];
                twice |= *slot != R::NONE;
                *slot = R::of(rank);
            });
            if twice {
                return Ok(None);
            }
        }
        Ok(Some(ranks))
    }

    /// The rank of `user`'s value, [`NO_VALUE`] if none.
    pub fn rank(&self, user: u32) -> u16 {
        let user = user as usize;
        match &self.ranks {
            Ranks::Narrow(ranks) => ranks.get(user).map_or(NO_VALUE, |r| r.wide()),
            Ranks::Wide(ranks) => ranks.get(user).map_or(NO_VALUE, |r| r.wide()),
        }
    }

    /// Adds one to `counts[rank]` for each of `users` that has a value (a
    /// rank beyond `counts` is not counted).
    pub fn count(&self, users: impl Iterator<Item = u32>, counts: &mut [u64]) {
        for user in users {
            if let Some(count) = counts.get_mut(usize::from(self.rank(user))) {
                *count += 1;
            }
        }
    }
}

/// Consecutive values a range bucket unions.
const RANGE_FANOUT: usize = 32;

impl ValueTags {
    /// The bitmaps whose union is the users of the values in `range`: the
    /// values' own when there are at most [`RANGE_FANOUT`] of them (an
    /// equality never builds the levels), otherwise buckets of the range
    /// levels and the values at the range's two ends.
    fn covering(&self, range: (Bound<Key>, Bound<Key>)) -> Result<Vec<&Bits>> {
        let values = self.map.range(range.clone()).map(|(_, e)| &e.all);
        if values.clone().nth(RANGE_FANOUT).is_none() {
            return Ok(values.collect());
        }
        let levels = match self.levels.get() {
            Some(levels) => levels,
            None => {
                let built = RangeLevels::build(&self.map, RANGE_FANOUT)?;
                self.levels.get_or_init(|| Arc::new(built))
            }
        };
        let (from, to) = levels.ranks(range);
        Ok(levels.covering(from, to))
    }

    /// Each user's value, built on first use; `None` when some user has
    /// two ([`UserValues`]).
    pub fn user_values(&self) -> Result<Option<&UserValues>> {
        if let Some(built) = self.user_values.get() {
            return Ok(built.as_deref());
        }
        let built = UserValues::build(&self.map)?.map(Arc::new);
        Ok(self.user_values.get_or_init(|| built).as_deref())
    }
}

/// A bucketed index over a column's values in key order, for range terms
/// (`age BETWEEN 25 AND 34`, `spend > 1000`) on columns with many values.
/// Level 0 is the values' own bitmaps; each bitmap of level `l + 1` is the
/// union of `fanout` consecutive ones of level `l`, up to a level of at most
/// `fanout` bitmaps. A range of `n` values is the union of at most
/// `2 · (fanout − 1)` bitmaps per level instead of `n`. Built in memory when
/// a range first needs it (one union per value per level), not stored.
#[derive(Debug)]
struct RangeLevels {
    keys: Vec<Key>,
    fanout: usize,
    levels: Vec<Vec<Bits>>,
}

impl RangeLevels {
    fn build(values: &BTreeMap<Key, Entry>, fanout: usize) -> Result<RangeLevels> {
        let keys: Vec<Key> = values.keys().cloned().collect();
        let mut levels = vec![values.values().map(|e| e.all.clone()).collect::<Vec<_>>()];
        while let Some(below) = levels.last().filter(|l| l.len() > fanout) {
            let above = below
                .chunks(fanout)
                .map(|chunk| {
                    let parts = chunk.iter().map(Bits::get).collect::<Result<Vec<_>>>()?;
                    Ok(Bits::from(parts.into_iter().union()))
                })
                .collect::<Result<Vec<_>>>()?;
            levels.push(above);
        }
        Ok(RangeLevels {
            keys,
            fanout,
            levels,
        })
    }

    /// The ranks (positions in key order) of the values in `range`, as
    /// `from..to`.
    fn ranks(&self, (low, high): (Bound<Key>, Bound<Key>)) -> (usize, usize) {
        let from = match &low {
            Bound::Included(k) => self.keys.partition_point(|x| x < k),
            Bound::Excluded(k) => self.keys.partition_point(|x| x <= k),
            Bound::Unbounded => 0,
        };
        let to = match &high {
            Bound::Included(k) => self.keys.partition_point(|x| x <= k),
            Bound::Excluded(k) => self.keys.partition_point(|x| x < k),
            Bound::Unbounded => self.keys.len(),
        };
        (from, to.max(from))
    }

    /// The fewest bitmaps, level by level, whose union is values
    /// `from..to`: at each level the ends that do not fill a bucket of the
    /// level above, then the level above for the rest.
    fn covering(&self, mut from: usize, mut to: usize) -> Vec<&Bits> {
        let mut out = Vec::new();
        for (l, level) in self.levels.iter().enumerate() {
            if from >= to {
                break;
            }
            let up_from = from.div_ceil(self.fanout);
            // The last bucket of a level may hold fewer than `fanout`.
            let up_to = if to == level.len() {
                level.len().div_ceil(self.fanout)
            } else {
                to / self.fanout
            };
            if l + 1 == self.levels.len() || up_from >= up_to {
                out.extend(&level[from..to]);
                break;
            }
            out.extend(&level[from..up_from * self.fanout]);
            out.extend(&level[(up_to * self.fanout).min(to)..to]);
            (from, to) = (up_from, up_to);
        }
        out
    }
}

/// The tag index of a table with a user key.
#[derive(Debug, Clone)]
pub struct TableTags {
    pub table_id: u64,
    pub table_name: String,
    /// The user-key column's position.
    pub user_column: usize,
    /// Users with a live row.
    pub present: Bits,
    pub columns: Vec<ColumnTags>,
    /// The time column's position and name, when values are also kept by day.
    pub time: Option<(usize, String)>,
    /// The file holding this index as of the last checkpoint, and whether
    /// the index changed since.
    pub file: Option<TagFile>,
    pub dirty: bool,
}

/// Rows of a table as the tag index reads them: the user ordinal of each row
/// and the columns it indexes (by table position).
pub(crate) struct IndexedRows<'a> {
    pub ordinals: &'a [u32],
    pub batch: &'a RecordBatch,
}

impl TableTags {
    pub fn new(table_id: u64, table_name: &str, user_column: usize) -> TableTags {
        TableTags {
            table_id,
            table_name: table_name.to_string(),
            user_column,
            present: Bits::default(),
            columns: Vec::new(),
            time: None,
            file: None,
            dirty: true,
        }
    }

    /// The table columns a maintenance read needs: the user key, every
    /// indexed column and the time column, ascending.
    pub(crate) fn read_columns(&self) -> Vec<usize> {
        let mut columns = vec![self.user_column];
        columns.extend(self.columns.iter().map(|c| c.column));
        columns.extend(self.time.as_ref().map(|(c, _)| *c));
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    /// What `rows` add: their users to `present` (when `presence`) and to
    /// the tags of their values in `columns` (indexes into `self.columns`).
    /// `batch` holds the columns of [`TableTags::read_columns`], in order.
    pub(crate) fn add(
        &mut self,
        rows: &IndexedRows<'_>,
        presence: bool,
        columns: &[usize],
    ) -> Result<()> {
        let at = self.positions_in_batch();
        if presence {
            self.present
                .insert_all(&sorted_set(rows.ordinals.to_vec()))?;
        }
        let days = match &self.time {
            Some((c, _)) => Some(row_days(rows.batch.column(at(*c)).as_ref())?),
            None => None,
        };
        for &i in columns {
            let column = &mut self.columns[i];
            let (keys, of_row) = row_keys(rows.batch.column(at(column.column)).as_ref())?;
            let mut users: Vec<Vec<u32>> = vec![Vec::new(); keys.len()];
            let mut by_day: Vec<BTreeMap<i32, Vec<u32>>> = vec![BTreeMap::new(); keys.len()];
            for (row, key) in of_row.iter().enumerate() {
                let Some(key) = key else { continue };
                let ordinal = rows.ordinals[row];
                users[*key as usize].push(ordinal);
                if let Some(days) = &days
                    && let Some(day) = days[row]
                {
                    by_day[*key as usize].entry(day).or_default().push(ordinal);
                }
            }
            let values = Arc::make_mut(&mut column.values);
            for ((key, users), by_day) in keys.into_iter().zip(users).zip(by_day) {
                let entry = values.entry(key).or_default();
                entry.all.insert_all(&sorted_set(users))?;
                if !by_day.is_empty() {
                    let days = Arc::make_mut(&mut entry.days);
                    for (day, users) in by_day {
                        days.entry(day)
                            .or_default()
                            .insert_all(&sorted_set(users))?;
                    }
                }
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// Recomputes the tags of `users` (whose rows were deleted) from `left`,
    /// every live row of those users after the deletion.
    pub(crate) fn recompute(
        &mut self,
        users: &RoaringBitmap,
        left: &[IndexedRows<'_>],
    ) -> Result<()> {
        let all_columns: Vec<usize> = (0..self.columns.len()).collect();
        let mut still = self.emptied();
        for rows in left {
            still.add(rows, true, &all_columns)?;
        }
        self.present = self.present.replace(users, still.present.get()?)?;
        for (column, kept) in self.columns.iter_mut().zip(&still.columns) {
            let values = Arc::make_mut(&mut column.values);
            for (key, entry) in values.iter_mut() {
                let kept = kept.values.get(key);
                let empty = RoaringBitmap::new();
                let kept_all = match kept {
                    Some(k) => k.all.get()?,
                    None => &empty,
                };
                entry.all = entry.all.replace(users, kept_all)?;
                if !entry.days.is_empty() {
                    let days = Arc::make_mut(&mut entry.days);
                    for (day, bits) in days.iter_mut() {
                        let kept_day = match kept.and_then(|k| k.days.get(day)) {
                            Some(b) => b.get()?,
                            None => &empty,
                        };
                        *bits = bits.replace(users, kept_day)?;
                    }
                    days.retain(|_, b| !b.is_empty());
                }
            }
            values.retain(|_, e| !e.all.is_empty());
        }
        self.dirty = true;
        Ok(())
    }

    /// The same index with no users.
    fn emptied(&self) -> TableTags {
        TableTags {
            present: Bits::default(),
            columns: self
                .columns
                .iter()
                .map(|c| ColumnTags {
                    values: Arc::default(),
                    ..c.clone()
                })
                .collect(),
            ..self.clone()
        }
    }

    /// Where each table column is in a batch of [`TableTags::read_columns`].
    fn positions_in_batch(&self) -> impl Fn(usize) -> usize + use<> {
        let read = self.read_columns();
        move |column| {
            read.binary_search(&column)
                .expect("indexed columns are read")
        }
    }

    fn all_bits(&self) -> impl Iterator<Item = &Bits> {
        std::iter::once(&self.present).chain(self.columns.iter().flat_map(|c| {
            c.values
                .values()
                .flat_map(|e| std::iter::once(&e.all).chain(e.days.values()))
        }))
    }
}

/// A set of users from `ordinals` (any order, repeats allowed).
fn sorted_set(mut ordinals: Vec<u32>) -> RoaringBitmap {
    ordinals.sort_unstable();
    ordinals.dedup();
    RoaringBitmap::from_sorted_iter(ordinals).expect("sorted and deduplicated")
}

/// Where a stored tag's users came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagSourceKind {
    /// `CREATE TAG t AS <query>`: refreshable.
    Query,
    /// `CREATE TAG t AS AUDIENCE '<expr>'`: the audience when created.
    Audience,
    /// `CREATE TAG t FROM BITMAP <expr>`.
    Bitmap,
    /// `CREATE SEGMENT s AS '<expr>'`: evaluated whenever used.
    Segment,
    /// `CREATE SEGMENT s AS '<expr>' FROZEN`: the audience when created.
    Frozen,
}

impl TagSourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TagSourceKind::Query => "query",
            TagSourceKind::Audience => "audience",
            TagSourceKind::Bitmap => "bitmap",
            TagSourceKind::Segment => "segment",
            TagSourceKind::Frozen => "frozen segment",
        }
    }

    /// Whether this is a segment (listed as one; dropped with DROP SEGMENT).
    pub fn is_segment(self) -> bool {
        matches!(self, TagSourceKind::Segment | TagSourceKind::Frozen)
    }
}

/// Who a stored tag holds: external user ids (ids not seen before get
/// ordinals) or ordinals (a bitmap value).
#[derive(Debug, Clone)]
pub enum TagUsers {
    Ids(ArrayRef),
    Ordinals(RoaringBitmap),
}

/// A tag or segment by name.
#[derive(Debug, Clone)]
pub struct StoredTag {
    pub id: u64,
    pub name: String,
    pub source: TagSourceKind,
    /// The query or audience expression it was made from (empty for a bitmap).
    pub definition: String,
    /// Its users (empty for a dynamic segment).
    pub bits: Bits,
    /// When its users were last computed, microseconds since 1970 UTC.
    pub refreshed_micros: i64,
    pub file: Option<TagFile>,
    pub dirty: bool,
}

impl StoredTag {
    /// After a checkpoint wrote this tag to `path`: its bitmap in memory
    /// gives way to the same users read in place from the file, as an
    /// index's do ([`TableTags::remap`]).
    pub(crate) fn remap(
        &mut self,
        path: &Path,
        entries: Vec<(DirectoryEntry, Bits)>,
    ) -> Result<()> {
        match entries.as_slice() {
            [(_, bits)] if bits.len() == self.bits.len() => {
                self.bits = bits.clone();
                Ok(())
            }
            _ => Err(Error::Corrupted {
                path: path.to_path_buf(),
                reason: "a stored tag reads back other than it was written".to_string(),
            }),
        }
    }
}

/// The manifest's record of a tag file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagFile {
    pub generation: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

/// Everything readers need to evaluate audiences: the dictionary (up to the
/// ordinals assigned by the state it was taken from), every table's tag index
/// and every stored tag and segment.
#[derive(Debug, Clone, Default)]
pub struct Tags {
    pub dictionary: Option<Arc<Dictionary>>,
    /// Ordinals assigned as of this state.
    pub users: u32,
    /// By table id.
    pub tables: BTreeMap<u64, Arc<TableTags>>,
    /// By name.
    pub stored: BTreeMap<String, Arc<StoredTag>>,
    /// Stored lookalike models, by name.
    pub models: BTreeMap<String, Arc<crate::lookalike::StoredModel>>,
    /// Recommenders, by name.
    pub recommenders: BTreeMap<String, Arc<crate::recommend::StoredRecommender>>,
    /// The suppression tag (privacy.rs).
    pub privacy: crate::privacy::Privacy,
    /// Views, by name (views.rs).
    pub views: BTreeMap<String, Arc<crate::views::View>>,
}

impl Tags {
    /// The tag index with column `name` (`table.column` or a column name only
    /// one index has).
    pub fn column(&self, name: &str) -> Result<(&TableTags, &ColumnTags)> {
        let (table, column) = match name.rsplit_once('.') {
            Some((table, column)) => (Some(table), column),
            None => (None, name),
        };
        let mut found = self.tables.values().flat_map(|t| {
            t.columns
                .iter()
                .filter(move |c| c.name == column && table.is_none_or(|n| n == t.table_name))
                .map(move |c| (t.as_ref(), c))
        });
        let first = found.next();
        if let (Some((a, _)), Some((b, _))) = (first, found.next()) {
            return Err(Error::UnknownTag(format!(
                "column \"{column}\" is indexed in tables \"{}\" and \"{}\"; write table.column",
                a.table_name, b.table_name
            )));
        }
        first.ok_or_else(|| {
            Error::UnknownTag(format!(
                "no tag index has column \"{name}\" (CREATE TAG INDEX ON table ({column}))"
            ))
        })
    }

    /// Every user: those with a live row in any table with a user key.
    pub fn universe(&self) -> Result<RoaringBitmap> {
        let mut all = RoaringBitmap::new();
        for table in self.tables.values() {
            all |= table.present.get()?;
        }
        Ok(all)
    }

    /// An evaluator of audience expressions as of `today` (days since
    /// 1970-01-01 UTC, for `DURING LAST n DAYS`).
    pub fn source(&self, today: i32) -> TagSet<'_> {
        TagSet {
            tags: self,
            today,
            depth: 0,
        }
    }

    /// The external ids of `users` (ordinals, ascending), in ordinal order.
    pub fn user_ids(&self, users: impl IntoIterator<Item = u32>) -> Result<ArrayRef> {
        let dictionary = self.dictionary()?;
        Ok(dictionary.ids(users.into_iter().filter(|&o| o < self.users)))
    }

    /// The ordinal of each id of `ids` (`None` for NULL and unknown users).
    pub fn ordinals(&self, ids: &dyn Array) -> Result<Vec<Option<u32>>> {
        self.dictionary()?.lookup(ids, self.users)
    }

    /// Forgets ordinals the dictionary assigned beyond this state's (those of
    /// a change that failed).
    pub(crate) fn forget_unlogged_users(&self) {
        if let Some(dictionary) = &self.dictionary {
            dictionary.truncate(self.users);
        }
    }

    pub fn dictionary(&self) -> Result<&Arc<Dictionary>> {
        self.dictionary.as_ref().ok_or_else(|| {
            Error::UserKey(
                "no table has a user key yet (CREATE TABLE ... (id BIGINT USER KEY, ...))"
                    .to_string(),
            )
        })
    }
}

/// The users of an audience as a filter on a column of user ids: what
/// `in_audience(user_id, expr)` becomes when it is pushed into a scan. Row
/// groups whose ids all fall outside the audience's smallest and largest id
/// are skipped; each row read costs a dictionary lookup and a bitmap probe.
#[derive(Debug)]
pub struct UserFilter {
    tags: Arc<Tags>,
    users: RoaringBitmap,
    /// The audience's smallest and largest id, as the column's type.
    bounds: Option<(ArrayRef, ArrayRef)>,
}

impl UserFilter {
    /// A filter keeping the rows of `users`, for a column of `column_type`.
    pub fn new(
        tags: Arc<Tags>,
        users: RoaringBitmap,
        column_type: &DataType,
    ) -> Result<UserFilter> {
        let dictionary = tags.dictionary()?;
        let bounds = dictionary
            .id_bounds(users.iter().filter(|&o| o < tags.users))
            .and_then(|(low, high)| {
                let low = arrow::compute::cast(&low, column_type).ok()?;
                let high = arrow::compute::cast(&high, column_type).ok()?;
                (low.null_count() == 0 && high.null_count() == 0).then_some((low, high))
            });
        Ok(UserFilter {
            tags,
            users,
            bounds,
        })
    }

    /// Whether each id of `ids` is one of the users (NULL for a NULL id).
    pub fn matches(&self, ids: &dyn Array) -> Result<arrow::array::BooleanArray> {
        let ids = match ids.data_type() {
            DataType::Int16 | DataType::Int32 => arrow::compute::cast(ids, &DataType::Int64)?,
            _ => arrow::array::make_array(ids.to_data()),
        };
        let ordinals = self.tags.ordinals(ids.as_ref())?;
        Ok(ordinals
            .iter()
            .enumerate()
            .map(|(row, o)| (!ids.is_null(row)).then(|| o.is_some_and(|o| self.users.contains(o))))
            .collect())
    }

    /// Whether the audience has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The audience's smallest and largest id, when it has users (and they
    /// are values of the column's type).
    pub fn bounds(&self) -> Option<&(ArrayRef, ArrayRef)> {
        self.bounds.as_ref()
    }
}

/// Keys from one bound to another, as `BTreeMap::range` takes them.
type KeyRange = (Bound<Key>, Bound<Key>);

/// A [`Tags`] view that answers the terms of an audience expression.
pub struct TagSet<'a> {
    tags: &'a Tags,
    today: i32,
    /// Segments being expanded (a segment naming itself is an error).
    depth: usize,
}

/// How deep segments may name segments.
const SEGMENT_DEPTH_MAX: usize = 16;

/// The families of tags an audience expression reads: indexed columns, as
/// (table id, column), and stored tags by name (a dynamic segment's own reads
/// included).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TagsRead {
    pub columns: BTreeSet<(u64, String)>,
    pub stored: BTreeSet<String>,
}

impl TagSet<'_> {
    /// What `audience` reads.
    pub fn tags_read(&self, audience: &Audience) -> Result<TagsRead> {
        let mut read = TagsRead::default();
        self.collect_read(audience, &mut read, 0)?;
        Ok(read)
    }

    fn collect_read(&self, audience: &Audience, read: &mut TagsRead, depth: usize) -> Result<()> {
        let term = match audience {
            Audience::Term(term) | Audience::During(term, _) => term,
            Audience::Not(inner) => return self.collect_read(inner, read, depth),
            Audience::And(parts) | Audience::Or(parts) => {
                for part in parts {
                    self.collect_read(part, read, depth)?;
                }
                return Ok(());
            }
        };
        let column = match term {
            Term::Tag(name) => {
                if let Some(tag) = self.tags.stored.get(name) {
                    read.stored.insert(name.clone());
                    if tag.source == TagSourceKind::Segment {
                        if depth >= SEGMENT_DEPTH_MAX {
                            return Err(Error::UnknownTag(format!(
                                "segment \"{name}\" names itself, directly or through other segments"
                            )));
                        }
                        let inner = audience::parse(&tag.definition)?;
                        self.collect_read(&inner, read, depth + 1)?;
                    }
                    return Ok(());
                }
                // A boolean column's name alone.
                name
            }
            Term::Equals { column, .. }
            | Term::In { column, .. }
            | Term::Compare { column, .. }
            | Term::Between { column, .. } => column,
        };
        let (table, tags) = self.tags.column(column)?;
        read.columns.insert((table.table_id, tags.name.clone()));
        Ok(())
    }

    /// The day range of a window, inclusive.
    fn days(&self, window: &Window) -> Result<(i32, i32)> {
        match window {
            Window::LastDays(n) => {
                let n = i32::try_from(*n).unwrap_or(i32::MAX).max(1);
                Ok((self.today.saturating_sub(n - 1), self.today))
            }
            Window::Between { start, end } => {
                let day = |v: &Value| {
                    parse_date(&v.0).ok_or_else(|| {
                        Error::UnknownTag(format!(
                            "{:?} is not a date (YYYY-MM-DD) in a DURING window",
                            v.0
                        ))
                    })
                };
                Ok((day(start)?, day(end)?))
            }
        }
    }

    /// The bitmaps of the column values in `range`, of the days of `window`
    /// if given.
    fn selected(
        &self,
        column: &str,
        window: Option<&Window>,
        range: (Bound<Key>, Bound<Key>),
    ) -> Result<Vec<&Bits>> {
        let (table, tags) = self.tags.column(column)?;
        let days = match window {
            None => None,
            Some(w) => {
                if table.time.is_none() {
                    return Err(Error::UnknownTag(format!(
                        "column \"{column}\" is not indexed by time (CREATE TAG INDEX ON {} (...) TIME column BY DAY)",
                        table.table_name
                    )));
                }
                Some(self.days(w)?)
            }
        };
        let Some((from, to)) = days else {
            return tags.values.covering(range);
        };
        let mut bits = Vec::new();
        if from <= to {
            for (_, entry) in tags.values.range(range) {
                bits.extend(entry.days.range(from..=to).map(|(_, b)| b));
            }
        }
        Ok(bits)
    }

    /// The column and ranges of keys a term selects; `None` for a tag or
    /// segment name.
    fn range(&self, term: &Term) -> Result<Option<(String, Vec<KeyRange>)>> {
        use Bound::{Excluded, Included, Unbounded};
        let one = |key: Key| (Included(key.clone()), Included(key));
        Ok(Some(match term {
            Term::Tag(_) => return Ok(None),
            Term::Equals { column, value } => (column.clone(), vec![one(self.key(column, value)?)]),
            Term::In { column, values } => (
                column.clone(),
                values
                    .iter()
                    .map(|v| Ok(one(self.key(column, v)?)))
                    .collect::<Result<_>>()?,
            ),
            Term::Compare { column, op, value } => {
                let key = self.key(column, value)?;
                let range = match op {
                    CompareOp::Lt => (Unbounded, Excluded(key)),
                    CompareOp::LtEq => (Unbounded, Included(key)),
                    CompareOp::Gt => (Excluded(key), Unbounded),
                    CompareOp::GtEq => (Included(key), Unbounded),
                };
                (column.clone(), vec![range])
            }
            Term::Between { column, low, high } => {
                let (low, high) = (self.key(column, low)?, self.key(column, high)?);
                if low > high {
                    (column.clone(), Vec::new())
                } else {
                    (column.clone(), vec![(Included(low), Included(high))])
                }
            }
        }))
    }

    fn key(&self, column: &str, value: &Value) -> Result<Key> {
        let (_, tags) = self.tags.column(column)?;
        parse_key(tags.column_type, &value.0).ok_or_else(|| {
            Error::UnknownTag(format!(
                "{:?} is not a value of column \"{column}\" ({})",
                value.0, tags.column_type
            ))
        })
    }
}

/// What a term names: bitmaps of the store, whose union it is, or a
/// segment's users, evaluated.
enum Found<'a> {
    Bits(Vec<&'a Bits>),
    Users(RoaringBitmap),
}

impl TagSet<'_> {
    fn found(&self, term: &Term, window: Option<&Window>) -> Result<Found<'_>> {
        use Bound::Included;
        match term {
            Term::Tag(name) => {
                if let Some(tag) = self.tags.stored.get(name) {
                    if window.is_some() {
                        return Err(Error::UnknownTag(format!(
                            "tag \"{name}\" has no time: DURING applies to indexed event columns"
                        )));
                    }
                    if tag.source == TagSourceKind::Segment {
                        if self.depth >= SEGMENT_DEPTH_MAX {
                            return Err(Error::UnknownTag(format!(
                                "segment \"{name}\" names itself, directly or through other segments"
                            )));
                        }
                        let audience = audience::parse(&tag.definition)?;
                        let inner = TagSet {
                            tags: self.tags,
                            today: self.today,
                            depth: self.depth + 1,
                        };
                        return Ok(Found::Users(audience::evaluate(&audience, &inner)?));
                    }
                    return Ok(Found::Bits(vec![&tag.bits]));
                }
                // A boolean column's name alone means its true value.
                match self.tags.column(name) {
                    Ok((_, c)) if c.column_type == ColumnType::Boolean => {
                        let key = Key::Bool(true);
                        let range = (Included(key.clone()), Included(key));
                        Ok(Found::Bits(self.selected(name, window, range)?))
                    }
                    _ => Err(Error::UnknownTag(format!("tag \"{name}\" does not exist"))),
                }
            }
            _ => {
                let (column, ranges) = self.range(term)?.expect("a column term");
                let mut bits = Vec::new();
                for range in ranges {
                    bits.extend(self.selected(&column, window, range)?);
                }
                Ok(Found::Bits(bits))
            }
        }
    }

    /// The users of a term as a bitmap: the store's own when the term is
    /// one tag or value.
    pub fn users(&self, term: &Term, window: Option<&Window>) -> Result<Cow<'_, RoaringBitmap>> {
        Ok(match self.found(term, window)? {
            Found::Bits(bits) => match bits.as_slice() {
                [one] => Cow::Borrowed(one.get()?),
                _ => Cow::Owned(
                    bits.into_iter()
                        .map(Bits::get)
                        .collect::<Result<Vec<_>>>()?
                        .into_iter()
                        .union(),
                ),
            },
            Found::Users(users) => Cow::Owned(users),
        })
    }
}

impl TagSource for TagSet<'_> {
    fn universe(&self) -> Result<Sets<'_>> {
        frozen_sets(self.tags.tables.values().map(|table| &table.present))
    }

    fn term(&self, term: &Term, window: Option<&Window>) -> Result<Sets<'_>> {
        Ok(match self.found(term, window)? {
            Found::Bits(bits) => frozen_sets(bits)?,
            Found::Users(users) => vec![Cow::Owned(Frozen::from_bitmap(&users))],
        })
    }

    fn term_len(&self, term: &Term, window: Option<&Window>) -> Result<u64> {
        // A single tag or value is counted from the directory, its bitmap
        // not read.
        Ok(match self.found(term, window)? {
            Found::Bits(bits) => match bits.as_slice() {
                [one] => one.len(),
                _ => audience::union_len(frozen_sets(bits)?),
            },
            Found::Users(users) => users.len(),
        })
    }
}

/// `bits` read in place, for audience evaluation.
fn frozen_sets<'a>(bits: impl IntoIterator<Item = &'a Bits>) -> Result<Sets<'a>> {
    bits.into_iter()
        .map(|b| b.frozen().map(Cow::Borrowed))
        .collect()
}

/// `CDBTAGS` and the format version.
const MAGIC: [u8; 8] = *b"CDBTAGS\x02";
/// Bytes before the directory.
const HEADER_BYTES: usize = 40;

/// `tags/<owner id as 16 hex digits>-<generation>.tags`: the owner is the
/// table of a tag index or the id of a stored tag.
pub(crate) fn tag_path(tags_dir: &Path, owner: u64, generation: u64) -> PathBuf {
    tags_dir.join(format!("{owner:016x}-{generation}.tags"))
}

/// A bitmap to write in a tag file: its column, value and day (see
/// [`DirectoryEntry`]).
pub(crate) type FileEntry<'a> = (Option<String>, Option<Key>, Option<i32>, &'a Bits);

/// One bitmap of a tag file, as its directory describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectoryEntry {
    /// The indexed column's name; absent for a table's users and a stored
    /// tag's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<i32>,
    pub users: u64,
    pub offset: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

/// Encodes a tag file of `owner`: the header, the directory (JSON), then
/// each bitmap in the portable roaring format — as two parts written one
/// after the other, the header and directory, then the bitmaps (not copied
/// into one buffer, which would hold the index's bytes twice while a
/// checkpoint writes it).
pub(crate) fn encode_file(
    owner: u64,
    generation: u64,
    entries: &[FileEntry<'_>],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut bitmaps = Vec::new();
    let mut directory = Vec::with_capacity(entries.len());
    let mut spans = Vec::with_capacity(entries.len());
    for (column, key, day, bits) in entries {
        let start = bitmaps.len();
        bits.get()?
            .serialize_into(&mut bitmaps)
            .expect("writing to a Vec does not fail");
        spans.push((start, bitmaps.len()));
        directory.push(DirectoryEntry {
            column: column.clone(),
            key: key.clone(),
            day: *day,
            users: bits.len(),
            offset: 0,
            bytes: (bitmaps.len() - start) as u64,
            crc32c: crc32c::crc32c(&bitmaps[start..]),
        });
    }
    // Offsets depend on the directory's length, which depends on the
    // offsets' digits: settle it by iterating until it stops changing.
    let mut base = HEADER_BYTES as u64;
    let json = loop {
        for (entry, (start, _)) in directory.iter_mut().zip(&spans) {
            entry.offset = base + *start as u64;
        }
        let json = serde_json::to_vec(&directory).expect("a directory serializes");
        let next = (HEADER_BYTES + json.len()) as u64;
        if next == base {
            break json;
        }
        base = next;
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + json.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&owner.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    Ok((out, bitmaps))
}

/// Writes a tag file whole (temporary name, synced, renamed) and returns the
/// manifest's record of it.
pub(crate) fn write_file(
    storage: &dyn Storage,
    tags_dir: &Path,
    owner: u64,
    generation: u64,
    entries: &[FileEntry<'_>],
) -> Result<TagFile> {
    let (head, bitmaps) = encode_file(owner, generation, entries)?;
    let path = tag_path(tags_dir, owner, generation);
    durable::write_whole(
        storage,
        &path.with_extension("tags.tmp"),
        &path,
        &[&head, &bitmaps],
    )?;
    Ok(TagFile {
        generation,
        bytes: (head.len() + bitmaps.len()) as u64,
        crc32c: crc32c::crc32c_append(crc32c::crc32c(&head), &bitmaps),
    })
}

/// Opens a tag file the manifest names: checks its size, header and
/// directory; its bitmaps are read when first used. With `verify`, every
/// byte's checksum is checked now (`cohortdb check`).
pub(crate) fn open_file(
    path: &Path,
    owner: u64,
    recorded: &TagFile,
    verify: bool,
) -> Result<Vec<(DirectoryEntry, Bits)>> {
    let bytes = crate::mmap::map_file(path)?;
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 != recorded.bytes {
        return Err(corrupted(format!(
            "the file has {} bytes where the manifest records {}",
            bytes.len(),
            recorded.bytes
        )));
    }
    if verify && crc32c::crc32c(&bytes) != recorded.crc32c {
        return Err(corrupted(
            "checksum mismatch with the manifest's record".to_string(),
        ));
    }
    let header = framing::header(path, &bytes, &MAGIC, HEADER_BYTES, "tag file")?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if u64_at(8) != owner || u64_at(16) != recorded.generation {
        return Err(corrupted(format!(
            "the file belongs to {} generation {}, not {owner} generation {}",
            u64_at(8),
            u64_at(16),
            recorded.generation
        )));
    }
    let json_bytes = u64_at(24) as usize;
    let json = bytes
        .get(HEADER_BYTES..HEADER_BYTES.saturating_add(json_bytes))
        .ok_or_else(|| corrupted("the directory runs past the end of the file".to_string()))?;
    let crc = u32::from_le_bytes(header[32..36].try_into().expect("4 bytes"));
    if crc32c::crc32c(json) != crc {
        return Err(corrupted(
            "the directory's checksum does not match".to_string(),
        ));
    }
    let directory: Vec<DirectoryEntry> = serde_json::from_slice(json)
        .map_err(|e| corrupted(format!("the directory does not parse: {e}")))?;
    let shared_path = Arc::new(path.to_path_buf());
    let mut out = Vec::with_capacity(directory.len());
    for entry in directory {
        let end = entry
            .offset
            .checked_add(entry.bytes)
            .filter(|&e| e <= bytes.len() as u64);
        let Some(end) = end else {
            return Err(corrupted(
                "a bitmap runs past the end of the file".to_string(),
            ));
        };
        let bits = Bits {
            len: entry.users,
            inner: Arc::new(BitsInner::Mapped {
                bytes: bytes.slice(entry.offset as usize..end as usize),
                crc32c: entry.crc32c,
                path: Arc::clone(&shared_path),
                frozen: OnceLock::new(),
                loaded: OnceLock::new(),
            }),
        };
        if verify {
            bits.get()?;
        }
        out.push((entry, bits));
    }
    Ok(out)
}

impl TableTags {
    /// The entries of this index's file.
    pub(crate) fn file_entries(&self) -> Vec<FileEntry<'_>> {
        let mut entries = vec![(None, None, None, &self.present)];
        for column in &self.columns {
            for (key, entry) in column.values.iter() {
                entries.push((
                    Some(column.name.clone()),
                    Some(key.clone()),
                    None,
                    &entry.all,
                ));
                for (day, bits) in entry.days.iter() {
                    entries.push((
                        Some(column.name.clone()),
                        Some(key.clone()),
                        Some(*day),
                        bits,
                    ));
                }
            }
        }
        entries
    }

    /// Fills this (empty) index from its file's entries.
    pub(crate) fn load(&mut self, path: &Path, entries: Vec<(DirectoryEntry, Bits)>) -> Result<()> {
        self.place(path, entries, false)?;
        self.dirty = false;
        Ok(())
    }

    /// After a checkpoint wrote this index to `path`: each bitmap in memory
    /// gives way to the same users read in place from the file (`entries`),
    /// so what is not changing is held by the file's pages, which the kernel
    /// may drop, rather than the heap. The range levels, unions of the same
    /// users, are kept.
    pub(crate) fn remap(
        &mut self,
        path: &Path,
        entries: Vec<(DirectoryEntry, Bits)>,
    ) -> Result<()> {
        self.place(path, entries, true)
    }

    /// Sets the bitmaps the entries name; with `same`, each must hold as
    /// many users as the one it replaces.
    fn place(
        &mut self,
        path: &Path,
        entries: Vec<(DirectoryEntry, Bits)>,
        same: bool,
    ) -> Result<()> {
        let corrupted = |reason: String| Error::Corrupted {
            path: path.to_path_buf(),
            reason,
        };
        let put = |slot: &mut Bits, bits: Bits| {
            if same && slot.len() != bits.len() {
                return Err(corrupted(format!(
                    "a bitmap written with {} users reads back with {}",
                    slot.len(),
                    bits.len()
                )));
            }
            *slot = bits;
            Ok(())
        };
        for (entry, bits) in entries {
            match (entry.column, entry.key) {
                (None, None) => put(&mut self.present, bits)?,
                (Some(name), Some(key)) => {
                    let column = self
                        .columns
                        .iter_mut()
                        .find(|c| c.name == name)
                        .ok_or_else(|| corrupted(format!("column \"{name}\" is not indexed")))?;
                    // The map itself, not through `DerefMut`, which drops
                    // the range levels: the users stay the same.
                    let values = &mut Arc::make_mut(&mut column.values).map;
                    let value = values.entry(key).or_default();
                    match entry.day {
                        None => put(&mut value.all, bits)?,
                        Some(day) => {
                            let days = Arc::make_mut(&mut value.days);
                            put(days.entry(day).or_default(), bits)?;
                        }
                    }
                }
                _ => return Err(corrupted("an entry with a key but no column".to_string())),
            }
        }
        Ok(())
    }

    /// Whether any bitmap of the index is still waiting in its file.
    pub fn all_loaded(&self) -> bool {
        self.all_bits().all(Bits::is_loaded)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn bitmap(v: &[u32]) -> RoaringBitmap {
        v.iter().copied().collect()
    }

    /// Each user's value is the rank of the one value whose bitmap has the
    /// user; a column where a user has two values, or with more values than
    /// ranks, has none.
    #[test]
    fn user_values_rank_each_user_by_its_one_value() -> Result<()> {
        let values = |sets: Vec<Vec<u32>>| -> BTreeMap<Key, Entry> {
            sets.into_iter()
                .enumerate()
                .map(|(i, users)| {
                    let all = Bits::from(bitmap(&users));
                    (
                        Key::Int(i as i64),
                        Entry {
                            all,
                            ..Entry::default()
                        },
                    )
                })
                .collect()
        };
        let one_each = values(vec![vec![3, 70_000], vec![0, 1], vec![], vec![2]]);
        let ranks = UserValues::build(&one_each)?.expect("one value per user");
        let found: Vec<u16> = [0, 1, 2, 3, 4, 70_000, 200_000]
            .map(|u| ranks.rank(u))
            .to_vec();
        assert_eq!(found, [1, 1, 3, 0, NO_VALUE, 0, NO_VALUE]);
        let twice = values(vec![vec![3, 70_000], vec![0, 70_000]]);
        assert!(UserValues::build(&twice)?.is_none());
        // The widest one-byte ranks, the narrowest two-byte ones.
        for n in [254u32, 255] {
            let each = values((0..n).map(|u| vec![u]).collect());
            let ranks = UserValues::build(&each)?.expect("one value per user");
            let found: Vec<u16> = [0, n - 1, n].map(|u| ranks.rank(u)).to_vec();
            assert_eq!(found, [0, (n - 1) as u16, NO_VALUE]);
            let mut counts = vec![0u64; n as usize];
            ranks.count([0, 0, n - 1, n, n + 1].into_iter(), &mut counts);
            assert_eq!((counts[0], counts[n as usize - 1]), (2, 1));
            assert_eq!(counts.iter().sum::<u64>(), 3);
        }
        let most = values((0..u32::from(NO_VALUE)).map(|u| vec![u]).collect());
        assert_eq!(
            UserValues::build(&most)?.map(|r| r.rank(65_534)),
            Some(65_534)
        );
        let too_many = values((0..=u32::from(NO_VALUE)).map(|u| vec![u]).collect());
        assert!(UserValues::build(&too_many)?.is_none());
        Ok(())
    }

    /// Every range over 200 values (users with one value and with several)
    /// is answered by the range levels with the union the values' own
    /// bitmaps give, from at most `2 · (fanout − 1)` bitmaps per level above
    /// the values and `fanout` at the top.
    #[test]
    fn range_levels_cover_exactly_the_values_in_a_range() -> Result<()> {
        fn union_of<'a>(bits: impl IntoIterator<Item = &'a Bits>) -> Result<RoaringBitmap> {
            Ok(bits
                .into_iter()
                .map(Bits::get)
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .union())
        }
        let mut rng = crate::demo::Rng::new(7);
        let mut values = BTreeMap::new();
        for value in 0..200i64 {
            let users: RoaringBitmap = (0..1 + rng.below(40))
                .map(|_| rng.below(5_000) as u32)
                .collect();
            values.insert(
                Key::Int(value * 10),
                Entry {
                    all: Bits::from(users),
                    days: Arc::default(),
                },
            );
        }
        let bounds = |k: i64| {
            [
                Bound::Included(Key::Int(k)),
                Bound::Excluded(Key::Int(k)),
                Bound::Unbounded,
            ]
        };
        for fanout in [2, 3, 32] {
            let levels = RangeLevels::build(&values, fanout)?;
            assert_eq!(levels.levels[0].len(), 200);
            assert!(levels.levels.iter().all(|l| !l.is_empty()));
            assert!(levels.levels[levels.levels.len() - 1].len() <= fanout);
            let most = 2 * (fanout - 1) * (levels.levels.len() - 1) + fanout;
            for low in (-10..2010).step_by(35) {
                for high in (low - 20..2020).step_by(45) {
                    for (l, h) in bounds(low).into_iter().zip(bounds(high)) {
                        let range = (l, h);
                        let expected = union_of(
                            values
                                .iter()
                                .filter(|(k, _)| std::ops::RangeBounds::contains(&range, *k))
                                .map(|(_, e)| &e.all),
                        )?;
                        let (from, to) = levels.ranks(range.clone());
                        let cover = levels.covering(from, to);
                        assert!(cover.len() <= most, "{} bitmaps for {range:?}", cover.len());
                        let got = union_of(cover)?;
                        assert_eq!(got, expected, "fanout {fanout}, {range:?}");
                    }
                }
            }
        }
        // A change to the values drops the levels built from them.
        let mut tags = ValueTags {
            map: values,
            ..ValueTags::default()
        };
        let all = (Bound::Unbounded, Bound::Unbounded);
        let before = union_of(tags.covering(all.clone())?)?;
        assert!(tags.levels.get().is_some());
        tags.insert(
            Key::Int(5),
            Entry {
                all: Bits::from(bitmap(&[9_999])),
                days: Arc::default(),
            },
        );
        assert!(tags.levels.get().is_none());
        let after = union_of(tags.covering(all)?)?;
        assert_eq!(after, &before | &bitmap(&[9_999]));
        // An equality does not build them.
        tags.levels = OnceLock::new();
        let one = tags.covering((Bound::Included(Key::Int(5)), Bound::Included(Key::Int(5))))?;
        assert_eq!(one.len(), 1);
        assert!(tags.levels.get().is_none());
        Ok(())
    }

    #[test]
    fn dates_parse_to_days_since_1970() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-11-30"), Some(20_787));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn keys_parse_by_column_type() {
        assert_eq!(parse_key(ColumnType::Int, "42"), Some(Key::Int(42)));
        assert_eq!(parse_key(ColumnType::Int, "4.2"), None);
        assert_eq!(parse_key(ColumnType::Boolean, "Yes"), Some(Key::Bool(true)));
        assert_eq!(
            parse_key(ColumnType::Double, "1e3"),
            Some(Key::Float(OrderedFloat(1000.0)))
        );
        assert_eq!(parse_key(ColumnType::Double, "NaN"), None);
        assert_eq!(parse_key(ColumnType::Date, "1970-01-02"), Some(Key::Int(1)));
        assert_eq!(
            parse_key(ColumnType::Text, "xi'an"),
            Some(Key::Text("xi'an".to_string()))
        );
    }

    /// A tag index over (user, city, ts) with `city` indexed by day.
    fn index() -> TableTags {
        let mut tags = TableTags::new(1, "events", 0);
        tags.columns.push(ColumnTags {
            column: 1,
            name: "city".to_string(),
            column_type: ColumnType::Text,
            values: Arc::default(),
        });
        tags.time = Some((2, "ts".to_string()));
        tags
    }

    fn rows(users: &[i64], cities: &[&str], days: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(users.to_vec())),
                Arc::new(StringArray::from(cities.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(
                    days.iter()
                        .map(|d| d * 86_400_000_000 + 5)
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn an_index_adds_rows_and_recomputes_deleted_users() {
        let mut tags = index();
        let batch = rows(&[0, 1, 2, 1], &["bj", "sh", "bj", "bj"], &[10, 10, 11, 12]);
        let ordinals = [0, 1, 2, 1];
        tags.add(
            &IndexedRows {
                ordinals: &ordinals,
                batch: &batch,
            },
            true,
            &[0],
        )
        .expect("added");
        let values = &tags.columns[0].values;
        let bj = &values[&Key::Text("bj".to_string())];
        assert_eq!(bj.all.get().expect("loaded"), &bitmap(&[0, 1, 2]));
        assert_eq!(bj.days[&12].get().expect("loaded"), &bitmap(&[1]));
        assert_eq!(tags.present.get().expect("loaded"), &bitmap(&[0, 1, 2]));
        // User 1's bj row on day 12 is deleted; its sh row on day 10 stays.
        let left_batch = rows(&[1], &["sh"], &[10]);
        tags.recompute(
            &bitmap(&[1]),
            &[IndexedRows {
                ordinals: &[1],
                batch: &left_batch,
            }],
        )
        .expect("recomputed");
        let values = &tags.columns[0].values;
        let bj = &values[&Key::Text("bj".to_string())];
        assert_eq!(bj.all.get().expect("loaded"), &bitmap(&[0, 2]));
        assert!(!bj.days.contains_key(&12), "an emptied day is dropped");
        assert_eq!(tags.present.get().expect("loaded"), &bitmap(&[0, 1, 2]));
        // User 2's only row goes: it leaves bj and the table.
        tags.recompute(&bitmap(&[2]), &[]).expect("recomputed");
        assert_eq!(tags.present.get().expect("loaded"), &bitmap(&[0, 1]));
    }

    #[test]
    fn tag_files_round_trip_and_load_lazily() {
        let mut tags = index();
        let batch = rows(&[0, 1, 2], &["bj", "sh", "bj"], &[10, 10, 11]);
        tags.add(
            &IndexedRows {
                ordinals: &[0, 1, 2],
                batch: &batch,
            },
            true,
            &[0],
        )
        .expect("added");
        let dir = tempfile::tempdir().expect("temp dir");
        let file =
            write_file(&crate::io::Os, dir.path(), 1, 3, &tags.file_entries()).expect("written");
        let path = tag_path(dir.path(), 1, 3);
        assert!(path.ends_with("0000000000000001-3.tags"));
        let entries = open_file(&path, 1, &file, true).expect("opened");
        assert_eq!(entries.len(), 1 + 2 + 3);
        let mut loaded = index();
        loaded
            .load(&path, open_file(&path, 1, &file, false).expect("opened"))
            .expect("loaded");
        assert!(!loaded.all_loaded(), "bitmaps wait in the file until used");
        let bj = &loaded.columns[0].values[&Key::Text("bj".to_string())];
        assert_eq!(bj.all.len(), 2);
        assert_eq!(bj.all.get().expect("read"), &bitmap(&[0, 2]));
        assert_eq!(bj.days[&11].get().expect("read"), &bitmap(&[2]));
        // Every bitmap is the portable format at its directory's offset.
        let bytes = std::fs::read(&path).expect("read");
        let (first, _) = &entries[0];
        let portable = RoaringBitmap::deserialize_from(
            &bytes[first.offset as usize..(first.offset + first.bytes) as usize],
        )
        .expect("portable roaring");
        assert_eq!(portable, bitmap(&[0, 1, 2]));
        // A flipped bit in a bitmap is caught when that bitmap is read.
        let mut damaged = bytes.clone();
        let at = (entries[1].0.offset + 1) as usize;
        damaged[at] ^= 1;
        std::fs::write(&path, &damaged).expect("write");
        let reopened = open_file(&path, 1, &file, false).expect("directory intact");
        assert!(reopened[1].1.get().is_err());
        assert!(open_file(&path, 1, &file, true).is_err());
        assert!(
            open_file(&path, 2, &file, false).is_err(),
            "another owner's file"
        );
    }

    #[test]
    fn audiences_evaluate_over_tags() {
        let mut tags = index();
        let batch = rows(&[0, 1, 2, 3], &["bj", "sh", "bj", "gz"], &[10, 10, 11, 20]);
        tags.add(
            &IndexedRows {
                ordinals: &[0, 1, 2, 3],
                batch: &batch,
            },
            true,
            &[0],
        )
        .expect("added");
        let mut all = Tags {
            dictionary: None,
            users: 4,
            tables: BTreeMap::from([(1, Arc::new(tags))]),
            stored: BTreeMap::new(),
            models: BTreeMap::new(),
            recommenders: BTreeMap::new(),
            privacy: crate::privacy::Privacy::default(),
            views: BTreeMap::new(),
        };
        all.stored.insert(
            "vip".to_string(),
            Arc::new(StoredTag {
                id: 9,
                name: "vip".to_string(),
                source: TagSourceKind::Bitmap,
                definition: String::new(),
                bits: Bits::from(bitmap(&[1, 2])),
                refreshed_micros: 0,
                file: None,
                dirty: true,
            }),
        );
        all.stored.insert(
            "north".to_string(),
            Arc::new(StoredTag {
                id: 10,
                name: "north".to_string(),
                source: TagSourceKind::Segment,
                definition: "city=bj AND NOT vip".to_string(),
                bits: Bits::default(),
                refreshed_micros: 0,
                file: None,
                dirty: true,
            }),
        );
        fn eval_in(all: &Tags, text: &str) -> Result<Vec<u32>> {
            all.evaluate(text, &crate::privacy::Policy::new(20))
                .map(|b| b.iter().collect())
        }
        let eval = |text: &str| eval_in(&all, text);
        assert_eq!(eval("city=bj").expect("ok"), vec![0, 2]);
        assert_eq!(eval("events.city IN (sh, gz)").expect("ok"), vec![1, 3]);
        assert_eq!(eval("city=bj DURING LAST 10 DAYS").expect("ok"), vec![2]);
        assert_eq!(
            eval("city=bj DURING LAST 9 DAYS").expect("ok"),
            Vec::<u32>::new()
        );
        assert_eq!(
            eval("city=bj DURING BETWEEN '1970-01-11' AND '1970-01-12'").expect("ok"),
            vec![0, 2]
        );
        assert_eq!(eval("NOT vip").expect("ok"), vec![0, 3]);
        assert_eq!(eval("north").expect("ok"), vec![0]);
        assert_eq!(
            all.count("city=bj OR vip", &crate::privacy::Policy::new(20))
                .expect("ok"),
            3
        );
        let err = |text: &str| eval(text).expect_err("error").to_string();
        assert_eq!(err("gold"), "tag \"gold\" does not exist");
        assert!(err("age=3").contains("no tag index has column \"age\""));
        assert!(err("vip DURING LAST 3 DAYS").contains("has no time"));
        let mut all = all.clone();
        all.stored.insert(
            "loop".to_string(),
            Arc::new(StoredTag {
                id: 11,
                name: "loop".to_string(),
                source: TagSourceKind::Segment,
                definition: "loop OR vip".to_string(),
                bits: Bits::default(),
                refreshed_micros: 0,
                file: None,
                dirty: true,
            }),
        );
        let err = eval_in(&all, "loop").expect_err("cycle").to_string();
        assert!(err.contains("names itself"), "{err}");
    }

    #[test]
    fn the_suppression_tag_leaves_its_users_out() {
        use crate::privacy::Policy;
        let mut tags = index();
        let batch = rows(&[0, 1, 2, 3], &["bj", "sh", "bj", "gz"], &[10, 10, 11, 20]);
        let rows = IndexedRows {
            ordinals: &[0, 1, 2, 3],
            batch: &batch,
        };
        tags.add(&rows, true, &[0]).expect("added");
        let stored =
            |id: u64, name: &str, source: TagSourceKind, definition: &str, users: &[u32]| {
                let tag = StoredTag {
                    id,
                    name: name.to_string(),
                    source,
                    definition: definition.to_string(),
                    bits: Bits::from(bitmap(users)),
                    refreshed_micros: 0,
                    file: None,
                    dirty: true,
                };
                (name.to_string(), Arc::new(tag))
            };
        let mut all = Tags {
            dictionary: None,
            users: 4,
            tables: BTreeMap::from([(1, Arc::new(tags))]),
            stored: BTreeMap::from([
                stored(9, "vip", TagSourceKind::Bitmap, "", &[1, 2]),
                stored(
                    10,
                    "north",
                    TagSourceKind::Segment,
                    "city=bj AND NOT vip",
                    &[],
                ),
            ]),
            models: BTreeMap::new(),
            recommenders: BTreeMap::new(),
            privacy: crate::privacy::Privacy {
                suppression_tag: "vip".to_string(),
                ..Default::default()
            },
            views: BTreeMap::new(),
        };
        let (ordinary, everyone) = (Policy::new(20), Policy::everyone(20));
        let eval = |all: &Tags, text: &str, policy| -> Vec<u32> {
            all.evaluate(text, policy).expect("ok").iter().collect()
        };
        assert_eq!(all.suppression(&ordinary), Some("vip"));
        assert_eq!(all.suppression(&everyone), None);
        assert_eq!(eval(&all, "city=bj", &ordinary), vec![0]);
        assert_eq!(eval(&all, "city=bj", &everyone), vec![0, 2]);
        assert_eq!(eval(&all, "vip", &ordinary), Vec::<u32>::new());
        // NOT is relative to every user but the suppressed: {1, 3} less {1}.
        assert_eq!(eval(&all, "NOT city=bj", &ordinary), vec![3]);
        assert_eq!(all.count("NOT city=bj", &ordinary).expect("ok"), 1);
        assert_eq!(
            all.count("city=bj AND NOT north", &ordinary).expect("ok"),
            0
        );
        let population: Vec<u32> = all.population(&ordinary).expect("ok").iter().collect();
        assert_eq!(population, vec![0, 3]);
        let mut ordinals = [Some(1), Some(3), None, Some(2)];
        all.forget_suppressed(&mut ordinals, &ordinary).expect("ok");
        assert_eq!(ordinals, [None, Some(3), None, None]);
        // A segment suppresses what it evaluates to, read as everyone.
        all.privacy.suppression_tag = "north".to_string();
        assert_eq!(eval(&all, "city=bj", &ordinary), vec![2]);
        // A name no tag has suppresses nobody; the tag in force cannot go.
        all.privacy.suppression_tag = "opted_out".to_string();
        assert_eq!(all.suppressed(&ordinary).expect("ok"), None);
        assert_eq!(eval(&all, "city=bj", &ordinary), vec![0, 2]);
        assert!(all.check_not_suppression_tag("vip").is_ok());
        all.privacy.suppression_tag = "vip".to_string();
        let err = all.check_not_suppression_tag("vip").expect_err("in force");
        assert!(err.to_string().starts_with("cannot drop \"vip\""), "{err}");
        assert!(all.check_suppression_tag("gold").is_err());
        assert!(all.check_suppression_tag("").is_ok());
    }
}

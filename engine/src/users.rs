//! The user-key dictionary: external user ids (BIGINT or TEXT) ↔ dense u32
//! ordinals, which every tag bitmap is over (docs/format.md § User keys).
//!
//! Ordinals are assigned in the order ids first appear in the rows of tables
//! with a `USER KEY` column, once, and never reused: the dictionary only
//! grows. Assignment is part of applying a change, so replaying the log after
//! the manifest assigns the same ordinals again. Ids are kept in one vector
//! (TEXT ids in one byte arena) and found through a hash table of ordinals,
//! about 13 bytes a BIGINT id; up to 2³² − 1 ids.
//!
//! One dictionary is shared by the catalog's states: each state knows how many
//! ordinals it has assigned (`len`) and a failed change truncates the
//! dictionary back to its state's length. Readers see ids in batches (one
//! lock per call, never per id).
//!
//! `FORGET USER` erases ids ([`Dictionary::erase`]): the id is overwritten
//! (zeros in memory, NULL in the dictionary file), is no longer found, and
//! its ordinal stays used, so the same id seen again gets a new ordinal.

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type};
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::ColumnType;

/// The type of the ids a dictionary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserKeyType {
    /// SMALLINT, INTEGER or BIGINT ids, kept as 64-bit integers.
    #[serde(rename = "BIGINT")]
    BigInt,
    #[serde(rename = "TEXT")]
    Text,
}

impl UserKeyType {
    /// The key type of a column of type `column_type`, if it can be a user key.
    pub fn of(column_type: ColumnType) -> Option<UserKeyType> {
        match column_type {
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
                Some(UserKeyType::BigInt)
            }
            ColumnType::Text => Some(UserKeyType::Text),
            _ => None,
        }
    }

    /// The Arrow type ids are returned as.
    pub fn data_type(self) -> DataType {
        match self {
            UserKeyType::BigInt => DataType::Int64,
            UserKeyType::Text => DataType::Utf8,
        }
    }
}

impl std::fmt::Display for UserKeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UserKeyType::BigInt => "BIGINT",
            UserKeyType::Text => "TEXT",
        })
    }
}

#[derive(Debug)]
pub struct Dictionary {
    key_type: UserKeyType,
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: Keys,
    /// Ordinals, hashed by their id; erased ordinals are not in it.
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Ordinals whose id was erased.
    erased: RoaringBitmap,
}

/// The ids by ordinal.
#[derive(Debug)]
enum Keys {
    Int(Vec<i64>),
    /// Id `i` is `bytes[ends[i-1]..ends[i]]`.
    Text {
        bytes: Vec<u8>,
        ends: Vec<u64>,
    },
}

/// An id borrowed from a column or from the dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Id<'a> {
    Int(i64),
    Text(&'a [u8]),
}

impl Keys {
    fn len(&self) -> usize {
        match self {
            Keys::Int(ids) => ids.len(),
            Keys::Text { ends, .. } => ends.len(),
        }
    }

    fn get(&self, ordinal: u32) -> Id<'_> {
        let i = ordinal as usize;
        match self {
            Keys::Int(ids) => Id::Int(ids[i]),
            Keys::Text { bytes, ends } => {
                let start = if i == 0 { 0 } else { ends[i - 1] as usize };
                Id::Text(&bytes[start..ends[i] as usize])
            }
        }
    }

    fn push(&mut self, id: Id<'_>) {
        match (self, id) {
            (Keys::Int(ids), Id::Int(v)) => ids.push(v),
            (Keys::Text { bytes, ends }, Id::Text(v)) => {
                bytes.extend_from_slice(v);
                ends.push(bytes.len() as u64);
            }
            _ => unreachable!("ids are checked against the key type"),
        }
    }

    /// Overwrites the id of `ordinal`: 0, or as many zero bytes as the text.
    fn overwrite(&mut self, ordinal: u32) {
        let i = ordinal as usize;
        match self {
            Keys::Int(ids) => ids[i] = 0,
            Keys::Text { bytes, ends } => {
                let start = if i == 0 { 0 } else { ends[i - 1] as usize };
                bytes[start..ends[i] as usize].fill(0);
            }
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Keys::Int(ids) => ids.truncate(len),
            Keys::Text { bytes, ends } => {
                ends.truncate(len);
                bytes.truncate(ends.last().copied().unwrap_or(0) as usize);
            }
        }
    }
}

impl Inner {
    fn hash(&self, id: Id<'_>) -> u64 {
        self.hasher.hash_one(id)
    }

    fn find(&self, id: Id<'_>) -> Option<u32> {
        let hash = self.hash(id);
        self.table.find(hash, |&o| self.keys.get(o) == id).copied()
    }

    fn find_or_insert(&mut self, id: Id<'_>) -> Result<u32> {
        let hash = self.hash(id);
        let Inner {
            keys,
            table,
            hasher,
            ..
        } = self;
        if let Some(&o) = table.find(hash, |&o| keys.get(o) == id) {
            return Ok(o);
        }
        let ordinal = u32::try_from(keys.len())
            .ok()
            .filter(|&o| o < u32::MAX)
            .ok_or(Error::LimitExceeded {
                what: "number of users",
                limit: u64::from(u32::MAX),
            })?;
        keys.push(id);
        table.insert_unique(hash, ordinal, |&o| hasher.hash_one(keys.get(o)));
        Ok(ordinal)
    }
}

/// The ids of a user-key column, whatever its integer width.
enum Column<'a> {
    Int(Vec<Option<i64>>),
    Text(&'a StringArray),
}

impl Dictionary {
    pub fn new(key_type: UserKeyType) -> Dictionary {
        let keys = match key_type {
            UserKeyType::BigInt => Keys::Int(Vec::new()),
            UserKeyType::Text => Keys::Text {
                bytes: Vec::new(),
                ends: Vec::new(),
            },
        };
        Dictionary {
            key_type,
            inner: RwLock::new(Inner {
                keys,
                table: HashTable::new(),
                hasher: DefaultHashBuilder::default(),
                erased: RoaringBitmap::new(),
            }),
        }
    }

    pub fn key_type(&self) -> UserKeyType {
        self.key_type
    }

    /// Ordinals assigned so far.
    pub fn len(&self) -> u32 {
        self.read().keys.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .expect("dictionary lock is never poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .expect("dictionary lock is never poisoned")
    }

    fn column<'a>(&self, ids: &'a dyn Array) -> Result<Column<'a>> {
        let mismatch = || {
            Error::UserKey(format!(
                "user ids of type {} given to a dictionary of {} ids",
                ids.data_type(),
                self.key_type
            ))
        };
        Ok(match (self.key_type, ids.data_type()) {
            (UserKeyType::BigInt, DataType::Int64) => {
                Column::Int(ids.as_primitive::<Int64Type>().iter().collect())
            }
            (UserKeyType::BigInt, DataType::Int32) => Column::Int(
                ids.as_primitive::<Int32Type>()
                    .iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
            ),
            (UserKeyType::BigInt, DataType::Int16) => Column::Int(
                ids.as_primitive::<Int16Type>()
                    .iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
            ),
            (UserKeyType::Text, DataType::Utf8) => Column::Text(ids.as_string::<i32>()),
            _ => return Err(mismatch()),
        })
    }

    /// The ordinal of every id of `ids` (a user-key column, no NULLs),
    /// assigning new ones to ids not seen before, in row order.
    pub fn assign(&self, ids: &dyn Array) -> Result<Vec<u32>> {
        if ids.null_count() > 0 {
            return Err(Error::UserKey("a user id is NULL".to_string()));
        }
        let column = self.column(ids)?;
        let mut inner = self.write();
        let before = inner.keys.len();
        let mut out = Vec::with_capacity(ids.len());
        let assigned = (|| {
            match &column {
                Column::Int(values) => {
                    for v in values {
                        out.push(inner.find_or_insert(Id::Int(v.expect("no NULLs")))?);
                    }
                }
                Column::Text(values) => {
                    for v in values.iter() {
                        out.push(inner.find_or_insert(Id::Text(v.expect("no NULLs").as_bytes()))?);
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = assigned {
            truncate_inner(&mut inner, before);
            return Err(e);
        }
        Ok(out)
    }

    /// The ordinal of every id of `ids` among the first `visible` ordinals
    /// (`None` for NULL and unknown ids).
    pub fn lookup(&self, ids: &dyn Array, visible: u32) -> Result<Vec<Option<u32>>> {
        let column = self.column(ids)?;
        let inner = self.read();
        let seen = |o: Option<u32>| o.filter(|&o| o < visible);
        Ok(match &column {
            Column::Int(values) => values
                .iter()
                .map(|v| seen(v.and_then(|v| inner.find(Id::Int(v)))))
                .collect(),
            Column::Text(values) => values
                .iter()
                .map(|v| seen(v.and_then(|v| inner.find(Id::Text(v.as_bytes())))))
                .collect(),
        })
    }

    /// The ordinal of one id given as text (a BIGINT id parsed), if known
    /// among the first `visible`.
    pub fn lookup_text(&self, id: &str, visible: u32) -> Option<u32> {
        let inner = self.read();
        let found = match self.key_type {
            UserKeyType::BigInt => inner.find(Id::Int(id.trim().parse().ok()?)),
            UserKeyType::Text => inner.find(Id::Text(id.as_bytes())),
        };
        found.filter(|&o| o < visible)
    }

    /// The ids of `ordinals` (which must be assigned), in order; an erased
    /// id reads as 0 or as zero bytes.
    pub fn ids(&self, ordinals: impl IntoIterator<Item = u32>) -> ArrayRef {
        let inner = self.read();
        match &inner.keys {
            Keys::Int(ids) => Arc::new(Int64Array::from_iter_values(
                ordinals.into_iter().map(|o| ids[o as usize]),
            )),
            Keys::Text { .. } => Arc::new(StringArray::from_iter_values(ordinals.into_iter().map(
                |o| match inner.keys.get(o) {
                    Id::Text(bytes) => std::str::from_utf8(bytes).expect("text ids are UTF-8"),
                    Id::Int(_) => unreachable!("a text dictionary holds text"),
                },
            ))),
        }
    }

    /// The smallest and the largest id of `ordinals` (which must be
    /// assigned), as one-element arrays of the key type; `None` when empty.
    pub fn id_bounds(
        &self,
        ordinals: impl IntoIterator<Item = u32>,
    ) -> Option<(ArrayRef, ArrayRef)> {
        let inner = self.read();
        let mut ordinals = ordinals.into_iter();
        let first = inner.keys.get(ordinals.next()?);
        let (mut low, mut high) = (first, first);
        for o in ordinals {
            let id = inner.keys.get(o);
            let less = match (id, low) {
                (Id::Int(a), Id::Int(b)) => a < b,
                (Id::Text(a), Id::Text(b)) => a < b,
                _ => false,
            };
            let more = match (id, high) {
                (Id::Int(a), Id::Int(b)) => a > b,
                (Id::Text(a), Id::Text(b)) => a > b,
                _ => false,
            };
            if less {
                low = id;
            }
            if more {
                high = id;
            }
        }
        let one = |id: Id<'_>| -> ArrayRef {
            match id {
                Id::Int(v) => Arc::new(Int64Array::from(vec![v])),
                Id::Text(v) => Arc::new(StringArray::from(vec![
                    String::from_utf8_lossy(v).into_owned(),
                ])),
            }
        };
        Some((one(low), one(high)))
    }

    /// Forgets the ordinals from `len` on (those of a change that failed).
    pub(crate) fn truncate(&self, len: u32) {
        truncate_inner(&mut self.write(), len as usize);
    }

    /// Erases the ids of `ordinals` (assigned ones; `FORGET USER`): they are
    /// overwritten and no longer found. The ordinals stay used.
    pub(crate) fn erase(&self, ordinals: &RoaringBitmap) {
        let mut inner = self.write();
        let len = inner.keys.len() as u32;
        for ordinal in ordinals.iter().take_while(|&o| o < len) {
            if !inner.erased.insert(ordinal) {
                continue;
            }
            let hash = inner.hash(inner.keys.get(ordinal));
            if let Ok(entry) = inner.table.find_entry(hash, |&o| o == ordinal) {
                entry.remove();
            }
            inner.keys.overwrite(ordinal);
        }
    }

    /// Whether the id of `ordinal` was erased.
    pub fn is_erased(&self, ordinal: u32) -> bool {
        self.read().erased.contains(ordinal)
    }

    /// The ids of ordinals `first..first + count`, as one column, for a
    /// dictionary file: erased ids are NULL.
    pub(crate) fn chunk(&self, first: u32, count: u32) -> ArrayRef {
        let ids = self.ids(first..first + count);
        let inner = self.read();
        if inner.erased.range_cardinality(first..first + count) == 0 {
            return ids;
        }
        let valid: arrow::buffer::NullBuffer = (first..first + count)
            .map(|o| !inner.erased.contains(o))
            .collect();
        arrow::array::make_array(
            ids.into_data()
                .into_builder()
                .nulls(Some(valid))
                .build()
                .expect("the same ids with fewer of them valid"),
        )
    }

    /// Appends the ids of a dictionary file, which must be the next ordinals
    /// and new (NULL: an erased id); `path` names the file for errors.
    pub(crate) fn load_chunk(&self, path: &Path, first: u32, ids: &dyn Array) -> Result<()> {
        let corrupted = |reason: String| Error::Corrupted {
            path: path.to_path_buf(),
            reason,
        };
        if first != self.len() {
            return Err(corrupted(format!(
                "the file starts at ordinal {first}, the dictionary has {}",
                self.len()
            )));
        }
        let column = self.column(ids).map_err(|e| corrupted(e.to_string()))?;
        let mut inner = self.write();
        for row in 0..ids.len() {
            let ordinal = inner.keys.len() as u32;
            let id = match &column {
                Column::Int(values) => values[row].map(Id::Int),
                Column::Text(values) => {
                    (!values.is_null(row)).then(|| Id::Text(values.value(row).as_bytes()))
                }
            };
            match id {
                Some(id) => {
                    if inner
                        .find_or_insert(id)
                        .map_err(|e| corrupted(e.to_string()))?
                        != ordinal
                    {
                        return Err(corrupted("an id appears twice".to_string()));
                    }
                }
                None => {
                    let blank = match self.key_type {
                        UserKeyType::BigInt => Id::Int(0),
                        UserKeyType::Text => Id::Text(&[]),
                    };
                    inner.keys.push(blank);
                    inner.erased.insert(ordinal);
                }
            }
        }
        Ok(())
    }
}

fn truncate_inner(inner: &mut Inner, len: usize) {
    if inner.keys.len() <= len {
        return;
    }
    let Inner {
        keys,
        table,
        erased,
        ..
    } = inner;
    table.retain(|&mut o| (o as usize) < len);
    keys.truncate(len);
    erased.remove_range(len as u32..);
}

/// A dictionary's files in the manifest: each a run of ordinals, written by
/// the checkpoint after they were assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Chunk {
    pub first: u32,
    pub count: u32,
    /// Rewritten after ids in it were erased: 1, 2, ... (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `CDBKEYS` and the format version.
const CHUNK_MAGIC: [u8; 8] = *b"CDBKEYS\x02";
/// Bytes before the ids.
const CHUNK_HEADER_BYTES: usize = 32;

/// `users/<first ordinal as 10 digits>.keys`, and
/// `<first ordinal>-<generation>.keys` once rewritten.
pub(crate) fn chunk_path(users_dir: &Path, first: u32, generation: u64) -> std::path::PathBuf {
    match generation {
        0 => users_dir.join(format!("{first:010}.keys")),
        g => users_dir.join(format!("{first:010}-{g}.keys")),
    }
}

/// Writes the dictionary file of ordinals `first..first + count` whole, as
/// its `generation`, and returns the manifest's record of it.
pub(crate) fn write_chunk(
    storage: &dyn crate::io::Storage,
    users_dir: &Path,
    dictionary: &Dictionary,
    first: u32,
    count: u32,
    generation: u64,
) -> Result<Chunk> {
    let ids = dictionary.chunk(first, count);
    let batch = arrow::array::RecordBatch::try_from_iter([("id", ids)])?;
    let mut out = Vec::new();
    out.extend_from_slice(&CHUNK_MAGIC);
    out.extend_from_slice(&u64::from(first).to_le_bytes());
    out.extend_from_slice(&u64::from(count).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
    }
    let ipc_bytes = (out.len() - CHUNK_HEADER_BYTES) as u64;
    out[24..32].copy_from_slice(&ipc_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let path = chunk_path(users_dir, first, generation);
    crate::durable::write_whole(storage, &path.with_extension("keys.tmp"), &path, &[&out])?;
    Ok(Chunk {
        first,
        count,
        generation,
        bytes: out.len() as u64,
        crc32c: crc32c::crc32c(&out),
    })
}

/// Reads the dictionary file the manifest records as `chunk` into
/// `dictionary`.
pub(crate) fn load_chunk(users_dir: &Path, dictionary: &Dictionary, chunk: &Chunk) -> Result<()> {
    let path = chunk_path(users_dir, chunk.first, chunk.generation);
    let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
    let corrupted = |reason: String| Error::Corrupted {
        path: path.clone(),
        reason,
    };
    if bytes.len() as u64 != chunk.bytes || crc32c::crc32c(&bytes) != chunk.crc32c {
        return Err(corrupted(
            "the file does not match the manifest's size and checksum".to_string(),
        ));
    }
    crate::framing::header(
        &path,
        &bytes,
        &CHUNK_MAGIC,
        CHUNK_HEADER_BYTES + 4,
        "user key file",
    )?;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if u64_at(8) != u64::from(chunk.first) || u64_at(16) != u64::from(chunk.count) {
        return Err(corrupted(
            "the header does not match the manifest".to_string(),
        ));
    }
    let body = &bytes[CHUNK_HEADER_BYTES..bytes.len() - 4];
    let batches = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .and_then(|r| r.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| corrupted(format!("the ids do not decode: {e}")))?;
    let mut loaded = 0u64;
    for batch in &batches {
        if batch.num_columns() != 1 {
            return Err(corrupted("the ids are not one column".to_string()));
        }
        dictionary.load_chunk(&path, chunk.first + loaded as u32, batch.column(0).as_ref())?;
        loaded += batch.num_rows() as u64;
    }
    if loaded != u64::from(chunk.count) {
        return Err(corrupted(format!(
            "{loaded} ids where the manifest records {}",
            chunk.count
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_get_dense_ordinals_once_and_for_all() {
        let dict = Dictionary::new(UserKeyType::BigInt);
        let ids = Int64Array::from(vec![900, 5, 900, -3, 5]);
        assert_eq!(dict.assign(&ids).expect("assigned"), vec![0, 1, 0, 2, 1]);
        let more = arrow::array::Int32Array::from(vec![7, -3]);
        assert_eq!(dict.assign(&more).expect("assigned"), vec![3, 2]);
        assert_eq!(dict.len(), 4);
        let probe = Int64Array::from(vec![Some(7), None, Some(8), Some(900)]);
        assert_eq!(
            dict.lookup(&probe, 4).expect("looked up"),
            vec![Some(3), None, None, Some(0)]
        );
        // Ordinals beyond what a reader's state has are not its.
        assert_eq!(dict.lookup(&probe, 3).expect("looked up")[0], None);
        let back = dict.ids([3, 0, 2]);
        assert_eq!(
            back.as_primitive::<Int64Type>().values().to_vec(),
            vec![7, 900, -3]
        );
        dict.truncate(2);
        assert_eq!(dict.len(), 2);
        assert_eq!(dict.lookup_text("7", 10), None);
        assert_eq!(
            dict.assign(&Int64Array::from(vec![8])).expect("ok"),
            vec![2]
        );
    }

    #[test]
    fn text_ids_round_trip_and_nulls_are_refused() {
        let dict = Dictionary::new(UserKeyType::Text);
        let ids = StringArray::from(vec!["ann", "", "bob", "ann"]);
        assert_eq!(dict.assign(&ids).expect("assigned"), vec![0, 1, 2, 0]);
        assert_eq!(dict.lookup_text("bob", 3), Some(2));
        let back = dict.ids([2, 1, 0]);
        let back: Vec<&str> = back
            .as_string::<i32>()
            .iter()
            .map(|v| v.expect("id"))
            .collect();
        assert_eq!(back, vec!["bob", "", "ann"]);
        let nulls = StringArray::from(vec![Some("x"), None]);
        assert_eq!(
            dict.assign(&nulls).expect_err("NULL").to_string(),
            "user key: a user id is NULL"
        );
        assert_eq!(dict.len(), 3);
        let wrong = Int64Array::from(vec![1]);
        assert_eq!(
            dict.assign(&wrong).expect_err("type").to_string(),
            "user key: user ids of type Int64 given to a dictionary of TEXT ids"
        );
        dict.truncate(1);
        assert_eq!(dict.lookup_text("bob", 3), None);
        assert_eq!(dict.lookup_text("ann", 3), Some(0));
    }

    #[test]
    fn erased_ids_are_not_found_and_their_ordinals_stay_used() {
        for (dict, ids) in [
            (
                Dictionary::new(UserKeyType::BigInt),
                Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef,
            ),
            (
                Dictionary::new(UserKeyType::Text),
                Arc::new(StringArray::from(vec!["ann", "bob", "cy"])) as ArrayRef,
            ),
        ] {
            assert_eq!(dict.assign(ids.as_ref()).expect("assigned"), vec![0, 1, 2]);
            dict.erase(&RoaringBitmap::from_iter([1, 7]));
            assert!(dict.is_erased(1) && !dict.is_erased(0) && !dict.is_erased(7));
            assert_eq!(
                dict.lookup(ids.as_ref(), 3).expect("looked up"),
                vec![Some(0), None, Some(2)]
            );
            // A dictionary file has NULL for it; loaded, it stays erased.
            let chunk = dict.chunk(0, 3);
            assert_eq!(chunk.null_count(), 1);
            assert!(chunk.is_null(1));
            let loaded = Dictionary::new(dict.key_type());
            loaded
                .load_chunk(Path::new("users/x.keys"), 0, chunk.as_ref())
                .expect("loads");
            assert!(loaded.is_erased(1));
            assert_eq!(loaded.len(), 3);
            for d in [&dict, &loaded] {
                // Seen again, the id is a new user.
                assert_eq!(
                    d.assign(ids.slice(1, 1).as_ref()).expect("assigned"),
                    vec![3]
                );
                assert_eq!(d.chunk(0, 4).null_count(), 1);
            }
        }
    }

    #[test]
    fn chunks_load_only_in_order_and_without_repeats() {
        let dict = Dictionary::new(UserKeyType::BigInt);
        let path = Path::new("users/x.keys");
        dict.load_chunk(path, 0, &Int64Array::from(vec![10, 20]))
            .expect("first chunk");
        let gap = dict
            .load_chunk(path, 3, &Int64Array::from(vec![30]))
            .expect_err("gap");
        assert!(
            gap.to_string()
                .contains("starts at ordinal 3, the dictionary has 2")
        );
        let repeat = dict
            .load_chunk(path, 2, &Int64Array::from(vec![30, 10]))
            .expect_err("repeat");
        assert!(repeat.to_string().contains("an id appears twice"));
        let chunk = dict.chunk(0, 2);
        assert_eq!(
            chunk.as_primitive::<Int64Type>().values().to_vec(),
            vec![10, 20]
        );
    }
}

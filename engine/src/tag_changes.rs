//! How changes to tables reach the tag store: the part of applying a change
//! that keeps user ordinals and tag indexes in step with the rows
//! (docs/format.md § Tags). Every function here is deterministic in the
//! change and the state it applies to, so replaying the log repeats it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{concat, filter_record_batch, take};
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::predicate::Predicate;
use crate::table::{Segment, SegmentData, TableSnapshot};
use crate::tags::{ColumnTags, IndexedRows, StoredTag, TableTags, Tags, indexable};
use crate::types::ColumnType;
use crate::users::{Dictionary, UserKeyType};
use crate::{ScanSpec, Table};

/// Deleted users up to this many are looked up again with an IN list (row
/// groups without them skipped); more, with a read of the whole table.
const RECHECK_IN_LIST_MAX: usize = 64;

/// Registers `table`, whose column `user_column` is its user key: the
/// database's dictionary is created with the first such table, and every
/// later one must have ids of the same type.
pub(crate) fn table_created(
    tags: &mut Tags,
    table: &Table,
    user_column: usize,
    column_type: ColumnType,
) -> Result<()> {
    let key_type = UserKeyType::of(column_type).ok_or_else(|| {
        Error::UserKey(format!(
            "a user key is SMALLINT, INTEGER, BIGINT or TEXT, not {column_type}"
        ))
    })?;
    match &tags.dictionary {
        Some(d) if d.key_type() != key_type => {
            return Err(Error::UserKey(format!(
                "this database's user ids are {}; column \"{}\" is {column_type}",
                d.key_type(),
                table.schema().field(user_column).name()
            )));
        }
        Some(_) => {}
        None => tags.dictionary = Some(Arc::new(Dictionary::new(key_type))),
    }
    tags.tables.insert(
        table.id(),
        Arc::new(TableTags::new(table.id(), table.name(), user_column)),
    );
    Ok(())
}

/// What rows appended to a table do to the tag store: their new user ids get
/// ordinals, their users become present and join the tags of their values.
pub(crate) fn rows_added(tags: &mut Tags, table_id: u64, batches: &[RecordBatch]) -> Result<()> {
    let Some(index) = tags.tables.get(&table_id) else {
        return Ok(());
    };
    let read = index.read_columns();
    let projected = batches
        .iter()
        .map(|b| b.project(&read))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    projected_rows_added(tags, table_id, projected.into_iter().map(Ok))
}

/// What appended segments (files a large append wrote) do, as
/// [`rows_added`].
pub(crate) fn segments_added(
    tags: &mut Tags,
    table_id: u64,
    snapshot: &TableSnapshot,
    segments: &[Arc<Segment>],
) -> Result<()> {
    let Some(index) = tags.tables.get(&table_id) else {
        return Ok(());
    };
    let only = TableSnapshot {
        schema: Arc::clone(&snapshot.schema),
        segments: segments.to_vec(),
    };
    let batches = read_rows(&only, &index.read_columns(), None, false)?;
    projected_rows_added(tags, table_id, batches)
}

/// [`rows_added`] for batches holding the columns the tag index reads
/// ([`TableTags::read_columns`]).
fn projected_rows_added(
    tags: &mut Tags,
    table_id: u64,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
) -> Result<()> {
    let Some(index) = tags.tables.get(&table_id) else {
        return Ok(());
    };
    let mut index = index.as_ref().clone();
    let dictionary = Arc::clone(tags.dictionary()?);
    let user_at = index
        .read_columns()
        .binary_search(&index.user_column)
        .expect("the user key is read");
    let all: Vec<usize> = (0..index.columns.len()).collect();
    for projected in batches {
        let projected = &projected?;
        let ordinals = dictionary.assign(projected.column(user_at).as_ref())?;
        index.add(
            &IndexedRows {
                ordinals: &ordinals,
                batch: projected,
            },
            true,
            &all,
        )?;
    }
    tags.users = dictionary.len();
    tags.tables.insert(table_id, Arc::new(index));
    Ok(())
}

/// What rows deleted from a table do: the users they belonged to are looked
/// up in the rows left (`after`), and keep only the tags those rows give.
pub(crate) fn rows_deleted(
    tags: &mut Tags,
    table_id: u64,
    before: &TableSnapshot,
    after: &TableSnapshot,
    deleted: &[(u64, RoaringBitmap)],
) -> Result<()> {
    let Some(index) = tags.tables.get(&table_id) else {
        return Ok(());
    };
    let mut index = index.as_ref().clone();
    let dictionary = Arc::clone(tags.dictionary()?);
    // The ids of the deleted rows.
    let mut ids: Vec<ArrayRef> = Vec::new();
    for (segment_id, positions) in deleted {
        let Some(segment) = before.segments.iter().find(|s| s.id == *segment_id) else {
            continue;
        };
        let column = raw_column(segment, index.user_column)?;
        let at = arrow::array::UInt32Array::from_iter_values(positions.iter());
        ids.push(take(column.as_ref(), &at, None)?);
    }
    if ids.is_empty() {
        return Ok(());
    }
    let ids = concat(&ids.iter().map(AsRef::as_ref).collect::<Vec<&dyn Array>>())?;
    let users: RoaringBitmap = dictionary
        .lookup(ids.as_ref(), tags.users)?
        .into_iter()
        .flatten()
        .collect();
    let read = index.read_columns();
    let left = users_rows(
        after,
        &read,
        index.user_column,
        &dictionary,
        tags.users,
        &users,
        false,
    )?;
    let rows: Vec<IndexedRows<'_>> = left
        .iter()
        .map(|(ordinals, batch)| IndexedRows { ordinals, batch })
        .collect();
    index.recompute(&users, &rows)?;
    tags.tables.insert(table_id, Arc::new(index));
    Ok(())
}

/// The live rows of `snapshot` whose user (table column `user_column`, one
/// of `columns`) is one of `users` (ordinals below `visible`), with table
/// columns `columns` (ascending) and, with `row_ids`, the row id last; each
/// batch with its rows' ordinals. The rows are found by id (an IN list when
/// the users are few, so row groups without them are skipped), then by
/// ordinal.
pub(crate) fn users_rows(
    snapshot: &TableSnapshot,
    columns: &[usize],
    user_column: usize,
    dictionary: &Dictionary,
    visible: u32,
    users: &RoaringBitmap,
    row_ids: bool,
) -> Result<Vec<(Vec<u32>, RecordBatch)>> {
    let predicate = (users.len() <= RECHECK_IN_LIST_MAX as u64).then(|| {
        let id_values = dictionary.ids(users.iter());
        Predicate::InList {
            column: user_column,
            values: (0..id_values.len())
                .map(|i| id_values.slice(i, 1))
                .collect(),
            negated: false,
        }
    });
    let user_at = columns
        .binary_search(&user_column)
        .expect("the user key is read");
    let mut out = Vec::new();
    for batch in read_rows(snapshot, columns, predicate, row_ids)? {
        let batch = batch?;
        let ordinals = dictionary.lookup(batch.column(user_at).as_ref(), visible)?;
        let keep: BooleanArray = ordinals
            .iter()
            .map(|o| Some(o.is_some_and(|o| users.contains(o))))
            .collect();
        let kept = filter_record_batch(&batch, &keep)?;
        let kept_ordinals: Vec<u32> = ordinals
            .into_iter()
            .flatten()
            .filter(|o| users.contains(*o))
            .collect();
        if !kept_ordinals.is_empty() {
            out.push((kept_ordinals, kept));
        }
    }
    Ok(out)
}

/// Whether the stored tag `tag` holds any of `users`.
pub(crate) fn holds_any(tag: &StoredTag, users: &RoaringBitmap) -> Result<bool> {
    Ok(!tag.bits.is_empty() && !tag.bits.get()?.is_disjoint(users))
}

/// What `FORGET USER` does to stored tags and frozen segments: `users` leave
/// each that holds any of them.
pub(crate) fn users_forgotten(tags: &mut Tags, users: &RoaringBitmap) -> Result<()> {
    for tag in tags.stored.values_mut() {
        if !holds_any(tag, users)? {
            continue;
        }
        let bits = crate::tags::Bits::from(tag.bits.get()? - users);
        let tag = Arc::make_mut(tag);
        tag.bits = bits;
        tag.dirty = true;
    }
    Ok(())
}

/// `CREATE TAG INDEX`: adds `columns` (and the time column, the first time)
/// to the table's tag index and fills their tags from the table's rows.
pub(crate) fn index_columns(
    tags: &mut Tags,
    table: &Table,
    snapshot: &TableSnapshot,
    columns: &[String],
    time: Option<&str>,
) -> Result<()> {
    let Some(index) = tags.tables.get(&table.id()) else {
        return Err(Error::UserKey(format!(
            "table \"{}\" has no user key column (CREATE TABLE ... (id BIGINT USER KEY, ...))",
            table.name()
        )));
    };
    let mut index = index.as_ref().clone();
    let schema = table.schema();
    let position = |name: &str| {
        schema.index_of(name).map_err(|_| Error::ColumnNotFound {
            table: table.name().to_string(),
            column: name.to_string(),
        })
    };
    if let Some(time) = time {
        let at = position(time)?;
        let column_type = ColumnType::from_arrow(schema.field(at).data_type())?;
        if !matches!(
            column_type,
            ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz
        ) {
            return Err(Error::UserKey(format!(
                "the time of a tag index is a DATE or TIMESTAMP column; \"{time}\" is {column_type}"
            )));
        }
        match &index.time {
            Some((_, existing)) if existing != time => {
                return Err(Error::UserKey(format!(
                    "table \"{}\" is already indexed by time \"{existing}\"",
                    table.name()
                )));
            }
            Some(_) => {}
            None if !index.columns.is_empty() => {
                return Err(Error::UserKey(format!(
                    "table \"{}\" has a tag index without time; drop it to index by time",
                    table.name()
                )));
            }
            None => index.time = Some((at, time.to_string())),
        }
    }
    let mut added = Vec::new();
    for name in columns {
        let at = position(name)?;
        if at == index.user_column {
            return Err(Error::UserKey(format!(
                "\"{name}\" is the user key; its users are the table's"
            )));
        }
        let column_type = ColumnType::from_arrow(schema.field(at).data_type())?;
        if !indexable(column_type) {
            return Err(Error::UnsupportedType(format!(
                "{column_type} column \"{name}\" in a tag index"
            )));
        }
        if index.columns.iter().any(|c| c.name == *name) {
            continue;
        }
        index.columns.push(ColumnTags {
            column: at,
            name: name.clone(),
            column_type,
            values: Arc::default(),
        });
        added.push(index.columns.len() - 1);
    }
    let dictionary = Arc::clone(tags.dictionary()?);
    let read = index.read_columns();
    let user_at = read
        .binary_search(&index.user_column)
        .expect("the user key is read");
    if !added.is_empty() {
        for batch in read_rows(snapshot, &read, None, false)? {
            let batch = batch?;
            let ordinals: Vec<u32> = dictionary
                .lookup(batch.column(user_at).as_ref(), tags.users)?
                .into_iter()
                .map(|o| o.ok_or_else(|| Error::UserKey("a row's user has no ordinal".to_string())))
                .collect::<Result<_>>()?;
            index.add(
                &IndexedRows {
                    ordinals: &ordinals,
                    batch: &batch,
                },
                false,
                &added,
            )?;
        }
    }
    index.dirty = true;
    tags.tables.insert(table.id(), Arc::new(index));
    Ok(())
}

/// `DROP TAG INDEX`: removes `columns` (every column when empty) from the
/// table's tag index; the time goes with the last column.
pub(crate) fn unindex_columns(tags: &mut Tags, table: &Table, columns: &[String]) -> Result<()> {
    let Some(index) = tags.tables.get(&table.id()) else {
        return Err(Error::UserKey(format!(
            "table \"{}\" has no tag index",
            table.name()
        )));
    };
    let mut index = index.as_ref().clone();
    for name in columns {
        if !index.columns.iter().any(|c| c.name == *name) {
            return Err(Error::UnknownTag(format!(
                "column \"{name}\" of table \"{}\" is not in its tag index",
                table.name()
            )));
        }
    }
    index
        .columns
        .retain(|c| !columns.is_empty() && !columns.contains(&c.name));
    if index.columns.is_empty() {
        index.time = None;
    }
    index.dirty = true;
    tags.tables.insert(table.id(), Arc::new(index));
    Ok(())
}

/// Every position's value of one column of a segment, deleted rows included.
fn raw_column(segment: &Segment, column: usize) -> Result<ArrayRef> {
    let parts: Vec<ArrayRef> = match &segment.data {
        SegmentData::Memory(batches) => batches
            .iter()
            .map(|b| Arc::clone(b.column(column)))
            .collect(),
        SegmentData::File(reader) => (0..reader.row_groups())
            .map(|g| Ok(Arc::clone(reader.read_row_group(g, &[column])?.column(0))))
            .collect::<Result<_>>()?,
    };
    Ok(concat(
        &parts.iter().map(AsRef::as_ref).collect::<Vec<&dyn Array>>(),
    )?)
}

/// The live rows of `snapshot` with table columns `columns` (ascending), that
/// `predicate` keeps, and with `row_ids` the row id last: one batch per unit
/// (row group or stored batch), read as the iterator is advanced, so only one
/// unit is in memory at a time.
pub(crate) fn read_rows(
    snapshot: &TableSnapshot,
    columns: &[usize],
    predicate: Option<Predicate>,
    row_ids: bool,
) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
    let spec = ScanSpec::new(snapshot, Some(columns), predicate, row_ids)?;
    let units = spec.units(snapshot)?;
    Ok(units
        .into_iter()
        .map(move |unit| spec.apply(&unit))
        .filter(|batch| batch.as_ref().map_or(true, |b| b.num_rows() > 0)))
}

/// Creates or replaces a stored tag or segment.
pub(crate) fn put_tag(tags: &mut Tags, put: &crate::change::PutTag) -> Result<()> {
    use crate::change::TagUsers;
    use crate::tags::{Bits, StoredTag};
    let meta = &put.meta;
    if tags.stored.contains_key(&meta.name) && !meta.replace {
        return Err(Error::TagExists(meta.name.clone()));
    }
    let users = match &put.users {
        TagUsers::Ids(ids) => {
            let dictionary = Arc::clone(tags.dictionary()?);
            let mut ordinals = dictionary.assign(ids.as_ref())?;
            tags.users = dictionary.len();
            ordinals.sort_unstable();
            ordinals.dedup();
            RoaringBitmap::from_sorted_iter(ordinals).expect("sorted and deduplicated")
        }
        TagUsers::Ordinals(users) => {
            if let Some(max) = users.max()
                && max >= tags.users
            {
                return Err(Error::UserKey(format!(
                    "the bitmap holds user ordinal {max}; the database has {} users",
                    tags.users
                )));
            }
            users.clone()
        }
    };
    tags.stored.insert(
        meta.name.clone(),
        Arc::new(StoredTag {
            id: meta.id,
            name: meta.name.clone(),
            source: meta.source,
            definition: meta.definition.clone(),
            bits: Bits::from(users),
            refreshed_micros: meta.refreshed_micros,
            file: None,
            dirty: true,
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use arrow::array::{AsArray, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    use super::*;
    use crate::demo::Rng;
    use crate::tags::Key;
    use crate::{Catalog, ColumnDef};

    const DAY: i64 = 86_400_000_000;
    const CITIES: [&str; 4] = ["bj", "sh", "gz", "x y"];
    const KINDS: [&str; 3] = ["view", "cart", "buy"];

    fn users_rows(rng: &mut Rng, table: &Table, n: usize) -> RecordBatch {
        let ids: Vec<i64> = (0..n).map(|_| rng.below(40) as i64).collect();
        let cities: Vec<Option<&str>> = (0..n)
            .map(|_| match rng.below(5) {
                4 => None,
                c => Some(CITIES[c as usize]),
            })
            .collect();
        RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(cities)),
            ],
        )
        .expect("batch")
    }

    fn events_rows(rng: &mut Rng, table: &Table, n: usize) -> RecordBatch {
        let ids: Vec<i64> = (0..n).map(|_| 20 + rng.below(40) as i64).collect();
        let kinds: Vec<&str> = (0..n).map(|_| KINDS[rng.below(3) as usize]).collect();
        let ts: Vec<i64> = (0..n).map(|_| (rng.below(6) as i64) * DAY + 7).collect();
        RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(kinds)),
                Arc::new(TimestampMicrosecondArray::from(ts)),
            ],
        )
        .expect("batch")
    }

    /// Live rows of a table with their row ids.
    fn rows_of(table: &Table) -> (Vec<RecordBatch>, Vec<u64>) {
        let snapshot = table.snapshot();
        let spec = ScanSpec::new(&snapshot, None, None, true).expect("spec");
        let mut batches = Vec::new();
        let mut row_ids = Vec::new();
        for unit in spec.units(&snapshot).expect("units") {
            let batch = spec.apply(&unit).expect("rows");
            let n = batch.num_columns();
            row_ids.extend(
                batch
                    .column(n - 1)
                    .as_primitive::<arrow::datatypes::UInt64Type>()
                    .values()
                    .iter(),
            );
            batches.push(
                batch
                    .project(&(0..n - 1).collect::<Vec<_>>())
                    .expect("project"),
            );
        }
        (batches, row_ids)
    }

    /// Checks every bitmap of the tag store against the tables' rows, read
    /// naively.
    fn check(catalog: &Catalog) {
        let tags = catalog.tags();
        let ordinal = |id: i64| {
            tags.dictionary()
                .expect("dictionary")
                .lookup_text(&id.to_string(), tags.users)
                .expect("every id has an ordinal")
        };
        let mut universe = RoaringBitmap::new();
        for (name, column, time) in [("users", 1, None), ("events", 1, Some(2))] {
            let table = catalog.table(name).expect("table");
            let (batches, _) = rows_of(&table);
            let mut present = RoaringBitmap::new();
            let mut by_value: BTreeMap<String, RoaringBitmap> = BTreeMap::new();
            let mut by_day: BTreeMap<(String, i32), RoaringBitmap> = BTreeMap::new();
            for batch in &batches {
                let ids = batch.column(0).as_primitive::<Int64Type>();
                let values = batch.column(column).as_string::<i32>();
                for row in 0..batch.num_rows() {
                    let o = ordinal(ids.value(row));
                    present.insert(o);
                    if values.is_valid(row) {
                        let v = values.value(row).to_string();
                        by_value.entry(v.clone()).or_default().insert(o);
                        if let Some(t) = time {
                            let ts = batch.column(t).as_primitive::<TimestampMicrosecondType>();
                            let day = ts.value(row).div_euclid(DAY) as i32;
                            by_day.entry((v, day)).or_default().insert(o);
                        }
                    }
                }
            }
            universe |= &present;
            let index = &tags.tables[&table.id()];
            assert_eq!(
                index.present.get().expect("present"),
                &present,
                "{name} users"
            );
            let got: BTreeMap<String, RoaringBitmap> = index.columns[0]
                .values
                .iter()
                .map(|(k, e)| (k.to_string(), e.all.get().expect("all").clone()))
                .collect();
            assert_eq!(got, by_value, "{name} values");
            if time.is_some() {
                let got: BTreeMap<(String, i32), RoaringBitmap> = index.columns[0]
                    .values
                    .iter()
                    .flat_map(|(k, e)| {
                        e.days
                            .iter()
                            .map(move |(d, b)| ((k.to_string(), *d), b.get().expect("day").clone()))
                    })
                    .collect();
                assert_eq!(got, by_day, "{name} days");
            }
        }
        assert_eq!(tags.universe().expect("universe"), universe);
        let _ = Key::Bool(true);
    }

    #[test]
    fn tag_indexes_follow_the_rows_through_changes_checkpoints_and_replays() {
        let seed = 0x7a65;
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(dir.path()).expect("open");
        catalog
            .create_table(
                "users",
                &[
                    ColumnDef::new("id", ColumnType::BigInt, false).user_key(),
                    ColumnDef::new("city", ColumnType::Text, true),
                ],
                false,
            )
            .expect("users");
        catalog
            .create_table(
                "events",
                &[
                    ColumnDef::new("user_id", ColumnType::BigInt, false).user_key(),
                    ColumnDef::new("kind", ColumnType::Text, false),
                    ColumnDef::new("ts", ColumnType::Timestamp, false),
                ],
                false,
            )
            .expect("events");
        catalog
            .create_tag_index("users", &["city".to_string()], None)
            .expect("index");
        catalog
            .create_tag_index("events", &["kind".to_string()], Some("ts"))
            .expect("index");
        for step in 0..120 {
            let users = catalog.table("users").expect("users");
            let events = catalog.table("events").expect("events");
            match rng.below(10) {
                0..=2 => {
                    let n = 1 + rng.below(8) as usize;
                    catalog
                        .append(&users, vec![users_rows(&mut rng, &users, n)])
                        .expect("append");
                }
                3..=4 => {
                    // Half the time as a large append does it: the rows in a
                    // segment file of their own, logged by name.
                    let large = rng.below(2) == 0;
                    catalog.set_append_memory_max(if large { 1 } else { u64::MAX });
                    let mut appender = catalog.appender(&events);
                    for _ in 0..1 + rng.below(3) {
                        let n = 1 + rng.below(20) as usize;
                        appender
                            .push(events_rows(&mut rng, &events, n))
                            .expect("push");
                    }
                    appender.commit().expect("append");
                }
                5..=6 => {
                    let table = if rng.below(2) == 0 { &users } else { &events };
                    let (_, row_ids) = rows_of(table);
                    let chosen: BTreeSet<u64> = row_ids
                        .iter()
                        .copied()
                        .filter(|_| rng.below(4) == 0)
                        .collect();
                    let chosen: Vec<u64> = chosen.into_iter().collect();
                    catalog.delete(table, &chosen).expect("delete");
                }
                7 => {
                    let (_, row_ids) = rows_of(&users);
                    let chosen: Vec<u64> = row_ids
                        .iter()
                        .copied()
                        .filter(|_| rng.below(3) == 0)
                        .collect();
                    let new_rows = users_rows(&mut rng, &users, chosen.len());
                    catalog
                        .update(&users, &chosen, vec![new_rows])
                        .expect("update");
                }
                8 => {
                    let tags = catalog.tags();
                    let dirty = tags.tables.values().filter(|i| i.dirty);
                    let written: Vec<u64> = dirty.map(|i| i.table_id).collect();
                    catalog.checkpoint().expect("checkpoint");
                    // What the checkpoint wrote is read from the files now,
                    // not held in memory.
                    for id in written {
                        let index = &catalog.tags().tables[&id];
                        assert!(!index.all_loaded(), "{} is in memory", index.table_name);
                    }
                }
                _ => {
                    // Reopen: after a clean close or as after a crash.
                    if rng.below(2) == 0 {
                        catalog.close_without_checkpoint();
                    }
                    drop(catalog);
                    catalog = Catalog::open(dir.path()).expect("reopen");
                }
            }
            check(&catalog);
            let _ = step;
        }
        let tags = catalog.tags();
        assert!(tags.users > 40, "the test makes many users: {}", tags.users);
    }
}

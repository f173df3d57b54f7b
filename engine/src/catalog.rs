//! The catalog: every table of a database and the one path by which data changes.
//!
//! All writes (create, drop, append, delete, update) go through [`Catalog`], one at a
//! time under the writer lock. A write builds the new table snapshot, makes it
//! durable (segment files, then the manifest) and only then installs it, so readers
//! never see a change that is not on disk and a failed write leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{Array, RecordBatch, RecordBatchOptions, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::limits;
use crate::roles::Role;
use crate::store::{ColumnEntry, Manifest, SegmentEntry, Store, TableEntry};
use crate::table::{Segment, Table, TableSnapshot};
use crate::types::{self, ColumnDef, ColumnType};

#[derive(Debug)]
pub struct Catalog {
    store: Option<Store>,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    roles: RwLock<BTreeMap<String, Role>>,
    /// Serialises writers; holds the next id for tables and segments.
    writer: Mutex<u64>,
}

impl Catalog {
    /// A catalog whose data lives only in memory.
    pub fn in_memory() -> Catalog {
        Catalog {
            store: None,
            tables: RwLock::new(BTreeMap::new()),
            roles: RwLock::new(BTreeMap::new()),
            writer: Mutex::new(1),
        }
    }

    /// Opens the data directory `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Catalog> {
        let (store, manifest) = Store::open(dir)?;
        let mut tables = BTreeMap::new();
        for entry in &manifest.tables {
            let table = load_table(&store, entry)?;
            tables.insert(entry.name.clone(), Arc::new(table));
        }
        let roles = manifest
            .roles
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        Ok(Catalog {
            store: Some(store),
            tables: RwLock::new(tables),
            roles: RwLock::new(roles),
            writer: Mutex::new(manifest.next_id),
        })
    }

    /// The data directory, or `None` for an in-memory catalog.
    pub fn path(&self) -> Option<&Path> {
        self.store.as_ref().map(Store::dir)
    }

    pub fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.read_tables()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TableNotFound(name.to_string()))
    }

    pub fn table_names(&self) -> Vec<String> {
        self.read_tables().keys().cloned().collect()
    }

    /// Creates a table. Returns false (and changes nothing) when it exists and
    /// `if_not_exists` is set.
    pub fn create_table(
        &self,
        name: &str,
        columns: &[ColumnDef],
        if_not_exists: bool,
    ) -> Result<bool> {
        types::check_name(name)?;
        let schema = types::table_schema(columns)?;
        let mut next_id = self.lock_writer();
        if self.read_tables().contains_key(name) {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(Error::TableExists(name.to_string()))
            };
        }
        let table = Arc::new(Table::new(*next_id, name.to_string(), schema, Vec::new()));
        *next_id += 1;
        let mut tables = self.read_tables().clone();
        tables.insert(name.to_string(), table);
        self.persist(&tables, &self.read_roles(), &BTreeMap::new(), &[], *next_id)?;
        *self.tables.write().expect("catalog lock is never poisoned") = tables;
        Ok(true)
    }

    /// Drops a table. Returns false when it does not exist and `if_exists` is set.
    pub fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let next_id = self.lock_writer();
        let mut tables = self.read_tables().clone();
        if tables.remove(name).is_none() {
            return if if_exists {
                Ok(false)
            } else {
                Err(Error::TableNotFound(name.to_string()))
            };
        }
        self.persist(&tables, &self.read_roles(), &BTreeMap::new(), &[], *next_id)?;
        *self.tables.write().expect("catalog lock is never poisoned") = tables;
        Ok(true)
    }

    /// Every role, by name.
    pub fn roles(&self) -> Vec<Role> {
        self.read_roles().values().cloned().collect()
    }

    pub fn role(&self, name: &str) -> Option<Role> {
        self.read_roles().get(name).cloned()
    }

    /// Creates a role; an existing name is an error.
    pub fn create_role(&self, role: Role) -> Result<()> {
        types::check_name(&role.name)?;
        self.change_roles(|roles| {
            if roles.contains_key(&role.name) {
                return Err(Error::RoleExists(role.name.clone()));
            }
            roles.insert(role.name.clone(), role);
            Ok(())
        })
    }

    /// Changes a role in place.
    pub fn alter_role(&self, name: &str, change: impl FnOnce(&mut Role)) -> Result<()> {
        self.change_roles(|roles| {
            let role = roles
                .get_mut(name)
                .ok_or_else(|| Error::RoleNotFound(name.to_string()))?;
            change(role);
            Ok(())
        })
    }

    /// Drops a role. Returns false when it does not exist and `if_exists` is set.
    pub fn drop_role(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.change_roles(|roles| {
            dropped = roles.remove(name).is_some();
            if dropped || if_exists {
                Ok(())
            } else {
                Err(Error::RoleNotFound(name.to_string()))
            }
        })?;
        Ok(dropped)
    }

    /// The one write path for roles: changes a copy, makes it durable, installs it.
    fn change_roles(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Role>) -> Result<()>,
    ) -> Result<()> {
        let next_id = self.lock_writer();
        let mut roles = self.read_roles().clone();
        change(&mut roles)?;
        let tables = self.read_tables().clone();
        self.persist(&tables, &roles, &BTreeMap::new(), &[], *next_id)?;
        *self.roles.write().expect("role lock is never poisoned") = roles;
        Ok(())
    }

    fn read_roles(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Role>> {
        self.roles.read().expect("role lock is never poisoned")
    }

    /// Appends rows to `table` as one new segment; all or nothing. Returns the number
    /// of rows appended.
    pub fn append(&self, table: &Table, batches: Vec<RecordBatch>) -> Result<u64> {
        self.change(table, &[], batches)
    }

    /// Deletes the rows with the given row ids. Returns the number deleted.
    pub fn delete(&self, table: &Table, row_ids: &[u64]) -> Result<u64> {
        self.change(table, row_ids, Vec::new())
            .map(|_| row_ids.len() as u64)
    }

    /// Replaces the rows with the given row ids by `new_rows`, in one step.
    pub fn update(
        &self,
        table: &Table,
        row_ids: &[u64],
        new_rows: Vec<RecordBatch>,
    ) -> Result<u64> {
        self.change(table, row_ids, new_rows)
            .map(|_| row_ids.len() as u64)
    }

    /// The one write path for rows: removes `delete` row ids, appends `append` rows.
    fn change(&self, table: &Table, delete: &[u64], append: Vec<RecordBatch>) -> Result<u64> {
        let (append, appended) = conform_rows(table, append)?;
        if appended > limits::ROWS_PER_SEGMENT_MAX {
            return Err(Error::LimitExceeded {
                what: "rows in one statement",
                limit: limits::ROWS_PER_SEGMENT_MAX,
            });
        }
        let mut next_id = self.lock_writer();
        let current = self.current_table(table)?;
        let old = current.snapshot();
        let mut segments = remove_rows(&old, delete, &mut next_id, table.name())?;
        if appended > 0 {
            segments.push(Arc::new(Segment::new(*next_id, append)));
            *next_id += 1;
        }
        let fresh: Vec<&Segment> = segments
            .iter()
            .filter(|s| !old.segments.iter().any(|o| o.id == s.id))
            .map(|s| s.as_ref())
            .collect();
        let snapshot = Arc::new(TableSnapshot {
            schema: table.schema(),
            segments: segments.clone(),
        });
        let tables = self.read_tables().clone();
        let overrides = BTreeMap::from([(table.name().to_string(), Arc::clone(&snapshot))]);
        self.persist(&tables, &self.read_roles(), &overrides, &fresh, *next_id)?;
        *current
            .current
            .write()
            .expect("snapshot lock is never poisoned") = snapshot;
        Ok(appended)
    }

    /// The live table object for `table`, which must still be the same table (not
    /// dropped, not dropped and recreated) since the caller looked it up.
    fn current_table(&self, table: &Table) -> Result<Arc<Table>> {
        match self.read_tables().get(table.name()) {
            Some(t) if t.id == table.id => Ok(Arc::clone(t)),
            _ => Err(Error::Conflict(table.name().to_string())),
        }
    }

    /// Makes a catalog state durable: new segment files first, then the manifest.
    fn persist(
        &self,
        tables: &BTreeMap<String, Arc<Table>>,
        roles: &BTreeMap<String, Role>,
        overrides: &BTreeMap<String, Arc<TableSnapshot>>,
        fresh: &[&Segment],
        next_id: u64,
    ) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for segment in fresh {
            if let Some(first) = segment.batches.first() {
                store.write_segment(segment.id, &first.schema(), &segment.batches)?;
            }
        }
        let mut manifest = manifest_of(tables, overrides, next_id);
        manifest.roles = roles.values().cloned().collect();
        store.write_manifest(&manifest)?;
        store.remove_unreferenced(&manifest)
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Table>>> {
        self.tables.read().expect("catalog lock is never poisoned")
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, u64> {
        self.writer.lock().expect("writer lock is never poisoned")
    }
}

/// Checks that appended rows fit the table (same column types, no NULL where the
/// column forbids it) and restates them under the table's schema (names and
/// nullability). Returns the batches and the number of rows.
fn conform_rows(table: &Table, batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, u64)> {
    let schema = table.schema();
    let mut rows = 0u64;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        if batch.num_columns() != schema.fields().len() {
            return Err(Error::SchemaMismatch {
                table: table.name().to_string(),
                reason: format!(
                    "{} columns given, {} expected",
                    batch.num_columns(),
                    schema.fields().len()
                ),
            });
        }
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if column.data_type() != field.data_type() {
                return Err(Error::SchemaMismatch {
                    table: table.name().to_string(),
                    reason: format!(
                        "column \"{}\" is {}, got {}",
                        field.name(),
                        field.data_type(),
                        column.data_type()
                    ),
                });
            }
            if !field.is_nullable() && column.logical_null_count() > 0 {
                return Err(Error::NotNullViolation {
                    table: table.name().to_string(),
                    column: field.name().clone(),
                });
            }
        }
        rows += batch.num_rows() as u64;
        if batch.num_rows() > 0 {
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            out.push(RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                batch.columns().to_vec(),
                &options,
            )?);
        }
    }
    Ok((out, rows))
}

/// The segments of `old` without the rows in `delete`; each touched segment is
/// rewritten under a new id (the storage issue replaces this by deletion vectors).
fn remove_rows(
    old: &TableSnapshot,
    delete: &[u64],
    next_id: &mut u64,
    table: &str,
) -> Result<Vec<Arc<Segment>>> {
    let mut by_segment: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for &row_id in delete {
        by_segment
            .entry(row_id >> 32)
            .or_default()
            .insert(row_id as u32);
    }
    let mut segments = Vec::with_capacity(old.segments.len());
    for segment in &old.segments {
        let Some(rows) = by_segment.remove(&segment.id) else {
            segments.push(Arc::clone(segment));
            continue;
        };
        if rows
            .last()
            .is_some_and(|&r| u64::from(r) >= segment.row_count)
        {
            return Err(Error::Conflict(table.to_string()));
        }
        let kept = keep_rows(segment, &rows)?;
        if kept.iter().any(|b| b.num_rows() > 0) {
            segments.push(Arc::new(Segment::new(*next_id, kept)));
            *next_id += 1;
        }
    }
    if !by_segment.is_empty() {
        // Row ids of a segment that no longer exists: the snapshot the caller read
        // is stale.
        return Err(Error::Conflict(table.to_string()));
    }
    Ok(segments)
}

fn keep_rows(segment: &Segment, deleted: &BTreeSet<u32>) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(segment.batches.len());
    let mut start = 0u32;
    for batch in &segment.batches {
        let end = start + batch.num_rows() as u32;
        let mask: arrow::array::BooleanArray =
            (start..end).map(|r| Some(!deleted.contains(&r))).collect();
        let kept = filter_record_batch(batch, &mask)?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
        start = end;
    }
    Ok(out)
}

fn manifest_of(
    tables: &BTreeMap<String, Arc<Table>>,
    overrides: &BTreeMap<String, Arc<TableSnapshot>>,
    next_id: u64,
) -> Manifest {
    let mut manifest = Manifest::empty();
    manifest.next_id = next_id;
    for (name, table) in tables {
        let snapshot = overrides
            .get(name)
            .cloned()
            .unwrap_or_else(|| table.snapshot());
        manifest.tables.push(TableEntry {
            id: table.id,
            name: name.clone(),
            columns: table
                .columns()
                .into_iter()
                .map(|c| ColumnEntry {
                    name: c.name,
                    column_type: c.column_type.to_string(),
                    nullable: c.nullable,
                })
                .collect(),
            segments: snapshot
                .segments
                .iter()
                .filter(|s| s.row_count > 0)
                .map(|s| SegmentEntry {
                    id: s.id,
                    rows: s.row_count,
                })
                .collect(),
        });
    }
    manifest
}

fn load_table(store: &Store, entry: &TableEntry) -> Result<Table> {
    let schema = entry_schema(store.dir(), entry)?;
    let mut segments = Vec::with_capacity(entry.segments.len());
    for s in &entry.segments {
        let batches = store.read_segment(*s, &schema)?;
        segments.push(Arc::new(Segment::new(s.id, batches)));
    }
    Ok(Table::new(entry.id, entry.name.clone(), schema, segments))
}

/// The schema of a table as the manifest of data directory `dir` records it.
pub(crate) fn entry_schema(dir: &Path, entry: &TableEntry) -> Result<SchemaRef> {
    let manifest_path = || dir.join(crate::store::MANIFEST_FILE);
    let columns = entry
        .columns
        .iter()
        .map(|c| {
            let column_type =
                ColumnType::parse(&c.column_type).ok_or_else(|| Error::Corrupted {
                    path: manifest_path(),
                    reason: format!(
                        "unknown column type {:?} in table {:?}",
                        c.column_type, entry.name
                    ),
                })?;
            Ok(ColumnDef::new(&c.name, column_type, c.nullable))
        })
        .collect::<Result<Vec<_>>>()?;
    types::table_schema(&columns).map_err(|e| Error::Corrupted {
        path: manifest_path(),
        reason: format!("table {:?}: {e}", entry.name),
    })
}

/// Row ids of a scan's row-id column, for [`Catalog::delete`] and [`Catalog::update`].
pub fn row_ids(column: &dyn Array) -> Result<Vec<u64>> {
    let ids = column
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| {
            arrow::error::ArrowError::InvalidArgumentError("row ids must be UInt64".into())
        })?;
    Ok(ids.values().to_vec())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn columns() -> Vec<ColumnDef> {
        vec![
            ColumnDef::new("id", ColumnType::BigInt, false),
            ColumnDef::new("name", ColumnType::Text, true),
        ]
    }

    fn rows(table: &Table, ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
        RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .expect("batch")
    }

    fn ids(catalog: &Catalog) -> Vec<i64> {
        let snapshot = catalog.table("t").expect("table").snapshot();
        let batches = snapshot.scan(Some(&[0]), None, false, None).expect("scan");
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn writes_survive_reopen_and_leave_no_orphans() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let catalog = Catalog::open(dir.path()).expect("open");
            assert!(
                catalog
                    .create_table("t", &columns(), false)
                    .expect("create")
            );
            assert!(
                !catalog
                    .create_table("t", &columns(), true)
                    .expect("if not exists")
            );
            let t = catalog.table("t").expect("table");
            catalog
                .append(
                    &t,
                    vec![rows(&t, &[1, 2, 3], &[Some("a"), None, Some("c")])],
                )
                .expect("append");
            catalog
                .append(&t, vec![rows(&t, &[4], &[Some("d")])])
                .expect("append");
            let snapshot = t.snapshot();
            let with_ids = snapshot.scan(Some(&[0]), None, true, None).expect("scan");
            let all = row_ids(with_ids[0].column(1).as_ref()).expect("row ids");
            assert_eq!(catalog.delete(&t, &all[1..2]).expect("delete"), 1);
            // A second process is kept out while this catalog is open.
            assert!(matches!(Catalog::open(dir.path()), Err(Error::Locked(_))));
        }
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(ids(&catalog), vec![1, 3, 4]);
        let files = std::fs::read_dir(dir.path().join("segments"))
            .expect("segments")
            .count();
        assert_eq!(files, 2, "one rewritten segment and one untouched");
    }

    #[test]
    fn failed_append_changes_nothing() {
        let catalog = Catalog::in_memory();
        catalog
            .create_table("t", &columns(), false)
            .expect("create");
        let t = catalog.table("t").expect("table");
        let good = rows(&t, &[1], &[Some("a")]);
        let nulls = RecordBatch::try_new(
            t.schema(),
            vec![
                Arc::new(Int64Array::from(vec![Some(2), None])),
                Arc::new(StringArray::from(vec![Some("b"), Some("c")])),
            ],
        );
        // Arrow itself refuses a NULL in a non-nullable field of a batch schema, so
        // build the bad batch with a nullable schema as a foreign writer would.
        assert!(nulls.is_err());
        let loose = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
        ]));
        let bad = RecordBatch::try_new(
            loose,
            vec![
                Arc::new(Int64Array::from(vec![Some(2), None])),
                Arc::new(StringArray::from(vec![Some("b"), Some("c")])),
            ],
        )
        .expect("batch");
        let err = catalog.append(&t, vec![good, bad]).expect_err("not null");
        assert_eq!(
            err.to_string(),
            "null value in column \"id\" of relation \"t\" violates not-null constraint"
        );
        assert_eq!(ids(&catalog), Vec::<i64>::new());
    }

    #[test]
    fn stale_table_handle_is_a_conflict() {
        let catalog = Catalog::in_memory();
        catalog
            .create_table("t", &columns(), false)
            .expect("create");
        let old = catalog.table("t").expect("table");
        catalog.drop_table("t", false).expect("drop");
        catalog
            .create_table("t", &columns(), false)
            .expect("recreate");
        let err = catalog
            .append(&old, vec![rows(&old, &[1], &[None])])
            .expect_err("conflict");
        assert!(matches!(err, Error::Conflict(_)));
        assert!(!catalog.drop_table("nope", true).expect("if exists"));
        assert_eq!(
            catalog
                .drop_table("nope", false)
                .expect_err("missing")
                .to_string(),
            "relation \"nope\" does not exist"
        );
    }
}

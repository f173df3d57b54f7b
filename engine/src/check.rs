//! `cohortdb check`: verifies a data directory's invariants (docs/format.md §
//! Invariants `cohortdb check` verifies) and reports every problem it finds
//! rather than stopping at the first, without changing anything: no lock is
//! taken, no torn log tail is cut, no leftover is removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::change::Change;
use crate::deletes;
use crate::manifest;
use crate::segment_file::{SegmentFile, SegmentReader};
use crate::store::{self, DELETES_DIR, RECOMMENDERS_DIR, TAGS_DIR, USERS_DIR, WAL_DIR};
use crate::types;
use crate::upgrade;
use crate::wal;

/// What a check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per broken invariant: `<file>: <what>`.
    pub problems: Vec<String>,
    /// Notes that are not problems: a torn log tail the next open cuts.
    pub notes: Vec<String>,
    /// Files in the directory that no manifest names.
    pub leftovers: Vec<PathBuf>,
    pub tables: usize,
    pub segments: usize,
    /// Rows in segment files, deleted ones not counted.
    pub rows: u64,
    /// Log records after the last checkpoint, which the next open replays.
    pub wal_records: u64,
    /// Tag files (tag indexes and stored tags) verified, and user ids in
    /// the dictionary files.
    pub tag_files: usize,
    pub users: u64,
    /// Recommender files read and checked whole.
    pub recommenders: usize,
}

/// Checks the data directory `dir`.
pub fn check(dir: &Path) -> Report {
    let mut report = Report::default();
    let manifest_path = dir.join(manifest::FILE_NAME);
    let manifest = match manifest::read(dir) {
        Ok(Some(manifest)) => manifest,
        Ok(None) if upgrade::is_v1(dir) => {
            report.problems.push(format!(
                "{}: format version 1; open the directory once (cohortdb serve or the embedding API) to convert it",
                dir.join(upgrade::V1_MANIFEST_FILE).display()
            ));
            return report;
        }
        Ok(None) => {
            report.problems.push(format!(
                "{}: no manifest; not a cohortdb data directory",
                manifest_path.display()
            ));
            return report;
        }
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let mut problem = |what: String| {
        report
            .problems
            .push(format!("{}: {what}", manifest_path.display()))
    };
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut checked = Vec::new();
    for table in &manifest.tables {
        if !names.insert(&table.name) {
            problem(format!("table name {:?} appears twice", table.name));
        }
        if let Err(e) = types::check_name(&table.name) {
            problem(format!("table {:?}: {e}", table.name));
        }
        let mut columns = BTreeSet::new();
        for column in &table.columns {
            if !columns.insert(&column.name) {
                problem(format!(
                    "table {:?}: column {:?} appears twice",
                    table.name, column.name
                ));
            }
        }
        let segment_ids = table.segments.iter().map(|s| s.id);
        for id in std::iter::once(table.id).chain(segment_ids) {
            if !ids.insert(id) {
                problem(format!("id {id} is used twice"));
            }
            if id >= manifest.next_id {
                problem(format!("id {id} is not below next_id {}", manifest.next_id));
            }
        }
        match table.schema(&manifest_path) {
            Ok(schema) => checked.push((table, schema)),
            Err(e) => problem(e.to_string()),
        }
    }
    for (table, schema) in checked {
        report.tables += 1;
        for segment in &table.segments {
            report.segments += 1;
            let file = SegmentFile {
                table_id: table.id,
                segment_id: segment.id,
                rows: segment.rows,
                bytes: segment.bytes,
                crc32c: segment.crc32c,
            };
            let path = store::segment_file_path(dir, segment.id);
            let read = SegmentReader::open(&path, &file, &schema).and_then(|r| r.read_all());
            if let Err(e) = read {
                report.problems.push(e.to_string());
            }
            let deleted = match &segment.deletes {
                None => 0,
                Some(d) => {
                    let path =
                        deletes::deletes_path(&dir.join(DELETES_DIR), segment.id, d.generation);
                    match deletes::read(&path, segment.id, segment.rows, d) {
                        Ok(bitmap) => bitmap.len(),
                        Err(e) => {
                            report.problems.push(e.to_string());
                            0
                        }
                    }
                }
            };
            report.rows += segment.rows - deleted;
        }
    }
    check_tags(dir, &manifest, &mut report);
    for entry in &manifest.recommenders {
        let path = crate::recommend::file_path(&dir.join(RECOMMENDERS_DIR), entry.id);
        report.recommenders += 1;
        if let Err(e) = crate::recommend::read_file(&path, entry) {
            report.problems.push(e.to_string());
        }
    }
    let mut live = store::live_files(dir, &manifest);
    check_wal(dir, manifest.wal_start_lsn, &mut live, &mut report);
    for folder in store::FILE_DIRS {
        if let Ok(files) = store::files_in(&dir.join(folder)) {
            report
                .leftovers
                .extend(files.into_iter().filter(|path| !live.contains(path)));
        }
    }
    report
}

/// Invariant 6: the dictionary files hold the ordinals in order, each id
/// once, matching their sizes and checksums; every tag file matches its size
/// and checksum, and every bitmap in it decodes to as many users as its
/// directory says, none beyond the dictionary.
fn check_tags(dir: &Path, manifest: &manifest::Manifest, report: &mut Report) {
    let mut users = 0u32;
    if let Some(entry) = &manifest.users {
        let dictionary = crate::users::Dictionary::new(entry.key_type);
        for chunk in &entry.chunks {
            match crate::users::load_chunk(&dir.join(USERS_DIR), &dictionary, chunk) {
                Ok(()) => users = dictionary.len(),
                Err(e) => {
                    report.problems.push(e.to_string());
                    break;
                }
            }
        }
    }
    report.users = u64::from(users);
    let tags_dir = dir.join(TAGS_DIR);
    let files = manifest
        .tag_indexes
        .iter()
        .map(|i| (i.table_id, Some(&i.file)))
        .chain(manifest.tags.iter().map(|t| (t.id, t.file.as_ref())));
    for (owner, file) in files {
        let Some(file) = file else { continue };
        let path = crate::tags::tag_path(&tags_dir, owner, file.generation);
        report.tag_files += 1;
        match crate::tags::open_file(&path, owner, file, true) {
            Ok(entries) => {
                for (_, bits) in entries {
                    if let Ok(bitmap) = bits.get()
                        && let Some(max) = bitmap.max()
                        && max >= users
                    {
                        report.problems.push(format!(
                            "{}: user ordinal {max} is beyond the dictionary's {users} users",
                            path.display()
                        ));
                    }
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
}

/// Invariant 5: the log from `start_lsn` on is one valid sequence of records
/// that decode, with at most a torn tail in the last file.
fn check_wal(
    dir: &Path,
    start_lsn: u64,
    live: &mut BTreeSet<std::path::PathBuf>,
    report: &mut Report,
) {
    let wal_dir = dir.join(WAL_DIR);
    let files = match wal::wal_files(&wal_dir) {
        Ok(files) => files,
        Err(e) => {
            report.problems.push(e.to_string());
            return;
        }
    };
    let mut next: Option<u64> = None;
    for (i, path) in files.iter().enumerate() {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.problems.push(crate::Error::io(path)(e).to_string());
                return;
            }
        };
        if i + 1 == files.len() && bytes.len() < wal::HEADER_BYTES {
            report.notes.push(format!(
                "{}: a log file whose creation was interrupted ({} bytes), which the next open removes",
                path.display(),
                bytes.len()
            ));
            break;
        }
        let scanned = match wal::scan_file(path, &bytes) {
            Ok(scanned) => scanned,
            Err(e) => {
                report.problems.push(e.to_string());
                return;
            }
        };
        if let Some(expected) = next
            && scanned.first_lsn != expected
        {
            report.problems.push(format!(
                "{}: starts at LSN {} where LSN {expected} was due",
                path.display(),
                scanned.first_lsn
            ));
        }
        if let Some(tail) = scanned.torn {
            if i + 1 < files.len() {
                report.problems.push(format!(
                    "{}: record at byte {} (LSN {}) is damaged and later files follow",
                    path.display(),
                    tail.offset,
                    tail.lsn
                ));
            } else {
                report.notes.push(format!(
                    "{}: a torn tail of {} bytes at byte {} (LSN {}), which the next open cuts",
                    path.display(),
                    tail.bytes,
                    tail.offset,
                    tail.lsn
                ));
            }
        }
        for record in scanned.records.iter().filter(|r| r.lsn >= start_lsn) {
            report.wal_records += 1;
            match Change::decode(&wal_dir, record) {
                Ok(Change::AppendFiles { segments, .. }) => {
                    // Files a large append wrote before its record: live, and
                    // as the record describes them.
                    for file in segments {
                        let path = store::segment_file_path(dir, file.segment_id);
                        if let Err(problem) = check_file(&path, file.bytes, file.crc32c) {
                            report.problems.push(format!(
                                "{}: {problem} (named by the log record at LSN {})",
                                path.display(),
                                record.lsn
                            ));
                        }
                        live.insert(path);
                    }
                }
                Ok(Change::PutRecommender { recommender, .. }) => {
                    // A recommender's file, written before its record.
                    let entry = &recommender.entry;
                    let path = crate::recommend::file_path(&dir.join(RECOMMENDERS_DIR), entry.id);
                    if let Err(problem) = check_file(&path, entry.bytes, entry.crc32c) {
                        report.problems.push(format!(
                            "{}: {problem} (named by the log record at LSN {})",
                            path.display(),
                            record.lsn
                        ));
                    }
                    live.insert(path);
                }
                Ok(_) => {}
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        next = Some(scanned.first_lsn + scanned.records.len() as u64);
    }
}

/// Whether the file at `path` has `bytes` bytes and CRC-32C `crc32c`.
fn check_file(path: &Path, bytes: u64, crc32c: u32) -> Result<(), String> {
    let content = std::fs::read(path).map_err(|e| e.to_string())?;
    if content.len() as u64 != bytes {
        return Err(format!(
            "the file has {} bytes where {bytes} are recorded",
            content.len()
        ));
    }
    if crc32c::crc32c(&content) != crc32c {
        return Err("checksum mismatch".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;
    use crate::store::SEGMENTS_DIR;
    use crate::types::{ColumnDef, ColumnType};

    /// A directory with one table: two flushed segments of ten rows, one row
    /// deleted from the first (too few for compaction to rewrite it).
    fn directory() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = Catalog::open(dir.path()).expect("open");
        catalog
            .create_table(
                "t",
                &[ColumnDef::new("x", ColumnType::BigInt, false)],
                false,
            )
            .expect("create");
        let table = catalog.table("t").expect("table");
        let batch = arrow::array::RecordBatch::try_new(
            table.schema(),
            vec![std::sync::Arc::new(
                arrow::array::Int64Array::from_iter_values(0..10),
            )],
        )
        .expect("batch");
        catalog.append(&table, vec![batch.clone()]).expect("append");
        catalog.checkpoint().expect("checkpoint");
        catalog.append(&table, vec![batch]).expect("append");
        catalog.checkpoint().expect("checkpoint");
        let first = table.snapshot().segments[0].id;
        catalog.delete(&table, &[first << 32 | 1]).expect("delete");
        catalog.checkpoint().expect("checkpoint");
        dir
    }

    #[test]
    fn a_sound_directory_has_no_problems() {
        let dir = directory();
        let report = check(dir.path());
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!((report.tables, report.segments, report.rows), (1, 2, 19));
        assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    }

    #[test]
    fn tag_and_user_key_files_are_verified() {
        use arrow::array::{Int64Array, StringArray};
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let catalog = crate::Catalog::open(dir.path()).expect("open");
            catalog
                .create_table(
                    "u",
                    &[
                        crate::ColumnDef::new("id", crate::ColumnType::BigInt, false).user_key(),
                        crate::ColumnDef::new("city", crate::ColumnType::Text, true),
                    ],
                    false,
                )
                .expect("table");
            let table = catalog.table("u").expect("u");
            let batch = arrow::array::RecordBatch::try_new(
                table.schema(),
                vec![
                    std::sync::Arc::new(Int64Array::from(vec![10, 20, 30])),
                    std::sync::Arc::new(StringArray::from(vec!["a", "b", "a"])),
                ],
            )
            .expect("batch");
            catalog.append(&table, vec![batch]).expect("append");
            catalog
                .create_tag_index("u", &["city".to_string()], None)
                .expect("index");
            catalog.checkpoint().expect("checkpoint");
        }
        let report = check(dir.path());
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!((report.users, report.tag_files), (3, 1));
        // A flipped bit in the last bitmap of the tag file, and in the ids.
        let tags = store::files_in(&dir.path().join(TAGS_DIR)).expect("tags");
        let mut bytes = std::fs::read(&tags[0]).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&tags[0], &bytes).expect("flip");
        let users = store::files_in(&dir.path().join(USERS_DIR)).expect("users");
        let mut bytes = std::fs::read(&users[0]).expect("read");
        bytes[40] ^= 1;
        std::fs::write(&users[0], &bytes).expect("flip");
        let report = check(dir.path());
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(
            report.problems[0].contains("does not match the manifest's size and checksum"),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems[1].ends_with("checksum mismatch with the manifest's record"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = directory();
        let segments = store::files_in(&dir.path().join(SEGMENTS_DIR)).expect("segments");
        assert_eq!(segments.len(), 2);
        let bytes = std::fs::read(&segments[0]).expect("read");
        std::fs::write(&segments[0], &bytes[..bytes.len() / 2]).expect("truncate");
        std::fs::remove_file(&segments[1]).expect("remove");
        let stray = dir.path().join(SEGMENTS_DIR).join("stray.parquet");
        std::fs::write(&stray, b"x").expect("stray");
        let dv = store::files_in(&dir.path().join(DELETES_DIR)).expect("deletes");
        assert_eq!(dv.len(), 1);
        let mut bytes = std::fs::read(&dv[0]).expect("read");
        bytes[20] ^= 1;
        std::fs::write(&dv[0], &bytes).expect("flip");
        let report = check(dir.path());
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert!(
            report.problems[0].contains("bytes where the manifest records"),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems[1].ends_with("checksum mismatch with the manifest's record"),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems[2].contains("No such file"),
            "{:?}",
            report.problems
        );
        assert_eq!(report.leftovers, [stray]);
    }

    #[test]
    fn a_directory_without_a_manifest_is_not_a_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = check(dir.path());
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].ends_with("no manifest; not a cohortdb data directory"));
    }
}

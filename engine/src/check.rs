//! `cohortdb check`: verifies a data directory's invariants and reports every
//! problem it finds rather than stopping at the first, without changing
//! anything (no lock is taken, no leftover is removed).
//!
//! For the format written today (version 1, docs/format.md): the manifest
//! parses and has a known format; table and column names are valid and
//! unique; ids are unique and below `next_id`; every segment exists, has the
//! table's schema and the row count the manifest records. Files no manifest
//! names are listed as leftovers (an interrupted commit leaves them; the next
//! open removes them), not as problems.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::catalog::entry_schema;
use crate::store::{self, SEGMENTS_DIR};
use crate::types;

/// What a check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per broken invariant: `<file>: <what>`.
    pub problems: Vec<String>,
    /// Files in the directory that no manifest names.
    pub leftovers: Vec<PathBuf>,
    pub tables: usize,
    pub segments: usize,
    pub rows: u64,
}

/// Checks the data directory `dir`.
pub fn check(dir: &Path) -> Report {
    let mut report = Report::default();
    let manifest_path = dir.join(store::MANIFEST_FILE);
    if !manifest_path.exists() {
        report.problems.push(format!(
            "{}: no manifest; not a cohortdb data directory",
            manifest_path.display()
        ));
        return report;
    }
    let manifest = match store::read_manifest(dir) {
        Ok(manifest) => manifest,
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
    let mut live = BTreeSet::new();
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
        match entry_schema(dir, table) {
            Ok(schema) => checked.push((table, schema)),
            Err(e) => problem(e.to_string()),
        }
        live.extend(
            table
                .segments
                .iter()
                .map(|s| store::segment_path(dir, s.id)),
        );
    }
    for (table, schema) in checked {
        report.tables += 1;
        for segment in &table.segments {
            report.segments += 1;
            match store::read_segment(dir, *segment, &schema) {
                Ok(_) => report.rows += segment.rows,
                Err(e) => report.problems.push(e.to_string()),
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join(SEGMENTS_DIR)) {
        let mut leftovers: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|path| !live.contains(path))
            .collect();
        leftovers.sort();
        report.leftovers = leftovers;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;
    use crate::types::{ColumnDef, ColumnType};

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
            vec![std::sync::Arc::new(arrow::array::Int64Array::from(vec![
                1, 2, 3,
            ]))],
        )
        .expect("batch");
        catalog.append(&table, vec![batch.clone()]).expect("append");
        catalog.append(&table, vec![batch]).expect("append");
        dir
    }

    #[test]
    fn a_sound_directory_has_no_problems() {
        let dir = directory();
        let report = check(dir.path());
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!((report.tables, report.segments, report.rows), (1, 2, 6));
        assert!(report.leftovers.is_empty());
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = directory();
        let segments: Vec<PathBuf> = std::fs::read_dir(dir.path().join(SEGMENTS_DIR))
            .expect("segments")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(segments.len(), 2);
        std::fs::remove_file(&segments[0]).expect("remove");
        let bytes = std::fs::read(&segments[1]).expect("read");
        std::fs::write(&segments[1], &bytes[..bytes.len() / 2]).expect("truncate");
        std::fs::write(dir.path().join(SEGMENTS_DIR).join("stray.arrow"), b"x").expect("stray");
        let report = check(dir.path());
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(
            report.problems.iter().any(|p| p.contains("No such file")),
            "{:?}",
            report.problems
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("corrupted data in")),
            "{:?}",
            report.problems
        );
        assert_eq!(
            report.leftovers,
            [dir.path().join(SEGMENTS_DIR).join("stray.arrow")]
        );
    }

    #[test]
    fn a_directory_without_a_manifest_is_not_a_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = check(dir.path());
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].ends_with("no manifest; not a cohortdb data directory"));
    }
}

//! The data directory on disk (interim format, see docs/format.md).
//!
//! A directory holds `manifest.json`, naming every table, its columns and its live
//! segments, and `segments/<id>.arrow`, one Arrow IPC file per segment. Segment
//! files are written and synced before the manifest that names them; the manifest
//! is replaced atomically (write temp, sync, rename, sync directory). Files the
//! manifest does not name are leftovers of an interrupted commit and are removed at
//! open. A `LOCK` file held with an exclusive lock keeps a second process out.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use crate::roles::Role;

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::limits;

pub(crate) const MANIFEST_FILE: &str = "manifest.json";
const MANIFEST_FORMAT: &str = "cohortdb-manifest";
const MANIFEST_VERSION: u32 = 1;
pub(crate) const SEGMENTS_DIR: &str = "segments";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: String,
    pub version: u32,
    pub next_id: u64,
    pub tables: Vec<TableEntry>,
    /// Users and roles; absent in manifests written before roles existed.
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TableEntry {
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnEntry>,
    pub segments: Vec<SegmentEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ColumnEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct SegmentEntry {
    pub id: u64,
    pub rows: u64,
}

impl Manifest {
    pub fn empty() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.to_string(),
            version: MANIFEST_VERSION,
            next_id: 1,
            tables: Vec::new(),
            roles: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) a data directory, takes its lock, reads the
    /// manifest and removes segment files no manifest names.
    pub fn open(dir: &Path) -> Result<(Store, Manifest)> {
        fs::create_dir_all(dir.join(SEGMENTS_DIR)).map_err(Error::io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e)),
        }
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        let manifest = store.read_manifest()?;
        store.remove_unreferenced(&manifest)?;
        Ok((store, manifest))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_manifest(&self) -> Result<Manifest> {
        read_manifest(&self.dir)
    }

    /// Replaces the manifest atomically.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.dir.join(MANIFEST_FILE);
        let tmp = self.dir.join(format!("{MANIFEST_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        crate::durable::write_whole(&tmp, &path, &bytes)
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    /// Writes and syncs one segment file. It becomes live only when a manifest
    /// naming it is written.
    pub fn write_segment(
        &self,
        id: u64,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<()> {
        let path = self.segment_path(id);
        let file = File::create(&path).map_err(Error::io(&path))?;
        let mut writer = FileWriter::try_new(BufWriter::new(file), schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
        let file = writer
            .into_inner()?
            .into_inner()
            .map_err(|e| Error::io(&path)(e.into_error()))?;
        file.sync_all().map_err(Error::io(&path))?;
        sync_dir(&self.dir.join(SEGMENTS_DIR))
    }

    /// Reads one segment, checking it against the manifest's schema and row count.
    pub fn read_segment(
        &self,
        entry: SegmentEntry,
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        read_segment(&self.dir, entry, schema)
    }

    /// Removes segment files the given manifest does not name. Used after a commit
    /// and at open; a failure to remove is harmless and retried at the next open.
    pub fn remove_unreferenced(&self, manifest: &Manifest) -> Result<()> {
        let live: BTreeSet<PathBuf> = manifest
            .tables
            .iter()
            .flat_map(|t| t.segments.iter().map(|s| self.segment_path(s.id)))
            .collect();
        let dir = self.dir.join(SEGMENTS_DIR);
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = entry.map_err(Error::io(&dir))?.path();
            if !live.contains(&path) {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

/// Reads the manifest of the data directory `dir` (an empty one when there is
/// none), without taking its lock.
pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::empty()),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let mut text = String::new();
    file.take(limits::MANIFEST_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(Error::io(&path))?;
    let corrupted = |reason: String| Error::Corrupted {
        path: path.clone(),
        reason,
    };
    if text.len() as u64 > limits::MANIFEST_BYTES_MAX {
        return Err(corrupted("manifest is larger than the limit".into()));
    }
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| corrupted(e.to_string()))?;
    if manifest.format != MANIFEST_FORMAT || manifest.version != MANIFEST_VERSION {
        return Err(corrupted(format!(
            "unknown manifest format {:?} version {}",
            manifest.format, manifest.version
        )));
    }
    Ok(manifest)
}

/// Reads one segment, checking it against the manifest's schema and row count.
pub(crate) fn read_segment(
    dir: &Path,
    entry: SegmentEntry,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let path = segment_path(dir, entry.id);
    let file = File::open(&path).map_err(Error::io(&path))?;
    let corrupted = |reason: String| Error::Corrupted {
        path: path.clone(),
        reason,
    };
    let reader =
        FileReader::try_new(BufReader::new(file), None).map_err(|e| corrupted(e.to_string()))?;
    if reader.schema().fields() != schema.fields() {
        return Err(corrupted("segment schema differs from the manifest".into()));
    }
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| corrupted(e.to_string()))?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows != entry.rows {
        return Err(corrupted(format!(
            "segment holds {rows} rows, the manifest says {}",
            entry.rows
        )));
    }
    Ok(batches)
}

/// `segments/<id as 16 hex digits>.arrow` in the data directory `dir`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(SEGMENTS_DIR).join(format!("{id:016x}.arrow"))
}

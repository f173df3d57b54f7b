//! Opening a data directory of format version 1 (docs/format.md § Upgrade from
//! version 1): its Arrow IPC segments are rewritten as Parquet segments and a
//! version 2 manifest is written; only then are the version 1 files removed.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use serde::Deserialize;

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::io::Storage;
use crate::limits;
use crate::manifest::{self, Manifest};
use crate::roles::Role;
use crate::segment_file;
use crate::store::SEGMENTS_DIR;

/// The version 1 manifest's file name.
pub(crate) const V1_MANIFEST_FILE: &str = "manifest.json";
const V1_FORMAT: &str = "cohortdb-manifest";

#[derive(Debug, Deserialize)]
struct V1Manifest {
    format: String,
    version: u32,
    next_id: u64,
    tables: Vec<V1Table>,
    #[serde(default)]
    roles: Vec<Role>,
}

#[derive(Debug, Deserialize)]
struct V1Table {
    id: u64,
    name: String,
    columns: Vec<manifest::Column>,
    segments: Vec<V1Segment>,
}

#[derive(Debug, Deserialize)]
struct V1Segment {
    id: u64,
    rows: u64,
}

/// Whether `dir` holds version 1 files.
pub(crate) fn is_v1(dir: &Path) -> bool {
    dir.join(V1_MANIFEST_FILE).exists()
}

/// Converts the version 1 directory `dir` (whose lock the caller holds) and
/// returns its version 2 manifest, already written.
pub(crate) fn upgrade(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Manifest> {
    let v1 = read_v1_manifest(dir)?;
    let manifest_path = dir.join(V1_MANIFEST_FILE);
    let mut tables = Vec::with_capacity(v1.tables.len());
    for table in v1.tables {
        let mut entry = manifest::Table {
            id: table.id,
            name: table.name,
            columns: table.columns,
            segments: Vec::new(),
        };
        let schema = entry.schema(&manifest_path)?;
        for segment in table.segments {
            let batches = read_v1_segment(dir, &segment, &schema)?;
            if segment.rows == 0 {
                continue;
            }
            let path = segment_file::segment_path(&dir.join(SEGMENTS_DIR), segment.id);
            let file = segment_file::write(
                storage,
                &path,
                entry.id,
                segment.id,
                &schema,
                &batches,
                segment_file::ROW_GROUP_ROWS,
            )?;
            entry.segments.push(manifest::Segment {
                id: segment.id,
                rows: file.rows,
                bytes: file.bytes,
                crc32c: file.crc32c,
                deletes: None,
            });
        }
        tables.push(entry);
    }
    let manifest = Manifest {
        next_id: v1.next_id,
        wal_start_lsn: 1,
        wal_sync: manifest::WalSync::default(),
        tables,
        roles: v1.roles,
        users: None,
        tag_indexes: Vec::new(),
        tags: Vec::new(),
        views: Vec::new(),
        models: Vec::new(),
        recommenders: Vec::new(),
        privacy: crate::privacy::Privacy::default(),
    };
    manifest::write(storage.as_ref(), dir, &manifest)?;
    remove_v1(storage.as_ref(), dir)?;
    Ok(manifest)
}

/// Removes what is left of version 1 once a version 2 manifest exists (a crash
/// after the conversion wrote it leaves them).
pub(crate) fn remove_v1(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let segments = dir.join(SEGMENTS_DIR);
    for entry in fs::read_dir(&segments).map_err(Error::io(&segments))? {
        let path = entry.map_err(Error::io(&segments))?.path();
        if path.extension().is_some_and(|e| e == "arrow") {
            storage.remove(&path).map_err(Error::io(&path))?;
        }
    }
    sync_dir(storage, &segments)?;
    let manifest = dir.join(V1_MANIFEST_FILE);
    storage.remove(&manifest).map_err(Error::io(&manifest))?;
    sync_dir(storage, dir)
}

fn read_v1_manifest(dir: &Path) -> Result<V1Manifest> {
    let path = dir.join(V1_MANIFEST_FILE);
    let file = File::open(&path).map_err(Error::io(&path))?;
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
    let manifest: V1Manifest = serde_json::from_str(&text).map_err(|e| corrupted(e.to_string()))?;
    if manifest.format != V1_FORMAT || manifest.version != 1 {
        return Err(corrupted(format!(
            "unknown manifest format {:?} version {}",
            manifest.format, manifest.version
        )));
    }
    Ok(manifest)
}

/// `segments/<id as 16 hex digits>.arrow`.
fn v1_segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(SEGMENTS_DIR).join(format!("{id:016x}.arrow"))
}

/// Reads one version 1 segment, checking it against the manifest's schema and
/// row count.
fn read_v1_segment(dir: &Path, entry: &V1Segment, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let path = v1_segment_path(dir, entry.id);
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

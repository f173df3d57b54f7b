//! The data directory on disk (docs/format.md § Directory): its lock, folders,
//! manifest, and the removal of files no manifest names.
//!
//! Opening takes the directory's `LOCK` with an exclusive advisory lock (a
//! second process gets [`Error::Locked`]), creates the folders, and reads the
//! manifest: a version 2 `MANIFEST`, or a version 1 directory converted
//! (upgrade.rs), or a new empty one for a new directory.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::deletes;
use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::io::Storage;
use crate::manifest::{self, Manifest};
use crate::segment_file;
use crate::upgrade;

pub(crate) const SEGMENTS_DIR: &str = "segments";
pub(crate) const DELETES_DIR: &str = "deletes";
pub(crate) const WAL_DIR: &str = "wal";
pub(crate) const TAGS_DIR: &str = "tags";
pub(crate) const USERS_DIR: &str = "users";
pub(crate) const RECOMMENDERS_DIR: &str = crate::recommend::DIR;
/// The folders of a data directory that hold files the manifest names.
pub(crate) const FILE_DIRS: [&str; 5] = [
    SEGMENTS_DIR,
    DELETES_DIR,
    TAGS_DIR,
    USERS_DIR,
    RECOMMENDERS_DIR,
];

#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) a data directory, takes its lock and reads
    /// its manifest.
    pub fn open(dir: &Path, storage: Arc<dyn Storage>) -> Result<(Store, Manifest)> {
        for folder in FILE_DIRS.iter().chain(&[WAL_DIR]) {
            let path = dir.join(folder);
            fs::create_dir_all(&path).map_err(Error::io(&path))?;
        }
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
            storage,
            _lock: lock,
        };
        let storage = &store.storage;
        let manifest = match manifest::read(dir)? {
            Some(manifest) => {
                if upgrade::is_v1(dir) {
                    upgrade::remove_v1(storage.as_ref(), dir)?;
                }
                manifest
            }
            None if upgrade::is_v1(dir) => upgrade::upgrade(storage, dir)?,
            None => {
                let mut manifest = Manifest::empty();
                manifest.privacy =
                    crate::privacy::Privacy::new_database(crate::tags::now_micros())?;
                manifest::write(storage.as_ref(), dir, &manifest)?;
                manifest
            }
        };
        Ok((store, manifest))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join(WAL_DIR)
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(manifest::FILE_NAME)
    }

    pub fn segment_path(&self, id: u64) -> PathBuf {
        segment_file_path(&self.dir, id)
    }

    pub fn deletes_path(&self, segment_id: u64, generation: u64) -> PathBuf {
        deletes::deletes_path(&self.dir.join(DELETES_DIR), segment_id, generation)
    }

    pub fn tags_dir(&self) -> PathBuf {
        self.dir.join(TAGS_DIR)
    }

    pub fn users_dir(&self) -> PathBuf {
        self.dir.join(USERS_DIR)
    }

    /// Replaces the manifest atomically.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        manifest::write(self.storage.as_ref(), &self.dir, manifest)
    }

    pub fn recommender_path(&self, id: u64) -> PathBuf {
        crate::recommend::file_path(&self.dir.join(RECOMMENDERS_DIR), id)
    }

    /// Removes the files of `segments/`, `deletes/`, `tags/`, `users/` and
    /// `recommenders/` not in `live`: leftovers of interrupted or superseded
    /// writes.
    pub fn remove_unreferenced(&self, live: &BTreeSet<PathBuf>) -> Result<()> {
        for folder in FILE_DIRS {
            let dir = self.dir.join(folder);
            for path in files_in(&dir)? {
                if !live.contains(&path) {
                    let _ = self.storage.remove(&path);
                }
            }
            sync_dir(self.storage.as_ref(), &dir)?;
        }
        Ok(())
    }
}

/// Segment `id`'s file in the data directory `dir`.
pub(crate) fn segment_file_path(dir: &Path, id: u64) -> PathBuf {
    segment_file::segment_path(&dir.join(SEGMENTS_DIR), id)
}

/// The segment, deletion vector, tag, user key and recommender files
/// `manifest` names in the data directory `dir`.
pub(crate) fn live_files(dir: &Path, manifest: &Manifest) -> BTreeSet<PathBuf> {
    let mut live = BTreeSet::new();
    let tags_dir = dir.join(TAGS_DIR);
    for index in &manifest.tag_indexes {
        live.insert(crate::tags::tag_path(
            &tags_dir,
            index.table_id,
            index.file.generation,
        ));
    }
    for tag in &manifest.tags {
        if let Some(file) = &tag.file {
            live.insert(crate::tags::tag_path(&tags_dir, tag.id, file.generation));
        }
    }
    for entry in &manifest.recommenders {
        live.insert(crate::recommend::file_path(
            &dir.join(RECOMMENDERS_DIR),
            entry.id,
        ));
    }
    for chunk in manifest.users.iter().flat_map(|u| &u.chunks) {
        live.insert(crate::users::chunk_path(
            &dir.join(USERS_DIR),
            chunk.first,
            chunk.generation,
        ));
    }
    for table in &manifest.tables {
        for segment in &table.segments {
            live.insert(segment_file_path(dir, segment.id));
            if let Some(d) = &segment.deletes {
                live.insert(deletes::deletes_path(
                    &dir.join(DELETES_DIR),
                    segment.id,
                    d.generation,
                ));
            }
        }
    }
    live
}

/// The files in folder `dir`.
pub(crate) fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        files.push(entry.map_err(Error::io(dir))?.path());
    }
    files.sort();
    Ok(files)
}

//! Memory-mapped reads of immutable files: the engine's only `unsafe` code.
//!
//! Used by the version 2 segment files, which the catalog does not write yet.
#![cfg_attr(not(test), allow(dead_code))]

use std::fs::File;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

/// The contents of `path`, memory-mapped, as shareable bytes (no copy). An
/// empty file maps to empty bytes.
///
/// Only for files the engine never changes once written (segments, deletion
/// vectors): they are written to a temporary name, synced and renamed into
/// place, and removed only when no manifest names them.
pub(crate) fn map_file(path: &Path) -> Result<Bytes> {
    let file = File::open(path).map_err(Error::io(path))?;
    let length = file.metadata().map_err(Error::io(path))?.len();
    if length == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and the file is immutable: the engine
    // writes these files once under a temporary name and renames them into
    // place, holds the data directory's exclusive lock so no other cohortdb
    // process writes in it, and never truncates or rewrites a file in place.
    // Changing a mapped file from outside the engine is outside its contract
    // (as editing a database's files under a running server is for any
    // database).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
    Ok(Bytes::from_owner(map))
}

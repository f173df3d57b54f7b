//! Making files durable: the one place the engine syncs directories and moves
//! a finished file into place (docs/format.md § What is assumed of the file
//! system and disk).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Syncs a directory, making the entries created, renamed or removed in it
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// Moves the synced file `tmp` to `path` and syncs their directory: the
/// rename is the moment the file appears whole. `tmp` is removed if the move
/// fails.
pub(crate) fn install(tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(path)(e));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` as the file `path`, whole or not at all: to `tmp`, synced,
/// then [`install`]ed.
pub(crate) fn write_whole(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let written = File::create(tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(tmp)(e));
    }
    install(tmp, path)
}

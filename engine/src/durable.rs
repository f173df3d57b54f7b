//! Making files durable: the one place the engine syncs directories and moves
//! a finished file into place (docs/format.md § What is assumed of the file
//! system and disk).

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::Storage;

/// Syncs a directory, making the entries created, renamed or removed in it
/// durable.
pub(crate) fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage.sync_dir(dir).map_err(Error::io(dir))
}

/// Moves the synced file `tmp` to `path` and syncs their directory: the
/// rename is the moment the file appears whole. `tmp` is removed if the move
/// fails.
pub(crate) fn install(storage: &dyn Storage, tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = storage.rename(tmp, path) {
        let _ = storage.remove(tmp);
        return Err(Error::io(path)(e));
    }
    sync_dir(storage, path.parent().unwrap_or(Path::new(".")))
}

/// Writes `parts`, one after the other, as the file `path`, whole or not at
/// all: to `tmp`, synced, then [`install`]ed.
pub(crate) fn write_whole(
    storage: &dyn Storage,
    tmp: &Path,
    path: &Path,
    parts: &[&[u8]],
) -> Result<()> {
    let written = storage.create(tmp).and_then(|file| {
        for part in parts {
            storage.write(&file, tmp, part)?;
        }
        storage.sync(&file, tmp)
    });
    if let Err(e) = written {
        let _ = storage.remove(tmp);
        return Err(Error::io(tmp)(e));
    }
    install(storage, tmp, path)
}

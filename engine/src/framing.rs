//! What every version 2 file starts with (docs/format.md): an 8-byte magic
//! naming the kind of file and its format version, checked the same way for
//! WAL files, manifests and deletion vectors.
#![cfg_attr(not(test), allow(dead_code))]

use std::path::Path;

use crate::error::{Error, Result};

/// The first `header_bytes` of `bytes`, once the file is long enough and starts
/// with `magic`; `what` names the kind of file for the error.
pub(crate) fn header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; 8],
    header_bytes: usize,
    what: &str,
) -> Result<&'a [u8]> {
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    let header = bytes
        .get(..header_bytes)
        .ok_or_else(|| corrupted("the file is shorter than its header".to_string()))?;
    if header[0..8] != magic[..] {
        return Err(corrupted(format!(
            "not a {what} of format version {} (bad magic)",
            magic[7]
        )));
    }
    Ok(header)
}

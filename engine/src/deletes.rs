//! Deletion vectors of format version 2 (docs/format.md § Deletion vectors):
//! the positions deleted from one segment, as a portable roaring bitmap in a
//! checksummed file.

use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use crate::durable;
use crate::error::{Error, Result};
use crate::framing;
use crate::io::Storage;
use crate::manifest;

/// `CDBDV\0\0` and the format version.
const MAGIC: [u8; 8] = *b"CDBDV\0\0\x02";
/// Bytes before the bitmap.
const HEADER_BYTES: usize = 28;

/// `deletes/<segment id as 16 hex digits>-<generation>.dv`.
pub(crate) fn deletes_path(deletes_dir: &Path, segment_id: u64, generation: u64) -> PathBuf {
    deletes_dir.join(format!("{segment_id:016x}-{generation}.dv"))
}

/// The file contents of a deletion vector for `segment_id`.
pub(crate) fn encode(segment_id: u64, deleted: &RoaringBitmap) -> Vec<u8> {
    let bitmap_bytes = deleted.serialized_size();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + bitmap_bytes + 4);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&segment_id.to_le_bytes());
    bytes.extend_from_slice(&deleted.len().to_le_bytes());
    bytes.extend_from_slice(
        &u32::try_from(bitmap_bytes)
            .expect("a bitmap of u32 positions serializes in under 4 GiB")
            .to_le_bytes(),
    );
    deleted
        .serialize_into(&mut bytes)
        .expect("writing to a Vec does not fail");
    let checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Reads the deletion vector `bytes` of file `path`, which must belong to
/// `segment_id` and name only positions below `row_count`.
pub(crate) fn decode(
    path: &Path,
    bytes: &[u8],
    segment_id: u64,
    row_count: u64,
) -> Result<RoaringBitmap> {
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    framing::header(path, bytes, &MAGIC, HEADER_BYTES + 4, "deletion vector")?;
    let (body, checksum) = bytes.split_at(bytes.len() - 4);
    let checksum = u32::from_le_bytes(checksum.try_into().expect("four bytes"));
    if crc32c::crc32c(body) != checksum {
        return Err(corrupted("checksum mismatch".to_string()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let owner = u64_at(8);
    if owner != segment_id {
        return Err(corrupted(format!(
            "the file belongs to segment {owner}, not {segment_id}"
        )));
    }
    let cardinality = u64_at(16);
    let bitmap_bytes = u32::from_le_bytes(body[24..28].try_into().expect("4 bytes")) as usize;
    if body.len() != HEADER_BYTES + bitmap_bytes {
        return Err(corrupted(format!(
            "the bitmap should take {bitmap_bytes} bytes, the file holds {}",
            body.len() - HEADER_BYTES
        )));
    }
    let deleted = RoaringBitmap::deserialize_from(&body[HEADER_BYTES..])
        .map_err(|e| corrupted(format!("not a portable roaring bitmap: {e}")))?;
    if deleted.len() != cardinality {
        return Err(corrupted(format!(
            "the bitmap holds {} positions where the header says {cardinality}",
            deleted.len()
        )));
    }
    if let Some(max) = deleted.max()
        && u64::from(max) >= row_count
    {
        return Err(corrupted(format!(
            "position {max} is beyond the segment's {row_count} rows"
        )));
    }
    Ok(deleted)
}

/// Writes a deletion vector file: to a temporary name, synced, renamed into
/// place, the directory synced. Returns the file's size and CRC-32C for the
/// manifest.
pub(crate) fn write(
    storage: &dyn Storage,
    path: &Path,
    segment_id: u64,
    deleted: &RoaringBitmap,
) -> Result<(u64, u32)> {
    let bytes = encode(segment_id, deleted);
    let tmp = path.with_extension("dv.tmp");
    durable::write_whole(storage, &tmp, path, &[&bytes])?;
    Ok((bytes.len() as u64, crc32c::crc32c(&bytes)))
}

/// Reads the deletion vector file `path` of a segment with `rows` rows,
/// checking it against what the manifest records of it.
pub(crate) fn read(
    path: &Path,
    segment_id: u64,
    rows: u64,
    recorded: &manifest::Deletes,
) -> Result<RoaringBitmap> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 != recorded.bytes {
        return Err(corrupted(format!(
            "the file has {} bytes where the manifest records {}",
            bytes.len(),
            recorded.bytes
        )));
    }
    if crc32c::crc32c(&bytes) != recorded.crc32c {
        return Err(corrupted(
            "checksum mismatch with the manifest's record".to_string(),
        ));
    }
    let deleted = decode(path, &bytes, segment_id, rows)?;
    if deleted.len() != recorded.rows {
        return Err(corrupted(format!(
            "{} positions where the manifest records {}",
            deleted.len(),
            recorded.rows
        )));
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn decode_ok(bytes: &[u8], segment_id: u64, rows: u64) -> Result<RoaringBitmap> {
        decode(Path::new("deletes/x.dv"), bytes, segment_id, rows)
    }

    #[test]
    fn deletion_vectors_read_back_and_match_the_spec() {
        let deleted: RoaringBitmap = [0u32, 5, 6, 7, 65_536, 99_999].into_iter().collect();
        let bytes = encode(42, &deleted);
        assert_eq!(&bytes[0..8], b"CDBDV\0\0\x02");
        assert_eq!(&bytes[8..16], &42u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &6u64.to_le_bytes());
        // The bitmap is the portable format, readable by any roaring library.
        let bitmap_bytes = u32::from_le_bytes(bytes[24..28].try_into().expect("4")) as usize;
        let portable = RoaringBitmap::deserialize_from(&bytes[28..28 + bitmap_bytes])
            .expect("portable roaring");
        assert_eq!(portable, deleted);
        assert_eq!(decode_ok(&bytes, 42, 100_000).expect("valid"), deleted);
        let empty = encode(1, &RoaringBitmap::new());
        assert!(decode_ok(&empty, 1, 0).expect("valid").is_empty());
    }

    #[test]
    fn a_deletion_vector_unlike_its_segment_is_corrupted() {
        let deleted: RoaringBitmap = [3u32, 9].into_iter().collect();
        let bytes = encode(7, &deleted);
        let reason = |bytes: &[u8], segment_id, rows| {
            decode_ok(bytes, segment_id, rows)
                .expect_err("corrupted")
                .to_string()
        };
        assert!(reason(&bytes, 8, 10).contains("belongs to segment 7, not 8"));
        assert!(reason(&bytes, 7, 9).contains("position 9 is beyond the segment's 9 rows"));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(decode_ok(&damaged, 7, 10).is_err(), "flip at byte {at}");
        }
        assert!(reason(&bytes[..10], 7, 10).contains("shorter than its header"));
    }

    #[test]
    fn deletion_vector_files_are_written_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = deletes_path(dir.path(), 0x10, 3);
        assert!(path.ends_with("0000000000000010-3.dv"));
        let deleted: RoaringBitmap = (0..1000u32).step_by(3).collect();
        let (bytes, crc) = write(&crate::io::Os, &path, 0x10, &deleted).expect("written");
        let on_disk = fs::read(&path).expect("read");
        assert_eq!(on_disk.len() as u64, bytes);
        assert_eq!(crc32c::crc32c(&on_disk), crc);
        assert_eq!(decode_ok(&on_disk, 0x10, 1000).expect("valid"), deleted);
        assert!(!path.with_extension("dv.tmp").exists());
    }
}

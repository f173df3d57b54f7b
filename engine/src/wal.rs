//! The write-ahead log's file format (docs/format.md § Write-ahead log): file
//! headers, checksummed records, and reading a file back with a torn tail told
//! apart from corruption in the middle.
//!
//! The codec works on byte buffers, so every case (a tail cut at any byte, a
//! flipped bit anywhere) is tested without files; [`Wal`] keeps the files of a
//! data directory's `wal/` folder: recovery on open, appends, syncs, rotation.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::framing;
use crate::io::Storage;
use crate::limits;

/// `CDBWAL\0` and the format version.
pub(crate) const MAGIC: [u8; 8] = *b"CDBWAL\0\x02";
/// Bytes of a file header.
pub(crate) const HEADER_BYTES: usize = 32;
/// Bytes of a record before its payload: length, checksum, LSN, kind.
pub(crate) const RECORD_HEADER_BYTES: usize = 17;

/// What a record does (the payloads are described in docs/format.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    CreateTable = 1,
    DropTable = 2,
    Append = 3,
    Delete = 4,
    Update = 5,
    Roles = 6,
    AppendFiles = 7,
    CreateTagIndex = 8,
    DropTagIndex = 9,
    PutTag = 10,
    DropTag = 11,
    PutModel = 12,
    DropModel = 13,
    PutRecommender = 14,
    DropRecommender = 15,
    Privacy = 16,
    Forget = 17,
    PutView = 18,
    DropView = 19,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::CreateTable,
            2 => RecordKind::DropTable,
            3 => RecordKind::Append,
            4 => RecordKind::Delete,
            5 => RecordKind::Update,
            6 => RecordKind::Roles,
            7 => RecordKind::AppendFiles,
            8 => RecordKind::CreateTagIndex,
            9 => RecordKind::DropTagIndex,
            10 => RecordKind::PutTag,
            11 => RecordKind::DropTag,
            12 => RecordKind::PutModel,
            13 => RecordKind::DropModel,
            14 => RecordKind::PutRecommender,
            15 => RecordKind::DropRecommender,
            16 => RecordKind::Privacy,
            17 => RecordKind::Forget,
            18 => RecordKind::PutView,
            19 => RecordKind::DropView,
            _ => return None,
        })
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub lsn: u64,
    pub kind: RecordKind,
    pub payload: Vec<u8>,
}

/// The header of a WAL file whose first record has `first_lsn`.
pub(crate) fn encode_header(first_lsn: u64, created_unix_ms: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    header[16..24].copy_from_slice(&created_unix_ms.to_le_bytes());
    let checksum = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Appends one record to `out`. The payload must fit the record size limit.
pub(crate) fn encode_record(
    lsn: u64,
    kind: RecordKind,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|&l| u64::from(l) <= limits::WAL_RECORD_BYTES_MAX)
        .ok_or(Error::LimitExceeded {
            what: "bytes in one write-ahead log record",
            limit: limits::WAL_RECORD_BYTES_MAX,
        })?;
    let start = out.len();
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    let checksum = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

/// Where a file's valid records end and what follows is a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TornTail {
    /// Byte offset of the first byte after the last valid record.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// The LSN the first unreadable record would have had.
    pub lsn: u64,
}

/// A WAL file read back.
#[derive(Debug)]
pub(crate) struct FileScan {
    pub first_lsn: u64,
    pub records: Vec<Record>,
    /// Set when the file ends in an incomplete or damaged record that no valid
    /// record follows: what a crash during a write leaves.
    pub torn: Option<TornTail>,
}

/// Reads the WAL file `path` whose contents are `bytes`.
///
/// A damaged or incomplete record at the end, with no valid record after it,
/// is a torn tail (returned, for the caller to cut). A damaged record that a
/// valid record follows, a break in the LSN sequence, or a damaged header is
/// corruption, an error.
pub(crate) fn scan_file(path: &Path, bytes: &[u8]) -> Result<FileScan> {
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    let header = framing::header(path, bytes, &MAGIC, HEADER_BYTES, "write-ahead log file")?;
    if crc32c::crc32c(&header[0..28]) != read_u32(header, 28) {
        return Err(corrupted("the file header fails its checksum".to_string()));
    }
    let first_lsn = read_u64(header, 8);
    let mut records = Vec::new();
    let mut offset = HEADER_BYTES;
    let mut expected = first_lsn;
    while offset < bytes.len() {
        match decode_record(bytes, offset) {
            Decoded::Record(record, next) if record.lsn == expected => {
                records.push(record);
                offset = next;
                expected += 1;
            }
            Decoded::Record(record, _) => {
                return Err(corrupted(format!(
                    "record at byte {offset} has LSN {} where LSN {expected} was due",
                    record.lsn
                )));
            }
            Decoded::Invalid(reason) => {
                if let Some(later) = later_record(bytes, offset + 1, expected) {
                    return Err(corrupted(format!(
                        "record at byte {offset} (LSN {expected}) is damaged ({reason}) \
                         and a valid record follows at byte {later}"
                    )));
                }
                return Ok(FileScan {
                    first_lsn,
                    records,
                    torn: Some(TornTail {
                        offset: offset as u64,
                        bytes: (bytes.len() - offset) as u64,
                        lsn: expected,
                    }),
                });
            }
        }
    }
    Ok(FileScan {
        first_lsn,
        records,
        torn: None,
    })
}

enum Decoded {
    /// A record and the offset after it.
    Record(Record, usize),
    Invalid(&'static str),
}

fn decode_record(bytes: &[u8], offset: usize) -> Decoded {
    let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES) else {
        return Decoded::Invalid("the record header is cut short");
    };
    let length = read_u32(header, 0) as usize;
    if length as u64 > limits::WAL_RECORD_BYTES_MAX {
        return Decoded::Invalid("the record length is beyond the limit");
    }
    let end = offset + RECORD_HEADER_BYTES + length;
    let Some(covered) = bytes.get(offset + 8..end) else {
        return Decoded::Invalid("the record is cut short");
    };
    if crc32c::crc32c(covered) != read_u32(header, 4) {
        return Decoded::Invalid("checksum mismatch");
    }
    let Some(kind) = RecordKind::from_byte(header[16]) else {
        return Decoded::Invalid("unknown record kind");
    };
    Decoded::Record(
        Record {
            lsn: read_u64(header, 8),
            kind,
            payload: bytes[offset + RECORD_HEADER_BYTES..end].to_vec(),
        },
        end,
    )
}

/// The offset of a valid record at or after `from` whose LSN is later than
/// `expected` would be, if any: proof that a damaged record is not the tail.
/// Candidates are filtered on their kind and LSN before their checksum is
/// computed, so a long garbage tail is cheap to search.
fn later_record(bytes: &[u8], from: usize, expected: u64) -> Option<usize> {
    /// How far past the damaged record a following record's LSN may plausibly be.
    const LSN_WINDOW: u64 = 1 << 20;
    (from..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1)).find(|&offset| {
        let header = &bytes[offset..offset + RECORD_HEADER_BYTES];
        let lsn = read_u64(header, 8);
        RecordKind::from_byte(header[16]).is_some()
            && lsn >= expected
            && lsn < expected + LSN_WINDOW
            && matches!(decode_record(bytes, offset), Decoded::Record(..))
    })
}

/// What a sync outside the writer's lock needs (see [`Wal::sync_target`]).
pub(crate) struct SyncTarget {
    pub storage: Arc<dyn Storage>,
    pub file: Arc<File>,
    pub path: PathBuf,
    /// The LSN the sync makes durable, with every one before it.
    pub last_lsn: u64,
}

/// What recovery cut from the end of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    pub file: PathBuf,
    pub tail: TornTail,
}

/// The write-ahead log of a data directory: its files in `wal/`, the one being
/// appended to, and the next LSN.
#[derive(Debug)]
pub(crate) struct Wal {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    file_bytes_max: u64,
    /// The file being appended to, its path and its size.
    current: Option<(Arc<File>, PathBuf, u64)>,
    /// Bytes appended since the log was opened or last reset.
    appended: u64,
    /// Bytes appended since the last sync.
    unsynced: u64,
    next_lsn: u64,
    /// Set when a write or sync failed: the log accepts nothing more until the
    /// database is reopened (a failed sync may have dropped pages it could not
    /// write, so retrying could acknowledge lost records).
    failed: bool,
}

/// What opening the log found: the records from the requested LSN on, in
/// order, and the torn tail cut from the last file, if any.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub records: Vec<Record>,
    pub cut: Option<Cut>,
}

impl Wal {
    /// Opens the log in `dir` (creating the folder), reads every file, checks
    /// that the records form one LSN sequence, cuts a torn tail off the last
    /// file (truncating and syncing it) and returns the records from
    /// `start_lsn` on. A log with no records continues at `start_lsn`.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        start_lsn: u64,
        file_bytes_max: u64,
    ) -> Result<(Wal, Recovered)> {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let files = wal_files(dir)?;
        let mut records = Vec::new();
        let mut cut = None;
        let mut next_lsn: Option<u64> = None;
        let mut last: Option<(PathBuf, u64)> = None;
        for (i, path) in files.iter().enumerate() {
            let bytes = fs::read(path).map_err(Error::io(path))?;
            if i + 1 == files.len() && bytes.len() < HEADER_BYTES {
                // A crash (or failed write) while the last file was being
                // created: its header never became durable, so no record
                // can be in it.
                storage.remove(path).map_err(Error::io(path))?;
                sync_dir(storage.as_ref(), dir)?;
                cut = Some(Cut {
                    file: path.clone(),
                    tail: TornTail {
                        offset: 0,
                        bytes: bytes.len() as u64,
                        lsn: first_lsn_of(path).unwrap_or(0),
                    },
                });
                break;
            }
            let scanned = scan_file(path, &bytes)?;
            if let Some(expected) = next_lsn
                && scanned.first_lsn != expected
            {
                return Err(Error::Corrupted {
                    path: path.clone(),
                    reason: format!(
                        "the file starts at LSN {} where LSN {expected} was due (a file is missing or out of place)",
                        scanned.first_lsn
                    ),
                });
            }
            let mut size = bytes.len() as u64;
            if let Some(tail) = scanned.torn {
                if i + 1 < files.len() {
                    return Err(Error::Corrupted {
                        path: path.clone(),
                        reason: format!(
                            "record at byte {} (LSN {}) is damaged and later files follow",
                            tail.offset, tail.lsn
                        ),
                    });
                }
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(Error::io(path))?;
                file.set_len(tail.offset).map_err(Error::io(path))?;
                file.sync_all().map_err(Error::io(path))?;
                size = tail.offset;
                cut = Some(Cut {
                    file: path.clone(),
                    tail,
                });
            }
            next_lsn = Some(scanned.first_lsn + scanned.records.len() as u64);
            records.extend(scanned.records.into_iter().filter(|r| r.lsn >= start_lsn));
            last = Some((path.clone(), size));
        }
        // A log that ends before `start_lsn` (records the manifest already
        // covers, with `wal_sync = off` and a crash before their write-back)
        // holds nothing needed: it restarts at `start_lsn` in a new file, and
        // the old files go so the LSN sequence stays unbroken.
        if next_lsn.is_some_and(|next| next < start_lsn) {
            for path in &files {
                storage.remove(path).map_err(Error::io(path))?;
            }
            sync_dir(storage.as_ref(), dir)?;
            last = None;
            cut = None;
        }
        let next_lsn = next_lsn.unwrap_or(start_lsn).max(start_lsn);
        let current = match last {
            Some((path, size)) if size < file_bytes_max => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(Error::io(&path))?;
                Some((Arc::new(file), path, size))
            }
            _ => None,
        };
        let wal = Wal {
            storage,
            dir: dir.to_path_buf(),
            file_bytes_max,
            current,
            appended: records.iter().map(|r| r.payload.len() as u64).sum(),
            unsynced: 0,
            next_lsn,
            failed: false,
        };
        Ok((wal, Recovered { records, cut }))
    }

    /// The LSN the next record gets.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends a record (not yet synced) and returns its LSN. A record that
    /// would take the current file past its size limit starts a new file.
    pub(crate) fn append(&mut self, kind: RecordKind, payload: &[u8]) -> Result<u64> {
        self.check_usable()?;
        let lsn = self.next_lsn;
        let mut bytes = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
        encode_record(lsn, kind, payload, &mut bytes)?;
        let full = self
            .current
            .as_ref()
            .is_some_and(|(_, _, size)| size + bytes.len() as u64 > self.file_bytes_max);
        if full || self.current.is_none() {
            self.start_file(lsn)?;
        }
        let (file, path, size) = self.current.as_mut().expect("a file was started");
        if let Err(e) = self.storage.write(file, path, &bytes) {
            self.failed = true;
            return Err(Error::io(path.as_path())(e));
        }
        *size += bytes.len() as u64;
        self.appended += bytes.len() as u64;
        self.unsynced += bytes.len() as u64;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Makes every appended record durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        if let Some((file, path, _)) = &self.current
            && let Err(e) = self.storage.sync(file, path)
        {
            self.failed = true;
            return Err(Error::io(path.as_path())(e));
        }
        self.unsynced = 0;
        Ok(())
    }

    /// Bytes appended since the last sync made by [`Wal::sync`].
    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.unsynced
    }

    /// What a sync outside the writer's lock needs: the file being appended
    /// to (every earlier file was synced when it was closed) and the LSN of
    /// the last record appended to it. `None` when nothing was appended.
    pub(crate) fn sync_target(&self) -> Result<Option<SyncTarget>> {
        self.check_usable()?;
        Ok(self.current.as_ref().map(|(file, path, _)| SyncTarget {
            storage: Arc::clone(&self.storage),
            file: Arc::clone(file),
            path: path.clone(),
            last_lsn: self.next_lsn - 1,
        }))
    }

    /// Records that a sync made outside the writer's lock failed: the log
    /// accepts nothing more.
    pub(crate) fn fail(&mut self) {
        self.failed = true;
    }

    /// Bytes of records appended since the log was opened or last reset.
    pub(crate) fn appended_bytes(&self) -> u64 {
        self.appended
    }

    /// Removes every file, after a checkpoint has made all records appended so
    /// far unnecessary; the next record starts a new file.
    pub(crate) fn reset(&mut self) -> Result<()> {
        self.sync()?;
        self.current = None;
        self.appended = 0;
        for path in wal_files(&self.dir)? {
            self.storage.remove(&path).map_err(Error::io(&path))?;
        }
        sync_dir(self.storage.as_ref(), &self.dir)
    }

    fn start_file(&mut self, first_lsn: u64) -> Result<()> {
        let path = file_path(&self.dir, first_lsn);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let started = (|| -> std::io::Result<File> {
            let file = self.storage.create_new(&path)?;
            self.storage
                .write(&file, &path, &encode_header(first_lsn, created))?;
            self.storage.sync(&file, &path)?;
            Ok(file)
        })();
        let file = match started {
            Ok(file) => file,
            Err(e) => {
                self.failed = true;
                return Err(Error::io(&path)(e));
            }
        };
        // The previous file's records must be durable before the new file
        // can be found by recovery after them.
        if let Some((previous, previous_path, _)) = &self.current
            && let Err(e) = self.storage.sync(previous, previous_path)
        {
            self.failed = true;
            return Err(Error::io(previous_path.as_path())(e));
        }
        if let Err(e) = sync_dir(self.storage.as_ref(), &self.dir) {
            self.failed = true;
            return Err(e);
        }
        self.current = Some((Arc::new(file), path, HEADER_BYTES as u64));
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(
                    "an earlier write or sync of the write-ahead log failed; \
                     reopen the database to recover",
                ),
            });
        }
        Ok(())
    }
}

/// `wal/<first-lsn as 16 hex digits>.wal`.
fn file_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:016x}.wal"))
}

fn first_lsn_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?.strip_suffix(".wal")?;
    (name.len() == 16)
        .then(|| u64::from_str_radix(name, 16).ok())
        .flatten()
}

/// The log's files in LSN order.
pub(crate) fn wal_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| first_lsn_of(&path).map(|lsn| (lsn, path)))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    fn os() -> Arc<dyn Storage> {
        Arc::new(crate::io::Os)
    }

    use super::*;

    fn file(first_lsn: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = encode_header(first_lsn, 1_764_460_800_000).to_vec();
        for (i, payload) in payloads.iter().enumerate() {
            encode_record(
                first_lsn + i as u64,
                RecordKind::Append,
                payload,
                &mut bytes,
            )
            .expect("small payloads fit");
        }
        bytes
    }

    fn scan(bytes: &[u8]) -> Result<FileScan> {
        scan_file(Path::new("wal/0000000000000007.wal"), bytes)
    }

    #[test]
    fn records_read_back_as_written() {
        let bytes = file(7, &[b"first", b"", b"third record"]);
        let scanned = scan(&bytes).expect("a valid file");
        assert_eq!(scanned.first_lsn, 7);
        assert_eq!(scanned.torn, None);
        let read: Vec<(u64, Vec<u8>)> = scanned
            .records
            .into_iter()
            .map(|r| (r.lsn, r.payload))
            .collect();
        assert_eq!(
            read,
            [
                (7, b"first".to_vec()),
                (8, Vec::new()),
                (9, b"third record".to_vec())
            ]
        );
    }

    /// The record layout is the one docs/format.md gives, byte for byte.
    #[test]
    fn record_bytes_match_the_format_spec() {
        let mut bytes = Vec::new();
        encode_record(0x0102, RecordKind::DropTable, &[0xAB, 0xCD], &mut bytes).expect("fits");
        assert_eq!(bytes.len(), RECORD_HEADER_BYTES + 2);
        assert_eq!(&bytes[0..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(bytes[16], 2);
        assert_eq!(&bytes[17..], &[0xAB, 0xCD]);
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
            crc32c::crc32c(&bytes[8..])
        );
        // CRC-32C's check value (RFC 3720): "123456789" sums to 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    /// A crash can leave any prefix of the last record: every cut is a torn tail
    /// after the complete records, never an error.
    #[test]
    fn a_tail_cut_at_any_byte_is_torn() {
        let complete = file(1, &[b"kept one", b"kept two"]);
        let full = file(1, &[b"kept one", b"kept two", b"the record being written"]);
        for cut in complete.len() + 1..full.len() {
            let scanned = scan(&full[..cut]).expect("a torn tail is not an error");
            assert_eq!(scanned.records.len(), 2, "cut at {cut}");
            assert_eq!(
                scanned.torn,
                Some(TornTail {
                    offset: complete.len() as u64,
                    bytes: (cut - complete.len()) as u64,
                    lsn: 3
                }),
                "cut at {cut}"
            );
        }
    }

    /// Garbage after the last record (zeros of a preallocated page, a torn
    /// write's leftovers) is a torn tail too.
    #[test]
    fn garbage_after_the_records_is_torn() {
        let mut bytes = file(1, &[b"kept"]);
        let valid = bytes.len();
        bytes.extend(std::iter::repeat_n(0u8, 4096));
        let scanned = scan(&bytes).expect("zeros are a torn tail");
        assert_eq!(scanned.records.len(), 1);
        assert_eq!(scanned.torn.map(|t| t.offset), Some(valid as u64));
        let mut bytes = file(1, &[b"kept"]);
        bytes.extend((0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        assert_eq!(scan(&bytes).expect("noise is torn").records.len(), 1);
    }

    /// A damaged record followed by a valid one is corruption, whichever byte
    /// of it was damaged: replay must not skip a statement.
    #[test]
    fn a_damaged_record_before_valid_ones_is_corruption() {
        let bytes = file(1, &[b"one", b"two is damaged", b"three"]);
        let second = HEADER_BYTES + RECORD_HEADER_BYTES + 3;
        let third = second + RECORD_HEADER_BYTES + 14;
        for at in second..third {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let error = scan(&damaged).expect_err("corruption in the middle");
            let message = error.to_string();
            assert!(
                message.contains(&format!("record at byte {second} (LSN 2) is damaged"))
                    && message.contains(&format!("a valid record follows at byte {third}")),
                "damage at byte {at}: {message}"
            );
        }
    }

    #[test]
    fn a_gap_in_the_lsn_sequence_is_corruption() {
        let mut bytes = encode_header(1, 0).to_vec();
        encode_record(1, RecordKind::Append, b"a", &mut bytes).expect("fits");
        encode_record(3, RecordKind::Append, b"b", &mut bytes).expect("fits");
        let error = scan(&bytes).expect_err("LSN 2 is missing");
        assert!(
            error.to_string().contains("has LSN 3 where LSN 2 was due"),
            "{error}"
        );
    }

    #[test]
    fn a_damaged_header_is_corruption() {
        let bytes = file(1, &[b"one"]);
        let mut wrong_magic = bytes.clone();
        wrong_magic[7] = 1;
        assert!(
            scan(&wrong_magic)
                .expect_err("bad magic")
                .to_string()
                .contains("bad magic")
        );
        let mut wrong_lsn = bytes.clone();
        wrong_lsn[9] ^= 1;
        assert!(
            scan(&wrong_lsn)
                .expect_err("bad header checksum")
                .to_string()
                .contains("header fails its checksum")
        );
        assert!(
            scan(&bytes[..20])
                .expect_err("short")
                .to_string()
                .contains("shorter than its header")
        );
    }

    fn payloads(recovered: &Recovered) -> Vec<(u64, String)> {
        recovered
            .records
            .iter()
            .map(|r| (r.lsn, String::from_utf8_lossy(&r.payload).into_owned()))
            .collect()
    }

    #[test]
    fn the_log_reopens_across_files_and_continues() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal_dir = dir.path().join("wal");
        let (mut wal, recovered) = Wal::open(os(), &wal_dir, 1, 100).expect("new log");
        assert!(recovered.records.is_empty());
        for i in 1..=6u64 {
            let payload = format!("statement {i} with some bytes");
            assert_eq!(
                wal.append(RecordKind::Append, payload.as_bytes())
                    .expect("append"),
                i
            );
        }
        wal.sync().expect("sync");
        drop(wal);
        // Small files: each holds one or two records, so the log spans several.
        assert!(wal_files(&wal_dir).expect("files").len() >= 3);
        let (mut wal, recovered) = Wal::open(os(), &wal_dir, 3, 100).expect("reopen");
        assert_eq!(recovered.cut, None);
        assert_eq!(
            payloads(&recovered)
                .iter()
                .map(|(l, _)| *l)
                .collect::<Vec<_>>(),
            [3, 4, 5, 6]
        );
        assert_eq!(wal.next_lsn(), 7);
        assert_eq!(wal.append(RecordKind::Roles, b"x").expect("append"), 7);
        wal.sync().expect("sync");
        // A reset (after a checkpoint) removes every file; the log goes on at
        // the next LSN in a new file.
        wal.reset().expect("reset");
        assert!(wal_files(&wal_dir).expect("files").is_empty());
        assert_eq!(wal.append(RecordKind::Roles, b"y").expect("append"), 8);
        wal.sync().expect("sync");
        drop(wal);
        let (_, recovered) = Wal::open(os(), &wal_dir, 8, 100).expect("reopen");
        assert_eq!(
            payloads(&recovered)
                .iter()
                .map(|(l, _)| *l)
                .collect::<Vec<_>>(),
            [8]
        );
    }

    #[test]
    fn a_log_that_ends_before_the_start_restarts_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal_dir = dir.path().join("wal");
        let (mut wal, _) = Wal::open(os(), &wal_dir, 1, 1 << 20).expect("new log");
        wal.append(RecordKind::Append, b"covered by the manifest")
            .expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (mut wal, recovered) = Wal::open(os(), &wal_dir, 10, 1 << 20).expect("reopen");
        assert!(recovered.records.is_empty());
        assert_eq!(
            wal.append(RecordKind::Append, b"after").expect("append"),
            10
        );
        wal.sync().expect("sync");
        drop(wal);
        assert_eq!(
            wal_files(&wal_dir).expect("files"),
            [file_path(&wal_dir, 10)]
        );
        let (_, recovered) = Wal::open(os(), &wal_dir, 10, 1 << 20).expect("reopen");
        assert_eq!(payloads(&recovered), [(10, "after".to_string())]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_continues_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal_dir = dir.path().join("wal");
        let (mut wal, _) = Wal::open(os(), &wal_dir, 1, 1 << 20).expect("new log");
        wal.append(RecordKind::Append, b"acknowledged")
            .expect("append");
        wal.sync().expect("sync");
        wal.append(RecordKind::Append, b"being written when the power went")
            .expect("append");
        drop(wal);
        let path = file_path(&wal_dir, 1);
        let length = fs::metadata(&path).expect("file").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(length - 5))
            .expect("cut");
        let (mut wal, recovered) = Wal::open(os(), &wal_dir, 1, 1 << 20).expect("recovers");
        assert_eq!(payloads(&recovered), [(1, "acknowledged".to_string())]);
        let cut = recovered.cut.expect("a cut");
        assert_eq!(cut.tail.lsn, 2);
        assert_eq!(
            cut.tail.offset,
            (HEADER_BYTES + RECORD_HEADER_BYTES + 12) as u64
        );
        assert_eq!(fs::metadata(&path).expect("file").len(), cut.tail.offset);
        assert_eq!(wal.append(RecordKind::Append, b"next").expect("append"), 2);
        wal.sync().expect("sync");
        drop(wal);
        let (_, recovered) = Wal::open(os(), &wal_dir, 1, 1 << 20).expect("reopen");
        assert_eq!(
            payloads(&recovered),
            [(1, "acknowledged".to_string()), (2, "next".to_string())]
        );
    }

    #[test]
    fn damage_in_an_earlier_file_or_a_missing_file_stops_the_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal_dir = dir.path().join("wal");
        let (mut wal, _) = Wal::open(os(), &wal_dir, 1, 80).expect("new log");
        for i in 0..6 {
            wal.append(RecordKind::Append, format!("record number {i}").as_bytes())
                .expect("append");
        }
        wal.sync().expect("sync");
        drop(wal);
        let files = wal_files(&wal_dir).expect("files");
        assert!(files.len() >= 3);
        // A torn record in a file that later files follow is corruption.
        let first = fs::read(&files[0]).expect("read");
        fs::write(&files[0], &first[..first.len() - 3]).expect("write");
        let error = Wal::open(os(), &wal_dir, 1, 80).expect_err("damaged middle file");
        assert!(error.to_string().contains("later files follow"), "{error}");
        fs::write(&files[0], &first).expect("restore");
        // A missing file breaks the LSN sequence.
        fs::remove_file(&files[1]).expect("remove");
        let error = Wal::open(os(), &wal_dir, 1, 80).expect_err("gap");
        assert!(
            error.to_string().contains("was due (a file is missing"),
            "{error}"
        );
    }

    #[test]
    fn an_impossible_length_at_the_end_is_torn() {
        let mut bytes = file(1, &[b"kept"]);
        let valid = bytes.len();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 13]);
        let scanned = scan(&bytes).expect("torn");
        assert_eq!(scanned.records.len(), 1);
        assert_eq!(scanned.torn.map(|t| t.offset), Some(valid as u64));
    }
}

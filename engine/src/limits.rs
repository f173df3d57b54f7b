//! Every limit the engine enforces, in one place, so they can be read, documented
//! and tested together. Exceeding one is a typed [`crate::Error::LimitExceeded`].

/// Longest table or column name, in bytes (PostgreSQL's NAMEDATALEN − 1).
pub const NAME_BYTES_MAX: usize = 63;

/// Most columns in one table.
pub const COLUMNS_PER_TABLE_MAX: usize = 1_600;

/// Most rows in one table: row ids carry the row's position in 32 bits per segment
/// and segment ids in the upper 32 bits.
pub const ROWS_PER_SEGMENT_MAX: u64 = u32::MAX as u64;

/// Rows per batch when reading import files.
pub const IMPORT_BATCH_ROWS: usize = 65_536;

/// Largest manifest the engine will read, in bytes; a bigger one is corruption.
pub const MANIFEST_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Most bytes of `COPY ... FROM STDIN` data held for one statement: the rows
/// are committed all at once when the client finishes, so they are kept until
/// then. More fails the statement.
pub const COPY_IN_BYTES_MAX: u64 = 1 << 30;

/// Largest write-ahead log record (one statement's whole change), in bytes: what
/// the record's 32-bit length field can say.
pub const WAL_RECORD_BYTES_MAX: u64 = u32::MAX as u64;

/// Largest write-ahead log file, in bytes; the next record starts a new file.
/// (A record larger than this has a file to itself.)
pub const WAL_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Bytes of write-ahead log since the last checkpoint that trigger one.
pub const WAL_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Bytes of rows held in memtables (appended since the last flush) that
/// trigger a checkpoint, which flushes them to segment files.
pub const MEMTABLE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// In-memory segments (one per write statement since the last flush) that
/// trigger a checkpoint: many small statements otherwise make many small scan
/// units.
pub const MEMTABLE_SEGMENTS_MAX: usize = 1_024;

/// Rows a compacted segment file aims at; segment files below a quarter of it
/// are small, and merged by compaction.
pub const SEGMENT_ROWS_TARGET: u64 = 1_048_576;

/// Small segment files of one table that make a checkpoint compact them.
pub const SMALL_SEGMENTS_MAX: usize = 8;

/// Fraction of a segment file's rows deleted that makes a checkpoint rewrite
/// it without them.
pub const COMPACTION_DELETED_FRACTION: f64 = 0.2;

/// Bytes of rows one statement holds in memory before it streams the rest
/// into a segment file of its own (a large COPY or INSERT ... SELECT).
pub const APPEND_MEMORY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Bytes of segment files one checkpoint rewrites at most when compacting on
/// its own (VACUUM has no limit): what bounds the pause a background
/// compaction makes writers wait.
pub const COMPACTION_BYTES_PER_CHECKPOINT_MAX: u64 = 64 * 1024 * 1024;

/// How often the background compactor looks for work.
pub const COMPACTION_INTERVAL_MS: u64 = 1_000;

/// Audit records an in-memory database keeps (the newest); a data directory
/// keeps every record in its `audit.log`.
pub const AUDIT_MEMORY_RECORDS: usize = 100_000;

/// Bytes of a statement's text an audit record keeps; the rest is replaced by
/// a note of how many bytes were left out (a multi-megabyte INSERT's text,
/// its literals already `?`, says nothing more past this).
pub const AUDIT_STATEMENT_BYTES_MAX: usize = 64 * 1024;

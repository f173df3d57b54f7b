//! The manifest of format version 2 (docs/format.md § Manifest): the live state
//! of a data directory as JSON behind a checksummed header, replaced atomically.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, Result};
use crate::framing;
use crate::io::Storage;
use crate::limits;
use crate::roles::Role;
use crate::types::{self, ColumnDef, ColumnType};

/// `CDBMANI` and the format version.
const MAGIC: [u8; 8] = *b"CDBMANI\x02";
/// Bytes before the JSON document.
const HEADER_BYTES: usize = 24;
/// The manifest's file name in the data directory.
pub(crate) const FILE_NAME: &str = "MANIFEST";

/// When WAL records are synced (docs/format.md § Write-ahead log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalSync {
    #[default]
    Always,
    Batch,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub next_id: u64,
    pub wal_start_lsn: u64,
    #[serde(default)]
    pub wal_sync: WalSync,
    pub tables: Vec<Table>,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The user-key dictionary, once a table has a user key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Users>,
    /// Every table's tag index.
    #[serde(default)]
    pub tag_indexes: Vec<TagIndex>,
    /// Stored tags and segments.
    #[serde(default)]
    pub tags: Vec<StoredTag>,
    /// Views (views.rs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<crate::views::View>,
    /// Stored models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<crate::lookalike::StoredModel>,
    /// Recommenders, each with its file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommenders: Vec<crate::recommend::Entry>,
    /// The suppression tag and the pseudonym keys; absent:
    /// [`crate::privacy::DEFAULT_SUPPRESSION_TAG`] and no keys.
    #[serde(default)]
    pub privacy: crate::privacy::Privacy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Users {
    pub key_type: crate::users::UserKeyType,
    pub chunks: Vec<crate::users::Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagIndex {
    pub table_id: u64,
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub file: crate::tags::TagFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredTag {
    pub id: u64,
    pub name: String,
    pub source: crate::tags::TagSourceKind,
    pub definition: String,
    pub refreshed_micros: i64,
    pub users: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::tags::TagFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Table {
    pub id: u64,
    pub name: String,
    pub columns: Vec<Column>,
    pub segments: Vec<Segment>,
}

impl Manifest {
    /// The manifest of a new, empty database.
    pub(crate) fn empty() -> Manifest {
        Manifest {
            next_id: 1,
            wal_start_lsn: 1,
            wal_sync: WalSync::default(),
            tables: Vec::new(),
            roles: Vec::new(),
            users: None,
            tag_indexes: Vec::new(),
            tags: Vec::new(),
            views: Vec::new(),
            models: Vec::new(),
            recommenders: Vec::new(),
            privacy: crate::privacy::Privacy::default(),
        }
    }
}

impl Table {
    /// The table's Arrow schema; `path` names the file that recorded it, for
    /// errors.
    pub(crate) fn schema(&self, path: &Path) -> Result<SchemaRef> {
        let corrupted = |reason: String| Error::Corrupted {
            path: path.to_path_buf(),
            reason,
        };
        let columns = self
            .columns
            .iter()
            .map(|c| {
                let column_type = ColumnType::parse(&c.column_type).ok_or_else(|| {
                    corrupted(format!(
                        "unknown column type {:?} in table {:?}",
                        c.column_type, self.name
                    ))
                })?;
                Ok(ColumnDef {
                    user_key: c.user_key,
                    ..ColumnDef::new(&c.name, column_type, c.nullable)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        types::table_schema(&columns).map_err(|e| corrupted(format!("table {:?}: {e}", self.name)))
    }
}

/// The manifest's columns for table columns `columns`.
pub(crate) fn columns_of(columns: &[ColumnDef]) -> Vec<Column> {
    columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            column_type: c.column_type.to_string(),
            nullable: c.nullable,
            user_key: c.user_key,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: String,
    pub nullable: bool,
    /// Whether the column holds the table's user ids (`USER KEY`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Segment {
    pub id: u64,
    pub rows: u64,
    pub bytes: u64,
    pub crc32c: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<Deletes>,
}

/// A segment's live deletion vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Deletes {
    pub generation: u64,
    pub rows: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

/// The file contents of `manifest`.
pub(crate) fn encode(manifest: &Manifest) -> Vec<u8> {
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + json.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    let header_checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&header_checksum.to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes
}

/// Reads the manifest `bytes` of file `path`.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    let header = framing::header(path, bytes, &MAGIC, HEADER_BYTES, "manifest")?;
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&header[0..20]) != u32_at(20) {
        return Err(corrupted("the header fails its checksum".to_string()));
    }
    let json_bytes = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if json_bytes > limits::MANIFEST_BYTES_MAX {
        return Err(corrupted(
            "the manifest is larger than the limit".to_string(),
        ));
    }
    let json = &bytes[HEADER_BYTES..];
    if json.len() as u64 != json_bytes {
        return Err(corrupted(format!(
            "the header says {json_bytes} bytes of JSON, the file holds {}",
            json.len()
        )));
    }
    if crc32c::crc32c(json) != u32_at(16) {
        return Err(corrupted("the document fails its checksum".to_string()));
    }
    serde_json::from_slice(json).map_err(|e| corrupted(e.to_string()))
}

/// Reads `MANIFEST` in `dir`; `None` when there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(limits::MANIFEST_BYTES_MAX + HEADER_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(&path))?;
    decode(&path, &bytes).map(Some)
}

/// Replaces `MANIFEST` in `dir` atomically: written to `MANIFEST.tmp`, synced,
/// renamed over the old one, the directory synced.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, manifest: &Manifest) -> Result<()> {
    let bytes = encode(manifest);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    durable::write_whole(storage, &tmp, &dir.join(FILE_NAME), &[&bytes])
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn sample() -> Manifest {
        Manifest {
            next_id: 12,
            wal_start_lsn: 4081,
            wal_sync: WalSync::Always,
            tables: vec![Table {
                id: 1,
                name: "users".to_string(),
                columns: vec![Column {
                    name: "user_id".to_string(),
                    column_type: "BIGINT".to_string(),
                    nullable: false,
                    user_key: false,
                }],
                segments: vec![
                    Segment {
                        id: 5,
                        rows: 100_000,
                        bytes: 1_843_921,
                        crc32c: 2_873_612_201,
                        deletes: Some(Deletes {
                            generation: 2,
                            rows: 17,
                            bytes: 96,
                            crc32c: 99_182_733,
                        }),
                    },
                    Segment {
                        id: 9,
                        rows: 10,
                        bytes: 900,
                        crc32c: 1,
                        deletes: None,
                    },
                ],
            }],
            roles: Vec::new(),
            users: None,
            tag_indexes: Vec::new(),
            tags: Vec::new(),
            views: Vec::new(),
            models: vec![crate::lookalike::StoredModel {
                name: "buyers_like".to_string(),
                seed: "event_type=purchase".to_string(),
                options: "method=log_odds".to_string(),
                method: crate::lookalike::Method::LogOdds,
                trained_micros: 1_700_000_000_000_000,
                seed_users: 1234,
                population_users: 100_000,
                components: vec![crate::lookalike::StoredComponent {
                    method: crate::lookalike::Method::LogOdds,
                    intercept: 0.0,
                    weights: vec![crate::lookalike::StoredWeight {
                        tag: "city=beijing".to_string(),
                        // Needs every digit to read back exactly.
                        weight: 0.123_456_789_012_345_67,
                        lift: Some(1.75),
                    }],
                    quantiles: Vec::new(),
                }],
            }],
            recommenders: vec![crate::recommend::Entry {
                id: 9,
                name: "for_you".to_string(),
                definition: crate::recommend::Definition {
                    table: "events".to_string(),
                    user: "user_id".to_string(),
                    item: "item_id".to_string(),
                    weight: None,
                    time: Some("ts".to_string()),
                    algorithm: "item_knn".to_string(),
                    options: "neighbours=50, half_life=30".to_string(),
                },
                built_micros: 1_700_000_000_000_000,
                users: 10,
                items: 20,
                interactions: 30,
                bytes: 4096,
                crc32c: 7,
            }],
            privacy: crate::privacy::Privacy {
                suppression_tag: "do_not_contact".to_string(),
                pseudonym_keys: [(
                    "partner".to_string(),
                    crate::privacy::PseudonymKey::new(Some(vec![0x5a; 32]), 7).expect("key"),
                )]
                .into(),
            },
        }
    }

    #[test]
    fn manifests_read_back_as_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(read(dir.path()).expect("no manifest"), None);
        write(&crate::io::Os, dir.path(), &sample()).expect("written");
        assert_eq!(read(dir.path()).expect("read"), Some(sample()));
        assert!(!dir.path().join("MANIFEST.tmp").exists());
        let bytes = fs::read(dir.path().join(FILE_NAME)).expect("file");
        assert_eq!(&bytes[0..8], b"CDBMANI\x02");
        // The document is the JSON docs/format.md shows.
        let json: serde_json::Value = serde_json::from_slice(&bytes[HEADER_BYTES..]).expect("json");
        assert_eq!(json["wal_sync"], "always");
        assert_eq!(json["tables"][0]["segments"][0]["deletes"]["generation"], 2);
        assert!(json["tables"][0]["segments"][1].get("deletes").is_none());
    }

    #[test]
    fn a_damaged_manifest_is_corrupted() {
        let bytes = encode(&sample());
        let path = Path::new("MANIFEST");
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x04;
            assert!(decode(path, &damaged).is_err(), "flip at byte {at}");
        }
        let reason = |bytes: &[u8]| decode(path, bytes).expect_err("corrupted").to_string();
        assert!(reason(&bytes[..bytes.len() - 1]).contains("the file holds"));
        assert!(reason(&bytes[..10]).contains("shorter than its header"));
        // An unknown field is refused rather than silently dropped on rewrite.
        let mut manifest = serde_json::to_value(sample()).expect("json");
        manifest["surprise"] = serde_json::json!(1);
        let json = serde_json::to_vec(&manifest).expect("json");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
        let header = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&header.to_le_bytes());
        bytes.extend_from_slice(&json);
        assert!(reason(&bytes).contains("unknown field `surprise`"));
    }
}

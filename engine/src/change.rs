//! The changes the catalog makes, and their write-ahead log records
//! (docs/format.md § Write-ahead log): every write statement is one [`Change`],
//! encoded as one record before it is applied, and decoded and applied again
//! when the log is replayed.

use std::io::Cursor;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest;
use crate::roles::Role;
use crate::segment_file::SegmentFile;
use crate::wal::{Record, RecordKind};

/// One statement's change.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    CreateTable {
        table_id: u64,
        name: String,
        columns: Vec<manifest::Column>,
    },
    DropTable {
        table_id: u64,
    },
    Append(Append),
    Delete(Delete),
    Update {
        delete: Delete,
        append: Append,
    },
    /// The whole role list after the change.
    Roles(Vec<Role>),
    /// Segment files a large append wrote before its record (docs/format.md §
    /// Large appends).
    AppendFiles {
        table_id: u64,
        segments: Vec<SegmentFile>,
    },
    /// `CREATE TAG INDEX ON table (columns) [TIME column BY DAY]`.
    CreateTagIndex(TagIndexJson),
    /// `DROP TAG INDEX ON table [(columns)]` (every column when none).
    DropTagIndex(TagIndexJson),
    /// A stored tag or segment created or replaced.
    PutTag(PutTag),
    /// `DROP TAG` / `DROP SEGMENT`.
    DropTag {
        name: String,
    },
    /// A stored model created or replaced.
    PutModel(PutModel),
    /// `DROP MODEL`.
    DropModel {
        name: String,
    },
    /// A recommender built, its file written before the record (docs/format.md
    /// § Recommender files); the model rides along in memory, not in the log.
    PutRecommender {
        recommender: std::sync::Arc<crate::recommend::StoredRecommender>,
        replace: bool,
    },
    /// `DROP RECOMMENDER`.
    DropRecommender {
        name: String,
    },
    /// The privacy settings after the change (`ALTER SYSTEM SET
    /// suppression_tag`, a pseudonym key created, rotated or dropped).
    Privacy(crate::privacy::Privacy),
    /// `FORGET USER`.
    Forget(Forget),
    /// A view created or replaced.
    PutView(PutView),
    /// `DROP VIEW`.
    DropView {
        name: String,
    },
}

/// A view and whether it replaces one of the same name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutView {
    pub view: crate::views::View,
    pub replace: bool,
}

/// Users forgotten (`FORGET USER`): their rows deleted, left out of every
/// stored tag, the recommenders that knew them replaced by ones built
/// without them (files written before the record), and, once the change is
/// logged, their ids erased from the dictionary. The record names users by
/// ordinal only, never by id.
#[derive(Debug, Clone)]
pub(crate) struct Forget {
    pub users: RoaringBitmap,
    /// Their rows, one entry per table that had any.
    pub deletes: Vec<Delete>,
    pub recommenders: Vec<std::sync::Arc<crate::recommend::StoredRecommender>>,
}

/// The payload of a `PutRecommender` record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRecommenderJson {
    entry: crate::recommend::Entry,
    replace: bool,
}

/// A stored model and whether it replaces one of the same name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutModel {
    pub model: crate::lookalike::StoredModel,
    pub replace: bool,
}

/// The payload of tag index records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagIndexJson {
    pub table_id: u64,
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// A stored tag's users and what it is.
#[derive(Debug, Clone)]
pub(crate) struct PutTag {
    pub meta: PutTagJson,
    pub users: TagUsers,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutTagJson {
    pub id: u64,
    pub name: String,
    pub source: crate::tags::TagSourceKind,
    pub definition: String,
    pub refreshed_micros: i64,
    /// Whether it replaces a tag of the same name (REFRESH, OR REPLACE).
    pub replace: bool,
}

pub(crate) use crate::tags::TagUsers;

/// Rows appended to a table as a new in-memory segment.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    pub table_id: u64,
    pub segment_id: u64,
    pub batches: Vec<RecordBatch>,
}

/// Positions deleted from segments of a table.
#[derive(Debug, Clone)]
pub(crate) struct Delete {
    pub table_id: u64,
    pub segments: Vec<(u64, RoaringBitmap)>,
}

/// The JSON part of a `CreateTable` record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableJson {
    name: String,
    columns: Vec<manifest::Column>,
}

impl Change {
    /// The record kind and payload.
    pub(crate) fn encode(&self) -> Result<(RecordKind, Vec<u8>)> {
        let mut out = Vec::new();
        let kind = match self {
            Change::CreateTable {
                table_id,
                name,
                columns,
            } => {
                out.extend_from_slice(&table_id.to_le_bytes());
                let json = TableJson {
                    name: name.clone(),
                    columns: columns.clone(),
                };
                serde_json::to_writer(&mut out, &json).expect("a table serializes");
                RecordKind::CreateTable
            }
            Change::DropTable { table_id } => {
                out.extend_from_slice(&table_id.to_le_bytes());
                RecordKind::DropTable
            }
            Change::Append(append) => {
                encode_append(append, &mut out)?;
                RecordKind::Append
            }
            Change::Delete(delete) => {
                encode_delete(delete, &mut out);
                RecordKind::Delete
            }
            Change::Update { delete, append } => {
                encode_delete(delete, &mut out);
                encode_append(append, &mut out)?;
                RecordKind::Update
            }
            Change::Roles(roles) => {
                serde_json::to_writer(&mut out, roles).expect("roles serialize");
                RecordKind::Roles
            }
            Change::AppendFiles { table_id, segments } => {
                out.extend_from_slice(&table_id.to_le_bytes());
                out.extend_from_slice(
                    &u32::try_from(segments.len())
                        .expect("a statement writes few segment files")
                        .to_le_bytes(),
                );
                for file in segments {
                    out.extend_from_slice(&file.segment_id.to_le_bytes());
                    out.extend_from_slice(&file.rows.to_le_bytes());
                    out.extend_from_slice(&file.bytes.to_le_bytes());
                    out.extend_from_slice(&file.crc32c.to_le_bytes());
                }
                RecordKind::AppendFiles
            }
            Change::CreateTagIndex(json) => {
                serde_json::to_writer(&mut out, json).expect("a tag index serializes");
                RecordKind::CreateTagIndex
            }
            Change::DropTagIndex(json) => {
                serde_json::to_writer(&mut out, json).expect("a tag index serializes");
                RecordKind::DropTagIndex
            }
            Change::PutTag(put) => {
                let json = serde_json::to_vec(&put.meta).expect("a tag serializes");
                out.extend_from_slice(
                    &u32::try_from(json.len())
                        .expect("a tag's description is small")
                        .to_le_bytes(),
                );
                out.extend_from_slice(&json);
                match &put.users {
                    TagUsers::Ids(ids) => {
                        out.push(0);
                        let batch =
                            RecordBatch::try_from_iter([("id", std::sync::Arc::clone(ids))])?;
                        let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
                        writer.write(&batch)?;
                        writer.finish()?;
                    }
                    TagUsers::Ordinals(users) => {
                        out.push(1);
                        users
                            .serialize_into(&mut out)
                            .expect("writing to a Vec does not fail");
                    }
                }
                RecordKind::PutTag
            }
            Change::DropTag { name } => {
                out.extend_from_slice(name.as_bytes());
                RecordKind::DropTag
            }
            Change::PutModel(put) => {
                serde_json::to_writer(&mut out, put).expect("writing to a Vec does not fail");
                RecordKind::PutModel
            }
            Change::DropModel { name } => {
                out.extend_from_slice(name.as_bytes());
                RecordKind::DropModel
            }
            Change::PutView(put) => {
                serde_json::to_writer(&mut out, put).expect("writing to a Vec does not fail");
                RecordKind::PutView
            }
            Change::DropView { name } => {
                out.extend_from_slice(name.as_bytes());
                RecordKind::DropView
            }
            Change::PutRecommender {
                recommender,
                replace,
            } => {
                let json = PutRecommenderJson {
                    entry: recommender.entry.clone(),
                    replace: *replace,
                };
                serde_json::to_writer(&mut out, &json).expect("writing to a Vec does not fail");
                RecordKind::PutRecommender
            }
            Change::DropRecommender { name } => {
                out.extend_from_slice(name.as_bytes());
                RecordKind::DropRecommender
            }
            Change::Privacy(privacy) => {
                serde_json::to_writer(&mut out, privacy).expect("writing to a Vec does not fail");
                RecordKind::Privacy
            }
            Change::Forget(forget) => {
                let bytes = u32::try_from(forget.users.serialized_size())
                    .expect("a bitmap of u32 ordinals serializes in under 4 GiB");
                out.extend_from_slice(&bytes.to_le_bytes());
                forget
                    .users
                    .serialize_into(&mut out)
                    .expect("writing to a Vec does not fail");
                out.extend_from_slice(
                    &u32::try_from(forget.deletes.len())
                        .expect("table ids are few")
                        .to_le_bytes(),
                );
                for delete in &forget.deletes {
                    encode_delete(delete, &mut out);
                }
                let entries: Vec<&crate::recommend::Entry> =
                    forget.recommenders.iter().map(|r| &r.entry).collect();
                serde_json::to_writer(&mut out, &entries).expect("writing to a Vec does not fail");
                RecordKind::Forget
            }
        };
        Ok((kind, out))
    }

    /// Reads a record of the log in `dir` back into a change.
    pub(crate) fn decode(dir: &Path, record: &Record) -> Result<Change> {
        let corrupted = |reason: String| Error::Corrupted {
            path: dir.to_path_buf(),
            reason: format!("record at LSN {}: {reason}", record.lsn),
        };
        let mut reader = Reader {
            bytes: &record.payload,
            at: 0,
        };
        let change = (|| -> std::result::Result<Change, String> {
            Ok(match record.kind {
                RecordKind::CreateTable => {
                    let table_id = reader.u64()?;
                    let json: TableJson =
                        serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?;
                    Change::CreateTable {
                        table_id,
                        name: json.name,
                        columns: json.columns,
                    }
                }
                RecordKind::DropTable => Change::DropTable {
                    table_id: reader.u64()?,
                },
                RecordKind::Append => Change::Append(decode_append(&mut reader)?),
                RecordKind::Delete => Change::Delete(decode_delete(&mut reader)?),
                RecordKind::Update => {
                    let delete = decode_delete(&mut reader)?;
                    let append = decode_append(&mut reader)?;
                    if delete.table_id != append.table_id {
                        return Err("an update names two tables".to_string());
                    }
                    Change::Update { delete, append }
                }
                RecordKind::Roles => {
                    Change::Roles(serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?)
                }
                RecordKind::AppendFiles => {
                    let table_id = reader.u64()?;
                    let count = reader.u32()?;
                    let mut segments = Vec::new();
                    for _ in 0..count {
                        segments.push(SegmentFile {
                            table_id,
                            segment_id: reader.u64()?,
                            rows: reader.u64()?,
                            bytes: reader.u64()?,
                            crc32c: reader.u32()?,
                        });
                    }
                    Change::AppendFiles { table_id, segments }
                }
                RecordKind::CreateTagIndex => Change::CreateTagIndex(
                    serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?,
                ),
                RecordKind::DropTagIndex => Change::DropTagIndex(
                    serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?,
                ),
                RecordKind::PutTag => {
                    let json_bytes = reader.u32()? as usize;
                    let meta: PutTagJson = serde_json::from_slice(reader.take(json_bytes)?)
                        .map_err(|e| e.to_string())?;
                    let form = reader.take(1)?[0];
                    let users = match form {
                        0 => {
                            let mut cursor = Cursor::new(reader.rest());
                            let batches = StreamReader::try_new(&mut cursor, None)
                                .map_err(|e| e.to_string())?
                                .collect::<std::result::Result<Vec<_>, _>>()
                                .map_err(|e| e.to_string())?;
                            let [batch] = batches.as_slice() else {
                                return Err("a tag's ids are one batch".to_string());
                            };
                            if batch.num_columns() != 1 {
                                return Err("a tag's ids are one column".to_string());
                            }
                            TagUsers::Ids(std::sync::Arc::clone(batch.column(0)))
                        }
                        1 => TagUsers::Ordinals(
                            RoaringBitmap::deserialize_from(reader.rest())
                                .map_err(|e| format!("not a portable roaring bitmap: {e}"))?,
                        ),
                        other => return Err(format!("unknown form {other} of a tag's users")),
                    };
                    Change::PutTag(PutTag { meta, users })
                }
                RecordKind::DropTag => Change::DropTag {
                    name: String::from_utf8(reader.rest().to_vec()).map_err(|e| e.to_string())?,
                },
                RecordKind::PutModel => Change::PutModel(
                    serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?,
                ),
                RecordKind::DropModel => Change::DropModel {
                    name: String::from_utf8(reader.rest().to_vec()).map_err(|e| e.to_string())?,
                },
                RecordKind::PutView => Change::PutView(
                    serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?,
                ),
                RecordKind::DropView => Change::DropView {
                    name: String::from_utf8(reader.rest().to_vec()).map_err(|e| e.to_string())?,
                },
                RecordKind::PutRecommender => {
                    let json: PutRecommenderJson =
                        serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?;
                    Change::PutRecommender {
                        recommender: std::sync::Arc::new(crate::recommend::StoredRecommender::new(
                            json.entry, None, None,
                        )),
                        replace: json.replace,
                    }
                }
                RecordKind::DropRecommender => Change::DropRecommender {
                    name: String::from_utf8(reader.rest().to_vec()).map_err(|e| e.to_string())?,
                },
                RecordKind::Privacy => Change::Privacy(
                    serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?,
                ),
                RecordKind::Forget => {
                    let bytes = reader.u32()? as usize;
                    let users = RoaringBitmap::deserialize_from(reader.take(bytes)?)
                        .map_err(|e| format!("not a portable roaring bitmap: {e}"))?;
                    let count = reader.u32()?;
                    let deletes = (0..count)
                        .map(|_| decode_delete(&mut reader))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    let entries: Vec<crate::recommend::Entry> =
                        serde_json::from_slice(reader.rest()).map_err(|e| e.to_string())?;
                    let recommenders = entries
                        .into_iter()
                        .map(|entry| {
                            std::sync::Arc::new(crate::recommend::StoredRecommender::new(
                                entry, None, None,
                            ))
                        })
                        .collect();
                    Change::Forget(Forget {
                        users,
                        deletes,
                        recommenders,
                    })
                }
            })
        })()
        .map_err(corrupted)?;
        Ok(change)
    }
}

fn encode_append(append: &Append, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&append.table_id.to_le_bytes());
    out.extend_from_slice(&append.segment_id.to_le_bytes());
    let schema = append
        .batches
        .first()
        .map(RecordBatch::schema)
        .expect("an append holds rows");
    let mut writer = StreamWriter::try_new(&mut *out, &schema)?;
    for batch in &append.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(())
}

fn encode_delete(delete: &Delete, out: &mut Vec<u8>) {
    out.extend_from_slice(&delete.table_id.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(delete.segments.len())
            .expect("segment ids are 32-bit")
            .to_le_bytes(),
    );
    for (segment_id, positions) in &delete.segments {
        out.extend_from_slice(&segment_id.to_le_bytes());
        let bytes = u32::try_from(positions.serialized_size())
            .expect("a bitmap of u32 positions serializes in under 4 GiB");
        out.extend_from_slice(&bytes.to_le_bytes());
        positions
            .serialize_into(&mut *out)
            .expect("writing to a Vec does not fail");
    }
}

fn decode_append(reader: &mut Reader) -> std::result::Result<Append, String> {
    let table_id = reader.u64()?;
    let segment_id = reader.u64()?;
    let mut cursor = Cursor::new(reader.rest());
    let stream = StreamReader::try_new(&mut cursor, None).map_err(|e| e.to_string())?;
    let batches = stream
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    reader.at += cursor.position() as usize;
    if batches.is_empty() {
        return Err("an append without rows".to_string());
    }
    Ok(Append {
        table_id,
        segment_id,
        batches,
    })
}

fn decode_delete(reader: &mut Reader) -> std::result::Result<Delete, String> {
    let table_id = reader.u64()?;
    let count = reader.u32()?;
    let mut segments = Vec::new();
    for _ in 0..count {
        let segment_id = reader.u64()?;
        let bytes = reader.u32()? as usize;
        let bitmap = reader.take(bytes)?;
        let positions = RoaringBitmap::deserialize_from(bitmap)
            .map_err(|e| format!("not a portable roaring bitmap: {e}"))?;
        segments.push((segment_id, positions));
    }
    Ok(Delete { table_id, segments })
}

/// Reads a payload front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("the payload ends at byte {}", self.bytes.len()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }
}

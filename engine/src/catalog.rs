//! The catalog: every table of a database and the one path by which data changes.
//!
//! Every write (create, drop, append, delete, update, roles) is one [`Change`],
//! made under the writer lock: checked and applied to a copy of the writer's
//! state, appended to the write-ahead log, then installed. Readers see a change
//! once it is durable: with `wal_sync = always`, after a sync of the log that
//! covers it (one sync serves every statement waiting for it: group commit),
//! in log order; with `batch` or `off`, at once. A change that fails leaves
//! nothing behind.
//!
//! Appended rows stay in memory (each statement's rows an in-memory segment)
//! until a checkpoint flushes them to Parquet segment files, writes deletion
//! vectors, compacts segments when due, writes the manifest and empties the log
//! (docs/format.md § Memtable, flush and checkpoint). Opening a directory
//! reads the manifest and replays the log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, RecordBatchOptions, UInt64Array};
use roaring::RoaringBitmap;

use crate::change::{self, Change};
use crate::deletes;
use crate::error::{Error, Result};
use crate::io::Storage;
use crate::limits;
use crate::manifest::{self, Manifest, WalSync};
use crate::recommend::{self, StoredRecommender};
use crate::roles::{Object, Privilege, Role};
use crate::segment_file::{self, SegmentFile, SegmentReader};
use crate::store::Store;
use crate::table::{Segment, Table, TableSnapshot};
use crate::tag_changes;
use crate::tags::{self, Bits, StoredTag, TableTags, Tags};
use crate::types::{self, ColumnDef};
use crate::wal::Wal;

mod forget;
pub use forget::Forgotten;

pub struct Catalog {
    store: Option<Store>,
    /// What readers see: the tables and roles as of the last published change.
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    roles: RwLock<BTreeMap<String, Role>>,
    /// The tag store as of the last published change.
    tags: RwLock<Arc<Tags>>,
    writer: Arc<Mutex<Writer>>,
    /// The highest LSN known durable; held while syncing, so that one sync
    /// serves every statement waiting on it.
    durable: Mutex<u64>,
    /// Changes written to the log but not yet durable, in LSN order, with
    /// what publishing each shows readers. Locked after `writer` or `durable`,
    /// never before.
    pending: Mutex<VecDeque<(u64, Effect)>>,
    /// What recovery did at open that an operator should know.
    recovery: Option<String>,
    /// Where sessions record what they run (audit.rs).
    audit: crate::audit::AuditLog,
    /// Cleared by [`Catalog::close_without_checkpoint`].
    checkpoint_on_drop: std::sync::atomic::AtomicBool,
    /// Ids of segment files being written by large appends, not yet named by
    /// any change: checkpoints leave their files alone.
    reserved: Mutex<std::collections::BTreeSet<u64>>,
    /// Bytes an [`Appender`] holds in memory before it writes a segment file
    /// (`limits::APPEND_MEMORY_BYTES_MAX`; smaller in tests).
    append_memory_max: std::sync::atomic::AtomicU64,
    /// Counts the changes shown to readers (see [`Catalog::version`]).
    version: std::sync::atomic::AtomicU64,
}

/// Only where the catalog is: its contents would flood any message that
/// prints something holding it (a SQL function, a table provider).
impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// The writer's view: every change made, durable or not.
#[derive(Debug)]
struct Writer {
    state: State,
    wal: Option<Wal>,
    wal_sync: WalSync,
}

/// Tables, snapshots and roles after some sequence of changes.
#[derive(Debug, Clone)]
struct State {
    next_id: u64,
    tables: BTreeMap<String, Arc<Table>>,
    /// The latest snapshot of each table, by table id.
    snapshots: BTreeMap<u64, Arc<TableSnapshot>>,
    roles: BTreeMap<String, Role>,
    /// The user-key dictionary, tag indexes and stored tags.
    tags: Tags,
    /// The dictionary files written so far (ordinals in order).
    user_chunks: Vec<crate::users::Chunk>,
    /// Files still holding users forgotten since the last checkpoint.
    erasing: forget::Erasing,
}

/// What readers are shown of one change.
#[derive(Debug)]
enum Effect {
    Tables(BTreeMap<String, Arc<Table>>),
    Snapshots(Vec<(Arc<Table>, Arc<TableSnapshot>)>),
    Roles(BTreeMap<String, Role>),
    Tags(Arc<Tags>),
    Both(Box<Effect>, Box<Effect>),
}

impl Catalog {
    /// A catalog whose data lives only in memory.
    pub fn in_memory() -> Catalog {
        let mut state = State::empty();
        state.tags.privacy = crate::privacy::Privacy::new_database(tags::now_micros())
            .expect("the operating system's random source gives bytes");
        let audit = crate::audit::AuditLog::in_memory();
        Catalog::new(None, WalSync::Off, state, None, None, audit)
    }

    /// Opens the data directory `dir`, creating it if needed: reads the
    /// manifest (converting a version 1 directory), opens the segment files it
    /// names, replays the write-ahead log and removes leftover files.
    pub fn open(dir: &Path) -> Result<Catalog> {
        Catalog::open_with(dir, Arc::new(crate::io::Os))
    }

    /// [`Catalog::open`] with the writes going through `storage` (tests inject
    /// faults with it).
    pub fn open_with(dir: &Path, storage: Arc<dyn Storage>) -> Result<Catalog> {
        let (store, manifest) = Store::open(dir, Arc::clone(&storage))?;
        let (state, wal, recovery) = recover(&store, &manifest)?;
        let (audit, cut) = crate::audit::AuditLog::open(dir, storage)?;
        let recovery = match (recovery, cut) {
            (Some(log), Some(audit)) => Some(format!("{log}; {audit}")),
            (log, audit) => log.or(audit),
        };
        Ok(Catalog::new(
            Some(store),
            manifest.wal_sync,
            state,
            Some(wal),
            recovery,
            audit,
        ))
    }

    /// Rebuilds the catalog from its data directory as opening it does (the
    /// manifest read, the log replayed) and replaces what is in memory with
    /// the result. Tests use it to check that what is on disk, after any
    /// statement, reads back as what was in memory. Not while an
    /// [`Appender`] is writing a file: like an open, it removes files nothing
    /// names yet.
    pub fn reload(&self) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut writer = self.lock_writer();
        if let Some(wal) = &mut writer.wal {
            wal.sync()?;
        }
        self.publish_durable(u64::MAX);
        let manifest = manifest::read(store.dir())?.ok_or_else(|| Error::Corrupted {
            path: store.manifest_path(),
            reason: "the manifest is gone".to_string(),
        })?;
        writer.wal = None;
        let (state, wal, _) = recover(store, &manifest)?;
        self.publish_all(&state);
        writer.state = state;
        writer.wal = Some(wal);
        Ok(())
    }

    fn new(
        store: Option<Store>,
        wal_sync: WalSync,
        state: State,
        wal: Option<Wal>,
        recovery: Option<String>,
        audit: crate::audit::AuditLog,
    ) -> Catalog {
        let stored = store.is_some();
        let catalog = Catalog {
            store,
            tables: RwLock::new(state.tables.clone()),
            roles: RwLock::new(state.roles.clone()),
            tags: RwLock::new(Arc::new(state.tags.clone())),
            writer: Arc::new(Mutex::new(Writer {
                state,
                wal,
                wal_sync,
            })),
            durable: Mutex::new(0),
            pending: Mutex::new(VecDeque::new()),
            recovery,
            audit,
            checkpoint_on_drop: std::sync::atomic::AtomicBool::new(true),
            reserved: Mutex::new(std::collections::BTreeSet::new()),
            append_memory_max: std::sync::atomic::AtomicU64::new(limits::APPEND_MEMORY_BYTES_MAX),
            version: std::sync::atomic::AtomicU64::new(0),
        };
        catalog.publish_all(&catalog.lock_writer().state);
        if stored {
            start_batch_syncs(&catalog.writer);
        }
        catalog
    }

    /// The audit log (audit.rs): sessions append to it, the `cohortdb_audit`
    /// system table reads it.
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    /// The data directory, or `None` for an in-memory catalog.
    pub fn path(&self) -> Option<&Path> {
        self.store.as_ref().map(Store::dir)
    }

    /// What recovery did when the directory was opened (a torn log tail cut),
    /// for the operator's log; `None` when there was nothing to report.
    pub fn recovery_report(&self) -> Option<&str> {
        self.recovery.as_deref()
    }

    pub fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.read_tables()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TableNotFound(name.to_string()))
    }

    pub fn table_names(&self) -> Vec<String> {
        self.read_tables().keys().cloned().collect()
    }

    /// Creates a table. Returns false (and changes nothing) when it exists and
    /// `if_not_exists` is set.
    pub fn create_table(
        &self,
        name: &str,
        columns: &[ColumnDef],
        if_not_exists: bool,
    ) -> Result<bool> {
        types::check_name(name)?;
        types::table_schema(columns)?;
        let mut created = false;
        self.commit(|state| {
            if state.has_relation(name) {
                return if if_not_exists {
                    Ok(None)
                } else {
                    Err(Error::TableExists(name.to_string()))
                };
            }
            created = true;
            Ok(Some(Change::CreateTable {
                table_id: state.next_id,
                name: name.to_string(),
                columns: manifest::columns_of(columns),
            }))
        })?;
        Ok(created)
    }

    /// Drops a table. Returns false when it does not exist and `if_exists` is set.
    pub fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.commit(|state| match state.tables.get(name) {
            Some(table) => {
                dropped = true;
                Ok(Some(Change::DropTable { table_id: table.id }))
            }
            None if state.tags.views.contains_key(name) => Err(Error::WrongObjectType {
                name: name.to_string(),
                kind: "table",
            }),
            None if if_exists => Ok(None),
            None => Err(Error::TableNotFound(name.to_string())),
        })?;
        Ok(dropped)
    }

    /// The tag store as of now: what audience expressions are evaluated
    /// over.
    pub fn tags(&self) -> Arc<Tags> {
        Arc::clone(&self.tags.read().expect("tag lock is never poisoned"))
    }

    /// `CREATE TAG INDEX ON table (columns) [TIME time BY DAY]`: every
    /// distinct value of each column becomes a tag (`column=value`), by day
    /// too with a time column; kept current as the table changes.
    pub fn create_tag_index(
        &self,
        table: &str,
        columns: &[String],
        time: Option<&str>,
    ) -> Result<()> {
        self.commit(|state| {
            let table = state
                .tables
                .get(table)
                .ok_or_else(|| Error::TableNotFound(table.to_string()))?;
            Ok(Some(Change::CreateTagIndex(change::TagIndexJson {
                table_id: table.id,
                columns: columns.to_vec(),
                time: time.map(str::to_string),
            })))
        })
    }

    /// `DROP TAG INDEX ON table [(columns)]`: every column when `columns` is
    /// empty.
    pub fn drop_tag_index(&self, table: &str, columns: &[String]) -> Result<()> {
        self.commit(|state| {
            let table = state
                .tables
                .get(table)
                .ok_or_else(|| Error::TableNotFound(table.to_string()))?;
            Ok(Some(Change::DropTagIndex(change::TagIndexJson {
                table_id: table.id,
                columns: columns.to_vec(),
                time: None,
            })))
        })
    }

    /// Creates (or with `replace`, replaces) the stored tag or segment
    /// `name` holding `users`.
    pub fn put_tag(
        &self,
        name: &str,
        source: tags::TagSourceKind,
        definition: &str,
        users: tags::TagUsers,
        replace: bool,
        refreshed_micros: i64,
    ) -> Result<()> {
        types::check_name(name)?;
        self.commit(|state| {
            if let Some(existing) = state.tags.stored.get(name) {
                if !replace {
                    return Err(Error::TagExists(name.to_string()));
                }
                if existing.source.is_segment() != source.is_segment() {
                    return Err(Error::UnknownTag(format!(
                        "\"{name}\" is a {}, not a {}",
                        existing.source.as_str(),
                        source.as_str()
                    )));
                }
            }
            Ok(Some(Change::PutTag(change::PutTag {
                meta: change::PutTagJson {
                    id: state.next_id,
                    name: name.to_string(),
                    source,
                    definition: definition.to_string(),
                    refreshed_micros,
                    replace,
                },
                users,
            })))
        })
    }

    /// Drops a stored tag (`segment` false) or segment. Returns false when it
    /// does not exist and `if_exists` is set.
    pub fn drop_tag(&self, name: &str, if_exists: bool, segment: bool) -> Result<bool> {
        let mut dropped = false;
        self.commit(|state| match state.tags.stored.get(name) {
            Some(tag) if tag.source.is_segment() != segment => Err(Error::UnknownTag(format!(
                "\"{name}\" is a {}; drop it with DROP {}",
                tag.source.as_str(),
                if segment { "TAG" } else { "SEGMENT" }
            ))),
            Some(_) => {
                state.tags.check_not_suppression_tag(name)?;
                dropped = true;
                Ok(Some(Change::DropTag {
                    name: name.to_string(),
                }))
            }
            None if if_exists => Ok(None),
            None => Err(Error::UnknownTag(format!(
                "{} \"{name}\" does not exist",
                if segment { "segment" } else { "tag" }
            ))),
        })?;
        Ok(dropped)
    }

    /// `ALTER SYSTEM SET suppression_tag`: makes the tag or segment `name`
    /// the suppression tag (privacy.rs); empty: none.
    pub fn set_suppression_tag(&self, name: &str) -> Result<()> {
        self.change_privacy(|privacy, tags| {
            tags.check_suppression_tag(name)?;
            privacy.suppression_tag = name.to_string();
            Ok(())
        })
    }

    /// `CREATE PSEUDONYM KEY`: a key with `secret`, or a fresh random one.
    pub fn create_pseudonym_key(&self, name: &str, secret: Option<Vec<u8>>) -> Result<()> {
        types::check_name(name)?;
        self.change_privacy(|privacy, _| {
            if privacy.pseudonym_keys.contains_key(name) {
                return Err(Error::PseudonymKeyExists(name.to_string()));
            }
            let key = crate::privacy::PseudonymKey::new(secret, tags::now_micros())?;
            privacy.pseudonym_keys.insert(name.to_string(), key);
            Ok(())
        })
    }

    /// `ALTER PSEUDONYM KEY ... ROTATE`: the key `name` gets a new secret
    /// (given, or fresh).
    pub fn rotate_pseudonym_key(&self, name: &str, secret: Option<Vec<u8>>) -> Result<()> {
        self.change_privacy(|privacy, _| {
            let rotated = privacy
                .pseudonym_key(name)?
                .rotated(secret, tags::now_micros())?;
            privacy.pseudonym_keys.insert(name.to_string(), rotated);
            Ok(())
        })
    }

    /// `DROP PSEUDONYM KEY`; whether there was one.
    pub fn drop_pseudonym_key(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.change_privacy(|privacy, _| {
            dropped = privacy.pseudonym_keys.remove(name).is_some();
            match dropped || if_exists {
                true => Ok(()),
                false => Err(Error::PseudonymKeyNotFound(name.to_string())),
            }
        })?;
        Ok(dropped)
    }

    /// Commits the privacy settings `change` makes of the current ones.
    fn change_privacy(
        &self,
        change: impl FnOnce(&mut crate::privacy::Privacy, &Tags) -> Result<()>,
    ) -> Result<()> {
        self.commit(|state| {
            let mut privacy = state.tags.privacy.clone();
            change(&mut privacy, &state.tags)?;
            Ok((privacy != state.tags.privacy).then_some(Change::Privacy(privacy)))
        })
    }

    /// Creates (or with `replace`, replaces) the view `view.name`; 42P07
    /// when a table, or without `replace` a view, has the name.
    pub fn put_view(&self, view: crate::views::View, replace: bool) -> Result<()> {
        types::check_name(&view.name)?;
        self.commit(|state| {
            let name = &view.name;
            if state.tables.contains_key(name) || state.tags.views.contains_key(name) && !replace {
                return Err(Error::TableExists(name.clone()));
            }
            Ok(Some(Change::PutView(change::PutView {
                view: view.clone(),
                replace,
            })))
        })
    }

    /// Drops the view `name` and the grants on it. Returns false when there
    /// is none and `if_exists` is set; a table of that name is 42809.
    pub fn drop_view(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.commit(|state| {
            if state.tables.contains_key(name) {
                return Err(Error::WrongObjectType {
                    name: name.to_string(),
                    kind: "view",
                });
            }
            if !state.tags.views.contains_key(name) {
                return match if_exists {
                    true => Ok(None),
                    false => Err(Error::TableNotFound(name.to_string())),
                };
            }
            dropped = true;
            Ok(Some(Change::DropView {
                name: name.to_string(),
            }))
        })?;
        Ok(dropped)
    }

    /// The view `name`, if there is one.
    pub fn view(&self, name: &str) -> Option<Arc<crate::views::View>> {
        self.tags().views.get(name).cloned()
    }

    /// Whether a table or a view is called `name` (they share names).
    pub fn has_relation(&self, name: &str) -> bool {
        self.read_tables().contains_key(name) || self.tags().views.contains_key(name)
    }

    /// Creates (or with `replace`, replaces) the stored model `model.name`.
    pub fn put_model(&self, model: crate::lookalike::StoredModel, replace: bool) -> Result<()> {
        types::check_name(&model.name)?;
        self.commit(|state| {
            if state.tags.models.contains_key(&model.name) && !replace {
                return Err(Error::ModelExists(model.name.clone()));
            }
            Ok(Some(Change::PutModel(change::PutModel {
                model: model.clone(),
                replace,
            })))
        })
    }

    /// Builds the recommender `name` from `definition` (see
    /// [`recommend::build`]) and keeps it; `replace` replaces one of that
    /// name. The build runs without holding up other writes; its file is
    /// written whole before the change that names it is logged.
    pub fn create_recommender(
        &self,
        name: &str,
        definition: recommend::Definition,
        replace: bool,
    ) -> Result<Arc<StoredRecommender>> {
        types::check_name(name)?;
        if !replace && self.tags().recommenders.contains_key(name) {
            return Err(Error::RecommenderExists(name.to_string()));
        }
        let (stored, _) = self.put_recommender(name, definition, None, replace)?;
        Ok(stored)
    }

    /// Builds the recommender `name` again from its table's rows as of now;
    /// item-kNN computes the neighbours of only the items the changes since
    /// the last build touched (see [`recommend::build`]), and says how many.
    pub fn refresh_recommender(
        &self,
        name: &str,
    ) -> Result<(Arc<StoredRecommender>, Option<usize>)> {
        let recommender = self
            .tags()
            .recommenders
            .get(name)
            .cloned()
            .ok_or_else(|| Error::RecommenderNotFound(name.to_string()))?;
        // A model that cannot be read is built whole again.
        let previous = recommender.model().ok();
        let definition = recommender.entry.definition.clone();
        self.put_recommender(name, definition, previous.as_deref(), true)
    }

    fn put_recommender(
        &self,
        name: &str,
        definition: recommend::Definition,
        previous: Option<&recommend::Recommender>,
        replace: bool,
    ) -> Result<(Arc<StoredRecommender>, Option<usize>)> {
        let (stored, computed) =
            self.build_recommender(name, definition, &RoaringBitmap::new(), previous)?;
        let committed = self.commit(|state| {
            if state.tags.recommenders.contains_key(name) && !replace {
                return Err(Error::RecommenderExists(name.to_string()));
            }
            Ok(Some(Change::PutRecommender {
                recommender: Arc::clone(&stored),
                replace,
            }))
        });
        self.lock_reserved().remove(&stored.entry.id);
        // On failure the file stays until the next checkpoint or open, as a
        // large append's does.
        committed?;
        Ok((stored, computed))
    }

    /// Builds recommender `name` from `definition` without the users in
    /// `without` (from its `previous` model where it can), and writes its
    /// file under a reserved id, which the caller releases once the change
    /// naming it has committed or failed. Also says how many items'
    /// neighbours item-kNN computed.
    fn build_recommender(
        &self,
        name: &str,
        definition: recommend::Definition,
        without: &RoaringBitmap,
        previous: Option<&recommend::Recommender>,
    ) -> Result<(Arc<StoredRecommender>, Option<usize>)> {
        let table = self.table(&definition.table)?;
        let built_micros = crate::tags::now_micros();
        let built = recommend::build(
            &self.tags(),
            &table,
            &definition,
            built_micros,
            without,
            previous,
        )?;
        let model = Arc::new(built.recommender);
        let id = self.reserve_id();
        let written = match &self.store {
            Some(store) => recommend::write_file(
                store.storage().as_ref(),
                &store.dir().join(crate::store::RECOMMENDERS_DIR),
                id,
                &model,
            )
            .map(|(bytes, crc32c)| (bytes, crc32c, Some(store.recommender_path(id)))),
            None => Ok((0, 0, None)),
        };
        let (bytes, crc32c, path) = match written {
            Ok(written) => written,
            Err(e) => {
                self.lock_reserved().remove(&id);
                return Err(e);
            }
        };
        let data = &model.interactions;
        let entry = recommend::Entry {
            id,
            name: name.to_string(),
            definition,
            built_micros,
            users: data.user_count() as u64,
            items: data.items() as u64,
            interactions: data.len() as u64,
            bytes,
            crc32c,
        };
        Ok((
            Arc::new(StoredRecommender::new(entry, path, Some(model))),
            built.computed_items,
        ))
    }

    /// Drops a recommender. Returns false when it does not exist and
    /// `if_exists` is set.
    pub fn drop_recommender(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.commit(|state| {
            if state.tags.recommenders.contains_key(name) {
                dropped = true;
                Ok(Some(Change::DropRecommender {
                    name: name.to_string(),
                }))
            } else if if_exists {
                Ok(None)
            } else {
                Err(Error::RecommenderNotFound(name.to_string()))
            }
        })?;
        Ok(dropped)
    }

    /// Drops a stored model. Returns false when it does not exist and
    /// `if_exists` is set.
    pub fn drop_model(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.commit(|state| {
            if state.tags.models.contains_key(name) {
                dropped = true;
                Ok(Some(Change::DropModel {
                    name: name.to_string(),
                }))
            } else if if_exists {
                Ok(None)
            } else {
                Err(Error::ModelNotFound(name.to_string()))
            }
        })?;
        Ok(dropped)
    }

    /// Every role, by name.
    pub fn roles(&self) -> Vec<Role> {
        self.read_roles().values().cloned().collect()
    }

    pub fn role(&self, name: &str) -> Option<Role> {
        self.read_roles().get(name).cloned()
    }

    /// `f` of role `name`, read in place (a role holds all its grants, which
    /// [`Catalog::role`] copies).
    pub fn with_role<T>(&self, name: &str, f: impl FnOnce(&Role) -> T) -> Option<T> {
        self.read_roles().get(name).map(f)
    }

    /// Creates a role; an existing name is an error.
    pub fn create_role(&self, role: Role) -> Result<()> {
        types::check_name(&role.name)?;
        self.change_roles(|roles| {
            if roles.contains_key(&role.name) {
                return Err(Error::RoleExists(role.name.clone()));
            }
            roles.insert(role.name.clone(), role);
            Ok(())
        })
    }

    /// Changes a role in place.
    pub fn alter_role(&self, name: &str, change: impl FnOnce(&mut Role)) -> Result<()> {
        self.change_roles(|roles| {
            let role = roles
                .get_mut(name)
                .ok_or_else(|| Error::RoleNotFound(name.to_string()))?;
            change(role);
            Ok(())
        })
    }

    /// Applies `change` to each role of `names` in one change: all or none
    /// (42704 for a name that is not a role, and then nothing changes).
    pub fn alter_roles(&self, names: &[String], change: impl Fn(&mut Role)) -> Result<()> {
        self.change_roles(|roles| {
            for name in names {
                let role = roles
                    .get_mut(name)
                    .ok_or_else(|| Error::RoleNotFound(name.clone()))?;
                change(role);
            }
            Ok(())
        })
    }

    /// Drops a role. Returns false when it does not exist and `if_exists` is set.
    pub fn drop_role(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut dropped = false;
        self.change_roles(|roles| {
            dropped = roles.remove(name).is_some();
            if dropped || if_exists {
                Ok(())
            } else {
                Err(Error::RoleNotFound(name.to_string()))
            }
        })?;
        Ok(dropped)
    }

    /// Grants `privileges` on `objects` to `roles` (with `revoke`, takes
    /// them away), in one change; every role and object must exist.
    pub fn change_grants(
        &self,
        roles: &[String],
        objects: &[Object],
        privileges: &[Privilege],
        revoke: bool,
    ) -> Result<()> {
        self.commit(|state| {
            for object in objects {
                state.check_exists(object)?;
            }
            let mut all = state.roles.clone();
            for name in roles {
                let role = all
                    .get_mut(name)
                    .ok_or_else(|| Error::RoleNotFound(name.clone()))?;
                for object in objects {
                    match revoke {
                        false => role.grant(object, privileges),
                        true => role.revoke(object, privileges),
                    }
                }
            }
            Ok(Some(Change::Roles(all.into_values().collect())))
        })
    }

    /// The one write path for roles: the whole list after `change`.
    fn change_roles(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Role>) -> Result<()>,
    ) -> Result<()> {
        self.commit(|state| {
            let mut roles = state.roles.clone();
            change(&mut roles)?;
            Ok(Some(Change::Roles(roles.into_values().collect())))
        })
    }

    /// Appends rows to `table` as one new segment; all or nothing. Returns the number
    /// of rows appended.
    pub fn append(&self, table: &Table, batches: Vec<RecordBatch>) -> Result<u64> {
        self.change_rows(table, &[], batches)
    }

    /// Deletes the rows with the given row ids. Returns the number deleted.
    pub fn delete(&self, table: &Table, row_ids: &[u64]) -> Result<u64> {
        self.change_rows(table, row_ids, Vec::new())
            .map(|_| row_ids.len() as u64)
    }

    /// Replaces the rows with the given row ids by `new_rows`, in one step.
    pub fn update(
        &self,
        table: &Table,
        row_ids: &[u64],
        new_rows: Vec<RecordBatch>,
    ) -> Result<u64> {
        self.change_rows(table, row_ids, new_rows)
            .map(|_| row_ids.len() as u64)
    }

    /// The one write path for rows: deletes `delete` row ids, appends `append`
    /// rows. Returns the number of rows appended.
    fn change_rows(&self, table: &Table, delete: &[u64], append: Vec<RecordBatch>) -> Result<u64> {
        let (append, appended) = conform_rows(table, append)?;
        if appended > limits::ROWS_PER_SEGMENT_MAX {
            return Err(Error::LimitExceeded {
                what: "rows in one statement",
                limit: limits::ROWS_PER_SEGMENT_MAX,
            });
        }
        let delete = positions_by_segment(table.id, delete);
        self.commit(|state| {
            if state.table_by_id(table.id).is_none() {
                return Err(Error::Conflict(table.name().to_string()));
            }
            let append = (appended > 0).then(|| change::Append {
                table_id: table.id,
                segment_id: state.next_id,
                batches: append,
            });
            Ok(match (delete.segments.is_empty(), append) {
                (true, None) => None,
                (true, Some(append)) => Some(Change::Append(append)),
                (false, None) => Some(Change::Delete(delete)),
                (false, Some(append)) => Some(Change::Update { delete, append }),
            })
        })?;
        Ok(appended)
    }

    /// Flushes every memtable to segment files, writes pending deletion
    /// vectors and a manifest, and empties the write-ahead log (the
    /// `CHECKPOINT` statement). Segments are compacted where due.
    pub fn checkpoint(&self) -> Result<()> {
        self.audit.sync()?;
        let mut writer = self.lock_writer();
        if writer.wal.as_ref().is_some_and(|w| w.appended_bytes() == 0) {
            // Nothing was logged since the last checkpoint: nothing to flush.
            return Ok(());
        }
        self.checkpoint_locked(&mut writer, Compaction::DEFAULT)
    }

    /// A checkpoint that also rewrites every segment file of `table` (of every
    /// table with `None`) holding deleted rows, and merges small ones, so that
    /// deleted rows are gone from disk (the `VACUUM` statement).
    pub fn vacuum(&self, table: Option<&str>) -> Result<()> {
        let mut writer = self.lock_writer();
        let compaction = match table {
            Some(name) => {
                let table = writer
                    .state
                    .tables
                    .get(name)
                    .ok_or_else(|| Error::TableNotFound(name.to_string()))?;
                Compaction::All(Some(table.id))
            }
            None => Compaction::All(None),
        };
        self.checkpoint_locked(&mut writer, compaction)
    }

    /// When the write-ahead log is synced (docs/format.md § Write-ahead log).
    pub fn wal_sync(&self) -> WalSync {
        self.lock_writer().wal_sync
    }

    /// Changes when the write-ahead log is synced, from the next statement
    /// on; kept in the manifest (written by a checkpoint now).
    pub fn set_wal_sync(&self, wal_sync: WalSync) -> Result<()> {
        let mut writer = self.lock_writer();
        writer.wal_sync = wal_sync;
        self.checkpoint_locked(&mut writer, Compaction::DEFAULT)
    }

    /// Makes a change: `build` turns the writer's state into the change to
    /// make (`None`: nothing to do), which is applied to a copy of the state,
    /// logged, installed, and published once durable.
    fn commit(&self, build: impl FnOnce(&State) -> Result<Option<Change>>) -> Result<()> {
        let mut writer = self.lock_writer();
        let Some(change) = build(&writer.state)? else {
            return Ok(());
        };
        let (state, effect) = writer.state.apply(&change, self.store.as_ref())?;
        let logged = match &mut writer.wal {
            Some(wal) => change
                .encode()
                .and_then(|(kind, payload)| wal.append(kind, &payload)),
            None => Ok(0),
        };
        let lsn = match logged {
            Ok(lsn) => lsn,
            Err(e) => {
                writer.state.tags.forget_unlogged_users();
                return Err(e);
            }
        };
        state.logged(&change);
        writer.state = state;
        let wait = lsn > 0 && writer.wal_sync == WalSync::Always;
        if wait {
            self.lock_pending().push_back((lsn, effect));
        } else {
            self.publish(effect);
            // `batch`: the background thread syncs every interval, a
            // statement when a megabyte is waiting.
            if writer.wal_sync == WalSync::Batch
                && let Some(wal) = &mut writer.wal
                && wal.unsynced_bytes() >= BATCH_SYNC_BYTES
            {
                wal.sync()?;
            }
        }
        if writer.checkpoint_due() {
            // The statement is logged; its outcome is its sync's. A checkpoint
            // that fails here (a full disk) is retried by the next statement
            // or the compactor; one whose sync of the log fails leaves the log
            // refusing writes, and the sync below reports that.
            let _ = self.checkpoint_locked(&mut writer, Compaction::DEFAULT);
        }
        drop(writer);
        if wait {
            self.sync_through(lsn)?;
        }
        Ok(())
    }

    /// Waits until the log is durable up to `lsn`, syncing it if no other
    /// statement is, and publishes every change that became durable.
    fn sync_through(&self, lsn: u64) -> Result<()> {
        let mut durable = self.durable.lock().expect("sync lock is never poisoned");
        if *durable < lsn {
            let target = self
                .lock_writer()
                .wal
                .as_ref()
                .map(Wal::sync_target)
                .transpose()?
                .flatten();
            if let Some(target) = target {
                if let Err(e) = target.storage.sync(&target.file, &target.path) {
                    if let Some(wal) = &mut self.lock_writer().wal {
                        wal.fail();
                    }
                    return Err(Error::io(target.path)(e));
                }
                *durable = target.last_lsn;
            }
        }
        self.publish_durable(*durable);
        Ok(())
    }

    /// Publishes the pending changes with LSNs up to `durable`, in order.
    fn publish_durable(&self, durable: u64) {
        let mut pending = self.lock_pending();
        while pending.front().is_some_and(|(lsn, _)| *lsn <= durable) {
            let (_, effect) = pending.pop_front().expect("checked above");
            self.publish(effect);
        }
    }

    /// Shows readers all of `state`.
    fn publish_all(&self, state: &State) {
        for (table, snapshot) in state.tables.values().zip(state.snapshots_by_table()) {
            *table
                .current
                .write()
                .expect("snapshot lock is never poisoned") = snapshot;
        }
        *self.tables.write().expect("catalog lock is never poisoned") = state.tables.clone();
        *self.roles.write().expect("role lock is never poisoned") = state.roles.clone();
        *self.tags.write().expect("tag lock is never poisoned") = Arc::new(state.tags.clone());
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Shows readers a change.
    fn publish(&self, effect: Effect) {
        match effect {
            Effect::Tables(tables) => {
                *self.tables.write().expect("catalog lock is never poisoned") = tables;
            }
            Effect::Snapshots(snapshots) => {
                for (table, snapshot) in snapshots {
                    *table
                        .current
                        .write()
                        .expect("snapshot lock is never poisoned") = snapshot;
                }
            }
            Effect::Roles(roles) => {
                *self.roles.write().expect("role lock is never poisoned") = roles;
            }
            Effect::Tags(tags) => {
                *self.tags.write().expect("tag lock is never poisoned") = tags;
            }
            Effect::Both(first, second) => {
                self.publish(*first);
                self.publish(*second);
            }
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A number that grows whenever readers are shown a change (data, schema,
    /// roles and grants, tags, views, models: anything a plan may depend on),
    /// bumped after the change is visible. Whatever was read after seeing
    /// version `v` is current while the version is still `v`.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The checkpoint, under the writer lock.
    fn checkpoint_locked(&self, writer: &mut Writer, compaction: Compaction) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let wal = writer.wal.as_mut().expect("a stored catalog has a log");
        // Everything logged is durable from here, so every pending change can
        // be shown.
        wal.sync()?;
        self.publish_durable(u64::MAX);
        let mut state = writer.state.clone();
        let mut changed = Vec::new();
        let mut budget = match compaction {
            Compaction::WhenDue { budget } => budget,
            Compaction::All(_) => u64::MAX,
        };
        for table in state.tables.values() {
            let snapshot = &state.snapshots[&table.id];
            let flushed = flush_table(
                store,
                table,
                snapshot,
                &mut state.next_id,
                compaction,
                &mut budget,
                &state.erasing.segments,
            )?;
            if let Some(flushed) = flushed {
                changed.push((Arc::clone(table), Arc::new(flushed)));
            }
        }
        for (table, snapshot) in &changed {
            state.snapshots.insert(table.id, Arc::clone(snapshot));
        }
        state.write_tag_files(store)?;
        // Once this manifest is in place and the files below are removed, no
        // file holds a forgotten user.
        state.erasing = forget::Erasing::default();
        let manifest = state.manifest(wal.next_lsn(), writer.wal_sync);
        store.write_manifest(&manifest)?;
        // The manifest is the commit point: from here the state is the
        // flushed one, and the log and superseded files can go.
        writer.state = state;
        // The tag store's bitmaps now read from the files just written
        // (`TableTags::remap`): the same users, shown to readers too.
        let tags = Effect::Tags(Arc::new(writer.state.tags.clone()));
        self.publish(Effect::Both(
            Box::new(Effect::Snapshots(changed)),
            Box::new(tags),
        ));
        let wal = writer.wal.as_mut().expect("a stored catalog has a log");
        wal.reset()?;
        let mut live = writer.state.live_files(store);
        for id in self.lock_reserved().iter() {
            live.insert(store.segment_path(*id));
            live.insert(store.segment_path(*id).with_extension("parquet.tmp"));
            live.insert(store.recommender_path(*id));
            live.insert(store.recommender_path(*id).with_extension("rec.tmp"));
        }
        store.remove_unreferenced(&live)
    }

    fn read_tables(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Table>>> {
        self.tables.read().expect("catalog lock is never poisoned")
    }

    fn read_roles(&self) -> RwLockReadGuard<'_, BTreeMap<String, Role>> {
        self.roles.read().expect("role lock is never poisoned")
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().expect("writer lock is never poisoned")
    }

    fn lock_reserved(&self) -> MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.reserved
            .lock()
            .expect("reserved lock is never poisoned")
    }

    /// A segment id for a file a large append writes before its change.
    fn reserve_id(&self) -> u64 {
        let mut writer = self.lock_writer();
        let id = writer.state.next_id;
        writer.state.next_id += 1;
        self.lock_reserved().insert(id);
        id
    }

    /// Starts appending rows to `table` batch by batch (see [`Appender`]).
    pub fn appender<'a>(&'a self, table: &'a Table) -> Appender<'a> {
        Appender {
            catalog: self,
            table,
            pending: Vec::new(),
            pending_bytes: 0,
            rows: 0,
            file: None,
        }
    }

    fn lock_pending(&self) -> MutexGuard<'_, VecDeque<(u64, Effect)>> {
        self.pending.lock().expect("pending lock is never poisoned")
    }
}

/// The state a data directory holds: `manifest`'s, with the log after it
/// replayed; the log, ready for appends; and what recovery did that the
/// operator should know.
fn recover(store: &Store, manifest: &Manifest) -> Result<(State, Wal, Option<String>)> {
    let mut state = State::from_manifest(store, manifest)?;
    let wal_dir = store.wal_dir();
    let (wal, recovered) = Wal::open(
        Arc::clone(store.storage()),
        &wal_dir,
        manifest.wal_start_lsn,
        limits::WAL_FILE_BYTES_MAX,
    )?;
    for record in &recovered.records {
        let change = Change::decode(&wal_dir, record)?;
        let (next, _) = state
            .apply(&change, Some(store))
            .map_err(|e| Error::Corrupted {
                path: wal_dir.clone(),
                reason: format!("record at LSN {} does not apply: {e}", record.lsn),
            })?;
        next.logged(&change);
        state = next;
    }
    store.remove_unreferenced(&state.live_files(store))?;
    let report = recovered.cut.map(|cut| {
        format!(
            "write-ahead log {}: cut a torn tail of {} bytes at byte {} (LSN {}), left by an interrupted write",
            cut.file.display(),
            cut.tail.bytes,
            cut.tail.offset,
            cut.tail.lsn
        )
    });
    Ok((state, wal, report))
}

impl Catalog {
    /// Sets how many bytes of rows one append holds in memory before it
    /// writes them to a segment file of its own (tests make it small).
    pub fn set_append_memory_max(&self, bytes: u64) {
        self.append_memory_max
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the close (when the last reference goes) leave the log as it is,
    /// as a crash would, instead of checkpointing: for tests of recovery.
    pub fn close_without_checkpoint(&self) {
        self.checkpoint_on_drop
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Catalog {
    /// A clean close checkpoints, so the next open has no log to replay. A
    /// failure is harmless: the log is replayed instead.
    fn drop(&mut self) {
        let checkpoint = self
            .checkpoint_on_drop
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.store.is_some() && checkpoint {
            let _ = self.checkpoint();
        }
    }
}

/// Rows appended to a table batch by batch, committed as one statement: all
/// or nothing. Rows are held in memory up to `APPEND_MEMORY_BYTES_MAX`; a
/// larger append streams them into a segment file instead (holding one row
/// group at a time) and logs only the file's name, size and checksum, so
/// loading a large file needs little memory and writes its rows once.
/// Dropped without [`Appender::commit`], it leaves nothing behind.
pub struct Appender<'a> {
    catalog: &'a Catalog,
    table: &'a Table,
    pending: Vec<RecordBatch>,
    pending_bytes: u64,
    rows: u64,
    file: Option<(u64, segment_file::BackgroundWriter)>,
}

impl Appender<'_> {
    /// Adds rows, checked against the table's columns.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let (batches, rows) = conform_rows(self.table, vec![batch])?;
        self.rows += rows;
        if self.rows > limits::ROWS_PER_SEGMENT_MAX {
            return Err(Error::LimitExceeded {
                what: "rows in one statement",
                limit: limits::ROWS_PER_SEGMENT_MAX,
            });
        }
        if let Some((_, writer)) = &mut self.file {
            return batches.into_iter().try_for_each(|b| writer.write(b));
        }
        self.pending_bytes += batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum::<u64>();
        self.pending.extend(batches);
        let memory_max = self
            .catalog
            .append_memory_max
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.pending_bytes > memory_max {
            self.start_file()?;
        }
        Ok(())
    }

    /// Moves the rows held so far into a new segment file, which takes the
    /// rest as they come (on disk only; in memory everything stays pending).
    fn start_file(&mut self) -> Result<()> {
        let Some(store) = &self.catalog.store else {
            return Ok(());
        };
        let id = self.catalog.reserve_id();
        let started = segment_file::SegmentWriter::create(
            Arc::clone(store.storage()),
            &store.segment_path(id),
            self.table.id,
            id,
            &self.table.schema(),
            segment_file::ROW_GROUP_ROWS,
        );
        let mut writer = match started.and_then(segment_file::BackgroundWriter::start) {
            Ok(writer) => writer,
            Err(e) => {
                self.catalog.lock_reserved().remove(&id);
                return Err(e);
            }
        };
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        for batch in pending {
            if let Err(e) = writer.write(batch) {
                // Dropping the writer removes its file.
                self.catalog.lock_reserved().remove(&id);
                return Err(e);
            }
        }
        self.file = Some((id, writer));
        Ok(())
    }

    /// Makes the rows part of the table in one change; returns how many.
    pub fn commit(mut self) -> Result<u64> {
        let rows = self.rows;
        match self.file.take() {
            None => {
                let pending = std::mem::take(&mut self.pending);
                self.catalog.append(self.table, pending)?;
            }
            Some((id, writer)) => {
                let file = match writer.finish() {
                    Ok(file) => file,
                    Err(e) => {
                        self.catalog.lock_reserved().remove(&id);
                        return Err(e);
                    }
                };
                let table = self.table;
                let committed = self.catalog.commit(|state| {
                    if state.table_by_id(table.id).is_none() {
                        return Err(Error::Conflict(table.name().to_string()));
                    }
                    Ok(Some(Change::AppendFiles {
                        table_id: table.id,
                        segments: vec![file],
                    }))
                });
                self.catalog.lock_reserved().remove(&id);
                // On failure the file stays: the record naming it may have
                // reached the log (a failed sync). If it did not, the file is
                // a leftover the next checkpoint or open removes.
                committed?;
            }
        }
        Ok(rows)
    }
}

impl Drop for Appender<'_> {
    /// Not committed: the segment file being written (removed by its writer)
    /// is no longer reserved.
    fn drop(&mut self) {
        if let Some((id, _)) = self.file.take() {
            self.catalog.lock_reserved().remove(&id);
        }
    }
}

/// Compacts a catalog in the background: every
/// `limits::COMPACTION_INTERVAL_MS` it checkpoints if some segment file is due
/// for compaction (too many deleted rows, too many small files), rewriting at
/// most `limits::COMPACTION_BYTES_PER_CHECKPOINT_MAX` bytes of files per run.
/// Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Compactor {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Catalog {
    /// Starts compacting this catalog in the background.
    pub fn start_compactor(self: &Arc<Self>) -> Compactor {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let catalog = Arc::downgrade(self);
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cohortdb-compactor".to_string())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let interval = Duration::from_millis(limits::COMPACTION_INTERVAL_MS);
                let mut guard = stopped.lock().expect("compactor lock");
                loop {
                    guard = wake
                        .wait_timeout(guard, interval)
                        .expect("compactor lock")
                        .0;
                    if *guard {
                        break;
                    }
                    let Some(catalog) = catalog.upgrade() else {
                        break;
                    };
                    // A failure (a full disk) is retried at the next interval;
                    // the statements that need the disk report it.
                    let _ = catalog.compact_if_due();
                }
            })
            .ok();
        Compactor { stop, thread }
    }

    /// Checkpoints when a segment file is due for compaction; returns whether
    /// it did.
    pub fn compact_if_due(&self) -> Result<bool> {
        if self.store.is_none() {
            return Ok(false);
        }
        let mut writer = self.lock_writer();
        let mut budget = limits::COMPACTION_BYTES_PER_CHECKPOINT_MAX;
        let state = &writer.state;
        let due = !state.erasing.is_empty()
            || state.tables.values().any(|table| {
                let snapshot = &state.snapshots[&table.id];
                picks(
                    table,
                    snapshot,
                    Compaction::DEFAULT,
                    &mut budget,
                    &BTreeSet::new(),
                )
                .iter()
                .zip(&snapshot.segments)
                .any(|(picked, segment)| *picked && !segment.in_memory_only())
            });
        if due {
            self.checkpoint_locked(&mut writer, Compaction::DEFAULT)?;
        }
        Ok(due)
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().expect("compactor lock") = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// With `wal_sync = batch`, the log is synced this often, and by a statement
/// that leaves this many bytes unsynced.
const BATCH_SYNC_INTERVAL: Duration = Duration::from_millis(10);
const BATCH_SYNC_BYTES: u64 = 1024 * 1024;

/// Syncs the log of `writer` every [`BATCH_SYNC_INTERVAL`] while its
/// `wal_sync` is `batch`; ends when the catalog is dropped.
fn start_batch_syncs(writer: &Arc<Mutex<Writer>>) {
    let writer = Arc::downgrade(writer);
    let spawned = std::thread::Builder::new()
        .name("cohortdb-wal-sync".to_string())
        .spawn(move || {
            loop {
                std::thread::sleep(BATCH_SYNC_INTERVAL);
                let Some(writer) = writer.upgrade() else {
                    break;
                };
                let mut writer = writer.lock().expect("writer lock is never poisoned");
                if writer.wal_sync == WalSync::Batch
                    && let Some(wal) = &mut writer.wal
                    && wal.unsynced_bytes() > 0
                {
                    // A failure leaves the log refusing writes; the next
                    // statement reports it.
                    let _ = wal.sync();
                }
            }
        });
    // Without the thread, `batch` syncs only by size and at checkpoints.
    drop(spawned);
}

impl Writer {
    /// Whether the memtables or the log have grown enough for a checkpoint.
    fn checkpoint_due(&self) -> bool {
        let Some(wal) = &self.wal else {
            return false;
        };
        let memory: Vec<&Arc<Segment>> = self
            .state
            .snapshots
            .values()
            .flat_map(|s| s.segments.iter().filter(|s| s.in_memory_only()))
            .collect();
        wal.appended_bytes() > limits::WAL_BYTES_MAX
            || memory.len() > limits::MEMTABLE_SEGMENTS_MAX
            || memory.iter().map(|s| s.memory_bytes()).sum::<u64>() > limits::MEMTABLE_BYTES_MAX
    }
}

/// Which segment files a checkpoint rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compaction {
    /// Small segments when a table has many, and segments with many deleted
    /// rows, while the bytes of files rewritten stay within the budget.
    WhenDue { budget: u64 },
    /// Every segment with deleted rows and every small segment, of one table
    /// or all.
    All(Option<u64>),
}

impl Compaction {
    /// What a checkpoint compacts when nobody asked for more.
    const DEFAULT: Compaction = Compaction::WhenDue {
        budget: limits::COMPACTION_BYTES_PER_CHECKPOINT_MAX,
    };
}

/// Which segments of `snapshot` a checkpoint rewrites: every in-memory one,
/// every one without live rows and every one in `erasing` (rows of forgotten
/// users were deleted from it), and the files `compaction` picks, charged to
/// `budget`.
fn picks(
    table: &Table,
    snapshot: &TableSnapshot,
    compaction: Compaction,
    budget: &mut u64,
    erasing: &BTreeSet<u64>,
) -> Vec<bool> {
    let small = |s: &Segment| s.row_count < limits::SEGMENT_ROWS_TARGET / 4;
    let small_files = snapshot
        .segments
        .iter()
        .filter(|s| !s.in_memory_only() && small(s))
        .count();
    let file_bytes = |s: &Segment| match &s.data {
        crate::table::SegmentData::File(reader) => reader.file().bytes,
        crate::table::SegmentData::Memory(_) => 0,
    };
    snapshot
        .segments
        .iter()
        .map(|s| {
            if s.in_memory_only() || s.live_rows() == 0 || erasing.contains(&s.id) {
                return true;
            }
            match compaction {
                Compaction::All(which) if which.is_none_or(|id| id == table.id) => {
                    !s.deleted.is_empty() || (small(s) && small_files > 1)
                }
                _ => {
                    let due = s.deleted.len() as f64
                        > s.row_count as f64 * limits::COMPACTION_DELETED_FRACTION
                        || (small(s) && small_files > limits::SMALL_SEGMENTS_MAX);
                    let affordable = file_bytes(s) <= *budget;
                    if due && affordable {
                        *budget -= file_bytes(s);
                    }
                    due && affordable
                }
            }
        })
        .collect()
}

/// The snapshot of `table` after a checkpoint, or `None` when it has nothing
/// to flush, write or compact: the segments [`picks`] chooses are rewritten,
/// without their deleted rows, as one new segment file (one segment read at
/// a time); deletion vectors not yet on disk are written.
fn flush_table(
    store: &Store,
    table: &Table,
    snapshot: &TableSnapshot,
    next_id: &mut u64,
    compaction: Compaction,
    budget: &mut u64,
    erasing: &BTreeSet<u64>,
) -> Result<Option<TableSnapshot>> {
    let rewrite = picks(table, snapshot, compaction, budget, erasing);
    let dirty = |s: &Segment| !s.deletes_written;
    if !snapshot
        .segments
        .iter()
        .zip(&rewrite)
        .any(|(s, r)| *r || dirty(s))
    {
        return Ok(None);
    }
    let mut segments = Vec::with_capacity(snapshot.segments.len());
    let mut writer: Option<(u64, segment_file::SegmentWriter)> = None;
    for (segment, rewrite) in snapshot.segments.iter().zip(rewrite) {
        if rewrite {
            for batch in segment.live_batches()? {
                if batch.num_rows() == 0 {
                    continue;
                }
                if writer.is_none() {
                    let id = *next_id;
                    *next_id += 1;
                    let created = segment_file::SegmentWriter::create(
                        Arc::clone(store.storage()),
                        &store.segment_path(id),
                        table.id,
                        id,
                        &snapshot.schema,
                        segment_file::ROW_GROUP_ROWS,
                    )?;
                    writer = Some((id, created));
                }
                let (_, w) = writer.as_mut().expect("created above");
                w.write(&batch)?;
            }
        } else if dirty(segment) {
            segments.push(Arc::new(write_deletes(store, segment)?));
        } else {
            segments.push(Arc::clone(segment));
        }
    }
    if let Some((id, writer)) = writer {
        let file = writer.finish()?;
        let reader = SegmentReader::open(&store.segment_path(id), &file, &snapshot.schema)?;
        segments.push(Arc::new(Segment::on_disk(
            Arc::new(reader),
            RoaringBitmap::new(),
            None,
        )));
    }
    Ok(Some(TableSnapshot {
        schema: Arc::clone(&snapshot.schema),
        segments,
    }))
}

/// `segment` with its deletions written to the next generation of its
/// deletion vector file.
fn write_deletes(store: &Store, segment: &Segment) -> Result<Segment> {
    let crate::table::SegmentData::File(reader) = &segment.data else {
        unreachable!("in-memory segments are flushed, not given deletion vectors")
    };
    // A new generation, never the live file rewritten: a crash before the
    // manifest naming the new one leaves the old one intact.
    let generation = segment.deletes_file.as_ref().map_or(0, |d| d.generation) + 1;
    let path = store.deletes_path(segment.id, generation);
    let (bytes, crc32c) = deletes::write(
        store.storage().as_ref(),
        &path,
        segment.id,
        &segment.deleted,
    )?;
    Ok(Segment::on_disk(
        Arc::clone(reader),
        segment.deleted.as_ref().clone(),
        Some(manifest::Deletes {
            generation,
            rows: segment.deleted.len(),
            bytes,
            crc32c,
        }),
    ))
}

impl State {
    fn empty() -> State {
        State {
            next_id: 1,
            tables: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            roles: BTreeMap::new(),
            tags: Tags::default(),
            user_chunks: Vec::new(),
            erasing: forget::Erasing::default(),
        }
    }

    /// The state a manifest describes, with its segment files opened and
    /// deletion vectors read.
    fn from_manifest(store: &Store, manifest: &Manifest) -> Result<State> {
        let mut state = State::empty();
        state.next_id = manifest.next_id;
        let manifest_path = store.manifest_path();
        for entry in &manifest.tables {
            let schema = entry.schema(&manifest_path)?;
            let mut segments = Vec::with_capacity(entry.segments.len());
            for s in &entry.segments {
                let file = SegmentFile {
                    table_id: entry.id,
                    segment_id: s.id,
                    rows: s.rows,
                    bytes: s.bytes,
                    crc32c: s.crc32c,
                };
                let reader = SegmentReader::open(&store.segment_path(s.id), &file, &schema)?;
                let deleted = match &s.deletes {
                    Some(d) => {
                        deletes::read(&store.deletes_path(s.id, d.generation), s.id, s.rows, d)?
                    }
                    None => RoaringBitmap::new(),
                };
                segments.push(Arc::new(Segment::on_disk(
                    Arc::new(reader),
                    deleted,
                    s.deletes.clone(),
                )));
            }
            let table = Arc::new(Table::new(
                entry.id,
                entry.name.clone(),
                Arc::clone(&schema),
                entry.columns.iter().position(|c| c.user_key),
                Vec::new(),
            ));
            state
                .snapshots
                .insert(entry.id, Arc::new(TableSnapshot { schema, segments }));
            state.tables.insert(entry.name.clone(), table);
        }
        state.roles = manifest
            .roles
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        state.load_tags(store, manifest)?;
        Ok(state)
    }

    /// The segment and deletion vector files this state names.
    fn live_files(&self, store: &Store) -> std::collections::BTreeSet<std::path::PathBuf> {
        let mut live = std::collections::BTreeSet::new();
        for snapshot in self.snapshots.values() {
            for segment in &snapshot.segments {
                if segment.in_memory_only() {
                    continue;
                }
                live.insert(store.segment_path(segment.id));
                if let Some(d) = &segment.deletes_file {
                    live.insert(store.deletes_path(segment.id, d.generation));
                }
            }
        }
        let tags_dir = store.tags_dir();
        for index in self.tags.tables.values() {
            if let Some(file) = &index.file {
                live.insert(tags::tag_path(&tags_dir, index.table_id, file.generation));
            }
        }
        for tag in self.tags.stored.values() {
            if let Some(file) = &tag.file {
                live.insert(tags::tag_path(&tags_dir, tag.id, file.generation));
            }
        }
        for recommender in self.tags.recommenders.values() {
            live.insert(store.recommender_path(recommender.entry.id));
        }
        for chunk in &self.user_chunks {
            live.insert(crate::users::chunk_path(
                &store.users_dir(),
                chunk.first,
                chunk.generation,
            ));
        }
        live
    }

    /// Writes what the tag store holds that no file has yet: the ordinals
    /// assigned since the last checkpoint (a new dictionary file), and a new
    /// file for each tag index and stored tag that changed.
    fn write_tag_files(&mut self, store: &Store) -> Result<()> {
        let storage = store.storage().as_ref();
        if let Some(dictionary) = &self.tags.dictionary {
            // Files holding ids erased since are written again, without them.
            for chunk in &mut self.user_chunks {
                let ordinals = chunk.first..chunk.first + chunk.count;
                if self.erasing.users.range_cardinality(ordinals) > 0 {
                    *chunk = crate::users::write_chunk(
                        storage,
                        &store.users_dir(),
                        dictionary,
                        chunk.first,
                        chunk.count,
                        chunk.generation + 1,
                    )?;
                }
            }
            let written: u32 = self.user_chunks.iter().map(|c| c.count).sum();
            if self.tags.users > written {
                let chunk = crate::users::write_chunk(
                    storage,
                    &store.users_dir(),
                    dictionary,
                    written,
                    self.tags.users - written,
                    0,
                )?;
                self.user_chunks.push(chunk);
            }
        }
        let tags_dir = store.tags_dir();
        for index in self.tags.tables.values_mut() {
            if !index.dirty {
                continue;
            }
            let generation = index.file.as_ref().map_or(1, |f| f.generation + 1);
            let file = tags::write_file(
                storage,
                &tags_dir,
                index.table_id,
                generation,
                &index.file_entries(),
            )?;
            let index = Arc::make_mut(index);
            let path = tags::tag_path(&tags_dir, index.table_id, generation);
            index.remap(&path, tags::open_file(&path, index.table_id, &file, false)?)?;
            index.file = Some(file);
            index.dirty = false;
        }
        for tag in self.tags.stored.values_mut() {
            if !tag.dirty {
                continue;
            }
            let file = if tag.bits.is_empty() {
                None
            } else {
                Some(tags::write_file(
                    storage,
                    &tags_dir,
                    tag.id,
                    tag.file.as_ref().map_or(1, |f| f.generation + 1),
                    &[(None, None, None, &tag.bits)],
                )?)
            };
            let tag = Arc::make_mut(tag);
            if let Some(file) = &file {
                let path = tags::tag_path(&tags_dir, tag.id, file.generation);
                tag.remap(&path, tags::open_file(&path, tag.id, file, false)?)?;
            }
            tag.file = file;
            tag.dirty = false;
        }
        Ok(())
    }

    /// The tag store of a manifest: the dictionary read, every tag index and
    /// stored tag opened (their bitmaps read when first used).
    fn load_tags(&mut self, store: &Store, manifest: &Manifest) -> Result<()> {
        let manifest_path = store.manifest_path();
        let corrupted = |reason: String| Error::Corrupted {
            path: manifest_path.clone(),
            reason,
        };
        if let Some(users) = &manifest.users {
            let dictionary = Arc::new(crate::users::Dictionary::new(users.key_type));
            for chunk in &users.chunks {
                crate::users::load_chunk(&store.users_dir(), &dictionary, chunk)?;
            }
            self.tags.users = dictionary.len();
            self.tags.dictionary = Some(dictionary);
            self.user_chunks = users.chunks.clone();
        }
        for table in self.tables.values() {
            if let Some(at) = table.user_key() {
                if self.tags.dictionary.is_none() {
                    return Err(corrupted(format!(
                        "table \"{}\" has a user key but there is no dictionary",
                        table.name()
                    )));
                }
                self.tags.tables.insert(
                    table.id,
                    Arc::new(TableTags::new(table.id, table.name(), at)),
                );
            }
        }
        let tags_dir = store.tags_dir();
        for entry in &manifest.tag_indexes {
            let table = self.table_by_id(entry.table_id).ok_or_else(|| {
                corrupted(format!("a tag index of unknown table {}", entry.table_id))
            })?;
            let mut index = self
                .tags
                .tables
                .get(&entry.table_id)
                .ok_or_else(|| {
                    corrupted(format!(
                        "table \"{}\" has a tag index but no user key",
                        table.name()
                    ))
                })?
                .as_ref()
                .clone();
            let schema = table.schema();
            let position = |name: &str| {
                schema.index_of(name).map_err(|_| {
                    corrupted(format!(
                        "tag index column \"{name}\" is not in table \"{}\"",
                        table.name()
                    ))
                })
            };
            for name in &entry.columns {
                let at = position(name)?;
                index.columns.push(tags::ColumnTags {
                    column: at,
                    name: name.clone(),
                    column_type: crate::types::ColumnType::from_arrow(
                        schema.field(at).data_type(),
                    )?,
                    values: Arc::default(),
                });
            }
            if let Some(time) = &entry.time {
                index.time = Some((position(time)?, time.clone()));
            }
            let path = tags::tag_path(&tags_dir, entry.table_id, entry.file.generation);
            index.load(
                &path,
                tags::open_file(&path, entry.table_id, &entry.file, false)?,
            )?;
            index.file = Some(entry.file.clone());
            self.tags.tables.insert(entry.table_id, Arc::new(index));
        }
        for entry in &manifest.tags {
            let bits = match &entry.file {
                Some(file) => {
                    let path = tags::tag_path(&tags_dir, entry.id, file.generation);
                    let mut entries = tags::open_file(&path, entry.id, file, false)?;
                    if entries.len() != 1 {
                        return Err(Error::Corrupted {
                            path,
                            reason: "a stored tag's file holds one bitmap".to_string(),
                        });
                    }
                    entries.pop().expect("one entry").1
                }
                None => Bits::default(),
            };
            if bits.len() != entry.users {
                return Err(corrupted(format!(
                    "tag \"{}\" has {} users in its file and {} in the manifest",
                    entry.name,
                    bits.len(),
                    entry.users
                )));
            }
            self.tags.stored.insert(
                entry.name.clone(),
                Arc::new(StoredTag {
                    id: entry.id,
                    name: entry.name.clone(),
                    source: entry.source,
                    definition: entry.definition.clone(),
                    bits,
                    refreshed_micros: entry.refreshed_micros,
                    file: entry.file.clone(),
                    dirty: false,
                }),
            );
        }
        for model in &manifest.models {
            self.tags
                .models
                .insert(model.name.clone(), Arc::new(model.clone()));
        }
        for view in &manifest.views {
            self.tags
                .views
                .insert(view.name.clone(), Arc::new(view.clone()));
        }
        self.tags.privacy = manifest.privacy.clone();
        for entry in &manifest.recommenders {
            let path = store.recommender_path(entry.id);
            self.tags.recommenders.insert(
                entry.name.clone(),
                Arc::new(StoredRecommender::new(entry.clone(), Some(path), None)),
            );
        }
        Ok(())
    }

    /// The latest snapshot of each table, in the order of `tables`.
    fn snapshots_by_table(&self) -> Vec<Arc<TableSnapshot>> {
        self.tables
            .values()
            .map(|t| Arc::clone(&self.snapshots[&t.id]))
            .collect()
    }

    fn table_by_id(&self, id: u64) -> Option<&Arc<Table>> {
        self.tables.values().find(|t| t.id == id)
    }

    /// The state after `change`, and what readers are to be shown of it; an
    /// error (and no change) when it does not apply.
    fn apply(&self, change: &Change, store: Option<&Store>) -> Result<(State, Effect)> {
        match self.apply_change(change, store) {
            Ok((next, effect, false)) => Ok((next, effect)),
            Ok((next, effect, true)) => {
                let tags = Effect::Tags(Arc::new(next.tags.clone()));
                Ok((next, Effect::Both(Box::new(effect), Box::new(tags))))
            }
            Err(e) => {
                // Ordinals the change assigned are not anyone's.
                self.tags.forget_unlogged_users();
                Err(e)
            }
        }
    }

    /// [`State::apply`], and whether the tag store changed.
    fn apply_change(
        &self,
        change: &Change,
        store: Option<&Store>,
    ) -> Result<(State, Effect, bool)> {
        let mut next = self.clone();
        let mut tags_changed = false;
        let table_of = |id: u64| {
            self.table_by_id(id)
                .cloned()
                .ok_or_else(|| Error::Conflict(format!("table {id}")))
        };
        let effect = match change {
            Change::CreateTable {
                table_id,
                name,
                columns,
            } => {
                if self.has_relation(name) {
                    return Err(Error::TableExists(name.clone()));
                }
                let entry = manifest::Table {
                    id: *table_id,
                    name: name.clone(),
                    columns: columns.clone(),
                    segments: Vec::new(),
                };
                let schema = entry.schema(Path::new("CREATE TABLE"))?;
                let user_key = columns.iter().position(|c| c.user_key);
                let table = Arc::new(Table::new(
                    *table_id,
                    name.clone(),
                    Arc::clone(&schema),
                    user_key,
                    Vec::new(),
                ));
                if let Some(at) = user_key {
                    let column_type =
                        crate::types::ColumnType::from_arrow(schema.field(at).data_type())?;
                    tag_changes::table_created(&mut next.tags, &table, at, column_type)?;
                    tags_changed = true;
                }
                next.snapshots.insert(*table_id, table.snapshot());
                next.tables.insert(name.clone(), table);
                next.next_id = next.next_id.max(table_id + 1);
                Effect::Tables(next.tables.clone())
            }
            Change::DropTable { table_id } => {
                let table = table_of(*table_id)?;
                next.tables.remove(table.name());
                next.snapshots.remove(table_id);
                tags_changed = next.tags.tables.remove(table_id).is_some();
                let name = table.name().to_string();
                next.forget_grants(
                    &[Object::Table(name.clone()), Object::TagIndex(name)],
                    Effect::Tables(next.tables.clone()),
                )
            }
            Change::Append(append) => {
                let table = table_of(append.table_id)?;
                let snapshot = next.append(&table, append)?;
                tags_changed = next.tags.tables.contains_key(&table.id);
                tag_changes::rows_added(&mut next.tags, table.id, &append.batches)?;
                Effect::Snapshots(vec![(table, snapshot)])
            }
            Change::Delete(delete) => {
                let table = table_of(delete.table_id)?;
                let snapshot = next.delete(&table, delete)?;
                tags_changed = next.tags.tables.contains_key(&table.id);
                tag_changes::rows_deleted(
                    &mut next.tags,
                    table.id,
                    &self.snapshots[&table.id],
                    &snapshot,
                    &delete.segments,
                )?;
                Effect::Snapshots(vec![(table, snapshot)])
            }
            Change::Update { delete, append } => {
                let table = table_of(delete.table_id)?;
                let deleted = next.delete(&table, delete)?;
                tags_changed = next.tags.tables.contains_key(&table.id);
                tag_changes::rows_deleted(
                    &mut next.tags,
                    table.id,
                    &self.snapshots[&table.id],
                    &deleted,
                    &delete.segments,
                )?;
                let snapshot = next.append(&table, append)?;
                tag_changes::rows_added(&mut next.tags, table.id, &append.batches)?;
                Effect::Snapshots(vec![(table, snapshot)])
            }
            Change::Roles(roles) => {
                next.roles = roles.iter().map(|r| (r.name.clone(), r.clone())).collect();
                Effect::Roles(next.roles.clone())
            }
            Change::AppendFiles { table_id, segments } => {
                let table = table_of(*table_id)?;
                let store = store.ok_or_else(|| Error::Conflict(table.name().to_string()))?;
                let old = Arc::clone(&next.snapshots[table_id]);
                let mut all = old.segments.clone();
                for file in segments {
                    if all.iter().any(|s| s.id == file.segment_id) {
                        return Err(Error::Conflict(table.name().to_string()));
                    }
                    let reader = SegmentReader::open(
                        &store.segment_path(file.segment_id),
                        file,
                        &old.schema,
                    )?;
                    all.push(Arc::new(Segment::on_disk(
                        Arc::new(reader),
                        RoaringBitmap::new(),
                        None,
                    )));
                    next.next_id = next.next_id.max(file.segment_id + 1);
                }
                let added = all[old.segments.len()..].to_vec();
                let snapshot = Arc::new(TableSnapshot {
                    schema: Arc::clone(&old.schema),
                    segments: all,
                });
                next.snapshots.insert(*table_id, Arc::clone(&snapshot));
                tags_changed = next.tags.tables.contains_key(table_id);
                tag_changes::segments_added(&mut next.tags, *table_id, &snapshot, &added)?;
                Effect::Snapshots(vec![(table, snapshot)])
            }
            Change::CreateTagIndex(index) => {
                let table = table_of(index.table_id)?;
                tag_changes::index_columns(
                    &mut next.tags,
                    &table,
                    &self.snapshots[&table.id],
                    &index.columns,
                    index.time.as_deref(),
                )?;
                return Ok(next.tags_only());
            }
            Change::DropTagIndex(index) => {
                let table = table_of(index.table_id)?;
                tag_changes::unindex_columns(&mut next.tags, &table, &index.columns)?;
                return Ok(next.tags_only());
            }
            Change::PutTag(put) => {
                tag_changes::put_tag(&mut next.tags, put)?;
                next.next_id = next.next_id.max(put.meta.id + 1);
                return Ok(next.tags_only());
            }
            Change::DropTag { name } => {
                if next.tags.stored.remove(name).is_none() {
                    return Err(Error::UnknownTag(format!("tag \"{name}\" does not exist")));
                }
                let effect = Effect::Tags(Arc::new(next.tags.clone()));
                let effect = next.forget_grants(&[Object::Tag(name.clone())], effect);
                return Ok((next, effect, false));
            }
            Change::PutView(put) => {
                let name = &put.view.name;
                if self.tables.contains_key(name) {
                    return Err(Error::TableExists(name.clone()));
                }
                if next.tags.views.contains_key(name) && !put.replace {
                    return Err(Error::TableExists(name.clone()));
                }
                next.tags
                    .views
                    .insert(name.clone(), Arc::new(put.view.clone()));
                return Ok(next.tags_only());
            }
            Change::DropView { name } => {
                if next.tags.views.remove(name).is_none() {
                    return Err(Error::TableNotFound(name.clone()));
                }
                let effect = Effect::Tags(Arc::new(next.tags.clone()));
                let effect = next.forget_grants(&[Object::Table(name.clone())], effect);
                return Ok((next, effect, false));
            }
            Change::PutModel(put) => {
                let name = &put.model.name;
                if next.tags.models.contains_key(name) && !put.replace {
                    return Err(Error::ModelExists(name.clone()));
                }
                next.tags
                    .models
                    .insert(name.clone(), Arc::new(put.model.clone()));
                return Ok(next.tags_only());
            }
            Change::DropModel { name } => {
                if next.tags.models.remove(name).is_none() {
                    return Err(Error::ModelNotFound(name.clone()));
                }
                let effect = Effect::Tags(Arc::new(next.tags.clone()));
                let effect = next.forget_grants(&[Object::Model(name.clone())], effect);
                return Ok((next, effect, false));
            }
            Change::PutRecommender {
                recommender,
                replace,
            } => {
                next.install_recommender(recommender, *replace, store)?;
                return Ok(next.tags_only());
            }
            Change::DropRecommender { name } => {
                if next.tags.recommenders.remove(name).is_none() {
                    return Err(Error::RecommenderNotFound(name.clone()));
                }
                let effect = Effect::Tags(Arc::new(next.tags.clone()));
                let effect = next.forget_grants(&[Object::Recommender(name.clone())], effect);
                return Ok((next, effect, false));
            }
            Change::Privacy(privacy) => {
                next.tags.privacy = privacy.clone();
                return Ok(next.tags_only());
            }
            Change::Forget(forget) => {
                tags_changed = true;
                next.forget(self, forget, store)?
            }
        };
        Ok((next, effect, tags_changed))
    }

    /// Drops every role's grants on `objects` (which were dropped), and adds
    /// the new role list to `effect` if that changed any.
    fn forget_grants(&mut self, objects: &[Object], effect: Effect) -> Effect {
        let mut changed = false;
        for object in objects {
            changed |= crate::roles::forget_object(&mut self.roles, object);
        }
        match changed {
            true => Effect::Both(
                Box::new(effect),
                Box::new(Effect::Roles(self.roles.clone())),
            ),
            false => effect,
        }
    }

    /// Keeps a built recommender (`replace`: in place of one of its name).
    fn install_recommender(
        &mut self,
        recommender: &Arc<StoredRecommender>,
        replace: bool,
        store: Option<&Store>,
    ) -> Result<()> {
        let entry = &recommender.entry;
        if self.tags.recommenders.contains_key(&entry.name) && !replace {
            return Err(Error::RecommenderExists(entry.name.clone()));
        }
        self.next_id = self.next_id.max(entry.id + 1);
        // Replayed or applied to a stored catalog: the model is read from the
        // file in this directory when first used.
        let stored = match store.map(|s| s.recommender_path(entry.id)) {
            Some(path) if recommender.path() != Some(path.as_path()) => Arc::new(
                StoredRecommender::new(entry.clone(), Some(path), recommender.loaded()),
            ),
            _ => Arc::clone(recommender),
        };
        self.tags.recommenders.insert(entry.name.clone(), stored);
        Ok(())
    }

    /// Whether a table or a view is called `name` (they share names).
    fn has_relation(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.tags.views.contains_key(name)
    }

    /// A change that touched the tag store only: the new state, and the tag
    /// store readers are shown.
    fn tags_only(self) -> (State, Effect, bool) {
        let effect = Effect::Tags(Arc::new(self.tags.clone()));
        (self, effect, false)
    }

    /// An error unless `object` exists.
    fn check_exists(&self, object: &Object) -> Result<()> {
        let found = match object {
            Object::Table(name) => self.has_relation(name),
            Object::TagIndex(name) => {
                let table = self
                    .tables
                    .get(name)
                    .ok_or_else(|| Error::TableNotFound(name.clone()))?;
                if !self.tags.tables.contains_key(&table.id) {
                    return Err(Error::UnknownTag(format!(
                        "table \"{name}\" has no user key, so no tag index"
                    )));
                }
                true
            }
            Object::Tag(name) => self.tags.stored.contains_key(name),
            Object::Model(name) => self.tags.models.contains_key(name),
            Object::Recommender(name) => self.tags.recommenders.contains_key(name),
        };
        match (found, object) {
            (true, _) => Ok(()),
            (false, Object::Table(name) | Object::TagIndex(name)) => {
                Err(Error::TableNotFound(name.clone()))
            }
            (false, Object::Tag(name)) => {
                Err(Error::UnknownTag(format!("tag \"{name}\" does not exist")))
            }
            (false, Object::Model(name)) => Err(Error::ModelNotFound(name.clone())),
            (false, Object::Recommender(name)) => Err(Error::RecommenderNotFound(name.clone())),
        }
    }

    /// Adds `append` to `table` as an in-memory segment.
    fn append(&mut self, table: &Table, append: &change::Append) -> Result<Arc<TableSnapshot>> {
        let old = &self.snapshots[&table.id];
        let batch_schema = append.batches[0].schema();
        if batch_schema.fields() != old.schema.fields() {
            return Err(Error::SchemaMismatch {
                table: table.name().to_string(),
                reason: "the rows' schema differs from the table's".to_string(),
            });
        }
        if old.segments.iter().any(|s| s.id == append.segment_id) {
            return Err(Error::Conflict(table.name().to_string()));
        }
        let mut segments = old.segments.clone();
        segments.push(Arc::new(Segment::in_memory(
            append.segment_id,
            append.batches.clone(),
        )));
        self.next_id = self.next_id.max(append.segment_id + 1);
        let snapshot = Arc::new(TableSnapshot {
            schema: Arc::clone(&old.schema),
            segments,
        });
        self.snapshots.insert(table.id, Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// Deletes positions from segments of `table`. Positions that are not in
    /// the table's latest snapshot (its segment was flushed or compacted, or
    /// the row is already deleted) mean the caller read a stale snapshot: a
    /// conflict.
    fn delete(&mut self, table: &Table, delete: &change::Delete) -> Result<Arc<TableSnapshot>> {
        let old = &self.snapshots[&table.id];
        let mut segments = old.segments.clone();
        for (segment_id, positions) in &delete.segments {
            let conflict = || Error::Conflict(table.name().to_string());
            let at = segments
                .iter()
                .position(|s| s.id == *segment_id)
                .ok_or_else(conflict)?;
            let segment = &segments[at];
            if positions
                .max()
                .is_some_and(|p| u64::from(p) >= segment.row_count)
                || !positions.is_disjoint(&segment.deleted)
            {
                return Err(conflict());
            }
            segments[at] = Arc::new(segment.with_deleted(positions));
        }
        let snapshot = Arc::new(TableSnapshot {
            schema: Arc::clone(&old.schema),
            segments,
        });
        self.snapshots.insert(table.id, Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// The manifest of this state, whose segments must all be files (after a
    /// flush).
    fn manifest(&self, wal_start_lsn: u64, wal_sync: WalSync) -> Manifest {
        let tables = self
            .tables
            .values()
            .map(|table| manifest::Table {
                id: table.id,
                name: table.name().to_string(),
                columns: manifest::columns_of(&table.columns()),
                segments: self.snapshots[&table.id]
                    .segments
                    .iter()
                    .map(|s| {
                        let crate::table::SegmentData::File(reader) = &s.data else {
                            unreachable!("a checkpoint flushes every in-memory segment")
                        };
                        let file = reader.file();
                        manifest::Segment {
                            id: s.id,
                            rows: file.rows,
                            bytes: file.bytes,
                            crc32c: file.crc32c,
                            deletes: s.deletes_file.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        Manifest {
            next_id: self.next_id,
            wal_start_lsn,
            wal_sync,
            tables,
            roles: self.roles.values().cloned().collect(),
            users: self.tags.dictionary.as_ref().map(|d| manifest::Users {
                key_type: d.key_type(),
                chunks: self.user_chunks.clone(),
            }),
            tag_indexes: self
                .tags
                .tables
                .values()
                .map(|index| manifest::TagIndex {
                    table_id: index.table_id,
                    columns: index.columns.iter().map(|c| c.name.clone()).collect(),
                    time: index.time.as_ref().map(|(_, name)| name.clone()),
                    file: index
                        .file
                        .clone()
                        .expect("a checkpoint writes every tag index"),
                })
                .collect(),
            tags: self
                .tags
                .stored
                .values()
                .map(|tag| manifest::StoredTag {
                    id: tag.id,
                    name: tag.name.clone(),
                    source: tag.source,
                    definition: tag.definition.clone(),
                    refreshed_micros: tag.refreshed_micros,
                    users: tag.bits.len(),
                    file: tag.file.clone(),
                })
                .collect(),
            views: self
                .tags
                .views
                .values()
                .map(|v| v.as_ref().clone())
                .collect(),
            models: self
                .tags
                .models
                .values()
                .map(|m| m.as_ref().clone())
                .collect(),
            recommenders: self
                .tags
                .recommenders
                .values()
                .map(|r| r.entry.clone())
                .collect(),
            privacy: self.tags.privacy.clone(),
        }
    }
}

/// Row ids grouped into positions per segment.
fn positions_by_segment(table_id: u64, row_ids: &[u64]) -> change::Delete {
    let mut by_segment: BTreeMap<u64, RoaringBitmap> = BTreeMap::new();
    for &row_id in row_ids {
        by_segment
            .entry(row_id >> 32)
            .or_default()
            .insert(row_id as u32);
    }
    change::Delete {
        table_id,
        segments: by_segment.into_iter().collect(),
    }
}

/// Checks that appended rows fit the table (same column types, no NULL where the
/// column forbids it) and restates them under the table's schema (names and
/// nullability). Returns the batches and the number of rows.
fn conform_rows(table: &Table, batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, u64)> {
    let schema = table.schema();
    let mut rows = 0u64;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        if batch.num_columns() != schema.fields().len() {
            return Err(Error::SchemaMismatch {
                table: table.name().to_string(),
                reason: format!(
                    "{} columns given, {} expected",
                    batch.num_columns(),
                    schema.fields().len()
                ),
            });
        }
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if column.data_type() != field.data_type() {
                return Err(Error::SchemaMismatch {
                    table: table.name().to_string(),
                    reason: format!(
                        "column \"{}\" is {}, got {}",
                        field.name(),
                        field.data_type(),
                        column.data_type()
                    ),
                });
            }
            if !field.is_nullable() && column.logical_null_count() > 0 {
                return Err(Error::NotNullViolation {
                    table: table.name().to_string(),
                    column: field.name().clone(),
                });
            }
        }
        rows += batch.num_rows() as u64;
        if batch.num_rows() > 0 {
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            out.push(RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                batch.columns().to_vec(),
                &options,
            )?);
        }
    }
    Ok((out, rows))
}

/// Row ids of a scan's row-id column, for [`Catalog::delete`] and [`Catalog::update`].
pub fn row_ids(column: &dyn Array) -> Result<Vec<u64>> {
    let ids = column
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| {
            arrow::error::ArrowError::InvalidArgumentError("row ids must be UInt64".into())
        })?;
    Ok(ids.values().to_vec())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow::array::{Int64Array, StringArray};

    use super::row_ids as row_ids_of;
    use super::*;
    use crate::demo::Rng;
    use crate::types::ColumnType;

    fn columns() -> Vec<ColumnDef> {
        vec![
            ColumnDef::new("id", ColumnType::BigInt, false),
            ColumnDef::new("name", ColumnType::Text, true),
        ]
    }

    fn rows(table: &Table, ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
        RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .expect("batch")
    }

    fn ids(catalog: &Catalog) -> Vec<i64> {
        let snapshot = catalog.table("t").expect("table").snapshot();
        let batches = snapshot.scan(Some(&[0]), None, false, None).expect("scan");
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn writes_survive_reopen_and_leave_no_orphans() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let catalog = Catalog::open(dir.path()).expect("open");
            assert!(
                catalog
                    .create_table("t", &columns(), false)
                    .expect("create")
            );
            assert!(
                !catalog
                    .create_table("t", &columns(), true)
                    .expect("if not exists")
            );
            let t = catalog.table("t").expect("table");
            catalog
                .append(
                    &t,
                    vec![rows(&t, &[1, 2, 3], &[Some("a"), None, Some("c")])],
                )
                .expect("append");
            catalog
                .append(&t, vec![rows(&t, &[4], &[Some("d")])])
                .expect("append");
            let snapshot = t.snapshot();
            let with_ids = snapshot.scan(Some(&[0]), None, true, None).expect("scan");
            let all = row_ids(with_ids[0].column(1).as_ref()).expect("row ids");
            assert_eq!(catalog.delete(&t, &all[1..2]).expect("delete"), 1);
            // A second process is kept out while this catalog is open.
            assert!(matches!(Catalog::open(dir.path()), Err(Error::Locked(_))));
        }
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(ids(&catalog), vec![1, 3, 4]);
        // The clean close flushed both statements' rows, without the deleted
        // one, to one segment file and emptied the log.
        let count = |folder: &str| {
            std::fs::read_dir(dir.path().join(folder))
                .expect("folder")
                .count()
        };
        assert_eq!(
            (count("segments"), count("deletes"), count("wal")),
            (1, 0, 0)
        );
    }

    /// A catalog in `dir` with table t: a checkpointed segment file of ids
    /// 0..100 with 10 deleted (a deletion vector), then three appends of one
    /// row each (ids 100, 101, 102) only in the log; closed as a crash would.
    fn crashed() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        catalog
            .create_table("t", &columns(), false)
            .expect("create");
        let t = catalog.table("t").expect("table");
        let ids: Vec<i64> = (0..100).collect();
        let names: Vec<Option<&str>> = vec![None; 100];
        catalog
            .append(&t, vec![rows(&t, &ids, &names)])
            .expect("append");
        catalog.checkpoint().expect("checkpoint");
        let segment = t.snapshot().segments[0].id;
        let deleted: Vec<u64> = (0..10).map(|p| segment << 32 | p).collect();
        catalog.delete(&t, &deleted).expect("delete");
        catalog.checkpoint().expect("checkpoint");
        for id in 100..103 {
            catalog
                .append(&t, vec![rows(&t, &[id], &[Some("x")])])
                .expect("append");
        }
        catalog.close_without_checkpoint();
        drop(catalog);
        dir
    }

    fn only_file(dir: &Path) -> std::path::PathBuf {
        let files = crate::store::files_in(dir).expect("files");
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    fn flip(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[at] ^= 0x40;
        std::fs::write(path, bytes).expect("write");
    }

    fn open_error(dir: &Path) -> String {
        Catalog::open(dir).expect_err("corrupted").to_string()
    }

    #[test]
    fn a_crash_replays_the_log() {
        let dir = crashed();
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(catalog.recovery_report(), None);
        let expected: Vec<i64> = (10..103).collect();
        assert_eq!(ids(&catalog), expected);
    }

    #[test]
    fn a_torn_log_tail_is_cut_and_reported() {
        let dir = crashed();
        let wal = only_file(&dir.path().join("wal"));
        let bytes = std::fs::read(&wal).expect("read");
        std::fs::write(&wal, &bytes[..bytes.len() - 5]).expect("truncate");
        let catalog = Catalog::open(dir.path()).expect("reopen");
        let report = catalog.recovery_report().expect("a report");
        assert!(report.contains("cut a torn tail of"), "{report}");
        assert!(report.contains("(LSN 6)"), "{report}");
        // The last statement, never acknowledged, is gone; the rest is there.
        let expected: Vec<i64> = (10..102).collect();
        assert_eq!(ids(&catalog), expected);
    }

    #[test]
    fn a_damaged_record_followed_by_good_ones_stops_the_open() {
        let dir = crashed();
        let wal = only_file(&dir.path().join("wal"));
        let (_, recovered) = Wal::open(
            Arc::new(crate::io::Os),
            &dir.path().join("wal"),
            1,
            u64::MAX,
        )
        .expect("scan");
        let first = &recovered.records[0];
        assert_eq!(first.lsn, 4);
        // A payload byte of the first of the three records (LSN 4).
        flip(
            &wal,
            crate::wal::HEADER_BYTES + crate::wal::RECORD_HEADER_BYTES + 10,
        );
        let error = open_error(dir.path());
        assert!(
            error.starts_with(&format!("corrupted data in {}", wal.display())),
            "{error}"
        );
        assert!(error.contains("LSN 4"), "{error}");
    }

    #[test]
    fn a_damaged_manifest_stops_the_open() {
        let dir = crashed();
        flip(&dir.path().join("MANIFEST"), 40);
        assert!(open_error(dir.path()).ends_with("the document fails its checksum"));
        flip(&dir.path().join("MANIFEST"), 40);
        flip(&dir.path().join("MANIFEST"), 3);
        let error = open_error(dir.path());
        assert!(error.contains("MANIFEST"), "{error}");
    }

    #[test]
    fn damaged_segment_files_and_deletion_vectors_are_errors_not_panics() {
        let dir = crashed();
        // The deletion vector fails its checksum at open.
        let dv = only_file(&dir.path().join("deletes"));
        flip(&dv, 30);
        let error = open_error(dir.path());
        assert!(error.contains("checksum mismatch"), "{error}");
        flip(&dv, 30);
        // A damaged footer (here its length field) fails the open.
        let segment = only_file(&dir.path().join("segments"));
        let length = std::fs::metadata(&segment).expect("size").len() as usize;
        flip(&segment, length - 6);
        let error = open_error(dir.path());
        assert!(
            error.starts_with(&format!("corrupted data in {}", segment.display())),
            "{error}"
        );
        flip(&segment, length - 6);
        // A damaged data page opens (only the size and footer are read then)
        // and fails the scan that reads it, with an error.
        flip(&segment, 8);
        let catalog = Catalog::open(dir.path()).expect("opens");
        let snapshot = catalog.table("t").expect("table").snapshot();
        let scanned = snapshot.scan(Some(&[0]), None, false, None);
        assert!(scanned.is_err(), "{scanned:?}");
        assert!(!crate::check::check(dir.path()).problems.is_empty());
    }

    /// One write to the table, as the model sees it: ids removed, ids added.
    #[derive(Debug, Default, Clone)]
    struct Step {
        removed: Vec<i64>,
        added: Vec<i64>,
    }

    fn ids_set(catalog: &Catalog) -> std::collections::BTreeSet<i64> {
        ids(catalog).into_iter().collect()
    }

    /// Model-based fault injection: random appends, deletes, updates,
    /// checkpoints and vacuums, with a write, sync or rename failing, a short
    /// write or a full disk injected at random operations. After every step
    /// the catalog holds exactly the model's rows (a failed statement shows
    /// nothing); after a failure, the directory reopened without faults holds
    /// the model's rows, or those plus the failed statement's (whose record
    /// may have reached the disk before the failing sync), passes the
    /// validator, and the run goes on from there.
    #[test]
    fn faults_never_lose_or_half_apply_a_statement() {
        use crate::io::{Fault, Faulty};
        let faults = [Fault::Fail, Fault::ShortWrite, Fault::DiskFull];
        let mut failures = 0;
        for seed in 0..12u64 {
            let mut rng = Rng::new(seed);
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = Arc::new(Faulty::default());
            let open = || Catalog::open_with(dir.path(), Arc::clone(&storage) as Arc<dyn Storage>);
            let mut catalog = open().expect("open");
            catalog.set_append_memory_max(1024);
            catalog
                .create_table("t", &columns(), false)
                .expect("create");
            let mut model = std::collections::BTreeSet::new();
            let mut next_id = 0i64;
            for step_number in 0..50 {
                let context = format!("seed {seed}, step {step_number}");
                if rng.below(3) == 0 {
                    let fault = faults[rng.below(3) as usize];
                    storage.arm(1 + rng.below(10), fault);
                }
                let t = catalog.table("t").expect("table");
                let mut step = Step::default();
                let roll = rng.below(100);
                let result = if roll < 55 {
                    let n = 1 + rng.below(300) as i64;
                    step.added = (next_id..next_id + n).collect();
                    next_id += n;
                    let names = vec![Some("x"); n as usize];
                    let batch = rows(&t, &step.added, &names);
                    if rng.below(2) == 0 {
                        catalog.append(&t, vec![batch]).map(|_| ())
                    } else {
                        // In pieces, through a segment file of its own
                        // (the memory limit is tiny here).
                        let mut appender = catalog.appender(&t);
                        let mut pieces = (0..batch.num_rows())
                            .step_by(64)
                            .map(|at| batch.slice(at, 64.min(batch.num_rows() - at)));
                        pieces
                            .try_for_each(|piece| appender.push(piece))
                            .and_then(|()| appender.commit())
                            .map(|_| ())
                    }
                } else if roll < 80 {
                    let modulus = 2 + rng.below(5) as i64;
                    let snapshot = t.snapshot();
                    let scanned = snapshot.scan(Some(&[0]), None, true, None).expect("scan");
                    let mut row_ids = Vec::new();
                    for batch in &scanned {
                        let values = batch
                            .column(0)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .expect("ids");
                        let found = row_ids_of(batch.column(1).as_ref()).expect("row ids");
                        for (i, id) in values.values().iter().enumerate() {
                            if id % modulus == 0 {
                                step.removed.push(*id);
                                row_ids.push(found[i]);
                            }
                        }
                    }
                    if roll < 70 {
                        catalog.delete(&t, &row_ids).map(|_| ())
                    } else {
                        step.added = (next_id..next_id + step.removed.len() as i64).collect();
                        next_id += step.removed.len() as i64;
                        let names = vec![Some("u"); step.added.len()];
                        let new_rows = if step.added.is_empty() {
                            Vec::new()
                        } else {
                            vec![rows(&t, &step.added, &names)]
                        };
                        catalog.update(&t, &row_ids, new_rows).map(|_| ())
                    }
                } else if roll < 92 {
                    catalog.checkpoint()
                } else {
                    catalog.vacuum(None)
                };
                let fired = storage.take_fired() > 0;
                storage.disarm();
                let mut applied = model.clone();
                for id in &step.removed {
                    applied.remove(id);
                }
                applied.extend(step.added.iter().copied());
                match result {
                    Ok(()) => {
                        model = applied;
                        assert_eq!(ids_set(&catalog), model, "{context}");
                    }
                    Err(e) => {
                        assert!(fired, "{context}: failed with no fault injected: {e}");
                        failures += 1;
                        assert_eq!(
                            ids_set(&catalog),
                            model,
                            "{context}: the failed statement is visible"
                        );
                        catalog.close_without_checkpoint();
                        drop(catalog);
                        let report = crate::check::check(dir.path());
                        assert_eq!(report.problems, Vec::<String>::new(), "{context}");
                        catalog = open().expect("reopen");
                        catalog.set_append_memory_max(1024);
                        let found = ids_set(&catalog);
                        if found != model {
                            assert_eq!(
                                found, applied,
                                "{context}: neither without nor with {step:?}"
                            );
                            model = applied;
                        }
                    }
                }
            }
            drop(catalog);
            let catalog = open().expect("reopen");
            assert_eq!(ids_set(&catalog), model, "seed {seed} at the end");
            drop(catalog);
            assert_eq!(
                crate::check::check(dir.path()).problems,
                Vec::<String>::new()
            );
        }
        assert!(
            failures > 50,
            "only {failures} statements failed: the faults miss"
        );
    }

    /// An append past the memory limit streams into a segment file of its own
    /// and logs only the file; the log replays it; a failure part way leaves
    /// no file and no row.
    #[test]
    fn large_appends_stream_into_a_segment_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = |folder: &str| {
            crate::store::files_in(&dir.path().join(folder))
                .expect("files")
                .len()
        };
        {
            let catalog = Catalog::open(dir.path()).expect("open");
            catalog.set_append_memory_max(4096);
            catalog
                .create_table("t", &columns(), false)
                .expect("create");
            let t = catalog.table("t").expect("table");
            let mut appender = catalog.appender(&t);
            for start in (0..10_000).step_by(500) {
                let ids: Vec<i64> = (start..start + 500).collect();
                appender
                    .push(rows(&t, &ids, &vec![Some("x"); 500]))
                    .expect("push");
            }
            // The rows are in a file (not yet visible) before the commit.
            assert_eq!(count("segments"), 1);
            assert!(ids(&catalog).is_empty());
            assert_eq!(appender.commit().expect("commit"), 10_000);
            assert_eq!(ids(&catalog).len(), 10_000);
            // A failure part way (a NULL id) leaves nothing: no file, no row.
            let mut appender = catalog.appender(&t);
            for start in (20_000..22_000).step_by(500) {
                let ids: Vec<i64> = (start..start + 500).collect();
                appender
                    .push(rows(&t, &ids, &vec![None; 500]))
                    .expect("push");
            }
            assert_eq!(count("segments"), 2);
            let loose = Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
                arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
            ]));
            let bad = RecordBatch::try_new(
                loose,
                vec![
                    Arc::new(Int64Array::from(vec![None::<i64>])),
                    Arc::new(StringArray::from(vec![Some("b")])),
                ],
            )
            .expect("batch");
            assert!(matches!(
                appender.push(bad),
                Err(Error::NotNullViolation { .. })
            ));
            drop(appender);
            assert_eq!(count("segments"), 1);
            assert_eq!(ids(&catalog).len(), 10_000);
            catalog.close_without_checkpoint();
        }
        let report = crate::check::check(dir.path());
        assert_eq!(report.problems, Vec::<String>::new());
        assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
        assert_eq!(report.wal_records, 2, "the table and the file");
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(ids(&catalog), (0..10_000).collect::<Vec<i64>>());
    }

    /// Compaction runs when due (here: more small files than the limit) and
    /// only then; the background compactor does it on its own.
    #[test]
    fn compaction_runs_when_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Arc::new(Catalog::open(dir.path()).expect("open"));
        catalog
            .create_table("t", &columns(), false)
            .expect("create");
        let t = catalog.table("t").expect("table");
        let files = || {
            crate::store::files_in(&dir.path().join("segments"))
                .expect("files")
                .len()
        };
        for i in 0..=limits::SMALL_SEGMENTS_MAX as i64 {
            catalog
                .append(&t, vec![rows(&t, &[i], &[None])])
                .expect("append");
            // A checkpoint compacts only what is due, so these files stay.
            catalog.checkpoint().expect("checkpoint");
        }
        assert_eq!(files(), limits::SMALL_SEGMENTS_MAX + 1);
        let compactor = catalog.start_compactor();
        let started = std::time::Instant::now();
        while files() > 1 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(files(), 1, "the compactor merged the small files");
        assert!(
            !catalog.compact_if_due().expect("checks"),
            "nothing left to do"
        );
        drop(compactor);
        assert_eq!(
            ids(&catalog),
            (0..=limits::SMALL_SEGMENTS_MAX as i64).collect::<Vec<_>>()
        );
    }

    /// `wal_sync` is kept in the manifest; with `batch` a statement is
    /// visible at once and durable after the next sync.
    #[test]
    fn wal_sync_is_kept_and_batch_publishes_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let catalog = Catalog::open(dir.path()).expect("open");
            assert_eq!(catalog.wal_sync(), WalSync::Always);
            catalog.set_wal_sync(WalSync::Batch).expect("set");
            catalog
                .create_table("t", &columns(), false)
                .expect("create");
            let t = catalog.table("t").expect("table");
            catalog
                .append(&t, vec![rows(&t, &[7], &[None])])
                .expect("append");
            assert_eq!(ids(&catalog), vec![7]);
            catalog.close_without_checkpoint();
        }
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(catalog.wal_sync(), WalSync::Batch);
        assert_eq!(ids(&catalog), vec![7], "a process exit loses nothing");
    }

    #[test]
    fn failed_append_changes_nothing() {
        let catalog = Catalog::in_memory();
        catalog
            .create_table("t", &columns(), false)
            .expect("create");
        let t = catalog.table("t").expect("table");
        let good = rows(&t, &[1], &[Some("a")]);
        let nulls = RecordBatch::try_new(
            t.schema(),
            vec![
                Arc::new(Int64Array::from(vec![Some(2), None])),
                Arc::new(StringArray::from(vec![Some("b"), Some("c")])),
            ],
        );
        // Arrow itself refuses a NULL in a non-nullable field of a batch schema, so
        // build the bad batch with a nullable schema as a foreign writer would.
        assert!(nulls.is_err());
        let loose = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
        ]));
        let bad = RecordBatch::try_new(
            loose,
            vec![
                Arc::new(Int64Array::from(vec![Some(2), None])),
                Arc::new(StringArray::from(vec![Some("b"), Some("c")])),
            ],
        )
        .expect("batch");
        let err = catalog.append(&t, vec![good, bad]).expect_err("not null");
        assert_eq!(
            err.to_string(),
            "null value in column \"id\" of relation \"t\" violates not-null constraint"
        );
        assert_eq!(ids(&catalog), Vec::<i64>::new());
    }

    #[test]
    fn stale_table_handle_is_a_conflict() {
        let catalog = Catalog::in_memory();
        catalog
            .create_table("t", &columns(), false)
            .expect("create");
        let old = catalog.table("t").expect("table");
        catalog.drop_table("t", false).expect("drop");
        catalog
            .create_table("t", &columns(), false)
            .expect("recreate");
        let err = catalog
            .append(&old, vec![rows(&old, &[1], &[None])])
            .expect_err("conflict");
        assert!(matches!(err, Error::Conflict(_)));
        assert!(!catalog.drop_table("nope", true).expect("if exists"));
        assert_eq!(
            catalog
                .drop_table("nope", false)
                .expect_err("missing")
                .to_string(),
            "relation \"nope\" does not exist"
        );
    }
}

//! `FORGET USER`: erasing users from a database (docs/privacy.md § Forgetting
//! a user).
//!
//! One change ([`change::Forget`], logged by ordinal, never by id) deletes
//! the users' rows from every table with a user key (the tag indexes follow,
//! as for any delete), takes them out of every stored tag and frozen segment,
//! and replaces each recommender that knew them by one built without them.
//! Once the change is logged their ids are erased from the dictionary: the
//! ordinals stay used, the same id seen again gets a new one.
//!
//! Until the next checkpoint their traces are still in files: the log, the
//! segment files their rows were in, and the dictionary files with their
//! ids. [`Erasing`] remembers which; the next checkpoint (the compactor runs
//! one within a second, `FORGET USER ... IMMEDIATELY` at once) rewrites those
//! files, whatever the compaction budget, and removes the log.

use std::collections::BTreeSet;

use arrow::array::Array;
use roaring::RoaringBitmap;

use super::{Catalog, Compaction, Effect, State, positions_by_segment, row_ids};
use crate::change::{self, Change};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tag_changes;

/// What a checkpoint must still rewrite for users forgotten since the last.
#[derive(Debug, Clone, Default)]
pub(super) struct Erasing {
    /// Their ordinals: the dictionary files holding them are rewritten.
    pub users: RoaringBitmap,
    /// The segments their rows were deleted from: rewritten without them.
    pub segments: BTreeSet<u64>,
}

impl Erasing {
    pub(super) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.segments.is_empty()
    }
}

/// What `FORGET USER` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Users found and forgotten (ids never seen are not counted).
    pub users: u64,
    /// Rows deleted, over every table with a user key.
    pub rows: u64,
    /// Tables that had rows of theirs.
    pub tables: u64,
    /// Stored tags and frozen segments that held them.
    pub tags: u64,
    /// Recommenders built again without them.
    pub recommenders: u64,
}

impl Catalog {
    /// Forgets the users with the ids in `ids` (the user key's type; ids
    /// never seen are skipped): see the module documentation. With
    /// `immediately`, a checkpoint follows at once, so that when this returns
    /// no file in the directory holds their ids or rows (nor those of users
    /// forgotten earlier, whose erasure may still be pending).
    pub fn forget_users(&self, ids: &dyn Array, immediately: bool) -> Result<Forgotten> {
        let forgotten = self.forget(ids)?;
        if immediately {
            let mut writer = self.lock_writer();
            if !writer.state.erasing.is_empty() {
                self.checkpoint_locked(&mut writer, Compaction::DEFAULT)?;
            }
        }
        Ok(forgotten)
    }

    fn forget(&self, ids: &dyn Array) -> Result<Forgotten> {
        let tags = self.tags();
        let users: RoaringBitmap = tags.ordinals(ids)?.into_iter().flatten().collect();
        if users.is_empty() {
            return Ok(Forgotten::default());
        }
        // Recommenders that knew them are built again first, without them
        // (their files written before the change that names them).
        let mut rebuilt = Vec::new();
        let built = (|| -> Result<()> {
            for (name, recommender) in &tags.recommenders {
                let model = recommender.model()?;
                let known = model.interactions.users();
                if users.iter().any(|u| known.binary_search(&u).is_ok()) {
                    let definition = recommender.entry.definition.clone();
                    let (stored, _) =
                        self.build_recommender(name, definition, &users, Some(&model))?;
                    rebuilt.push(stored);
                }
            }
            Ok(())
        })();
        let mut forgotten = Forgotten {
            users: users.len(),
            recommenders: rebuilt.len() as u64,
            ..Forgotten::default()
        };
        let committed = built.and_then(|()| {
            self.commit(|state| {
                let now: RoaringBitmap = state.tags.ordinals(ids)?.into_iter().flatten().collect();
                if now != users {
                    return Err(Error::Conflict("user dictionary".to_string()));
                }
                let deletes = state.rows_of(&users)?;
                forgotten.rows = deletes.iter().map(|(_, rows)| rows).sum();
                forgotten.tables = deletes.len() as u64;
                for tag in state.tags.stored.values() {
                    forgotten.tags += u64::from(tag_changes::holds_any(tag, &users)?);
                }
                Ok(Some(Change::Forget(change::Forget {
                    users: users.clone(),
                    deletes: deletes.into_iter().map(|(delete, _)| delete).collect(),
                    recommenders: rebuilt.clone(),
                })))
            })
        });
        for recommender in &rebuilt {
            self.lock_reserved().remove(&recommender.entry.id);
        }
        committed?;
        Ok(forgotten)
    }
}

impl State {
    /// The rows of `users` in every table with a user key, as deletes, each
    /// with its number of rows.
    fn rows_of(&self, users: &RoaringBitmap) -> Result<Vec<(change::Delete, u64)>> {
        let dictionary = self.tags.dictionary()?;
        let mut deletes = Vec::new();
        for table in self.tables.values() {
            let Some(user_column) = table.user_key() else {
                continue;
            };
            let found = tag_changes::users_rows(
                &self.snapshots[&table.id],
                &[user_column],
                user_column,
                dictionary,
                self.tags.users,
                users,
                true,
            )?;
            let mut ids = Vec::new();
            for (_, batch) in &found {
                ids.extend(row_ids(batch.column(1).as_ref())?);
            }
            if !ids.is_empty() {
                let rows = ids.len() as u64;
                deletes.push((positions_by_segment(table.id, &ids), rows));
            }
        }
        Ok(deletes)
    }

    /// Applies `forget` to this state (a copy of `before`).
    pub(super) fn forget(
        &mut self,
        before: &State,
        forget: &change::Forget,
        store: Option<&Store>,
    ) -> Result<Effect> {
        let mut snapshots = Vec::new();
        for delete in &forget.deletes {
            let table = before
                .table_by_id(delete.table_id)
                .cloned()
                .ok_or_else(|| Error::Conflict(format!("table {}", delete.table_id)))?;
            let snapshot = self.delete(&table, delete)?;
            tag_changes::rows_deleted(
                &mut self.tags,
                table.id,
                &before.snapshots[&table.id],
                &snapshot,
                &delete.segments,
            )?;
            self.erasing
                .segments
                .extend(delete.segments.iter().map(|(segment, _)| *segment));
            snapshots.push((table, snapshot));
        }
        tag_changes::users_forgotten(&mut self.tags, &forget.users)?;
        for recommender in &forget.recommenders {
            self.install_recommender(recommender, true, store)?;
        }
        self.erasing.users |= &forget.users;
        Ok(Effect::Snapshots(snapshots))
    }

    /// What a change does once it is in the log: forgotten users' ids are
    /// erased from the dictionary (not before, so a change that fails to be
    /// logged leaves every id findable for the retry).
    pub(super) fn logged(&self, change: &Change) {
        if let (Change::Forget(forget), Some(dictionary)) = (change, &self.tags.dictionary) {
            dictionary.erase(&forget.users);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use arrow::array::{AsArray, RecordBatch, StringArray};

    use super::*;
    use crate::recommend::Definition;
    use crate::tags::{TagSourceKind, TagUsers};
    use crate::types::{ColumnDef, ColumnType};

    /// An id no other bytes in the directory contain by chance; it sorts
    /// before the others, so it is also a row group's smallest value.
    const ID: &str = "forget-me-5f3a9c1e7d2b";

    fn text(values: &[&str]) -> Arc<StringArray> {
        Arc::new(StringArray::from(values.to_vec()))
    }

    /// A catalog with users (user_id, city) tag-indexed by city, events
    /// (user_id, item) with an item-kNN recommender, and a stored tag; ID
    /// has rows in both tables and is in the tag and the recommender.
    fn populated(dir: &Path) -> Catalog {
        let catalog = Catalog::open(dir).expect("open");
        let key = || ColumnDef::new("user_id", ColumnType::Text, false).user_key();
        for (name, second) in [("users", "city"), ("events", "item")] {
            catalog
                .create_table(
                    name,
                    &[key(), ColumnDef::new(second, ColumnType::Text, false)],
                    false,
                )
                .expect("create");
        }
        let users = catalog.table("users").expect("users");
        let batch = RecordBatch::try_new(
            users.schema(),
            vec![
                text(&[ID, "u2", "u3"]),
                text(&["beijing", "beijing", "shanghai"]),
            ],
        )
        .expect("batch");
        catalog.append(&users, vec![batch]).expect("users");
        let events = catalog.table("events").expect("events");
        let batch = RecordBatch::try_new(
            events.schema(),
            vec![
                text(&[ID, ID, "u2", "u2", "u3"]),
                text(&["a", "b", "a", "b", "a"]),
            ],
        )
        .expect("batch");
        catalog.append(&events, vec![batch]).expect("events");
        catalog
            .create_tag_index("users", &["city".to_string()], None)
            .expect("tag index");
        catalog
            .put_tag(
                "picked",
                TagSourceKind::Query,
                "SELECT ...",
                TagUsers::Ids(text(&[ID, "u3"])),
                false,
                0,
            )
            .expect("tag");
        let definition = Definition {
            table: "events".to_string(),
            user: "user_id".to_string(),
            item: "item".to_string(),
            weight: None,
            time: None,
            algorithm: "item_knn".to_string(),
            options: String::new(),
        };
        catalog
            .create_recommender("r", definition, false)
            .expect("recommender");
        catalog
    }

    /// The files under `dir` whose bytes contain `needle`.
    fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read(&path)
                    .expect("read")
                    .windows(needle.len())
                    .any(|w| w == needle)
                {
                    found.push(
                        path.strip_prefix(dir)
                            .expect("under dir")
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        found.sort();
        found
    }

    fn count(catalog: &Catalog, expr: &str) -> u64 {
        catalog
            .tags()
            .evaluate(expr, &crate::privacy::Policy::everyone(0))
            .expect("evaluates")
            .len()
    }

    fn rows(catalog: &Catalog, table: &str) -> Vec<String> {
        let snapshot = catalog.table(table).expect("table").snapshot();
        let mut out = Vec::new();
        for batch in snapshot.scan(None, None, false, None).expect("scan") {
            for row in 0..batch.num_rows() {
                let value = |c: usize| batch.column(c).as_string::<i32>().value(row).to_string();
                out.push(format!("{} {}", value(0), value(1)));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_forgotten_user_leaves_every_table_tag_model_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = populated(dir.path());
        catalog.checkpoint().expect("checkpoint");
        // The check below can fail: the id is in the files now.
        assert_eq!(
            files_holding(dir.path(), ID.as_bytes()),
            vec![
                "segments/0000000000000007.parquet".to_string(),
                "segments/0000000000000008.parquet".to_string(),
                "users/0000000000.keys".to_string(),
            ],
            "before"
        );
        let old = catalog.tags().ordinals(&*text(&[ID])).expect("ordinal")[0].expect("known");
        let forgotten = catalog
            .forget_users(&*text(&[ID, "never-seen"]), false)
            .expect("forget");
        assert_eq!(
            forgotten,
            Forgotten {
                users: 1,
                rows: 3,
                tables: 2,
                tags: 1,
                recommenders: 1
            }
        );
        assert_eq!(rows(&catalog, "users"), vec!["u2 beijing", "u3 shanghai"]);
        assert_eq!(rows(&catalog, "events"), vec!["u2 a", "u2 b", "u3 a"]);
        assert_eq!(count(&catalog, "city=beijing"), 1);
        assert_eq!(count(&catalog, "picked"), 1);
        let tags = catalog.tags();
        assert_eq!(tags.ordinals(&*text(&[ID])).expect("looked up"), vec![None]);
        let model = tags.recommenders["r"].model().expect("model");
        assert_eq!(model.interactions.users().len(), 2);
        assert!(model.interactions.history(old).0.is_empty());
        // Forgetting twice finds nobody.
        assert_eq!(
            catalog.forget_users(&*text(&[ID]), false).expect("again"),
            Forgotten::default()
        );
        // The compactor's next run rewrites what still holds the id.
        assert!(catalog.compact_if_due().expect("compaction"));
        assert_eq!(
            files_holding(dir.path(), ID.as_bytes()),
            Vec::<String>::new(),
            "after"
        );
        assert!(!catalog.compact_if_due().expect("nothing left"));
        // The id seen again is a new user; the old ordinal stays used.
        let users = catalog.table("users").expect("users");
        let batch = RecordBatch::try_new(users.schema(), vec![text(&[ID]), text(&["paris"])])
            .expect("batch");
        catalog.append(&users, vec![batch]).expect("again");
        let new = catalog.tags().ordinals(&*text(&[ID])).expect("ordinal")[0].expect("known");
        assert!(new > old, "{new} > {old}");
        drop(catalog);
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(
            rows(&catalog, "users"),
            vec![
                format!("{ID} paris"),
                "u2 beijing".into(),
                "u3 shanghai".into()
            ]
        );
        assert_eq!(count(&catalog, "picked"), 1);
        let dictionary = Arc::clone(catalog.tags().dictionary().expect("dictionary"));
        assert!(dictionary.is_erased(old));
        assert_eq!(
            catalog.tags().ordinals(&*text(&[ID])).expect("ordinal"),
            vec![Some(new)]
        );
    }

    #[test]
    fn a_forget_in_the_log_replays_and_immediately_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let catalog = populated(dir.path());
            catalog.checkpoint().expect("checkpoint");
            catalog.forget_users(&*text(&[ID]), false).expect("forget");
            catalog.close_without_checkpoint();
        }
        // The log holds the forget; the files still hold the id until a
        // checkpoint. Asking again with IMMEDIATELY finds nobody to forget but
        // finishes the erasure the replayed change left pending.
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(rows(&catalog, "users"), vec!["u2 beijing", "u3 shanghai"]);
        assert_eq!(count(&catalog, "picked"), 1);
        assert_eq!(
            catalog.tags().ordinals(&*text(&[ID])).expect("looked up"),
            vec![None]
        );
        assert!(!files_holding(dir.path(), ID.as_bytes()).is_empty());
        assert_eq!(
            catalog.forget_users(&*text(&[ID]), true).expect("again"),
            Forgotten::default()
        );
        assert_eq!(
            files_holding(dir.path(), ID.as_bytes()),
            Vec::<String>::new()
        );
        drop(catalog);

        // IMMEDIATELY: rows only in the log, forgotten, gone from the files
        // when the call returns.
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = populated(dir.path());
        assert!(!files_holding(dir.path(), ID.as_bytes()).is_empty());
        let forgotten = catalog.forget_users(&*text(&[ID]), true).expect("forget");
        assert_eq!(forgotten.rows, 3);
        assert_eq!(
            files_holding(dir.path(), ID.as_bytes()),
            Vec::<String>::new()
        );
    }
}

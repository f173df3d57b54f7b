//! Recommenders the catalog keeps: what each is built from (a table's user,
//! item, weight and time columns, an algorithm and its options), building
//! one from the table's rows, and the built model in its file
//! (`recommenders/<id>.rec`, docs/format.md § Recommender files), read the
//! first time a query needs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use serde::{Deserialize, Serialize};

use super::{
    Ease, Interaction, Interactions, ItemKeys, ItemKnn, Model, Recommender, Similarity, file,
};
use crate::durable;
use crate::error::{Error, Result};
use crate::io::Storage;
use crate::options;
use crate::table::Table;
use crate::tags::Tags;
use crate::types::ColumnType;

/// The folder of recommender files in a data directory.
pub(crate) const DIR: &str = "recommenders";

/// item-kNN's neighbours per item unless `neighbours` says otherwise.
pub const DEFAULT_NEIGHBOURS: usize = 200;
/// EASE's L2 strength unless `lambda` says otherwise.
pub const DEFAULT_LAMBDA: f64 = 500.0;

/// Recommender `id`'s file in the recommender folder `dir`.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.rec"))
}

/// What a recommender is built from, as written in `CREATE RECOMMENDER`;
/// kept in the manifest so `REFRESH RECOMMENDER` can build it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub table: String,
    pub user: String,
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `item_knn`, `ease` or `popularity`.
    pub algorithm: String,
    pub options: String,
}

impl Definition {
    /// Whether interactions carry weights (a weight column or time decay),
    /// so popularity sums them instead of counting users.
    pub fn weighted(&self) -> bool {
        self.weight.is_some()
            || Settings::parse(&self.algorithm, &self.options)
                .is_ok_and(|s| s.half_life_days.is_some())
    }
}

/// How a recommender scores, from its algorithm and options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    ItemKnn {
        similarity: Similarity,
        neighbours: usize,
    },
    Ease {
        lambda: f64,
    },
    Popularity,
}

/// A definition's algorithm and options, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub algorithm: Algorithm,
    /// With a time column: an interaction's weight halves every this many
    /// days before the build.
    pub half_life_days: Option<f64>,
}

impl Settings {
    /// Parses `algorithm` and its `options` (`key=value, ...`).
    pub fn parse(algorithm: &str, text: &str) -> Result<Settings> {
        let what = "CREATE RECOMMENDER";
        let (mut algorithm, known): (Algorithm, &[&str]) = match algorithm
            .to_ascii_lowercase()
            .as_str()
        {
            "item_knn" => (
                Algorithm::ItemKnn {
                    similarity: Similarity::Cosine,
                    neighbours: DEFAULT_NEIGHBOURS,
                },
                &["alpha", "half_life", "neighbours", "similarity"],
            ),
            "ease" => (
                Algorithm::Ease {
                    lambda: DEFAULT_LAMBDA,
                },
                &["half_life", "lambda"],
            ),
            "popularity" => (Algorithm::Popularity, &["half_life"]),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{what}: unknown algorithm {other:?} (algorithms: item_knn, ease, popularity)"
                )));
            }
        };
        let mut half_life_days = None;
        let mut alpha = None;
        for (key, value, position) in options::split(what, text)? {
            let err = |expected: &str| {
                Error::InvalidArgument(format!(
                    "{what}: option {key} at character {position}: {expected}, got {value:?}"
                ))
            };
            if !known.contains(&key.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "{what}: {} takes no option {key:?} (at character {position}; options: {})",
                    definition_name(&algorithm),
                    known.join(", ")
                )));
            }
            let positive = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
            };
            match (key.as_str(), &mut algorithm) {
                ("half_life", _) => {
                    half_life_days =
                        Some(positive().ok_or_else(|| err("a positive number of days"))?);
                }
                ("neighbours", Algorithm::ItemKnn { neighbours, .. }) => {
                    *neighbours = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| err("a count from 1 to 10000"))?;
                }
                ("similarity", Algorithm::ItemKnn { similarity, .. }) => {
                    *similarity = match value.to_ascii_lowercase().as_str() {
                        "cosine" => Similarity::Cosine,
                        "jaccard" => Similarity::Jaccard,
                        "asymmetric_cosine" => Similarity::AsymmetricCosine { alpha: 0.5 },
                        _ => return Err(err("cosine, jaccard or asymmetric_cosine")),
                    };
                }
                ("alpha", Algorithm::ItemKnn { .. }) => {
                    alpha = Some(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|a| (0.0..=1.0).contains(a))
                            .ok_or_else(|| err("a number from 0 to 1"))?,
                    );
                }
                ("lambda", Algorithm::Ease { lambda }) => {
                    *lambda = positive().ok_or_else(|| err("a positive number"))?;
                }
                (other, _) => unreachable!("option {other} is listed but not parsed"),
            }
        }
        if let Some(a) = alpha {
            match &mut algorithm {
                Algorithm::ItemKnn {
                    similarity: Similarity::AsymmetricCosine { alpha },
                    ..
                } => *alpha = a,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{what}: alpha goes with similarity=asymmetric_cosine"
                    )));
                }
            }
        }
        Ok(Settings {
            algorithm,
            half_life_days,
        })
    }
}

fn definition_name(algorithm: &Algorithm) -> &'static str {
    match algorithm {
        Algorithm::ItemKnn { .. } => "item_knn",
        Algorithm::Ease { .. } => "ease",
        Algorithm::Popularity => "popularity",
    }
}

/// A recommender as the manifest and the log record it: its definition,
/// when it was built, its sizes and its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Names the file, `recommenders/<id>.rec`; a rebuild gets a new id.
    pub id: u64,
    pub name: String,
    pub definition: Definition,
    /// When it was built, microseconds since 1970 UTC.
    pub built_micros: i64,
    pub users: u64,
    pub items: u64,
    pub interactions: u64,
    /// The file's size and CRC-32C.
    pub bytes: u64,
    pub crc32c: u32,
}

/// A recommender of the catalog: its entry, and its model once read.
pub struct StoredRecommender {
    pub entry: Entry,
    /// The file; none in a catalog without a directory.
    path: Option<PathBuf>,
    model: OnceLock<Arc<Recommender>>,
}

impl std::fmt::Debug for StoredRecommender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRecommender")
            .field("entry", &self.entry)
            .field("path", &self.path)
            .field("loaded", &self.model.get().is_some())
            .finish()
    }
}

impl StoredRecommender {
    pub(crate) fn new(
        entry: Entry,
        path: Option<PathBuf>,
        model: Option<Arc<Recommender>>,
    ) -> StoredRecommender {
        let cell = OnceLock::new();
        if let Some(model) = model {
            let _ = cell.set(model);
        }
        StoredRecommender {
            entry,
            path,
            model: cell,
        }
    }

    /// The built model, read from its file (size, checksum and every section
    /// checked) the first time.
    pub fn model(&self) -> Result<Arc<Recommender>> {
        if let Some(model) = self.model.get() {
            return Ok(Arc::clone(model));
        }
        let Some(path) = &self.path else {
            return Err(Error::InvalidArgument(format!(
                "recommender \"{}\" has no model",
                self.entry.name
            )));
        };
        let model = Arc::new(read(path, &self.entry)?);
        Ok(Arc::clone(self.model.get_or_init(|| model)))
    }

    /// The model if already read, for a rebuilt entry to keep.
    pub(crate) fn loaded(&self) -> Option<Arc<Recommender>> {
        self.model.get().cloned()
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Reads and checks the file of `entry` at `path`.
pub(crate) fn read(path: &Path, entry: &Entry) -> Result<Recommender> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 != entry.bytes {
        return Err(corrupted(format!(
            "the file has {} bytes, the manifest says {}",
            bytes.len(),
            entry.bytes
        )));
    }
    let crc = crc32c::crc32c(&bytes);
    if crc != entry.crc32c {
        return Err(corrupted(format!(
            "checksum {crc:08x}, the manifest says {:08x}",
            entry.crc32c
        )));
    }
    file::decode(path, &bytes)
}

/// Writes `recommender` whole as file `id` of the folder `dir` (temporary
/// name, synced, renamed); returns its size and CRC-32C.
pub(crate) fn write(
    storage: &dyn Storage,
    dir: &Path,
    id: u64,
    recommender: &Recommender,
) -> Result<(u64, u32)> {
    let bytes = file::encode(recommender);
    let path = path(dir, id);
    durable::write_whole(storage, &path.with_extension("rec.tmp"), &path, &[&bytes])?;
    Ok((bytes.len() as u64, crc32c::crc32c(&bytes)))
}

/// A recommender as [`build`] made it.
#[derive(Debug)]
pub struct Built {
    pub recommender: Recommender,
    /// item-kNN: how many items' neighbour lists were computed; the others
    /// were carried over from the previous build.
    pub computed_items: Option<usize>,
}

/// Builds the recommender `definition` describes from `table`'s rows as of
/// now (`now_micros`, which time decay counts from). Rows whose user, item
/// or weight is NULL, or whose weight is not positive, are no interaction;
/// nor are the rows of the users in `without` (being forgotten). With the
/// `previous` build of the same definition, item-kNN computes the neighbours
/// of only the items whose users changed, merges their new similarities into
/// the other lists and computes a list again only where the merge cannot be
/// sure (super::refresh); the model is the same as a whole build's.
pub fn build(
    tags: &Tags,
    table: &Table,
    definition: &Definition,
    now_micros: i64,
    without: &roaring::RoaringBitmap,
    previous: Option<&Recommender>,
) -> Result<Built> {
    let settings = Settings::parse(&definition.algorithm, &definition.options)?;
    let columns = table.columns();
    let find = |name: &str, role: &str, allowed: &dyn Fn(ColumnType) -> bool| {
        let (index, column) = columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "recommender: table \"{}\" has no column \"{name}\"",
                    table.name()
                ))
            })?;
        if !allowed(column.column_type) {
            return Err(Error::InvalidArgument(format!(
                "recommender: the {role} column \"{name}\" is {}",
                column.column_type
            )));
        }
        Ok(index)
    };
    let integer = |t: ColumnType| {
        matches!(
            t,
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt
        )
    };
    let user = find(&definition.user, "user", &|_| true)?;
    if table.user_key() != Some(user) {
        return Err(Error::InvalidArgument(format!(
            "recommender: \"{}\" is not the user key of table \"{}\" (declare it USER KEY)",
            definition.user,
            table.name()
        )));
    }
    let item = find(&definition.item, "item", &|t| {
        integer(t) || t == ColumnType::Text
    })
    .map_err(|e| Error::InvalidArgument(format!("{e}; item ids are integers or text")))?;
    let mut projection = vec![user, item];
    if let Some(weight) = &definition.weight {
        projection.push(find(weight, "weight", &|t| {
            integer(t)
                || matches!(
                    t,
                    ColumnType::Real | ColumnType::Double | ColumnType::Decimal { .. }
                )
        })?);
    }
    let time = match &definition.time {
        Some(time) => Some(find(time, "time", &|t| {
            matches!(
                t,
                ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz
            )
        })?),
        None => None,
    };
    if settings.half_life_days.is_some() && time.is_none() {
        return Err(Error::InvalidArgument(
            "recommender: half_life needs a time column: ON table (user, item, weight, time)"
                .to_string(),
        ));
    }
    projection.extend(time);
    let text_items = columns[item].column_type == ColumnType::Text;
    let batches = table
        .snapshot()
        .scan(Some(&projection), None, false, None)?;

    // Items get provisional indices as met, then are renumbered in key order.
    let mut int_index: HashMap<i64, u32> = HashMap::new();
    let mut text_index: HashMap<String, u32> = HashMap::new();
    let mut interactions = Vec::new();
    let decay = settings
        .half_life_days
        .map(|days| std::f64::consts::LN_2 / (days * 86_400e6));
    for batch in &batches {
        let ordinals = tags.ordinals(batch.column(0).as_ref())?;
        let weights = match &definition.weight {
            Some(_) => Some(cast(batch.column(2), &DataType::Float64)?),
            None => None,
        };
        let times = match time {
            Some(_) => Some(cast(
                batch.column(projection.len() - 1),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?),
            None => None,
        };
        let items = batch.column(1);
        let int_items = (!text_items)
            .then(|| cast(items, &DataType::Int64))
            .transpose()?;
        for (row, ordinal) in ordinals.iter().enumerate() {
            let Some(ordinal) = *ordinal else { continue };
            if items.is_null(row) || without.contains(ordinal) {
                continue;
            }
            let mut weight = 1.0f64;
            if let Some(w) = &weights {
                if w.is_null(row) {
                    continue;
                }
                weight = w.as_primitive::<Float64Type>().value(row);
            }
            if let Some(t) = &times
                && let Some(rate) = decay
            {
                if t.is_null(row) {
                    continue;
                }
                let at = t.as_primitive::<TimestampMicrosecondType>().value(row);
                weight *= (-rate * (now_micros - at).max(0) as f64).exp();
            }
            if !(weight > 0.0 && weight.is_finite()) {
                continue;
            }
            let next = (int_index.len() + text_index.len()) as u32;
            let index = match &int_items {
                Some(ints) => *int_index
                    .entry(ints.as_primitive::<Int64Type>().value(row))
                    .or_insert(next),
                None => {
                    let key = items.as_string::<i32>().value(row);
                    match text_index.get(key) {
                        Some(&i) => i,
                        None => {
                            text_index.insert(key.to_string(), next);
                            next
                        }
                    }
                }
            };
            interactions.push(Interaction {
                user: ordinal,
                item: index,
                weight: weight as f32,
            });
        }
    }
    let (keys, renumber) = if text_items {
        let mut keys: Vec<(String, u32)> = text_index.into_iter().collect();
        keys.sort_unstable();
        let renumber = renumbering(keys.iter().map(|(_, i)| *i));
        (
            ItemKeys::Text(keys.into_iter().map(|(k, _)| k).collect()),
            renumber,
        )
    } else {
        let mut keys: Vec<(i64, u32)> = int_index.into_iter().collect();
        keys.sort_unstable();
        let renumber = renumbering(keys.iter().map(|(_, i)| *i));
        (
            ItemKeys::Int(keys.into_iter().map(|(k, _)| k).collect()),
            renumber,
        )
    };
    for interaction in &mut interactions {
        interaction.item = renumber[interaction.item as usize];
    }
    let data = Interactions::new(keys.len(), interactions)?;
    let popularity = data.popularity(definition.weighted());
    let mut computed_items = None;
    let model = match settings.algorithm {
        Algorithm::ItemKnn {
            similarity,
            neighbours,
        } => {
            let (knn, computed) = match previous {
                Some(
                    before @ Recommender {
                        model: Model::ItemKnn(knn),
                        ..
                    },
                ) if knn.similarity == similarity => super::refresh::refresh(
                    knn,
                    &before.interactions,
                    &before.items,
                    &data,
                    &keys,
                    neighbours,
                ),
                _ => (ItemKnn::build(&data, similarity, neighbours), data.items()),
            };
            computed_items = Some(computed);
            Model::ItemKnn(knn)
        }
        Algorithm::Ease { lambda } => Model::Ease(Ease::build(&data, lambda)?),
        Algorithm::Popularity => Model::Popularity(popularity.clone()),
    };
    Ok(Built {
        recommender: Recommender::new(keys, data, popularity, model),
        computed_items,
    })
}

/// For provisional indices listed in their final order, the final index of
/// each provisional one.
fn renumbering(provisional: impl ExactSizeIterator<Item = u32>) -> Vec<u32> {
    let mut renumber = vec![0u32; provisional.len()];
    for (final_index, p) in provisional.enumerate() {
        renumber[p as usize] = final_index as u32;
    }
    renumber
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};

    use super::*;
    use crate::Catalog;
    use crate::io::{Fault, Faulty};
    use crate::types::ColumnDef;

    /// Table `events (user_id BIGINT USER KEY, item TEXT, w DOUBLE)` with
    /// `rows` appended.
    fn events(catalog: &Catalog, rows: &[(i64, &str, Option<f64>)]) {
        if catalog.table("events").is_err() {
            let columns = [
                ColumnDef::new("user_id", ColumnType::BigInt, false).user_key(),
                ColumnDef::new("item", ColumnType::Text, true),
                ColumnDef::new("w", ColumnType::Double, true),
            ];
            catalog
                .create_table("events", &columns, false)
                .expect("create");
        }
        let table = catalog.table("events").expect("table");
        let batch = RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("batch");
        catalog.append(&table, vec![batch]).expect("append");
    }

    fn definition(algorithm: &str, weight: bool) -> Definition {
        Definition {
            table: "events".to_string(),
            user: "user_id".to_string(),
            item: "item".to_string(),
            weight: weight.then(|| "w".to_string()),
            time: None,
            algorithm: algorithm.to_string(),
            options: String::new(),
        }
    }

    const ROWS: [(i64, &str, Option<f64>); 7] = [
        (1, "b", Some(1.0)),
        (1, "a", Some(2.0)),
        (2, "a", Some(1.0)),
        (2, "c", None),
        (3, "c", Some(-1.0)),
        (3, "b", Some(0.5)),
        (1, "a", Some(1.0)),
    ];

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(DIR)).expect("folder").count()
    }

    #[test]
    fn a_table_becomes_items_histories_and_a_model() {
        let catalog = Catalog::in_memory();
        events(&catalog, &ROWS);
        let stored = catalog
            .create_recommender("r", definition("popularity", true), false)
            .expect("create");
        let model = stored.model().expect("model");
        // Items in key order; NULL and negative weights are no interaction
        // (so c, which has only those, is no item); user 1's two rows of a
        // add up.
        assert_eq!(model.items, ItemKeys::Text(vec!["a".into(), "b".into()]));
        assert_eq!(model.popularity, vec![4.0, 1.5]);
        let ordinal = |id: i64| {
            catalog
                .tags()
                .ordinals(&Int64Array::from(vec![id]))
                .expect("ordinal")[0]
                .expect("known")
        };
        assert_eq!(
            model.interactions.history(ordinal(1)),
            (&[0u32, 1][..], &[3.0f32, 1.0][..])
        );
        assert_eq!(
            model.interactions.history(ordinal(3)),
            (&[1u32][..], &[0.5f32][..])
        );
        assert_eq!(
            (
                stored.entry.users,
                stored.entry.items,
                stored.entry.interactions
            ),
            (3, 2, 4)
        );
        let err = catalog
            .create_recommender("r", definition("popularity", false), false)
            .expect_err("exists");
        assert_eq!(err.to_string(), "recommender \"r\" already exists");
    }

    #[test]
    fn definitions_are_checked_with_clear_errors() {
        let catalog = Catalog::in_memory();
        events(&catalog, &ROWS);
        let err = |d: Definition| {
            catalog
                .create_recommender("r", d, false)
                .expect_err("fails")
                .to_string()
        };
        let mut d = definition("item_knn", false);
        d.user = "item".into();
        assert_eq!(
            err(d),
            "recommender: \"item\" is not the user key of table \"events\" (declare it USER KEY)"
        );
        let mut d = definition("item_knn", false);
        d.item = "w".into();
        assert_eq!(
            err(d),
            "recommender: the item column \"w\" is DOUBLE PRECISION; item ids are integers or text"
        );
        let mut d = definition("item_knn", false);
        d.options = "neighbours=20, lambda=3".into();
        assert_eq!(
            err(d),
            "CREATE RECOMMENDER: item_knn takes no option \"lambda\" (at character 16; options: alpha, half_life, neighbours, similarity)"
        );
        let mut d = definition("ease", false);
        d.options = "half_life=7".into();
        assert_eq!(
            err(d),
            "recommender: half_life needs a time column: ON table (user, item, weight, time)"
        );
        assert_eq!(
            err(definition("svd", false)),
            "CREATE RECOMMENDER: unknown algorithm \"svd\" (algorithms: item_knn, ease, popularity)"
        );
        let mut d = definition("item_knn", false);
        d.options = "alpha=0.3".into();
        assert_eq!(
            err(d),
            "CREATE RECOMMENDER: alpha goes with similarity=asymmetric_cosine"
        );
        let mut d = definition("item_knn", false);
        d.table = "nope".into();
        assert_eq!(err(d), "relation \"nope\" does not exist");
    }

    #[test]
    fn settings_parse_every_option() {
        assert_eq!(
            Settings::parse(
                "ITEM_KNN",
                "similarity=asymmetric_cosine, alpha=0.25, neighbours=50, half_life=30"
            )
            .expect("parses"),
            Settings {
                algorithm: Algorithm::ItemKnn {
                    similarity: Similarity::AsymmetricCosine { alpha: 0.25 },
                    neighbours: 50,
                },
                half_life_days: Some(30.0),
            }
        );
        assert_eq!(
            Settings::parse("ease", "").expect("parses").algorithm,
            Algorithm::Ease { lambda: 500.0 }
        );
        assert_eq!(
            Settings::parse("ease", "lambda=0")
                .expect_err("fails")
                .to_string(),
            "CREATE RECOMMENDER: option lambda at character 1: a positive number, got \"0\""
        );
    }

    #[test]
    fn refreshing_item_knn_computes_what_the_new_rows_touched() {
        let catalog = Catalog::in_memory();
        // Users 1-6 share items a-c, users 7-12 items x-z: two groups with
        // nothing in common.
        let mut rows = Vec::new();
        for user in 1..=12i64 {
            let group: [&str; 3] = if user <= 6 {
                ["a", "b", "c"]
            } else {
                ["x", "y", "z"]
            };
            for (k, item) in group.into_iter().enumerate() {
                if (user + k as i64) % 3 != 0 {
                    rows.push((user, item, Some(1.0 + k as f64)));
                }
            }
        }
        events(&catalog, &rows);
        let create = |name: &str| {
            catalog
                .create_recommender(name, definition("item_knn", true), true)
                .expect("create")
                .model()
                .expect("model")
        };
        create("r");
        // User 7 (who has x and y) takes z: only z's users changed; x's and
        // y's lists take z's new similarity by merging.
        events(&catalog, &[(7, "z", Some(2.0))]);
        let (refreshed, computed) = catalog.refresh_recommender("r").expect("refresh");
        assert_eq!(computed, Some(1));
        assert_eq!(refreshed.model().expect("model"), create("whole"));
        // Nothing new: nothing computed.
        let (again, computed) = catalog.refresh_recommender("r").expect("refresh");
        assert_eq!(computed, Some(0));
        assert_eq!(again.model().expect("model"), create("whole"));
        // Other algorithms have no neighbours to count.
        catalog
            .create_recommender("p", definition("popularity", true), false)
            .expect("create");
        assert_eq!(catalog.refresh_recommender("p").expect("refresh").1, None);
    }

    #[test]
    fn recommenders_survive_a_crash_a_checkpoint_a_refresh_and_a_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (entry, model) = {
            let catalog = Catalog::open(dir.path()).expect("open");
            events(&catalog, &ROWS);
            let stored = catalog
                .create_recommender("r", definition("item_knn", true), false)
                .expect("create");
            catalog.close_without_checkpoint();
            (stored.entry.clone(), stored.model().expect("model"))
        };
        let reopened = |catalog: &Catalog| {
            let tags = catalog.tags();
            let stored = Arc::clone(&tags.recommenders["r"]);
            (stored.entry.clone(), stored.model().expect("model read"))
        };
        {
            // Replayed from the log, read from its file.
            let catalog = Catalog::open(dir.path()).expect("reopen");
            assert_eq!(reopened(&catalog), (entry.clone(), Arc::clone(&model)));
            // The replay moved past the file's id: a new recommender gets
            // its own file.
            let other = catalog
                .create_recommender("r2", definition("popularity", false), false)
                .expect("create another");
            assert!(other.entry.id > entry.id);
            assert!(catalog.drop_recommender("r2", false).expect("drop"));
        }
        let catalog = Catalog::open(dir.path()).expect("reopen after checkpoint");
        assert_eq!(reopened(&catalog), (entry.clone(), model));
        assert_eq!(files(dir.path()), 1);

        events(&catalog, &[(4, "d", Some(1.0)), (4, "a", Some(1.0))]);
        let (refreshed, computed) = catalog.refresh_recommender("r").expect("refresh");
        // a changed and d is new: two of three items, so built whole.
        assert_eq!(computed, Some(3));
        assert_ne!(refreshed.entry.id, entry.id);
        assert_eq!(refreshed.entry.items, 3);
        catalog.checkpoint().expect("checkpoint");
        // The old file went with the checkpoint.
        assert_eq!(files(dir.path()), 1);
        assert!(
            path(&dir.path().join(DIR), refreshed.entry.id).exists(),
            "the new file is kept"
        );
        assert!(catalog.drop_recommender("r", false).expect("drop"));
        assert!(!catalog.drop_recommender("r", true).expect("if exists"));
        assert_eq!(
            catalog
                .refresh_recommender("r")
                .expect_err("gone")
                .to_string(),
            "recommender \"r\" does not exist"
        );
        drop(catalog);
        let catalog = Catalog::open(dir.path()).expect("reopen after drop");
        assert!(catalog.tags().recommenders.is_empty());
        assert_eq!(files(dir.path()), 0);
        let report = crate::check::check(dir.path());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_damaged_recommender_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = {
            let catalog = Catalog::open(dir.path()).expect("open");
            events(&catalog, &ROWS);
            let stored = catalog
                .create_recommender("r", definition("ease", false), false)
                .expect("create");
            stored.entry.id
        };
        let file = path(&dir.path().join(DIR), id);
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).expect("write");
        let catalog = Catalog::open(dir.path()).expect("opens; the file is read when used");
        let err = catalog.tags().recommenders["r"]
            .model()
            .expect_err("damaged")
            .to_string();
        assert!(
            err.starts_with(&format!("corrupted data in {}: checksum", file.display())),
            "{err}"
        );
        let report = crate::check::check(dir.path());
        assert_eq!(report.recommenders, 1);
        assert_eq!(report.problems, vec![err]);
    }

    /// A fault at any write of CREATE RECOMMENDER leaves, after a reopen,
    /// either no recommender or one whose file reads back whole, and no
    /// leftover files.
    #[test]
    fn faults_never_leave_a_recommender_half_written() {
        for n in 1..=10 {
            for fault in [Fault::Fail, Fault::ShortWrite, Fault::DiskFull] {
                let dir = tempfile::tempdir().expect("tempdir");
                let storage = Arc::new(Faulty::default());
                let catalog =
                    Catalog::open_with(dir.path(), Arc::clone(&storage) as Arc<dyn Storage>)
                        .expect("open");
                events(&catalog, &ROWS);
                storage.arm(n, fault);
                let created = catalog.create_recommender("r", definition("item_knn", false), false);
                storage.disarm();
                catalog.close_without_checkpoint();
                drop(catalog);
                let context = format!("fault {fault:?} at operation {n}: {created:?}");
                let catalog = Catalog::open(dir.path()).expect(&context);
                match catalog.tags().recommenders.get("r") {
                    Some(stored) => {
                        stored.model().expect(&context);
                    }
                    None => assert!(created.is_err(), "{context}"),
                }
                drop(catalog);
                let report = crate::check::check(dir.path());
                assert!(
                    report.problems.is_empty(),
                    "{context}: {:?}",
                    report.problems
                );
                assert!(
                    report.leftovers.is_empty(),
                    "{context}: {:?}",
                    report.leftovers
                );
            }
        }
    }
}

//! A built recommender as one file (docs/format.md § Recommender files): a
//! checksummed JSON header naming the model and listing its sections, then
//! the sections, each a little-endian array with its own CRC-32C. Reading
//! checks every checksum and every index against the item and user counts,
//! so a damaged file is an error naming what is wrong, never a wrong answer.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Ease, Interactions, ItemKeys, ItemKnn, Model, Neighbour, Recommender, Similarity};
use crate::error::{Error, Result};
use crate::framing;

/// "CDBRECM" and format version 2 in the last byte.
pub(crate) const MAGIC: &[u8; 8] = b"CDBRECM\x02";
/// Magic, header length (u64), header CRC-32C (u32).
const PREFIX_BYTES: usize = 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    /// `item_knn`, `ease` or `popularity`.
    model: String,
    items: u64,
    /// `int` or `text`.
    item_keys: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    similarity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lambda: Option<f64>,
    sections: Vec<Section>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    name: String,
    offset: u64,
    bytes: u64,
    crc32c: u32,
}

/// Little-endian values of 4 or 8 bytes.
trait Plain: Sized + Copy {
    const BYTES: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("sized chunk"))
            }
        }
    )*};
}
plain!(u32, u64, i64, f32);

/// Collects the sections while encoding.
struct Writer {
    body: Vec<u8>,
    sections: Vec<Section>,
}

impl Writer {
    fn section<T: Plain>(&mut self, name: &str, values: impl IntoIterator<Item = T>) {
        let start = self.body.len();
        for v in values {
            v.put(&mut self.body);
        }
        self.raw_end(name, start);
    }

    fn raw(&mut self, name: &str, bytes: &[u8]) {
        let start = self.body.len();
        self.body.extend_from_slice(bytes);
        self.raw_end(name, start);
    }

    fn raw_end(&mut self, name: &str, start: usize) {
        self.sections.push(Section {
            name: name.to_string(),
            offset: start as u64,
            bytes: (self.body.len() - start) as u64,
            crc32c: crc32c::crc32c(&self.body[start..]),
        });
    }
}

/// The file's bytes for `recommender`.
pub(crate) fn encode(recommender: &Recommender) -> Vec<u8> {
    let mut w = Writer {
        body: Vec::new(),
        sections: Vec::new(),
    };
    let item_keys = match &recommender.items {
        ItemKeys::Int(keys) => {
            w.section("item_keys", keys.iter().copied());
            "int"
        }
        ItemKeys::Text(keys) => {
            let mut offset = 0u64;
            let ends = keys.iter().map(|k| {
                offset += k.len() as u64;
                offset
            });
            w.section("item_key_ends", ends);
            w.raw("item_key_text", keys.concat().as_bytes());
            "text"
        }
    };
    let data = &recommender.interactions;
    w.section("users", data.users.iter().copied());
    w.section("user_start", data.user_start.iter().map(|&s| s as u64));
    w.section("user_items", data.user_items.iter().copied());
    w.section("user_weights", data.user_weights.iter().copied());
    w.section("popularity", recommender.popularity.iter().copied());
    let (mut similarity, mut alpha, mut lambda) = (None, None, None);
    let model = match &recommender.model {
        Model::ItemKnn(knn) => {
            (similarity, alpha) = match knn.similarity {
                Similarity::Cosine => (Some("cosine"), None),
                Similarity::Jaccard => (Some("jaccard"), None),
                Similarity::AsymmetricCosine { alpha } => (Some("asymmetric_cosine"), Some(alpha)),
            };
            w.section("neighbour_start", knn.start.iter().map(|&s| s as u64));
            w.section("neighbour_items", knn.neighbours.iter().map(|n| n.item));
            w.section(
                "neighbour_similarity",
                knn.neighbours.iter().map(|n| n.similarity),
            );
            w.section("neighbour_common", knn.neighbours.iter().map(|n| n.common));
            "item_knn"
        }
        Model::Ease(ease) => {
            lambda = Some(ease.lambda);
            w.section("ease_weights", ease.weights.iter().copied());
            "ease"
        }
        Model::Popularity(_) => "popularity",
    };
    let header = Header {
        model: model.to_string(),
        items: data.items as u64,
        item_keys: item_keys.to_string(),
        similarity: similarity.map(str::to_string),
        alpha,
        lambda,
        sections: w.sections,
    };
    let header = serde_json::to_vec(&header).expect("a header serialises");
    let mut out = Vec::with_capacity(PREFIX_BYTES + header.len() + w.body.len());
    out.extend_from_slice(MAGIC);
    (header.len() as u64).put(&mut out);
    crc32c::crc32c(&header).put(&mut out);
    out.extend_from_slice(&header);
    out.extend_from_slice(&w.body);
    out
}

/// Reads a recommender file's bytes; `path` names it in errors.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Recommender> {
    let corrupted = |reason: String| Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    };
    let prefix = framing::header(path, bytes, MAGIC, PREFIX_BYTES, "recommender file")?;
    let header_bytes = u64::get(&prefix[8..16]) as usize;
    let header = bytes
        .get(PREFIX_BYTES..PREFIX_BYTES.saturating_add(header_bytes))
        .ok_or_else(|| corrupted("the file is shorter than its header".to_string()))?;
    if crc32c::crc32c(header) != u32::get(&prefix[16..20]) {
        return Err(corrupted(
            "the header's checksum does not match".to_string(),
        ));
    }
    let header: Header = serde_json::from_slice(header)
        .map_err(|e| corrupted(format!("the header is not valid: {e}")))?;
    let body = &bytes[PREFIX_BYTES + header_bytes..];
    let section = |name: &str| -> Result<&[u8]> {
        let s = header
            .sections
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| corrupted(format!("section {name} is missing")))?;
        let range = usize::try_from(s.offset)
            .ok()
            .zip(usize::try_from(s.offset.saturating_add(s.bytes)).ok())
            .filter(|&(_, end)| end <= body.len())
            .ok_or_else(|| corrupted(format!("section {name} runs past the end of the file")))?;
        let bytes = &body[range.0..range.1];
        if crc32c::crc32c(bytes) != s.crc32c {
            return Err(corrupted(format!(
                "section {name}'s checksum does not match"
            )));
        }
        Ok(bytes)
    };
    fn values<T: Plain>(bytes: &[u8]) -> Option<Vec<T>> {
        bytes
            .len()
            .is_multiple_of(T::BYTES)
            .then(|| bytes.chunks_exact(T::BYTES).map(T::get).collect())
    }
    let array = |name: &str| -> Result<&[u8]> { section(name) };
    macro_rules! read {
        ($t:ty, $name:expr) => {
            values::<$t>(array($name)?).ok_or_else(|| {
                corrupted(format!("section {} is not a whole number of values", $name))
            })?
        };
    }
    let items = usize::try_from(header.items)
        .map_err(|_| corrupted("the item count does not fit in memory".to_string()))?;
    let item_keys = match header.item_keys.as_str() {
        "int" => ItemKeys::Int(read!(i64, "item_keys")),
        "text" => {
            let ends: Vec<u64> = read!(u64, "item_key_ends");
            let text = std::str::from_utf8(array("item_key_text")?)
                .map_err(|_| corrupted("item_key_text is not UTF-8".to_string()))?;
            let mut keys = Vec::with_capacity(ends.len());
            let mut start = 0usize;
            for end in ends {
                let end = end as usize;
                let key = (start <= end)
                    .then(|| text.get(start..end))
                    .flatten()
                    .ok_or_else(|| corrupted("item_key_ends do not split the text".to_string()))?;
                keys.push(key.to_string());
                start = end;
            }
            ItemKeys::Text(keys)
        }
        other => return Err(corrupted(format!("unknown item key type {other:?}"))),
    };
    if item_keys.len() != items {
        return Err(corrupted(format!(
            "{} item keys for {items} items",
            item_keys.len()
        )));
    }
    let users: Vec<u32> = read!(u32, "users");
    let user_start: Vec<usize> = read!(u64, "user_start")
        .into_iter()
        .map(|s: u64| s as usize)
        .collect();
    let user_items: Vec<u32> = read!(u32, "user_items");
    let user_weights: Vec<f32> = read!(f32, "user_weights");
    let popularity: Vec<f32> = read!(f32, "popularity");
    let offsets_ok = |start: &[usize], rows: usize, len: usize| {
        start.len() == rows + 1
            && start.first() == Some(&0)
            && start.last() == Some(&len)
            && start.windows(2).all(|w| w[0] <= w[1])
    };
    if !users.windows(2).all(|w| w[0] < w[1])
        || !offsets_ok(&user_start, users.len(), user_items.len())
        || user_weights.len() != user_items.len()
        || user_items.iter().any(|&i| i as usize >= items)
        || popularity.len() != items
    {
        return Err(corrupted(
            "the interactions are inconsistent (user order, offsets or item indices)".to_string(),
        ));
    }
    let rows_ascending = (0..users.len()).all(|row| {
        user_items[user_start[row]..user_start[row + 1]]
            .windows(2)
            .all(|w| w[0] < w[1])
    });
    if !rows_ascending {
        return Err(corrupted(
            "a user's items are not in ascending order or repeat".to_string(),
        ));
    }
    let data = Interactions::from_rows(items, users, user_start, user_items, user_weights);
    let model = match header.model.as_str() {
        "item_knn" => {
            let similarity = match (header.similarity.as_deref(), header.alpha) {
                (Some("cosine"), None) => Similarity::Cosine,
                (Some("jaccard"), None) => Similarity::Jaccard,
                (Some("asymmetric_cosine"), Some(alpha)) => Similarity::AsymmetricCosine { alpha },
                (other, _) => {
                    return Err(corrupted(format!("unknown similarity {other:?}")));
                }
            };
            let start: Vec<usize> = read!(u64, "neighbour_start")
                .into_iter()
                .map(|s: u64| s as usize)
                .collect();
            let neighbour_items: Vec<u32> = read!(u32, "neighbour_items");
            let similarities: Vec<f32> = read!(f32, "neighbour_similarity");
            let common: Vec<u32> = read!(u32, "neighbour_common");
            if !offsets_ok(&start, items, neighbour_items.len())
                || similarities.len() != neighbour_items.len()
                || common.len() != neighbour_items.len()
                || neighbour_items.iter().any(|&i| i as usize >= items)
            {
                return Err(corrupted(
                    "the neighbour lists are inconsistent (offsets or item indices)".to_string(),
                ));
            }
            let neighbours = (0..neighbour_items.len())
                .map(|k| Neighbour {
                    item: neighbour_items[k],
                    similarity: similarities[k],
                    common: common[k],
                })
                .collect();
            Model::ItemKnn(ItemKnn::from_lists(similarity, start, neighbours))
        }
        "ease" => {
            let lambda = header
                .lambda
                .ok_or_else(|| corrupted("an EASE model without lambda".to_string()))?;
            let weights: Vec<f32> = read!(f32, "ease_weights");
            if weights.len() != items.saturating_mul(items) {
                return Err(corrupted(format!(
                    "{} EASE weights for {items} items",
                    weights.len()
                )));
            }
            Model::Ease(Ease {
                lambda,
                items,
                weights,
            })
        }
        "popularity" => Model::Popularity(popularity.clone()),
        other => return Err(corrupted(format!("unknown model {other:?}"))),
    };
    Ok(Recommender::new(item_keys, data, popularity, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(keys: ItemKeys, model: &str) -> Recommender {
        let data = crate::recommend::tests::small();
        let popularity = data.popularity(false);
        let model = match model {
            "knn" => Model::ItemKnn(ItemKnn::build(
                &data,
                Similarity::AsymmetricCosine { alpha: 0.3 },
                1,
            )),
            "ease" => Model::Ease(Ease::build(&data, 2.0).expect("fits")),
            _ => Model::Popularity(popularity.clone()),
        };
        Recommender::new(keys, data, popularity, model)
    }

    #[test]
    fn every_model_reads_back_as_written() {
        let path = Path::new("r.rec");
        for (keys, model) in [
            (ItemKeys::Int(vec![7, -3, 1 << 40]), "knn"),
            (
                ItemKeys::Text(vec!["a".into(), "".into(), "日本".into()]),
                "ease",
            ),
            (ItemKeys::Int(vec![1, 2, 3]), "popularity"),
        ] {
            let recommender = built(keys, model);
            let bytes = encode(&recommender);
            assert_eq!(&bytes[..8], MAGIC);
            assert_eq!(decode(path, &bytes).expect("reads"), recommender);
        }
    }

    #[test]
    fn damage_is_reported_not_read() {
        let path = Path::new("r.rec");
        let bytes = encode(&built(ItemKeys::Int(vec![7, 8, 9]), "knn"));
        let message = |bytes: &[u8]| decode(path, bytes).expect_err("damaged").to_string();
        // The last byte is the end of the last section (neighbour_common).
        let mut flipped = bytes.clone();
        *flipped.last_mut().expect("bytes") ^= 1;
        assert_eq!(
            message(&flipped),
            "corrupted data in r.rec: section neighbour_common's checksum does not match"
        );
        assert_eq!(
            message(&bytes[..bytes.len() - 1]),
            "corrupted data in r.rec: section neighbour_common runs past the end of the file"
        );
        let mut header = bytes.clone();
        header[PREFIX_BYTES + 2] ^= 1;
        assert_eq!(
            message(&header),
            "corrupted data in r.rec: the header's checksum does not match"
        );
        assert_eq!(
            message(&bytes[..10]),
            "corrupted data in r.rec: the file is shorter than its header"
        );
        let mut magic = bytes;
        magic[0] = b'X';
        assert_eq!(
            message(&magic),
            "corrupted data in r.rec: not a recommender file of format version 2 (bad magic)"
        );
    }
}

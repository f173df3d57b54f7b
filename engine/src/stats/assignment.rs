//! Deterministic assignment of users to experiment variations, bit-compatible with
//! GrowthBook's SDKs (packages/sdk-js `util.ts`), so an application and the
//! database agree on who saw which variation.
//!
//! Strings are hashed as UTF-16 code units, as the JavaScript SDK does. For
//! characters in the Basic Multilingual Plane that equals the Python SDK (which
//! hashes code points); they differ only for characters outside it (emoji, rare
//! CJK), where this matches JavaScript. SDKs that hash UTF-8 bytes (the Rust SDK)
//! differ for every non-ASCII id.

/// 32-bit FNV-1a over the UTF-16 code units of `text`.
pub fn fnv1a32(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for unit in text.encode_utf16() {
        hash ^= u32::from(unit);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// GrowthBook's hash of `value` under `seed`, a number in [0, 1): version 1 has
/// 1,000 buckets, version 2 (better distributed) 10,000. Other versions: `None`.
pub fn hash(seed: &str, value: &str, version: u32) -> Option<f64> {
    match version {
        1 => Some(f64::from(fnv1a32(&format!("{value}{seed}")) % 1000) / 1000.0),
        2 => {
            let inner = fnv1a32(&format!("{seed}{value}"));
            Some(f64::from(fnv1a32(&inner.to_string()) % 10_000) / 10_000.0)
        }
        _ => None,
    }
}

/// The [start, end) range of each variation: consecutive slices of [0, 1] sized by
/// `weights` (equal weights when missing, of the wrong length, or not summing to
/// 1 ± 0.01), each shrunk to `coverage` (clamped to [0, 1]) of its slice.
pub fn bucket_ranges(variations: usize, coverage: f64, weights: Option<&[f64]>) -> Vec<(f64, f64)> {
    let coverage = if coverage.is_nan() {
        0.0
    } else {
        coverage.clamp(0.0, 1.0)
    };
    let equal = vec![1.0 / variations as f64; variations];
    let weights = match weights {
        Some(w) if w.len() == variations && (0.99..=1.01).contains(&w.iter().sum::<f64>()) => w,
        _ => &equal,
    };
    let mut start = 0.0;
    weights
        .iter()
        .map(|&w| {
            let range = (start, start + coverage * w);
            start += w;
            range
        })
        .collect()
}

/// The variation whose range holds `n`, if any.
pub fn choose_variation(n: f64, ranges: &[(f64, f64)]) -> Option<usize> {
    ranges
        .iter()
        .position(|&(start, end)| n >= start && n < end)
}

/// Whether `value` falls in the namespace slice [start, end) of namespace `id`.
pub fn in_namespace(value: &str, id: &str, start: f64, end: f64) -> bool {
    let n = hash(&format!("__{id}"), value, 1).expect("version 1 exists");
    n >= start && n < end
}

/// The variation a user is assigned in an experiment, or `None` when outside the
/// experiment's coverage: GrowthBook's `hash(seed, id)` then `chooseVariation`.
pub fn assign(
    user: &str,
    seed: &str,
    weights: &[f64],
    coverage: f64,
    version: u32,
) -> Option<usize> {
    let n = hash(seed, user, version)?;
    choose_variation(n, &bucket_ranges(weights.len(), coverage, Some(weights)))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vectors() -> Value {
        let text = include_str!("../../../tests/fixtures/experiment_refs.json");
        let refs: Value = serde_json::from_str(text).expect("fixture parses");
        refs["assignment_vectors"].clone()
    }

    fn float_list(v: &Value) -> Vec<f64> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    }

    fn ranges(v: &Value) -> Vec<(f64, f64)> {
        v.as_array()
            .expect("ranges")
            .iter()
            .map(|r| (r[0].as_f64().expect("start"), r[1].as_f64().expect("end")))
            .collect()
    }

    #[test]
    fn growthbook_hash_vectors() {
        let cases = vectors()["hash_cases"].as_array().expect("cases").clone();
        assert_eq!(cases.len(), 15);
        for case in cases {
            let (seed, value) = (
                case[0].as_str().expect("seed"),
                case[1].as_str().expect("value"),
            );
            let version = case[2].as_u64().expect("version") as u32;
            assert_eq!(hash(seed, value, version), case[3].as_f64(), "{case}");
        }
    }

    #[test]
    fn growthbook_bucket_ranges_and_choice() {
        let v = vectors();
        for case in v["getBucketRange_cases"].as_array().expect("cases") {
            let args = &case[1];
            let weights = args[2].as_array().map(|_| float_list(&args[2]));
            let actual = bucket_ranges(
                args[0].as_u64().expect("n") as usize,
                args[1].as_f64().expect("coverage"),
                weights.as_deref(),
            );
            let expected = ranges(&case[2]);
            assert_eq!(actual.len(), expected.len(), "{}", case[0]);
            for (a, e) in actual.iter().zip(&expected) {
                assert!(
                    (a.0 - e.0).abs() < 1e-12 && (a.1 - e.1).abs() < 1e-12,
                    "{}: {actual:?}",
                    case[0]
                );
            }
        }
        for case in v["chooseVariation_cases"].as_array().expect("cases") {
            let expected = case[3].as_i64().expect("variation");
            let actual = choose_variation(case[1].as_f64().expect("n"), &ranges(&case[2]));
            assert_eq!(actual.map_or(-1, |i| i as i64), expected, "{}", case[0]);
        }
    }

    #[test]
    fn growthbook_namespaces_and_examples() {
        let v = vectors();
        for case in v["inNamespace_cases"].as_array().expect("cases") {
            let ns = &case[2];
            let actual = in_namespace(
                case[1].as_str().expect("id"),
                ns[0].as_str().expect("namespace"),
                ns[1].as_f64().expect("start"),
                ns[2].as_f64().expect("end"),
            );
            assert_eq!(actual, case[3].as_bool().expect("expected"), "{}", case[0]);
        }
        for example in v["extra_examples"].as_array().expect("examples") {
            let seed = example["seed"].as_str().expect("seed");
            let user = example["hash_value"].as_str().expect("user");
            let version = example["hash_version"].as_u64().expect("version") as u32;
            assert_eq!(
                hash(seed, user, version),
                example["n"].as_f64(),
                "{example}"
            );
            let variation = assign(
                user,
                seed,
                &float_list(&example["weights"]),
                example["coverage"].as_f64().expect("coverage"),
                version,
            );
            assert_eq!(
                variation.map_or(-1, |i| i as i64),
                example["variation"].as_i64().expect("variation"),
                "{example}"
            );
        }
        // Non-ASCII ids hash as the JavaScript SDK does (UTF-16 code units).
        for case in v["non_ascii_divergence"].as_array().expect("cases") {
            let value = case["value"].as_str().expect("value");
            let expected = case["js_utf16_units"].as_f64();
            assert_eq!(
                hash(case["seed"].as_str().expect("seed"), value, 2),
                expected,
                "{case}"
            );
        }
    }
}

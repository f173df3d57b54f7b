//! Consent: the suppression tag. Its users (those who opted out) are left out
//! of every audience a reader selects — counts, lists, profiles, overlaps,
//! samples, scan filters, lookalike output and personalised recommendations —
//! unless the reader asks for them explicitly ([`Policy::include_suppressed`],
//! which the SQL layer grants only to superusers, for compliance reporting).
//!
//! The suppression tag is named by the database ([`Privacy`], kept in the
//! manifest and the log); it is a stored tag or segment, so it may be a rule
//! (`CREATE TAG opted_out AS SELECT user_id FROM users WHERE NOT consent`) or
//! an audience (`CREATE SEGMENT opted_out AS 'consent=withdrawn OR ...'`).
//! While no tag of that name exists nobody is suppressed; the tag that is in
//! force cannot be dropped.
//!
//! Pseudonymisation: the database holds named secret keys ([`PseudonymKey`],
//! kept with the privacy settings); a value's pseudonym is the HMAC-SHA-256
//! of its text under a key, so it is the same wherever the same key is used,
//! and nobody without the key can compute it or turn it back. A new database
//! has a key named [`DEFAULT_PSEUDONYM_KEY`]; keys are created, rotated (a
//! new secret: pseudonyms from before no longer match) and dropped by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::audience::{self, Audience, TagSource, Term};
use crate::error::{Error, Result};
use crate::roles::{Object, Privilege, Role};
use crate::tags::{ColumnTags, Tags};

/// An audience over the values of an indexed column ([`Tags::profile`]).
#[derive(Debug)]
pub struct Profile<'a> {
    pub column: &'a ColumnTags,
    /// The audience's users.
    pub size: u64,
    /// Every user the policy sees.
    pub population: u64,
    /// The audience's users having each value, in key order.
    pub users: Vec<u64>,
    /// The population's users having each value, in key order.
    pub value_populations: Vec<u64>,
}

/// The suppression tag of a new database.
pub const DEFAULT_SUPPRESSION_TAG: &str = "opted_out";

/// The pseudonym key a new database has, which `pseudonymize(value)` uses.
pub const DEFAULT_PSEUDONYM_KEY: &str = "default";

/// The bytes of a key's secret: what a fresh key gets, and the least and
/// most a given one may have.
const SECRET_BYTES: usize = 32;
const SECRET_BYTES_MIN: usize = 16;
const SECRET_BYTES_MAX: usize = 1024;

/// The database's privacy settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// The tag or segment whose users audiences leave out; empty: none.
    pub suppression_tag: String,
    /// The pseudonymisation keys, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pseudonym_keys: BTreeMap<String, PseudonymKey>,
}

/// The settings of a database made before keys existed: no keys.
impl Default for Privacy {
    fn default() -> Privacy {
        Privacy {
            suppression_tag: DEFAULT_SUPPRESSION_TAG.to_string(),
            pseudonym_keys: BTreeMap::new(),
        }
    }
}

impl Privacy {
    /// A new database's settings: the default suppression tag and a fresh
    /// key named [`DEFAULT_PSEUDONYM_KEY`].
    pub fn new_database(now_micros: i64) -> Result<Privacy> {
        let mut privacy = Privacy::default();
        privacy.pseudonym_keys.insert(
            DEFAULT_PSEUDONYM_KEY.to_string(),
            PseudonymKey::new(None, now_micros)?,
        );
        Ok(privacy)
    }

    /// The key `name`.
    pub fn pseudonym_key(&self, name: &str) -> Result<&PseudonymKey> {
        self.pseudonym_keys
            .get(name)
            .ok_or_else(|| Error::PseudonymKeyNotFound(name.to_string()))
    }
}

/// A secret key for pseudonyms. Its secret never leaves it (nor shows in
/// `Debug`); it only computes pseudonyms.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymKey {
    /// The HMAC key, as hex digits in the manifest and the log.
    #[serde(with = "hex_bytes")]
    secret: Vec<u8>,
    /// 1 when created; one more at each rotation.
    pub version: u32,
    /// When it was created and last given a new secret (microseconds since
    /// 1970 UTC).
    pub created_micros: i64,
    pub rotated_micros: i64,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymKey")
            .field("secret", &"(hidden)")
            .field("version", &self.version)
            .field("created_micros", &self.created_micros)
            .field("rotated_micros", &self.rotated_micros)
            .finish()
    }
}

impl PseudonymKey {
    /// A key with `secret` (checked: 16 to 1,024 bytes), or a fresh random
    /// one of 32 bytes.
    pub fn new(secret: Option<Vec<u8>>, now_micros: i64) -> Result<PseudonymKey> {
        Ok(PseudonymKey {
            secret: secret_or_random(secret)?,
            version: 1,
            created_micros: now_micros,
            rotated_micros: now_micros,
        })
    }

    /// This key with a new secret (given, or fresh).
    pub fn rotated(&self, secret: Option<Vec<u8>>, now_micros: i64) -> Result<PseudonymKey> {
        Ok(PseudonymKey {
            secret: secret_or_random(secret)?,
            version: self.version + 1,
            created_micros: self.created_micros,
            rotated_micros: now_micros,
        })
    }

    /// The pseudonym of `value`: HMAC-SHA-256 under this key.
    pub fn pseudonymize(&self, value: &[u8]) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

/// The bytes of a secret written as hex digits (`'\x'` before them, as
/// PostgreSQL writes bytea, is allowed).
pub fn parse_secret(text: &str) -> Result<Vec<u8>> {
    let digits = text.strip_prefix("\\x").unwrap_or(text);
    hex_bytes::decode(digits).map_err(|reason| {
        Error::InvalidArgument(format!("a pseudonym key's secret is hex digits: {reason}"))
    })
}

fn secret_or_random(secret: Option<Vec<u8>>) -> Result<Vec<u8>> {
    match secret {
        Some(secret) if (SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&secret.len()) => Ok(secret),
        Some(secret) => Err(Error::InvalidArgument(format!(
            "a pseudonym key's secret has {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes \
             ({} to {} hex digits), not {}",
            2 * SECRET_BYTES_MIN,
            2 * SECRET_BYTES_MAX,
            secret.len()
        ))),
        None => {
            let mut secret = vec![0; SECRET_BYTES];
            getrandom::fill(&mut secret).map_err(|e| {
                Error::InvalidArgument(format!(
                    "no random bytes for a pseudonym key from the operating system: {e}"
                ))
            })?;
            Ok(secret)
        }
    }
}

/// Bytes as lowercase hex digits in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub(super) fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn decode(text: &str) -> Result<Vec<u8>, String> {
        if !text.len().is_multiple_of(2) {
            return Err(format!("an odd number of digits ({})", text.len()));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                let pair = text.get(i..i + 2).unwrap_or("");
                match pair.bytes().all(|b| b.is_ascii_hexdigit()) && pair.len() == 2 {
                    true => Ok(u8::from_str_radix(pair, 16).expect("two hex digits")),
                    false => Err(format!("no hex digits at character {}", i + 1)),
                }
            })
            .collect()
    }
}

/// Hex digits of `bytes`, lowercase: how a pseudonym is shown.
pub fn to_hex(bytes: &[u8]) -> String {
    hex_bytes::encode(bytes)
}

/// How a reader selects users: the day `DURING LAST n DAYS` counts back from,
/// whether the suppression tag's users are left out, the fewest users a
/// count it is shown may have, and whose privileges decide which tags it may
/// use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Days since 1970-01-01 UTC.
    pub today: i32,
    /// Keep the suppression tag's users (compliance reporting); off for
    /// every ordinary reader.
    pub include_suppressed: bool,
    /// Counts below this are not shown ([`Tags::reportable_count`]); 0: all
    /// are. A reader with a threshold is shown no users either (the SQL
    /// layer refuses the functions that name them).
    pub min_audience_size: u64,
    /// The role reading, when its privileges limit the tags an expression
    /// may use ([`Tags::check_usage`]); `None`: any tag (a superuser, or the
    /// engine itself).
    pub reader: Option<Arc<Role>>,
}

impl Policy {
    /// An ordinary reader's policy as of `today`: suppressed users left out.
    pub fn new(today: i32) -> Policy {
        Policy {
            today,
            include_suppressed: false,
            min_audience_size: 0,
            reader: None,
        }
    }

    /// Every user counts: what a stored tag records (suppression applies when
    /// it is read, so a user who opts back in is not lost from it).
    pub fn everyone(today: i32) -> Policy {
        Policy {
            today,
            include_suppressed: true,
            min_audience_size: 0,
            reader: None,
        }
    }

    /// Whether the reader may use `object` (USAGE; a tag index's tags also
    /// with SELECT on its table).
    pub fn may_use(&self, object: &Object) -> bool {
        let Some(role) = &self.reader else {
            return true;
        };
        role.may(Privilege::Usage, object)
            || matches!(object, Object::TagIndex(table)
                if role.may(Privilege::Select, &Object::Table(table.clone())))
    }

    /// An error unless the reader may use `object`.
    pub fn check_use(&self, object: &Object) -> Result<()> {
        match self.may_use(object) {
            true => Ok(()),
            false => Err(Error::PermissionDenied(format!(
                "permission denied for {}",
                object.describe()
            ))),
        }
    }
}

impl Tags {
    /// The suppression tag `policy` leaves out, if one is set and exists.
    pub fn suppression(&self, policy: &Policy) -> Option<&str> {
        let name = self.privacy.suppression_tag.as_str();
        (!policy.include_suppressed && !name.is_empty() && self.stored.contains_key(name))
            .then_some(name)
    }

    /// The users `policy` leaves out (`None`: nobody).
    pub fn suppressed(&self, policy: &Policy) -> Result<Option<RoaringBitmap>> {
        self.suppression(policy)
            .map(|name| {
                audience::evaluate(
                    &Audience::Term(Term::Tag(name.to_string())),
                    &self.source(policy.today),
                )
            })
            .transpose()
    }

    /// `audience` as `policy` reads it: refused unless its reader may use
    /// every tag it names ([`Tags::check_usage`]); without the suppressed
    /// users.
    pub fn with_policy(&self, audience: Audience, policy: &Policy) -> Result<Audience> {
        self.check_usage(&audience, policy)?;
        let Some(name) = self.suppression(policy) else {
            return Ok(audience);
        };
        let not_suppressed = Audience::Not(Box::new(Audience::Term(Term::Tag(name.to_string()))));
        Ok(match audience {
            Audience::And(mut parts) => {
                parts.push(not_suppressed);
                Audience::And(parts)
            }
            other => Audience::And(vec![other, not_suppressed]),
        })
    }

    /// An error unless `policy`'s reader may use every tag `audience` names:
    /// USAGE on each stored tag and segment (what a segment's expression
    /// names is its own affair, as a view's tables are), and USAGE on the tag
    /// index (or SELECT on the table) of each column tag. Names that are no
    /// tag are left to the evaluation to report.
    pub fn check_usage(&self, audience: &Audience, policy: &Policy) -> Result<()> {
        if policy.reader.is_none() {
            return Ok(());
        }
        let term = match audience {
            Audience::Term(term) | Audience::During(term, _) => term,
            Audience::Not(inner) => return self.check_usage(inner, policy),
            Audience::And(parts) | Audience::Or(parts) => {
                return parts.iter().try_for_each(|p| self.check_usage(p, policy));
            }
        };
        let column = match term {
            Term::Tag(name) if self.stored.contains_key(name) => {
                return policy.check_use(&Object::Tag(name.clone()));
            }
            Term::Tag(column)
            | Term::Equals { column, .. }
            | Term::In { column, .. }
            | Term::Compare { column, .. }
            | Term::Between { column, .. } => column,
        };
        match self.column(column) {
            Ok((table, _)) => policy.check_use(&Object::TagIndex(table.table_name.clone())),
            Err(_) => Ok(()),
        }
    }

    /// The users of the audience expression `text`.
    pub fn evaluate(&self, text: &str, policy: &Policy) -> Result<RoaringBitmap> {
        let audience = self.with_policy(audience::parse(text)?, policy)?;
        audience::evaluate(&audience, &self.source(policy.today))
    }

    /// The external ids of the users of the audience expression `text`, in
    /// ordinal order (listed key by key; no bitmap is built).
    pub fn audience_ids(&self, text: &str, policy: &Policy) -> Result<arrow::array::ArrayRef> {
        let audience = self.with_policy(audience::parse(text)?, policy)?;
        let mut ordinals = audience::ordinals(&audience, &self.source(policy.today))?;
        // Ascending: those of this state's users are a prefix, listed by
        // the dictionary at their known count.
        ordinals.truncate(ordinals.partition_point(|&o| o < self.users));
        Ok(self.dictionary()?.ids(ordinals))
    }

    /// How the audience expression `text` spreads over the values of the
    /// indexed column `dimension` ([`Tags::column`]), against everyone
    /// `policy` sees. Each audience user's value is looked up where no user
    /// has two ([`crate::tags::ValueTags::user_values`]); otherwise the
    /// audience is intersected with each value's users. The reader needs
    /// USAGE on the column's tag index besides what the expression names.
    pub fn profile(&self, text: &str, dimension: &str, policy: &Policy) -> Result<Profile<'_>> {
        let audience = self.with_policy(audience::parse(text)?, policy)?;
        let (table, column) = self.column(dimension)?;
        policy.check_use(&Object::TagIndex(table.table_name.clone()))?;
        let values = &column.values;
        let source = self.source(policy.today);
        let mut users = vec![0u64; values.len()];
        let size = match values.user_values()? {
            Some(user_values) => {
                let (mut size, mut block_users) = (0, Vec::new());
                audience::evaluate_blocks(&audience, &source, |key, block| {
                    let base = u32::from(key) << 16;
                    block.values_into(&mut block_users);
                    size += block_users.len() as u64;
                    let block_users = block_users.iter().map(|&v| base | u32::from(v));
                    user_values.count(block_users, &mut users);
                })?;
                size
            }
            None => {
                let audience = audience::evaluate(&audience, &source)?;
                for (count, entry) in users.iter_mut().zip(values.values()) {
                    *count = audience.intersection_len(entry.all.get()?);
                }
                audience.len()
            }
        };
        // A value's users all have a live row in its table, so they are all
        // in the universe: its population is its users, less the suppressed.
        let (population, value_populations) = match self.suppression(policy) {
            None => (
                audience::union_len(source.universe()?),
                values.values().map(|e| e.all.len()).collect(),
            ),
            Some(_) => {
                let seen = self.population(policy)?;
                let each = values
                    .values()
                    .map(|e| Ok(seen.intersection_len(e.all.get()?)));
                (seen.len(), each.collect::<Result<_>>()?)
            }
        };
        Ok(Profile {
            column,
            size,
            population,
            users,
            value_populations,
        })
    }

    /// How many users the audience expression `text` has.
    pub fn count(&self, text: &str, policy: &Policy) -> Result<u64> {
        let audience = self.with_policy(audience::parse(text)?, policy)?;
        audience::count(&audience, &self.source(policy.today))
    }

    /// How many users the audience expression `text` has, if `policy` may be
    /// shown it ([`Tags::may_count`]).
    pub fn reportable_count(&self, text: &str, policy: &Policy) -> Result<Option<u64>> {
        let users = self.count(text, policy)?;
        Ok(self.may_count(text, users, policy)?.then_some(users))
    }

    /// Whether `policy` may be shown that the audience expression `text` has
    /// `users` users: not when that is below its minimum audience size, nor
    /// when any part of the expression (a term, a group, what a NOT leaves
    /// out) is, so that a small group cannot be counted as the difference of
    /// two large ones (`A` less `A AND NOT x`).
    pub fn may_count(&self, text: &str, users: u64, policy: &Policy) -> Result<bool> {
        if policy.min_audience_size == 0 {
            return Ok(true);
        }
        if reportable(users, policy).is_none() {
            return Ok(false);
        }
        let audience = audience::parse(text)?;
        let mut parts = Vec::new();
        parts_of(&audience, &mut parts);
        for part in parts {
            let part = self.with_policy(part.clone(), policy)?;
            if audience::count(&part, &self.source(policy.today))? < policy.min_audience_size {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every user `policy` sees: the universe less the suppressed.
    pub fn population(&self, policy: &Policy) -> Result<RoaringBitmap> {
        let mut all = self.universe()?;
        if let Some(suppressed) = self.suppressed(policy)? {
            all -= suppressed;
        }
        Ok(all)
    }

    /// `users` less those `policy` leaves out.
    pub fn without_suppressed(
        &self,
        mut users: RoaringBitmap,
        policy: &Policy,
    ) -> Result<RoaringBitmap> {
        if let Some(suppressed) = self.suppressed(policy)? {
            users -= suppressed;
        }
        Ok(users)
    }

    /// Turns the ordinals of users `policy` leaves out into `None`, as if
    /// they were nobody: they get no score, reasons or personal list.
    pub fn forget_suppressed(&self, ordinals: &mut [Option<u32>], policy: &Policy) -> Result<()> {
        if let Some(suppressed) = self.suppressed(policy)? {
            for o in ordinals.iter_mut() {
                if o.is_some_and(|o| suppressed.contains(o)) {
                    *o = None;
                }
            }
        }
        Ok(())
    }

    /// Checks that `name` may become the suppression tag: empty (none), or
    /// an existing tag or segment.
    pub(crate) fn check_suppression_tag(&self, name: &str) -> Result<()> {
        if name.is_empty() || self.stored.contains_key(name) {
            Ok(())
        } else {
            Err(Error::UnknownTag(format!(
                "no tag or segment \"{name}\" to make the suppression tag (create it first)"
            )))
        }
    }

    /// Checks that the tag `name` may be dropped: not while it suppresses.
    pub(crate) fn check_not_suppression_tag(&self, name: &str) -> Result<()> {
        if self.privacy.suppression_tag == name {
            return Err(Error::InUse(format!(
                "cannot drop \"{name}\": it is the suppression tag, whose users every audience \
                 leaves out (ALTER SYSTEM SET suppression_tag = '' first, or replace it with \
                 CREATE OR REPLACE)"
            )));
        }
        Ok(())
    }
}

/// `users` if `policy` may be shown a count that small.
pub fn reportable(users: u64, policy: &Policy) -> Option<u64> {
    (users >= policy.min_audience_size).then_some(users)
}

/// The strict parts of `audience`: every operand of its ANDs, ORs and NOTs,
/// down to the terms.
fn parts_of<'a>(audience: &'a Audience, parts: &mut Vec<&'a Audience>) {
    let children: &[Audience] = match audience {
        Audience::Term(_) | Audience::During(..) => &[],
        Audience::Not(inner) => std::slice::from_ref(inner.as_ref()),
        Audience::And(all) | Audience::Or(all) => all,
    };
    for child in children {
        parts.push(child);
        parts_of(child, parts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 § 4.2 and § 4.7: HMAC-SHA-256 test cases 1 and 6.
    #[test]
    fn pseudonyms_are_hmac_sha256_as_rfc_4231_computes_them() {
        let key = |secret: Vec<u8>| PseudonymKey::new(Some(secret), 0).expect("key");
        assert_eq!(
            to_hex(&key(vec![0x0b; 20]).pseudonymize(b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            to_hex(
                &key(vec![0xaa; 131])
                    .pseudonymize(b"Test Using Larger Than Block-Size Key - Hash Key First")
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn secrets_are_checked_hidden_and_renewed() {
        assert_eq!(
            parse_secret("\\x0B0b").expect("hex"),
            vec![0x0b, 0x0b],
            "upper or lower case, with or without \\x"
        );
        for (text, reason) in [
            ("abc", "an odd number of digits (3)"),
            ("0g", "no hex digits at character 1"),
            ("00+1", "no hex digits at character 3"),
        ] {
            assert_eq!(
                parse_secret(text).expect_err(text).to_string(),
                format!("a pseudonym key's secret is hex digits: {reason}")
            );
        }
        assert_eq!(
            PseudonymKey::new(Some(vec![1; 15]), 0)
                .expect_err("short")
                .to_string(),
            "a pseudonym key's secret has 16 to 1024 bytes (32 to 2048 hex digits), not 15"
        );
        let key = PseudonymKey::new(Some(vec![7; 16]), 5).expect("key");
        assert!(!format!("{key:?}").contains("7, 7"));
        assert!(format!("{key:?}").contains("(hidden)"));
        let rotated = key.rotated(None, 9).expect("rotated");
        assert_eq!(
            (
                rotated.version,
                rotated.created_micros,
                rotated.rotated_micros
            ),
            (2, 5, 9)
        );
        assert_ne!(rotated.pseudonymize(b"x"), key.pseudonymize(b"x"));
        let fresh = Privacy::new_database(3).expect("new");
        let again = Privacy::new_database(3).expect("new");
        assert_ne!(
            fresh
                .pseudonym_key(DEFAULT_PSEUDONYM_KEY)
                .expect("default")
                .pseudonymize(b"x"),
            again
                .pseudonym_key(DEFAULT_PSEUDONYM_KEY)
                .expect("default")
                .pseudonymize(b"x"),
            "every database has its own default key"
        );
        let json = serde_json::to_string(&fresh).expect("json");
        assert_eq!(
            serde_json::from_str::<Privacy>(&json).expect("read back"),
            fresh
        );
        assert_eq!(
            serde_json::from_str::<Privacy>(r#"{"suppression_tag":"opted_out"}"#).expect("old"),
            Privacy::default()
        );
    }
}

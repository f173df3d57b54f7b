//! Users and roles: who may log in, whether they are superusers, and their
//! password as a SCRAM-SHA-256 verifier (never the password itself). The SQL
//! layer computes verifiers and the server checks logins against them; the
//! engine only keeps roles durable with the rest of the catalog, with the
//! privileges granted to each (docs/privacy.md § Grants).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    /// Whether the role may open a session.
    pub login: bool,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`, as
    /// PostgreSQL stores it; `None`: no password, so no password login.
    pub password: Option<String>,
    /// The fewest users a count this role sees may have (`ALTER ROLE ... SET
    /// min_audience_size`); 0: no threshold. A role with one sees audiences
    /// only as counts, never as users (privacy.rs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_audience_size: u64,
    /// May create, refresh and drop tags, segments and models (`GRANT CREATE
    /// TAG TO role`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub create_tag: bool,
    /// Privileges on tables, tags and the rest (`GRANT ... ON ... TO role`),
    /// one entry per object, in object order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a role may be granted on an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
    /// Using a tag, segment, tag index, model or recommender.
    Usage,
}

impl Privilege {
    /// The privileges `ALL` stands for on `object`.
    pub fn all_on(object: &Object) -> &'static [Privilege] {
        match object {
            Object::Table(_) => &[
                Privilege::Select,
                Privilege::Insert,
                Privilege::Update,
                Privilege::Delete,
            ],
            _ => &[Privilege::Usage],
        }
    }

    /// Whether it can be granted on `object`.
    pub fn applies_to(self, object: &Object) -> bool {
        Privilege::all_on(object).contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Usage => "USAGE",
        }
    }
}

/// Something privileges are granted on, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Object {
    Table(String),
    /// The column tags (`city=beijing`) of a table's tag index.
    TagIndex(String),
    /// A stored tag or a segment (one namespace).
    Tag(String),
    Model(String),
    Recommender(String),
}

impl Object {
    /// How PostgreSQL-style messages name it: `table t`, `tag vip`.
    pub fn describe(&self) -> String {
        match self {
            Object::Table(name) => format!("table {name}"),
            Object::TagIndex(name) => format!("tag index of table {name}"),
            Object::Tag(name) => format!("tag {name}"),
            Object::Model(name) => format!("model {name}"),
            Object::Recommender(name) => format!("recommender {name}"),
        }
    }
}

/// The privileges a role holds on one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub object: Object,
    pub privileges: BTreeSet<Privilege>,
}

impl Role {
    /// A role with no threshold, no privileges and no CREATE TAG.
    pub fn new(name: &str, superuser: bool, login: bool, password: Option<String>) -> Role {
        Role {
            name: name.to_string(),
            superuser,
            login,
            password,
            min_audience_size: 0,
            create_tag: false,
            grants: Vec::new(),
        }
    }

    /// Whether the role holds `privilege` on `object` (superusers hold all).
    pub fn may(&self, privilege: Privilege, object: &Object) -> bool {
        self.superuser
            || self
                .grants
                .iter()
                .any(|g| &g.object == object && g.privileges.contains(&privilege))
    }

    /// Adds `privileges` on `object`.
    pub fn grant(&mut self, object: &Object, privileges: &[Privilege]) {
        match self.grants.iter_mut().find(|g| &g.object == object) {
            Some(grant) => grant.privileges.extend(privileges),
            None => {
                self.grants.push(Grant {
                    object: object.clone(),
                    privileges: privileges.iter().copied().collect(),
                });
                self.grants.sort_by(|a, b| a.object.cmp(&b.object));
            }
        }
    }

    /// Takes `privileges` on `object` away.
    pub fn revoke(&mut self, object: &Object, privileges: &[Privilege]) {
        for grant in self.grants.iter_mut().filter(|g| &g.object == object) {
            for p in privileges {
                grant.privileges.remove(p);
            }
        }
        self.grants.retain(|g| !g.privileges.is_empty());
    }
}

/// Every role's grants on `object` dropped: what dropping the object does,
/// so that one made later under the same name starts with none.
pub(crate) fn forget_object(roles: &mut BTreeMap<String, Role>, object: &Object) -> bool {
    let mut changed = false;
    for role in roles.values_mut() {
        let before = role.grants.len();
        role.grants.retain(|g| &g.object != object);
        changed |= role.grants.len() != before;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_add_up_and_revokes_take_away() {
        let mut role = Role::new("analyst", false, true, None);
        let users = Object::Table("users".into());
        role.grant(&users, &[Privilege::Select]);
        role.grant(&users, &[Privilege::Insert, Privilege::Select]);
        role.grant(&Object::Tag("vip".into()), &[Privilege::Usage]);
        assert!(role.may(Privilege::Select, &users) && role.may(Privilege::Insert, &users));
        assert!(!role.may(Privilege::Delete, &users));
        assert!(!role.may(Privilege::Select, &Object::Table("events".into())));
        role.revoke(&users, &[Privilege::Select, Privilege::Insert]);
        assert_eq!(role.grants.len(), 1);
        assert_eq!(
            serde_json::to_string(&role.grants).expect("json"),
            r#"[{"object":{"kind":"tag","name":"vip"},"privileges":["USAGE"]}]"#
        );
        let mut roles = BTreeMap::from([("analyst".to_string(), role)]);
        assert!(forget_object(&mut roles, &Object::Tag("vip".into())));
        assert!(roles["analyst"].grants.is_empty());
        role = roles.remove("analyst").expect("role");
        role.superuser = true;
        assert!(role.may(Privilege::Delete, &users));
        assert!(Privilege::Usage.applies_to(&Object::Model("m".into())));
        assert!(!Privilege::Select.applies_to(&Object::Model("m".into())));
    }
}

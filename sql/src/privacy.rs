//! How a session reads users under the privacy rules (`engine::privacy`):
//! every function that selects users, and the scan filter `in_audience`
//! becomes, reads the tag store through the session's [`UserAccess`], whose
//! [`Policy`] leaves the suppression tag's users out unless the session set
//! `include_suppressed` (superusers only). A role with a minimum audience
//! size (`ALTER ROLE ... SET min_audience_size`) is shown no count below it
//! and no user at all: the functions that name users ask
//! [`UserAccess::naming_users`], which refuses it.

use std::sync::{Arc, Mutex};

use cohortdb_engine::Catalog;
use cohortdb_engine::privacy::Policy;
use cohortdb_engine::roles::{Object, Privilege, Role};
use cohortdb_engine::tags::Tags;

use crate::state::State;

/// The catalog as one session reads users from it.
#[derive(Debug)]
pub(crate) struct UserAccess {
    pub(crate) catalog: Arc<Catalog>,
    state: Arc<Mutex<State>>,
    /// Whose table privileges [`UserAccess::require`] checks instead of the
    /// session's, as a view's tables are read: its owner role (`Some`), or
    /// a superuser of no stored role (`None`).
    owner: Option<Option<String>>,
}

impl UserAccess {
    pub(crate) fn new(catalog: &Arc<Catalog>, state: &Arc<Mutex<State>>) -> Arc<UserAccess> {
        Arc::new(UserAccess {
            catalog: Arc::clone(catalog),
            state: Arc::clone(state),
            owner: None,
        })
    }

    /// The same session reading tables with a view owner's privileges:
    /// the role `owner`, or every privilege for `None` (views.rs).
    pub(crate) fn as_owner(&self, owner: Option<&str>) -> Arc<UserAccess> {
        Arc::new(UserAccess {
            catalog: Arc::clone(&self.catalog),
            state: Arc::clone(&self.state),
            owner: Some(owner.map(str::to_string)),
        })
    }

    /// The tag store as of now.
    pub(crate) fn tags(&self) -> Arc<Tags> {
        self.catalog.tags()
    }

    /// An error unless the session holds `privilege` on `object`.
    pub(crate) fn require(
        &self,
        privilege: Privilege,
        object: &Object,
    ) -> datafusion::common::Result<()> {
        let result = match &self.owner {
            Some(None) => Ok(()),
            Some(Some(owner)) => match self.catalog.role(owner) {
                Some(role) if role.superuser || role.may(privilege, object) => Ok(()),
                _ => Err(crate::error::Error::PermissionDenied {
                    message: format!(
                        "permission denied for {} (the owner of a view reading it, {owner}, lacks it)",
                        object.describe()
                    ),
                }),
            },
            None => {
                let state = self.state.lock().expect("session state lock");
                require(&self.catalog, &state, privilege, object)
            }
        };
        result.map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))
    }

    /// The session's policy now: today's date, and whether it keeps the
    /// suppressed users.
    pub(crate) fn policy(&self) -> Policy {
        policy(
            &self.catalog,
            &self.state.lock().expect("session state lock"),
        )
    }

    /// The session's policy, for `function`, which names users (lists them,
    /// tests one, scores one): refused to a role with a minimum audience
    /// size, which sees audiences only as counts.
    pub(crate) fn naming_users(&self, function: &str) -> datafusion::common::Result<Policy> {
        let policy = self.policy();
        match policy.min_audience_size {
            0 => Ok(policy),
            k => Err(datafusion::common::DataFusionError::External(Box::new(
                crate::error::Error::PermissionDenied {
                    message: format!(
                        "permission denied for function {function}: this role sees audiences \
                         only as counts of at least {k} users (min_audience_size)"
                    ),
                },
            ))),
        }
    }
}

/// The policy of a session in `state` over `catalog`.
pub(crate) fn policy(catalog: &Catalog, state: &State) -> Policy {
    Policy {
        reader: reader(catalog, state),
        today: cohortdb_engine::tags::today(),
        include_suppressed: state.settings.flag("include_suppressed"),
        min_audience_size: state
            .settings
            .get("min_audience_size")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// The role whose privileges limit what the session reads: `None` for a
/// superuser; a role no longer in the catalog holds no privileges.
pub(crate) fn reader(catalog: &Catalog, state: &State) -> Option<Arc<Role>> {
    if state.superuser() {
        return None;
    }
    let user = state.user();
    Some(Arc::new(
        catalog
            .role(&user)
            .unwrap_or_else(|| Role::new(&user, false, false, None)),
    ))
}

/// An error unless the session in `state` holds `privilege` on `object`.
pub(crate) fn require(
    catalog: &Catalog,
    state: &State,
    privilege: Privilege,
    object: &Object,
) -> crate::error::Result<()> {
    match reader(catalog, state) {
        Some(role) if !role.may(privilege, object) => Err(crate::error::Error::PermissionDenied {
            message: format!("permission denied for {}", object.describe()),
        }),
        _ => Ok(()),
    }
}

/// Functions are equal when they read through the same session.
impl PartialEq for UserAccess {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
            && Arc::ptr_eq(&self.state, &other.state)
            && self.owner == other.owner
    }
}
impl Eq for UserAccess {}

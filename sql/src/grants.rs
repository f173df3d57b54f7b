//! Privileges (docs/privacy.md § Grants): `GRANT` and `REVOKE`, and the
//! checks that hold an ordinary role to what it was granted.
//!
//! ```text
//! GRANT { privilege [, ...] | ALL [ PRIVILEGES ] }
//!     ON { [ TABLE ] name [, ...] | ALL TABLES IN SCHEMA public } TO role [, ...]
//! GRANT { USAGE | ALL [ PRIVILEGES ] }
//!     ON { TAG | SEGMENT | MODEL | RECOMMENDER | TAG INDEX } name [, ...] TO role [, ...]
//! GRANT CREATE TAG TO role [, ...]
//! REVOKE ... FROM role [, ...]                (the same forms)
//! ```
//!
//! Table privileges are SELECT, INSERT, UPDATE and DELETE; a query needs
//! SELECT on every table it reads (checked on the plan, so subqueries, COPY
//! TO and cursors too), INSERT/UPDATE/DELETE and COPY FROM need theirs. USAGE
//! on a tag, segment, tag index (its column tags), model or recommender lets
//! the role name it in audience expressions and functions; the engine checks
//! tags as it reads an expression ([`cohortdb_engine::privacy::Policy`]).
//! `CREATE TAG` lets a role create, refresh and drop tags, segments and
//! models. Superusers hold every privilege; only they grant and revoke.

use cohortdb_engine::roles::{Object, Privilege};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{Error, Result};
use crate::names;
use crate::session::Session;
use crate::tag_ddl::word;

/// A parsed `GRANT` or `REVOKE`.
#[derive(Debug, Clone)]
pub(crate) struct GrantStatement {
    pub revoke: bool,
    pub what: Granted,
    pub roles: Vec<String>,
}

/// What is granted.
#[derive(Debug, Clone)]
pub(crate) enum Granted {
    /// Privileges (`None`: ALL) on objects.
    Privileges {
        privileges: Option<Vec<Privilege>>,
        objects: Objects,
    },
    /// `CREATE TAG`.
    CreateTag,
}

#[derive(Debug, Clone)]
pub(crate) enum Objects {
    Named(Vec<Object>),
    /// `ALL TABLES IN SCHEMA public`: the tables and views there are when it
    /// runs.
    AllTables,
}

/// Parses a statement after its `GRANT` or `REVOKE`.
pub(crate) fn parse(
    p: &mut Parser,
    revoke: bool,
) -> std::result::Result<GrantStatement, ParserError> {
    let what = if p.parse_keyword(Keyword::CREATE) {
        if !word(p, "tag") {
            return p.expected("TAG (GRANT CREATE TAG TO role)", p.peek_token());
        }
        Granted::CreateTag
    } else {
        let privileges = if p.parse_keyword(Keyword::ALL) {
            let _ = p.parse_keyword(Keyword::PRIVILEGES);
            None
        } else {
            Some(p.parse_comma_separated(privilege)?)
        };
        p.expect_keyword(Keyword::ON)?;
        Granted::Privileges {
            privileges,
            objects: objects(p)?,
        }
    };
    let to = if revoke { Keyword::FROM } else { Keyword::TO };
    p.expect_keyword(to)?;
    let roles = p.parse_comma_separated(|p| Ok(names::normalize(&p.parse_identifier()?)))?;
    if p.parse_keywords(&[Keyword::WITH, Keyword::GRANT, Keyword::OPTION]) {
        return p.expected(
            "end of statement (WITH GRANT OPTION is not supported)",
            p.peek_token(),
        );
    }
    if revoke && matches!(p.peek_token().token, Token::Word(_)) {
        let _ = p.parse_keyword(Keyword::RESTRICT);
    }
    Ok(GrantStatement {
        revoke,
        what,
        roles,
    })
}

fn privilege(p: &mut Parser) -> std::result::Result<Privilege, ParserError> {
    let token = p.next_token();
    let Token::Word(w) = &token.token else {
        return p.expected("SELECT, INSERT, UPDATE, DELETE or USAGE", token);
    };
    Ok(match w.value.to_ascii_lowercase().as_str() {
        "select" => Privilege::Select,
        "insert" => Privilege::Insert,
        "update" => Privilege::Update,
        "delete" => Privilege::Delete,
        "usage" => Privilege::Usage,
        _ => return p.expected("SELECT, INSERT, UPDATE, DELETE or USAGE", token),
    })
}

/// `[TABLE] name, ...`, `ALL TABLES IN SCHEMA public`, or a kind of object
/// and names.
fn objects(p: &mut Parser) -> std::result::Result<Objects, ParserError> {
    if p.parse_keywords(&[Keyword::ALL, Keyword::TABLES, Keyword::IN, Keyword::SCHEMA]) {
        let schema = p.parse_identifier()?;
        if names::normalize(&schema) != "public" {
            return p.expected("public (the one schema)", p.peek_token());
        }
        return Ok(Objects::AllTables);
    }
    let kind: fn(String) -> Object = if word(p, "tag") {
        if word(p, "index") {
            let _ = p.parse_keyword(Keyword::ON);
            Object::TagIndex
        } else {
            Object::Tag
        }
    } else if word(p, "segment") {
        Object::Tag
    } else if word(p, "model") {
        Object::Model
    } else if word(p, "recommender") {
        Object::Recommender
    } else {
        let _ = p.parse_keyword(Keyword::TABLE);
        Object::Table
    };
    let names = p.parse_comma_separated(|p| {
        let name = p.parse_object_name(false)?;
        names::table_name(&name).map_err(|e| ParserError::ParserError(e.to_string()))
    })?;
    Ok(Objects::Named(names.into_iter().map(kind).collect()))
}

/// Runs a `GRANT` or `REVOKE`.
pub(crate) fn run(session: &Session, statement: GrantStatement) -> Result<()> {
    if !session.is_superuser() {
        return Err(Error::PermissionDenied {
            message: "must be superuser to grant or revoke privileges".into(),
        });
    }
    if statement.roles.iter().any(|r| r == "public") {
        return Err(Error::Unsupported {
            feature: "granting to PUBLIC (grant to roles)".into(),
            position: None,
        });
    }
    let catalog = session.catalog();
    match statement.what {
        Granted::CreateTag => {
            catalog.alter_roles(&statement.roles, |r| r.create_tag = !statement.revoke)?;
        }
        Granted::Privileges {
            privileges,
            objects,
        } => {
            let objects = match objects {
                Objects::Named(objects) => objects,
                // Views included, as in PostgreSQL.
                Objects::AllTables => catalog
                    .table_names()
                    .into_iter()
                    .chain(catalog.tags().views.keys().cloned())
                    .map(Object::Table)
                    .collect(),
            };
            // The objects of one statement are of one kind, so ALL means the
            // same privileges for each.
            let Some(first) = objects.first() else {
                return Ok(());
            };
            let privileges = privileges.unwrap_or_else(|| Privilege::all_on(first).to_vec());
            for object in &objects {
                if let Some(p) = privileges.iter().find(|p| !p.applies_to(object)) {
                    return Err(Error::InvalidGrant {
                        message: format!(
                            "invalid privilege type {} for {}",
                            p.as_str(),
                            object.describe()
                        ),
                    });
                }
            }
            catalog.change_grants(&statement.roles, &objects, &privileges, statement.revoke)?;
        }
    }
    Ok(())
}

/// Refuses `what` to a session that is not a superuser's.
pub(crate) fn superuser_only(session: &Session, what: &str) -> Result<()> {
    match session.is_superuser() {
        true => Ok(()),
        false => Err(Error::PermissionDenied {
            message: format!("must be superuser to {what}"),
        }),
    }
}

/// Refuses to change tags, segments and models to a session whose role is
/// neither a superuser nor granted CREATE TAG.
pub(crate) fn may_create_tags(session: &Session) -> Result<()> {
    if session.is_superuser()
        || session
            .catalog()
            .role(&session.user())
            .is_some_and(|r| r.create_tag)
    {
        return Ok(());
    }
    Err(Error::PermissionDenied {
        message: "permission denied to create, refresh or drop tags, segments and models \
                  (GRANT CREATE TAG TO role)"
            .into(),
    })
}

/// What a role that is not a superuser gets on what it created: USAGE.
pub(crate) fn grant_to_creator(session: &Session, object: Object) -> Result<()> {
    if session.is_superuser() {
        return Ok(());
    }
    session
        .catalog()
        .change_grants(&[session.user()], &[object], &[Privilege::Usage], false)?;
    Ok(())
}

/// An error unless the session's role holds `privilege` on `object`.
pub(crate) fn check(session: &Session, privilege: Privilege, object: &Object) -> Result<()> {
    crate::privacy::require(session.catalog(), &session.lock(), privilege, object)
}

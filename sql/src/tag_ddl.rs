//! The statements that define tags and segments, which the SQL parser does
//! not know:
//!
//! ```text
//! CREATE TAG INDEX ON table ( column [, ...] ) [ TIME column [ BY DAY ] ]
//! DROP TAG INDEX ON table [ ( column [, ...] ) ]
//! CREATE [ OR REPLACE ] TAG name AS query
//! CREATE [ OR REPLACE ] TAG name AS AUDIENCE 'expr'
//! CREATE [ OR REPLACE ] TAG name FROM BITMAP expr
//! CREATE [ OR REPLACE ] SEGMENT name AS 'expr' [ FROZEN ]
//! REFRESH { TAG | SEGMENT } name
//! DROP { TAG | SEGMENT } [ IF EXISTS ] name
//! CREATE [ OR REPLACE ] MODEL name AS LOOKALIKE ( 'seed' [, 'options'] )
//! REFRESH MODEL name
//! DROP MODEL [ IF EXISTS ] name
//! CREATE [ OR REPLACE ] RECOMMENDER name ON table ( user, item [, weight ] [, time ] )
//!     USING { item_knn | ease | popularity } [ 'options' ]
//! REFRESH RECOMMENDER name
//! DROP RECOMMENDER [ IF EXISTS ] name
//! ALTER SYSTEM SET suppression_tag { = | TO } { 'name' | name | DEFAULT }
//! ALTER SYSTEM RESET suppression_tag
//! CREATE PSEUDONYM KEY name [ SECRET 'hex' ]
//! ALTER PSEUDONYM KEY name ROTATE [ SECRET 'hex' ]
//! DROP PSEUDONYM KEY [ IF EXISTS ] name
//! FORGET USER id [, ...] [ IMMEDIATELY ]      (id: 'text' or an integer)
//! GRANT ... / REVOKE ...                       (grants.rs)
//! ```
//!
//! They are recognised in the token stream ([`split`]), checked with the SQL
//! parser's own building blocks (so errors carry positions), and travel to
//! [`run`] as `PRAGMA __cohortdb_tags = '<statement text>'`, the same way
//! `CHECKPOINT` travels as a PRAGMA. So is `USER KEY` in a column definition,
//! which reaches the parser as a column comment ([`user_key_as_comment`]).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use cohortdb_engine::roles::Object;
use cohortdb_engine::tags::{TagSourceKind, TagUsers, now_micros};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::names;
use crate::session::{Session, empty_stream};

/// The PRAGMA name tag statements travel under.
const PRAGMA: &str = "__cohortdb_tags";
/// The column comment `USER KEY` becomes.
pub(crate) const USER_KEY_COMMENT: &str = "__cohortdb_user_key";

/// A tag or segment statement.
#[derive(Debug, Clone)]
pub(crate) enum TagStatement {
    CreateIndex {
        table: String,
        columns: Vec<String>,
        time: Option<String>,
    },
    DropIndex {
        table: String,
        columns: Vec<String>,
    },
    Create {
        name: String,
        or_replace: bool,
        definition: Definition,
    },
    Refresh {
        name: String,
        segment: bool,
    },
    Drop {
        name: String,
        if_exists: bool,
        segment: bool,
    },
    CreateModel {
        name: String,
        or_replace: bool,
        seed: String,
        options: String,
    },
    RefreshModel {
        name: String,
    },
    DropModel {
        name: String,
        if_exists: bool,
    },
    CreateRecommender {
        name: String,
        or_replace: bool,
        table: String,
        columns: Vec<String>,
        algorithm: String,
        options: String,
    },
    RefreshRecommender {
        name: String,
    },
    DropRecommender {
        name: String,
        if_exists: bool,
    },
    /// `ALTER SYSTEM SET name = value`; `None`: RESET (or DEFAULT).
    AlterSystem {
        name: String,
        value: Option<String>,
    },
    /// `CREATE PSEUDONYM KEY` (`rotate`: false) or `ALTER PSEUDONYM KEY ...
    /// ROTATE`, with the secret's hex digits if given.
    PseudonymKey {
        name: String,
        rotate: bool,
        secret: Option<String>,
    },
    DropPseudonymKey {
        name: String,
        if_exists: bool,
    },
    /// `GRANT` or `REVOKE`.
    Grant(crate::grants::GrantStatement),
    /// `FORGET USER`, the ids as written.
    Forget {
        ids: Vec<String>,
        immediately: bool,
    },
}

/// What a tag or segment is made of.
#[derive(Debug, Clone)]
pub(crate) enum Definition {
    Query(Box<Query>),
    Audience(String),
    Bitmap(Box<Expr>),
    Segment { expr: String, frozen: bool },
}

impl TagStatement {
    /// The command tag PostgreSQL-style clients are told.
    pub(crate) fn command(&self) -> &'static str {
        match self {
            TagStatement::CreateIndex { .. } => "CREATE TAG INDEX",
            TagStatement::DropIndex { .. } => "DROP TAG INDEX",
            TagStatement::Create {
                definition: Definition::Segment { .. },
                ..
            } => "CREATE SEGMENT",
            TagStatement::Create { .. } => "CREATE TAG",
            TagStatement::Refresh { segment: true, .. } => "REFRESH SEGMENT",
            TagStatement::Refresh { .. } => "REFRESH TAG",
            TagStatement::Drop { segment: true, .. } => "DROP SEGMENT",
            TagStatement::Drop { .. } => "DROP TAG",
            TagStatement::CreateModel { .. } => "CREATE MODEL",
            TagStatement::RefreshModel { .. } => "REFRESH MODEL",
            TagStatement::DropModel { .. } => "DROP MODEL",
            TagStatement::CreateRecommender { .. } => "CREATE RECOMMENDER",
            TagStatement::RefreshRecommender { .. } => "REFRESH RECOMMENDER",
            TagStatement::DropRecommender { .. } => "DROP RECOMMENDER",
            TagStatement::AlterSystem { .. } => "ALTER SYSTEM",
            TagStatement::PseudonymKey { rotate: false, .. } => "CREATE PSEUDONYM KEY",
            TagStatement::PseudonymKey { rotate: true, .. } => "ALTER PSEUDONYM KEY",
            TagStatement::DropPseudonymKey { .. } => "DROP PSEUDONYM KEY",
            TagStatement::Forget { .. } => "FORGET USER",
            TagStatement::Grant(g) if g.revoke => "REVOKE",
            TagStatement::Grant(_) => "GRANT",
        }
    }
}

/// The tag statement a parsed statement carries, if it is one.
pub(crate) fn carried(statement: &Statement) -> Option<TagStatement> {
    let Statement::Pragma {
        name,
        value: Some(value),
        is_eq: true,
    } = statement
    else {
        return None;
    };
    if name.to_string() != PRAGMA {
        return None;
    }
    let Value::SingleQuotedString(text) = &value.value else {
        return None;
    };
    let tokens = tokenize(text).ok()?;
    parse(tokens).ok()
}

fn tokenize(sql: &str) -> std::result::Result<Vec<TokenWithSpan>, ParserError> {
    datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&PostgreSqlDialect {}, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(ParserError::from)
}

fn significant(token: &TokenWithSpan) -> bool {
    !matches!(token.token, Token::Whitespace(_))
}

fn is_word(token: &TokenWithSpan, word: &str) -> bool {
    matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Whether the tokens of one statement start a tag statement.
fn starts_tag_statement(tokens: &[TokenWithSpan]) -> bool {
    let words: Vec<&TokenWithSpan> = tokens.iter().filter(|t| significant(t)).take(4).collect();
    let at = |i: usize, w: &str| words.get(i).is_some_and(|t| is_word(t, w));
    let object =
        |i: usize| at(i, "tag") || at(i, "segment") || at(i, "model") || at(i, "recommender");
    (at(0, "create") && (object(1) || at(1, "pseudonym")))
        || (at(0, "create") && at(1, "or") && at(2, "replace") && object(3))
        || (at(0, "drop") && (object(1) || at(1, "pseudonym")))
        || (at(0, "refresh") && object(1))
        || (at(0, "alter") && (at(1, "system") || at(1, "pseudonym")))
        || (at(0, "forget") && at(1, "user"))
        || at(0, "grant")
        || at(0, "revoke")
}

/// The statements of `sql` (as `tokens`), tag statements replaced by the
/// PRAGMA that carries their text; `None` when there are no tag statements
/// (the caller parses the stream as it is).
pub(crate) fn split(
    sql: &str,
    tokens: &[TokenWithSpan],
) -> std::result::Result<Option<Vec<Statement>>, ParserError> {
    let groups = crate::session::statement_groups(tokens);
    if !groups.iter().any(|g| starts_tag_statement(g)) {
        return Ok(None);
    }
    let mut offsets = crate::session::Offsets::new(sql);
    let mut statements = Vec::new();
    for group in groups {
        let group = group.to_vec();
        if starts_tag_statement(&group) {
            parse(group.clone())?;
            let text = crate::session::source_text(&group, &mut offsets);
            statements.push(Statement::Pragma {
                name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(PRAGMA))]),
                value: Some(Value::SingleQuotedString(text.trim().to_string()).into()),
                is_eq: true,
            });
        } else {
            statements.extend(
                Parser::new(&PostgreSqlDialect {})
                    .with_tokens_with_locations(group)
                    .parse_statements()?,
            );
        }
    }
    Ok(Some(statements))
}

/// `USER KEY` in the column list of a CREATE TABLE, as the column comment
/// [`USER_KEY_COMMENT`] (the SQL parser has no such column option).
pub(crate) fn user_key_as_comment(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let first = tokens.iter().find(|t| significant(t));
    if !first.is_some_and(|t| is_word(t, "create")) {
        return tokens;
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let next = tokens[i + 1..]
            .iter()
            .position(significant)
            .map(|p| i + 1 + p);
        if is_word(&tokens[i], "user")
            && let Some(next) = next
            && is_word(&tokens[next], "key")
        {
            let span = tokens[i].span;
            out.push(TokenWithSpan::new(Token::make_keyword("COMMENT"), span));
            out.push(TokenWithSpan::new(
                Token::Whitespace(Whitespace::Space),
                span,
            ));
            out.push(TokenWithSpan::new(
                Token::SingleQuotedString(USER_KEY_COMMENT.to_string()),
                span,
            ));
            i = next + 1;
            continue;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

/// Parses one tag statement.
fn parse(tokens: Vec<TokenWithSpan>) -> std::result::Result<TagStatement, ParserError> {
    let mut p = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let statement = if p.parse_keyword(Keyword::CREATE) {
        let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        if word(&mut p, "tag") {
            if word(&mut p, "index") {
                if or_replace {
                    return p.expected("INDEX without OR REPLACE", p.peek_token());
                }
                p.expect_keyword(Keyword::ON)?;
                let table = p.parse_object_name(false)?;
                let columns = column_list(&mut p)?;
                let time = if word(&mut p, "time") {
                    let time = p.parse_identifier()?;
                    if p.parse_keyword(Keyword::BY) && !word(&mut p, "day") {
                        return p.expected("DAY (tags are bucketed by day)", p.peek_token());
                    }
                    Some(names::normalize(&time))
                } else {
                    None
                };
                TagStatement::CreateIndex {
                    table: object_name(&table)?,
                    columns,
                    time,
                }
            } else {
                let name = names::normalize(&p.parse_identifier()?);
                let definition = if p.parse_keyword(Keyword::AS) {
                    if word(&mut p, "audience") {
                        Definition::Audience(p.parse_literal_string()?)
                    } else {
                        Definition::Query(p.parse_query()?)
                    }
                } else if p.parse_keyword(Keyword::FROM) {
                    if !word(&mut p, "bitmap") {
                        return p.expected("BITMAP", p.peek_token());
                    }
                    Definition::Bitmap(Box::new(p.parse_expr()?))
                } else {
                    return p.expected("AS or FROM BITMAP", p.peek_token());
                };
                TagStatement::Create {
                    name,
                    or_replace,
                    definition,
                }
            }
        } else if word(&mut p, "segment") {
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_keyword(Keyword::AS)?;
            let expr = p.parse_literal_string()?;
            let frozen = word(&mut p, "frozen");
            TagStatement::Create {
                name,
                or_replace,
                definition: Definition::Segment { expr, frozen },
            }
        } else if word(&mut p, "model") {
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_keyword(Keyword::AS)?;
            if !word(&mut p, "lookalike") {
                return p.expected("LOOKALIKE", p.peek_token());
            }
            p.expect_token(&Token::LParen)?;
            let seed = p.parse_literal_string()?;
            let options = if p.consume_token(&Token::Comma) {
                p.parse_literal_string()?
            } else {
                String::new()
            };
            p.expect_token(&Token::RParen)?;
            TagStatement::CreateModel {
                name,
                or_replace,
                seed,
                options,
            }
        } else if word(&mut p, "recommender") {
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_keyword(Keyword::ON)?;
            let table = object_name(&p.parse_object_name(false)?)?;
            let list_start = p.peek_token();
            let columns = column_list(&mut p)?;
            if !(2..=4).contains(&columns.len()) {
                return p.expected(
                    "(user, item [, weight] [, time]): two to four columns",
                    list_start,
                );
            }
            p.expect_keyword(Keyword::USING)?;
            let algorithm = p.parse_identifier()?.value.to_ascii_lowercase();
            let options = match p.peek_token().token {
                Token::EOF => String::new(),
                _ => p.parse_literal_string()?,
            };
            TagStatement::CreateRecommender {
                name,
                or_replace,
                table,
                columns,
                algorithm,
                options,
            }
        } else if !or_replace && word(&mut p, "pseudonym") {
            let name = pseudonym_key_name(&mut p)?;
            let secret = secret(&mut p)?;
            TagStatement::PseudonymKey {
                name,
                rotate: false,
                secret,
            }
        } else {
            return p.expected("TAG, SEGMENT, MODEL or RECOMMENDER", p.peek_token());
        }
    } else if p.parse_keyword(Keyword::DROP) {
        if word(&mut p, "pseudonym") {
            if !word(&mut p, "key") {
                return p.expected("KEY", p.peek_token());
            }
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_token(&Token::EOF)?;
            return Ok(TagStatement::DropPseudonymKey { name, if_exists });
        }
        if word(&mut p, "model") {
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_token(&Token::EOF)?;
            return Ok(TagStatement::DropModel { name, if_exists });
        }
        if word(&mut p, "recommender") {
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_token(&Token::EOF)?;
            return Ok(TagStatement::DropRecommender { name, if_exists });
        }
        let segment = if word(&mut p, "tag") {
            if word(&mut p, "index") {
                p.expect_keyword(Keyword::ON)?;
                let table = p.parse_object_name(false)?;
                let columns = if p.peek_token().token == Token::LParen {
                    column_list(&mut p)?
                } else {
                    Vec::new()
                };
                p.expect_token(&Token::EOF)?;
                return Ok(TagStatement::DropIndex {
                    table: object_name(&table)?,
                    columns,
                });
            }
            false
        } else if word(&mut p, "segment") {
            true
        } else {
            return p.expected("TAG or SEGMENT", p.peek_token());
        };
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        TagStatement::Drop {
            name: names::normalize(&p.parse_identifier()?),
            if_exists,
            segment,
        }
    } else if word(&mut p, "refresh") {
        if word(&mut p, "model") {
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_token(&Token::EOF)?;
            return Ok(TagStatement::RefreshModel { name });
        }
        if word(&mut p, "recommender") {
            let name = names::normalize(&p.parse_identifier()?);
            p.expect_token(&Token::EOF)?;
            return Ok(TagStatement::RefreshRecommender { name });
        }
        let segment = if word(&mut p, "tag") {
            false
        } else if word(&mut p, "segment") {
            true
        } else {
            return p.expected("TAG or SEGMENT", p.peek_token());
        };
        TagStatement::Refresh {
            name: names::normalize(&p.parse_identifier()?),
            segment,
        }
    } else if p.parse_keyword(Keyword::ALTER) {
        if word(&mut p, "pseudonym") {
            let name = pseudonym_key_name(&mut p)?;
            if !word(&mut p, "rotate") {
                return p.expected("ROTATE", p.peek_token());
            }
            let secret = secret(&mut p)?;
            p.expect_token(&Token::EOF)?;
            return Ok(TagStatement::PseudonymKey {
                name,
                rotate: true,
                secret,
            });
        }
        if !word(&mut p, "system") {
            return p.expected("SYSTEM or PSEUDONYM KEY", p.peek_token());
        }
        if p.parse_keyword(Keyword::RESET) {
            let name = names::normalize(&p.parse_identifier()?);
            TagStatement::AlterSystem { name, value: None }
        } else {
            p.expect_keyword(Keyword::SET)?;
            let name = names::normalize(&p.parse_identifier()?);
            if !p.consume_token(&Token::Eq) {
                p.expect_keyword(Keyword::TO)?;
            }
            let value = if p.parse_keyword(Keyword::DEFAULT) {
                None
            } else {
                match p.peek_token().token {
                    Token::Word(_) => Some(names::normalize(&p.parse_identifier()?)),
                    Token::Number(number, _) => {
                        p.next_token();
                        Some(number)
                    }
                    _ => Some(p.parse_literal_string()?),
                }
            };
            TagStatement::AlterSystem { name, value }
        }
    } else if word(&mut p, "grant") {
        TagStatement::Grant(crate::grants::parse(&mut p, false)?)
    } else if word(&mut p, "revoke") {
        TagStatement::Grant(crate::grants::parse(&mut p, true)?)
    } else if word(&mut p, "forget") {
        if !word(&mut p, "user") {
            return p.expected("USER", p.peek_token());
        }
        let ids = p.parse_comma_separated(user_id)?;
        let immediately = word(&mut p, "immediately");
        TagStatement::Forget { ids, immediately }
    } else {
        return p.expected(
            "CREATE, DROP, REFRESH, ALTER SYSTEM, GRANT, REVOKE or FORGET USER",
            p.peek_token(),
        );
    };
    p.expect_token(&Token::EOF)?;
    Ok(statement)
}

/// `KEY name` after `PSEUDONYM`.
fn pseudonym_key_name(p: &mut Parser) -> std::result::Result<String, ParserError> {
    if !word(p, "key") {
        return p.expected("KEY", p.peek_token());
    }
    Ok(names::normalize(&p.parse_identifier()?))
}

/// `[ SECRET 'hex' ]`.
fn secret(p: &mut Parser) -> std::result::Result<Option<String>, ParserError> {
    match word(p, "secret") {
        true => p.parse_literal_string().map(Some),
        false => Ok(None),
    }
}

/// A user id in `FORGET USER`: a string or an integer, as written.
fn user_id(p: &mut Parser) -> std::result::Result<String, ParserError> {
    let negative = p.consume_token(&Token::Minus);
    let token = p.next_token();
    match token.token {
        Token::SingleQuotedString(id) if !negative => Ok(id),
        Token::Number(digits, _) if negative => Ok(format!("-{digits}")),
        Token::Number(digits, _) => Ok(digits),
        _ => p.expected("a user id ('text' or an integer)", token),
    }
}

/// Consumes the word `w` if it comes next.
pub(crate) fn word(p: &mut Parser, w: &str) -> bool {
    if is_word(&p.peek_token(), w) {
        p.next_token();
        true
    } else {
        false
    }
}

fn column_list(p: &mut Parser) -> std::result::Result<Vec<String>, ParserError> {
    p.expect_token(&Token::LParen)?;
    let columns = p.parse_comma_separated(|p| p.parse_identifier())?;
    p.expect_token(&Token::RParen)?;
    Ok(columns.iter().map(names::normalize).collect())
}

fn object_name(name: &ObjectName) -> std::result::Result<String, ParserError> {
    names::table_name(name).map_err(|e| ParserError::ParserError(e.to_string()))
}

/// Runs a tag statement.
pub(crate) async fn run(
    session: &Session,
    statement: TagStatement,
) -> Result<SendableRecordBatchStream> {
    let catalog = session.catalog();
    // Who may run what: indexes and recommenders are built from tables, so
    // they are the superusers' (as tables are); tags, segments and models
    // are for roles granted CREATE TAG too.
    match &statement {
        TagStatement::CreateIndex { .. } | TagStatement::DropIndex { .. } => {
            crate::grants::superuser_only(session, "create or drop tag indexes")?
        }
        TagStatement::CreateRecommender { .. }
        | TagStatement::RefreshRecommender { .. }
        | TagStatement::DropRecommender { .. } => {
            crate::grants::superuser_only(session, "create, refresh or drop recommenders")?
        }
        TagStatement::Create { .. }
        | TagStatement::Refresh { .. }
        | TagStatement::Drop { .. }
        | TagStatement::CreateModel { .. }
        | TagStatement::RefreshModel { .. }
        | TagStatement::DropModel { .. } => crate::grants::may_create_tags(session)?,
        // Each checks for itself below.
        TagStatement::AlterSystem { .. }
        | TagStatement::PseudonymKey { .. }
        | TagStatement::DropPseudonymKey { .. }
        | TagStatement::Forget { .. }
        | TagStatement::Grant(_) => {}
    }
    match statement {
        TagStatement::AlterSystem { name, value } => alter_system(session, &name, value)?,
        TagStatement::PseudonymKey {
            name,
            rotate,
            secret,
        } => {
            crate::grants::superuser_only(session, "manage pseudonym keys")?;
            let secret = secret
                .as_deref()
                .map(cohortdb_engine::privacy::parse_secret)
                .transpose()?;
            match rotate {
                false => catalog.create_pseudonym_key(&name, secret)?,
                true => catalog.rotate_pseudonym_key(&name, secret)?,
            }
        }
        TagStatement::DropPseudonymKey { name, if_exists } => {
            crate::grants::superuser_only(session, "manage pseudonym keys")?;
            catalog.drop_pseudonym_key(&name, if_exists)?;
        }
        TagStatement::Forget { ids, immediately } => forget(session, ids, immediately).await?,
        TagStatement::Grant(grant) => crate::grants::run(session, grant)?,
        TagStatement::CreateIndex {
            table,
            columns,
            time,
        } => catalog.create_tag_index(&table, &columns, time.as_deref())?,
        TagStatement::DropIndex { table, columns } => catalog.drop_tag_index(&table, &columns)?,
        TagStatement::Create {
            name,
            or_replace,
            definition,
        } => {
            create(session, &name, or_replace, definition).await?;
            crate::grants::grant_to_creator(session, Object::Tag(name))?;
        }
        TagStatement::Refresh { name, segment } => {
            let tags = catalog.tags();
            let Some(tag) = tags.stored.get(&name) else {
                return Err(Error::from(cohortdb_engine::Error::UnknownTag(format!(
                    "{} \"{name}\" does not exist",
                    if segment { "segment" } else { "tag" }
                ))));
            };
            if tag.source.is_segment() != segment {
                return Err(Error::from(cohortdb_engine::Error::UnknownTag(format!(
                    "\"{name}\" is a {}, not a {}",
                    tag.source.as_str(),
                    if segment { "segment" } else { "tag" }
                ))));
            }
            let definition = match tag.source {
                TagSourceKind::Query => {
                    Definition::Query(Box::new(crate::session::parse_query(&tag.definition)?))
                }
                TagSourceKind::Audience => Definition::Audience(tag.definition.clone()),
                TagSourceKind::Frozen => Definition::Segment {
                    expr: tag.definition.clone(),
                    frozen: true,
                },
                // Evaluated whenever used: always fresh.
                TagSourceKind::Segment => return Ok(empty_stream()),
                TagSourceKind::Bitmap => {
                    return Err(Error::Plan {
                        message: format!(
                            "tag \"{name}\" was made from a bitmap; there is nothing to refresh it from"
                        ),
                        position: None,
                    });
                }
            };
            create(session, &name, true, definition).await?;
        }
        TagStatement::Drop {
            name,
            if_exists,
            segment,
        } => {
            catalog.drop_tag(&name, if_exists, segment)?;
        }
        TagStatement::CreateModel {
            name,
            or_replace,
            seed,
            options,
        } => {
            let model = train_model(session, &name, &seed, &options).await?;
            catalog.put_model(model, or_replace)?;
            crate::grants::grant_to_creator(session, Object::Model(name))?;
        }
        TagStatement::RefreshModel { name } => {
            let Some(model) = catalog.tags().models.get(&name).cloned() else {
                return Err(Error::from(cohortdb_engine::Error::ModelNotFound(name)));
            };
            let model = train_model(session, &name, &model.seed, &model.options).await?;
            catalog.put_model(model, true)?;
        }
        TagStatement::DropModel { name, if_exists } => {
            catalog.drop_model(&name, if_exists)?;
        }
        TagStatement::CreateRecommender {
            name,
            or_replace,
            table,
            columns,
            algorithm,
            options,
        } => {
            let definition = recommender_definition(session, table, columns, algorithm, options)?;
            crate::provider::blocking(catalog, move |c| {
                c.create_recommender(&name, definition, or_replace)
            })
            .await?;
        }
        TagStatement::RefreshRecommender { name } => {
            let refreshing = name.clone();
            let (stored, computed) =
                crate::provider::blocking(catalog, move |c| c.refresh_recommender(&refreshing))
                    .await?;
            if let Some(computed) = computed {
                let message = format!(
                    "recommender \"{name}\": neighbours computed for {computed} of {} items, \
                     carried over for the rest",
                    stored.entry.items
                );
                session.lock().notice("NOTICE", "00000", message);
            }
        }
        TagStatement::DropRecommender { name, if_exists } => {
            catalog.drop_recommender(&name, if_exists)?;
        }
    }
    Ok(empty_stream())
}

/// A recommender's definition from `CREATE RECOMMENDER`'s column list: the
/// user and item columns, then a numeric weight and a date or timestamp
/// time, in either order, told apart by their types.
fn recommender_definition(
    session: &Session,
    table: String,
    columns: Vec<String>,
    algorithm: String,
    options: String,
) -> Result<cohortdb_engine::recommend::Definition> {
    use cohortdb_engine::ColumnType;
    let t = session.catalog().table(&table)?;
    let defs = t.columns();
    let (mut weight, mut time) = (None, None);
    for name in &columns[2..] {
        let column_type = defs
            .iter()
            .find(|c| &c.name == name)
            .map(|c| c.column_type)
            .ok_or_else(|| Error::Plan {
                message: format!("column \"{name}\" of relation \"{table}\" does not exist"),
                position: None,
            })?;
        let (slot, role) = match column_type {
            ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => {
                (&mut time, "time")
            }
            t if t.to_arrow().is_numeric() => (&mut weight, "weight"),
            other => {
                return Err(Error::Plan {
                    message: format!(
                        "CREATE RECOMMENDER: column \"{name}\" is {other}; after the user and item \
                         come a numeric weight and a date or timestamp time"
                    ),
                    position: None,
                });
            }
        };
        if slot.replace(name.clone()).is_some() {
            return Err(Error::Plan {
                message: format!(
                    "CREATE RECOMMENDER: two {role} columns; give one numeric weight and one time"
                ),
                position: None,
            });
        }
    }
    Ok(cohortdb_engine::recommend::Definition {
        table,
        user: columns[0].clone(),
        item: columns[1].clone(),
        weight,
        time,
        algorithm,
        options,
    })
}

/// CREATE TAG / CREATE SEGMENT (and REFRESH, which replaces).
async fn create(
    session: &Session,
    name: &str,
    replace: bool,
    definition: Definition,
) -> Result<()> {
    let catalog = session.catalog();
    // A stored tag records everyone; suppression applies when it is read.
    let policy = cohortdb_engine::privacy::Policy::everyone(crate::functions::today());
    let (source, text, users) = match definition {
        Definition::Query(query) => {
            let text = query.to_string();
            let ids = query_ids(session, *query).await?;
            (TagSourceKind::Query, text, TagUsers::Ids(ids))
        }
        Definition::Audience(expr) => {
            let users = catalog.tags().evaluate(&expr, &policy)?;
            (TagSourceKind::Audience, expr, TagUsers::Ordinals(users))
        }
        Definition::Bitmap(expr) => {
            let text = expr.to_string();
            let bytes = bitmap_value(session, *expr).await?;
            let users = roaring::RoaringBitmap::deserialize_from(&bytes[..]).map_err(|e| Error::Plan {
                message: format!("CREATE TAG ... FROM BITMAP: the value is not a portable roaring bitmap ({e})"),
                position: None,
            })?;
            (TagSourceKind::Bitmap, text, TagUsers::Ordinals(users))
        }
        Definition::Segment { expr, frozen } => {
            // Evaluated now either way, so a bad expression fails here.
            let users = catalog.tags().evaluate(&expr, &policy)?;
            if frozen {
                (TagSourceKind::Frozen, expr, TagUsers::Ordinals(users))
            } else {
                (
                    TagSourceKind::Segment,
                    expr,
                    TagUsers::Ordinals(roaring::RoaringBitmap::new()),
                )
            }
        }
    };
    catalog.put_tag(name, source, &text, users, replace, now_micros())?;
    Ok(())
}

/// `ALTER SYSTEM SET name = value` (RESET: `None`): superusers change the
/// database's privacy settings; `suppression_tag` is the one there is.
fn alter_system(session: &Session, name: &str, value: Option<String>) -> Result<()> {
    crate::grants::superuser_only(session, "execute ALTER SYSTEM command")?;
    if name != "suppression_tag" {
        return Err(match crate::settings::is_registered(name) {
            true => Error::Unsupported {
                feature: format!("ALTER SYSTEM for \"{name}\" (a session setting: use SET)"),
                position: None,
            },
            false => Error::UnknownSetting {
                name: name.to_string(),
            },
        });
    }
    let value =
        value.unwrap_or_else(|| cohortdb_engine::privacy::DEFAULT_SUPPRESSION_TAG.to_string());
    session.catalog().set_suppression_tag(&value)?;
    Ok(())
}

/// `FORGET USER`: superusers erase users (docs/privacy.md § Forgetting a
/// user); a NOTICE says what was removed.
async fn forget(session: &Session, ids: Vec<String>, immediately: bool) -> Result<()> {
    use cohortdb_engine::users::UserKeyType;
    crate::grants::superuser_only(session, "forget users")?;
    let catalog = session.catalog();
    let ids: ArrayRef = match catalog.tags().dictionary()?.key_type() {
        UserKeyType::Text => Arc::new(arrow::array::StringArray::from(ids)),
        UserKeyType::BigInt => Arc::new(
            ids.iter()
                .map(|id| {
                    id.parse::<i64>().map_err(|_| Error::Execution {
                        message: format!("invalid input syntax for type bigint: \"{id}\""),
                    })
                })
                .collect::<Result<arrow::array::Int64Array>>()?,
        ),
    };
    let done =
        crate::provider::blocking(catalog, move |c| c.forget_users(&ids, immediately)).await?;
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut message = format!(
        "forgot {}: deleted {} in {}, removed from {}, rebuilt {}; ",
        plural(done.users, "user", "users"),
        plural(done.rows, "row", "rows"),
        plural(done.tables, "table", "tables"),
        plural(done.tags, "stored tag", "stored tags"),
        plural(done.recommenders, "recommender", "recommenders"),
    );
    message.push_str(match immediately {
        true => "no file holds them any more",
        false => "the files still holding them are rewritten by the next checkpoint",
    });
    session.lock().notice("NOTICE", "00000", message);
    Ok(())
}

/// Trains the lookalike model `name` from a seed (an audience expression or
/// a query) and options, as `lookalike(seed, options)` would.
async fn train_model(
    session: &Session,
    name: &str,
    seed: &str,
    options: &str,
) -> Result<cohortdb_engine::lookalike::StoredModel> {
    use crate::functions::lookalike::{Seed, train};
    let seed_users = match Seed::parse(seed)? {
        Seed::Query(query) => {
            let ids = query_ids(session, crate::session::parse_query(&query)?).await?;
            Some(session.catalog().tags().ordinals(ids.as_ref())?)
        }
        Seed::Audience(_) => None,
    };
    let mut model = train(
        &session.catalog().tags(),
        session.policy(),
        seed,
        seed_users,
        options,
    )?;
    model.name = name.to_string();
    model.trained_micros = now_micros();
    Ok(model)
}

/// The user ids a rule tag's query returns: its one column, as the
/// dictionary's id type, NULLs left out.
async fn query_ids(session: &Session, query: Query) -> Result<ArrayRef> {
    let plan = session.plan_query(query).await?;
    if plan.schema().fields().len() != 1 {
        return Err(Error::Plan {
            message: format!(
                "the query of a tag returns one column of user ids, not {}",
                plan.schema().fields().len()
            ),
            position: None,
        });
    }
    let key_type = session
        .catalog()
        .tags()
        .dictionary()?
        .key_type()
        .data_type();
    let batches: Vec<RecordBatch> = session.stream_plan(plan).await?.try_collect().await?;
    let mut parts = Vec::with_capacity(batches.len());
    for batch in batches {
        let column = batch.column(0);
        let cast = arrow::compute::cast(column, &key_type).map_err(|e| Error::Plan {
            message: format!(
                "the query of a tag returns user ids ({key_type}), not {}: {e}",
                column.data_type()
            ),
            position: None,
        })?;
        let valid = arrow::compute::is_not_null(&cast).map_err(arrow_error)?;
        parts.push(arrow::compute::filter(&cast, &valid).map_err(arrow_error)?);
    }
    if parts.is_empty() {
        return Ok(arrow::array::new_empty_array(&key_type));
    }
    arrow::compute::concat(&parts.iter().map(AsRef::as_ref).collect::<Vec<&dyn Array>>())
        .map_err(arrow_error)
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::from(cohortdb_engine::Error::Arrow(e))
}

/// The value of a bitmap expression (`SELECT expr`).
async fn bitmap_value(session: &Session, expr: Expr) -> Result<Vec<u8>> {
    let query = crate::session::parse_query(&format!("SELECT {expr}"))?;
    let plan = session.plan_query(query).await?;
    let batches: Vec<RecordBatch> = session.stream_plan(plan).await?.try_collect().await?;
    let column = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| Arc::clone(b.column(0)));
    match column {
        Some(column) if column.data_type() == &DataType::Binary && !column.is_null(0) => {
            Ok(column.as_binary::<i32>().value(0).to_vec())
        }
        Some(column) if column.data_type() != &DataType::Binary => Err(Error::Plan {
            message: format!(
                "CREATE TAG ... FROM BITMAP takes a bitmap (BYTEA), not {}",
                column.data_type()
            ),
            position: None,
        }),
        _ => Err(Error::Plan {
            message: "CREATE TAG ... FROM BITMAP: the bitmap is NULL".to_string(),
            position: None,
        }),
    }
}

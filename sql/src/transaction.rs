//! Transaction blocks: BEGIN, COMMIT, ROLLBACK and savepoints.
//!
//! Every statement is atomic and takes effect when it completes, inside a block
//! or not: cohortdb has no multi-statement transactions. A block still behaves as
//! clients expect of one: its status is reported, a failed statement aborts it
//! until ROLLBACK, it can be read-only, and settings changed in it are undone by
//! ROLLBACK (SET LOCAL ones lapse at its end). ROLLBACK warns when the block
//! changed data, since those changes stay.

use datafusion::sql::sqlparser::ast::{Statement, TransactionAccessMode, TransactionMode};

use crate::error::{Error, Result, TransactionError};
use crate::settings::{Scope, Settings};
use crate::state::State;

/// An open transaction block.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) failed: bool,
    /// Statements in this block that changed data (already applied).
    pub(crate) writes: u64,
    /// Settings as they were at BEGIN, for ROLLBACK.
    at_begin: Settings,
    /// Open savepoints, oldest first, with the settings as they were at each.
    savepoints: Vec<(String, Settings)>,
}

/// Whether a statement ends or repairs a transaction block, and so may run in an
/// aborted one.
pub(crate) fn ends_block(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Commit { .. } | Statement::Rollback { .. }
    )
}

/// The command a read-only transaction refuses, or `None` for statements that
/// change nothing.
pub(crate) fn write_command(statement: &Statement) -> Option<String> {
    let command = match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Copy { to: false, .. } => "COPY FROM",
        Statement::CreateTable(c) if c.query.is_some() => "SELECT INTO",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::Drop { object_type, .. } => return Some(format!("DROP {object_type}")),
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateRole(_) => "CREATE ROLE",
        Statement::AlterRole { .. } => "ALTER ROLE",
        statement => return crate::tag_ddl::carried(statement).map(|t| t.command().to_string()),
    };
    Some(command.to_string())
}

/// Refuses a statement the session's transaction state does not allow.
pub(crate) fn admit(state: &State, statement: &Statement) -> Result<()> {
    if state.block.as_ref().is_some_and(|b| b.failed) && !ends_block(statement) {
        return Err(Error::Transaction(TransactionError::Aborted));
    }
    if state.settings.read_only()
        && let Some(command) = write_command(statement)
    {
        return Err(Error::Transaction(TransactionError::ReadOnly { command }));
    }
    Ok(())
}

/// BEGIN / START TRANSACTION [modes].
pub(crate) fn begin(state: &mut State, modes: &[TransactionMode]) -> Result<()> {
    if state.block.is_some() {
        state.notice(
            "WARNING",
            "25001",
            "there is already a transaction in progress".into(),
        );
    } else {
        state.block = Some(Block {
            failed: false,
            writes: 0,
            at_begin: state.settings.clone(),
            savepoints: Vec::new(),
        });
    }
    set_modes(state, modes)
}

/// SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION.
pub(crate) fn set_characteristics(
    state: &mut State,
    modes: &[TransactionMode],
    session: bool,
) -> Result<()> {
    if session {
        for (name, value) in mode_settings(modes) {
            state
                .settings
                .set(&format!("default_{name}"), &value, Scope::Session)?;
        }
        return Ok(());
    }
    if state.block.is_none() {
        state.notice(
            "WARNING",
            "25P01",
            "SET TRANSACTION can only be used in transaction blocks".into(),
        );
        return Ok(());
    }
    set_modes(state, modes)
}

fn set_modes(state: &mut State, modes: &[TransactionMode]) -> Result<()> {
    for (name, value) in mode_settings(modes) {
        state.settings.set(name, &value, Scope::Local)?;
    }
    Ok(())
}

/// The settings transaction modes stand for.
fn mode_settings(modes: &[TransactionMode]) -> Vec<(&'static str, String)> {
    modes
        .iter()
        .map(|mode| match mode {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => {
                ("transaction_read_only", "on".to_string())
            }
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => {
                ("transaction_read_only", "off".to_string())
            }
            TransactionMode::IsolationLevel(level) => {
                ("transaction_isolation", level.to_string().to_lowercase())
            }
        })
        .collect()
}

/// COMMIT / END: returns the command tag, `ROLLBACK` for an aborted block.
pub(crate) fn commit(state: &mut State) -> &'static str {
    match state.block.take() {
        None => {
            no_transaction(state);
            "COMMIT"
        }
        Some(block) if block.failed => {
            end(state, block, true);
            "ROLLBACK"
        }
        Some(block) => {
            end(state, block, false);
            "COMMIT"
        }
    }
}

/// ROLLBACK / ABORT.
pub(crate) fn rollback(state: &mut State) {
    match state.block.take() {
        None => no_transaction(state),
        Some(block) => end(state, block, true),
    }
}

fn no_transaction(state: &mut State) {
    state.notice(
        "WARNING",
        "25P01",
        "there is no transaction in progress".into(),
    );
}

fn end(state: &mut State, block: Block, rolled_back: bool) {
    if rolled_back {
        state.settings = block.at_begin;
        if block.writes > 0 {
            state.notice(
                "WARNING",
                "01000",
                format!(
                    "ROLLBACK did not undo {} data-changing statement{} of this transaction block: \
                     cohortdb applies each statement when it completes",
                    block.writes,
                    if block.writes == 1 { "" } else { "s" }
                ),
            );
        }
    }
    state.settings.end_transaction();
}

fn block_for<'a>(state: &'a mut State, statement: &'static str) -> Result<&'a mut Block> {
    state
        .block
        .as_mut()
        .ok_or(Error::Transaction(TransactionError::OutsideBlock {
            statement,
        }))
}

/// SAVEPOINT name.
pub(crate) fn savepoint(state: &mut State, name: &str) -> Result<()> {
    let settings = state.settings.clone();
    let block = block_for(state, "SAVEPOINT")?;
    block.savepoints.push((name.to_string(), settings));
    Ok(())
}

/// RELEASE [SAVEPOINT] name: forgets the savepoint and every later one.
pub(crate) fn release(state: &mut State, name: &str) -> Result<()> {
    let block = block_for(state, "RELEASE SAVEPOINT")?;
    let index = find_savepoint(block, name)?;
    block.savepoints.truncate(index);
    Ok(())
}

/// ROLLBACK TO [SAVEPOINT] name: undoes the settings changed since, forgets later
/// savepoints and repairs an aborted block.
pub(crate) fn rollback_to(state: &mut State, name: &str) -> Result<()> {
    let block = block_for(state, "ROLLBACK TO SAVEPOINT")?;
    let index = find_savepoint(block, name)?;
    block.savepoints.truncate(index + 1);
    block.failed = false;
    let settings = block.savepoints[index].1.clone();
    state.settings = settings;
    Ok(())
}

/// The newest savepoint called `name`.
fn find_savepoint(block: &Block, name: &str) -> Result<usize> {
    block
        .savepoints
        .iter()
        .rposition(|(n, _)| n == name)
        .ok_or_else(|| {
            Error::Transaction(TransactionError::NoSavepoint {
                name: name.to_string(),
            })
        })
}

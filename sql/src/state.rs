//! What a session remembers between statements: its settings, its transaction
//! block and the messages waiting for the client.

use std::sync::Arc;

use cohortdb_engine::Catalog;

use crate::settings::{self, Settings};
use crate::transaction::Block;

/// A message for the client that is not a result: a notice or warning, or a
/// reported setting's new value (PostgreSQL's NoticeResponse and ParameterStatus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Notice {
        /// `WARNING` or `NOTICE`.
        severity: &'static str,
        /// The SQLSTATE of the condition.
        code: &'static str,
        message: String,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
}

/// The state of a session's transaction block, as PostgreSQL's ReadyForQuery
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in a transaction block: each statement commits on its own.
    Idle,
    /// In a transaction block (after BEGIN).
    InBlock,
    /// In a transaction block that a failed statement aborted; only ROLLBACK (or
    /// COMMIT, which rolls back) ends it.
    Failed,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) block: Option<Block>,
    messages: Vec<Message>,
    /// The values of reported settings the client last heard.
    reported: Vec<(&'static str, String)>,
    /// The version of the settings those values were read from.
    reported_version: u64,
    /// The client's address, for the audit log; `None` when embedded.
    pub(crate) client_address: Option<Arc<str>>,
    /// Parsed statements and plans of queries run before (plan_cache.rs).
    pub(crate) parses: crate::plan_cache::ParseCache,
    pub(crate) plans: crate::plan_cache::PlanCache,
    /// The catalog's and the settings' versions when the settings last took
    /// the catalog's values (`follow_catalog`).
    followed: Option<(u64, u64)>,
}

impl State {
    pub(crate) fn status(&self) -> TransactionStatus {
        match &self.block {
            None => TransactionStatus::Idle,
            Some(block) if block.failed => TransactionStatus::Failed,
            Some(_) => TransactionStatus::InBlock,
        }
    }

    pub(crate) fn notice(&mut self, severity: &'static str, code: &'static str, message: String) {
        self.messages.push(Message::Notice {
            severity,
            code,
            message,
        });
    }

    /// Forgets queued notices (those of earlier statements nobody took).
    pub(crate) fn drop_notices(&mut self) {
        self.messages.clear();
    }

    /// A failed statement aborts the transaction block it ran in.
    pub(crate) fn fail(&mut self) {
        if let Some(block) = &mut self.block {
            block.failed = true;
        }
    }

    /// Shows in the settings what the catalog decides: the database's
    /// suppression tag and the role's minimum audience size, as they are now
    /// (a superuser may change them). Nothing is read again while neither the
    /// catalog nor the settings changed since the last time.
    pub(crate) fn follow_catalog(&mut self, catalog: &Catalog) {
        // Read before the values: a change after this read bumps it again.
        let catalog_version = catalog.version();
        if self.followed == Some((catalog_version, self.settings.version())) {
            return;
        }
        let tags = catalog.tags();
        self.settings
            .set_internal("suppression_tag", &tags.privacy.suppression_tag);
        let threshold = catalog
            .with_role(self.settings.user(), |role| role.min_audience_size)
            .unwrap_or(0);
        self.settings
            .set_internal("min_audience_size", &threshold.to_string());
        self.followed = Some((catalog_version, self.settings.version()));
    }

    /// Whether the session may change engine-internal settings.
    pub(crate) fn superuser(&self) -> bool {
        self.settings.flag("is_superuser")
    }

    /// The user the session runs as (`session_authorization`).
    pub(crate) fn user(&self) -> String {
        self.settings.user().to_string()
    }

    /// The current value of every reported setting, marked as heard.
    pub(crate) fn report_all(&mut self) -> Vec<(String, String)> {
        self.reported = current_reported(&self.settings);
        self.reported_version = self.settings.version();
        self.reported
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    /// Queues a ParameterStatus for every reported setting that changed since the
    /// client last heard, then hands over everything queued.
    pub(crate) fn take_messages(&mut self) -> Vec<Message> {
        if !self.reported.is_empty() && self.settings.version() != self.reported_version {
            self.reported_version = self.settings.version();
            let now = current_reported(&self.settings);
            for ((name, before), (_, after)) in self.reported.iter().zip(&now) {
                if before != after {
                    self.messages.push(Message::ParameterStatus {
                        name: name.to_string(),
                        value: after.clone(),
                    });
                }
            }
            self.reported = now;
        }
        std::mem::take(&mut self.messages)
    }
}

fn current_reported(settings: &Settings) -> Vec<(&'static str, String)> {
    settings::reported()
        .map(|name| (name, settings.get(name).ok().flatten().unwrap_or_default()))
        .collect()
}

//! Views: stored queries, by name, in the namespace of tables. The engine
//! keeps a view's text and columns; the sql layer plans and checks it. A view
//! reads its tables with its owner's privileges (docs/privacy.md § Views).

use serde::{Deserialize, Serialize};

/// One view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    pub name: String,
    /// The query, as the sql layer wrote it (`SELECT ...`).
    pub query: String,
    /// Its columns when it was created: names and Arrow type names, for the
    /// catalogs.
    pub columns: Vec<ViewColumn>,
    /// The role whose privileges its tables are read with: its creator;
    /// `None` when that was a superuser session of no stored role (a trust
    /// login, an embedded session), whose views read with every privilege.
    pub owner: Option<String>,
}

/// A view's column, as the catalogs list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewColumn {
    pub name: String,
    /// The Arrow type, as Arrow writes it (`Int64`, `Utf8`, ...).
    pub data_type: String,
}

//! cohortdb: an embedded analytics database for audience segmentation, queried
//! with SQL.
//!
//! Open a [`Database`] (a data directory, or in memory), take a [`Session`] and run
//! SQL; results come back as Arrow record batches, whole or as a stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cohortdb::Error> {
//! let db = cohortdb::Database::open("./data")?;
//! let session = db.session();
//! session.execute("CREATE TABLE users (user_id BIGINT NOT NULL, city TEXT)").await?;
//! session.execute("INSERT INTO users VALUES (1, 'beijing'), (2, 'shanghai')").await?;
//! let batches = session.execute("SELECT city, count(*) FROM users GROUP BY city").await?;
//! # Ok(()) }
//! ```
//!
//! This package wires the crates together: `cohortdb-engine` (storage),
//! `cohortdb-sql` (SQL over DataFusion) and, later, `cohortdb-server` (the
//! PostgreSQL wire protocol). It also builds the `cohortdb` command-line tool.

use std::path::Path;
use std::sync::Arc;

use cohortdb_engine::Catalog;
pub use cohortdb_engine::WalSync;
use cohortdb_engine::catalog::Compactor;
use cohortdb_engine::import;
pub use cohortdb_engine::import::{CsvOptions, FileFormat, Progress as ImportProgress};
use cohortdb_engine::privacy::Policy;
use cohortdb_engine::tags::today;

pub use arrow;
pub use cohortdb_engine::check::{Report as CheckReport, check};
pub use cohortdb_engine::demo::DemoConfig;
pub use cohortdb_engine::tags::Tags;
pub use cohortdb_engine::{ColumnDef, ColumnType};
pub use cohortdb_server::{Auth, ServerOptions, Tls};
pub use cohortdb_sql::{
    Completion, Error, Message, ParsedStatement, Position, QUERY_MEMORY_DEFAULT, Result,
    SERVER_VERSION, SERVER_VERSION_NUM, SendableRecordBatchStream, changed_rows,
};

/// A database: one data directory (or memory), shared by all its sessions.
#[derive(Clone)]
pub struct Database {
    /// Compacts in the background; declared first so that it stops (its
    /// thread joined) before the catalog is released.
    _compactor: Option<Arc<Compactor>>,
    catalog: Arc<Catalog>,
    query_memory: usize,
}

impl Database {
    /// Opens the database in directory `path`, creating it if it does not exist.
    /// Only one process may have a directory open at a time.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        let catalog = Arc::new(Catalog::open(path.as_ref())?);
        Ok(Database {
            _compactor: Some(Arc::new(catalog.start_compactor())),
            catalog,
            query_memory: QUERY_MEMORY_DEFAULT,
        })
    }

    /// A database that lives in memory and is gone when dropped.
    pub fn open_in_memory() -> Database {
        Database {
            _compactor: None,
            catalog: Arc::new(Catalog::in_memory()),
            query_memory: QUERY_MEMORY_DEFAULT,
        }
    }

    /// The data directory, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.catalog.path()
    }

    /// What recovery did at open that an operator should know (a torn
    /// write-ahead log tail cut), or `None`.
    pub fn recovery_report(&self) -> Option<&str> {
        self.catalog.recovery_report()
    }

    /// Flushes everything in memory to segment files and empties the
    /// write-ahead log (what the `CHECKPOINT` statement does).
    pub fn checkpoint(&self) -> Result<()> {
        Ok(self.catalog.checkpoint()?)
    }

    /// Rewrites the segment files of `table` (of every table with `None`)
    /// that hold deleted rows, so those rows are gone from disk, and merges
    /// small ones (what `VACUUM` does).
    pub fn vacuum(&self, table: Option<&str>) -> Result<()> {
        Ok(self.catalog.vacuum(table)?)
    }

    /// When the write-ahead log is synced: `Always` (the default: a statement
    /// is acknowledged once durable), `Batch` or `Off` (docs/format.md §
    /// Write-ahead log says what each risks). Kept with the database.
    pub fn set_wal_sync(&self, wal_sync: WalSync) -> Result<()> {
        Ok(self.catalog.set_wal_sync(wal_sync)?)
    }

    /// Rebuilds the in-memory state from the data directory as opening does
    /// (manifest read, write-ahead log replayed). For tests of recovery.
    #[doc(hidden)]
    pub fn reload(&self) -> Result<()> {
        Ok(self.catalog.reload()?)
    }

    /// The tag store as of now: the user-key dictionary, every tag index,
    /// stored tag and segment. A snapshot: later writes do not change it.
    pub fn tags(&self) -> Arc<Tags> {
        self.catalog.tags()
    }

    /// How many users the audience expression `expr` selects (as
    /// `SELECT audience_count(expr)` does, without SQL): the suppression
    /// tag's users left out (docs/privacy.md).
    pub fn audience_count(&self, expr: &str) -> Result<u64> {
        Ok(self.tags().count(expr, &Policy::new(today()))?)
    }

    /// The external user ids of the audience `expr` (`BIGINT` or `TEXT` by
    /// the user key), in ordinal order, as `audience(expr)` gives them: the
    /// suppression tag's users left out.
    pub fn audience(&self, expr: &str) -> Result<arrow::array::ArrayRef> {
        Ok(self.tags().audience_ids(expr, &Policy::new(today()))?)
    }

    /// Sets the working memory each statement may use (default
    /// [`QUERY_MEMORY_DEFAULT`], 4 GiB) for sessions started from now on; a
    /// statement that needs more fails with SQLSTATE 53200.
    pub fn with_query_memory(mut self, bytes: usize) -> Database {
        self.query_memory = bytes;
        self
    }

    /// A new session with its own settings. Sessions are cheap.
    pub fn session(&self) -> Session {
        Session {
            inner: self.sql_session(),
        }
    }

    /// A new session acting as `role`: held to its privileges (docs/privacy.md
    /// § Grants), minimum audience size and superuser status, as a client
    /// logged in as it is. The role must exist (42704).
    pub fn session_as(&self, role: &str) -> Result<Session> {
        let found = self
            .catalog
            .role(role)
            .ok_or_else(|| cohortdb_engine::Error::RoleNotFound(role.to_string()))?;
        let inner = self.sql_session();
        inner.start(role, found.superuser, &std::collections::HashMap::new())?;
        Ok(Session { inner })
    }

    fn sql_session(&self) -> cohortdb_sql::Session {
        cohortdb_sql::Session::with_query_memory(Arc::clone(&self.catalog), self.query_memory)
    }

    /// Serves the database over the PostgreSQL wire protocol on `addr` (such as
    /// `127.0.0.1:5433`) with default options until the returned future is dropped.
    pub async fn serve(&self, addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        self.serve_listener(listener, ServerOptions::default())
            .await
    }

    /// Serves on a listener the caller bound (for example to port 0, to learn the
    /// port from `local_addr` first).
    pub async fn serve_listener(
        &self,
        listener: tokio::net::TcpListener,
        options: ServerOptions,
    ) -> std::io::Result<()> {
        let db = self.clone();
        cohortdb_server::serve(listener, options, move || db.sql_session()).await
    }

    /// Sets the password of `user`, creating it as a superuser that can log in if
    /// it does not exist: how the first administrator is made. Only the
    /// password's SCRAM-SHA-256 verifier is stored.
    pub fn set_password(&self, user: &str, password: &str) -> Result<()> {
        let verifier = cohortdb_sql::ScramVerifier::generate(password).to_string();
        if self.catalog.role(user).is_some() {
            self.catalog
                .alter_role(user, |role| role.password = Some(verifier))?;
        } else {
            self.catalog.create_role(cohortdb_engine::roles::Role::new(
                user,
                true,
                true,
                Some(verifier),
            ))?;
        }
        Ok(())
    }

    /// Whether any role can log in with a password (SCRAM needs one).
    pub fn has_password_login(&self) -> bool {
        self.catalog
            .roles()
            .iter()
            .any(|r| r.login && r.password.is_some())
    }

    /// Creates and fills the demo tables (`users`, `items`, `events`);
    /// `progress` hears each table's name and rows so far.
    pub fn load_demo(
        &self,
        config: &DemoConfig,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<()> {
        Ok(cohortdb_engine::demo::load(
            &self.catalog,
            config,
            progress,
        )?)
    }

    /// The names of all tables.
    pub fn table_names(&self) -> Vec<String> {
        self.catalog.table_names()
    }

    /// The columns of a table: names, SQL types and nullability.
    pub fn columns(&self, table: &str) -> Result<Vec<ColumnDef>> {
        Ok(self.catalog.table(table)?.columns())
    }

    /// Imports a CSV or Parquet file into an existing table in one commit (all
    /// rows or none), reporting progress after every batch. Returns the row count.
    pub fn import(
        &self,
        table: &str,
        path: &Path,
        format: FileFormat,
        csv: &CsvOptions,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<u64> {
        let table = self.catalog.table(table)?;
        Ok(import::import_file(
            &self.catalog,
            &table,
            path,
            format,
            csv,
            progress,
        )?)
    }
}

/// A connection-like session: runs SQL against its database.
pub struct Session {
    inner: cohortdb_sql::Session,
}

impl Session {
    /// Runs every statement in `sql` (separated by `;`) and returns the rows of the
    /// last one. Statements that change rows return one row with their `count`.
    pub async fn execute(&self, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        self.inner.execute(sql).await
    }

    /// Like [`Session::execute`], but streams the last statement's rows.
    pub async fn execute_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        self.inner.execute_stream(sql).await
    }

    /// The warnings and notices of the statement last run (such as `there is no
    /// transaction in progress`), oldest first.
    pub fn take_messages(&self) -> Vec<Message> {
        self.inner.take_messages()
    }

    /// Splits a script into statements, for callers that run them one at a time.
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        self.inner.parse(sql)
    }

    /// Runs one statement from [`Session::parse`].
    pub async fn run(&self, statement: ParsedStatement) -> Result<SendableRecordBatchStream> {
        self.inner.run(statement).await
    }
}

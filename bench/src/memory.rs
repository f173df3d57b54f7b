//! The load suite's memory probe: the peak resident memory of loading one demo
//! table into cohortdb, against the size of the data directory it leaves.
//!
//! The bench process's own peak is no use here (it has run every other
//! workload), so the load runs in a child: this binary started again with the
//! hidden `load-child` suite, which opens a fresh data directory, runs the
//! COPY and a CHECKPOINT, and prints its `VmHWM` (peak resident set, from
//! /proc/self/status) after each step as JSON. The parent then measures the
//! directory the child closed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cohortdb::{Database, WalSync};
use cohortdb_engine::import::FileFormat;
use serde::{Deserialize, Serialize};

use crate::data::DataFiles;
use crate::suites::{copy_sql, create_table_sql};

/// What the child reports: peak resident memory (KiB) at each point, and the
/// step times.
#[derive(Serialize, Deserialize)]
pub struct ChildReport {
    /// Peak resident memory once the database is open and the table created.
    pub hwm_open_kib: u64,
    /// Peak resident memory once the COPY has been acknowledged.
    pub hwm_copy_kib: u64,
    /// Peak resident memory once the CHECKPOINT is done: the load's peak.
    pub hwm_checkpoint_kib: u64,
    pub copy_seconds: f64,
    pub checkpoint_seconds: f64,
}

/// One probe's figures: the child's report and what it left on disk.
#[derive(Serialize)]
pub struct Probe {
    pub table: String,
    pub format: String,
    pub rows: u64,
    pub input_bytes: u64,
    pub child: ChildReport,
    /// Bytes of every file in the data directory after the child closed it.
    pub directory_bytes: u64,
    /// Of which segment files.
    pub segment_bytes: u64,
}

impl Probe {
    /// The load's peak resident memory over the final on-disk size.
    pub fn ratio(&self) -> f64 {
        (self.child.hwm_checkpoint_kib * 1024) as f64 / self.directory_bytes as f64
    }

    /// The same without what the process held before the COPY (code, runtime,
    /// an empty database): the memory the load itself added.
    pub fn added_ratio(&self) -> f64 {
        let added = self
            .child
            .hwm_checkpoint_kib
            .saturating_sub(self.child.hwm_open_kib);
        (added * 1024) as f64 / self.directory_bytes as f64
    }
}

/// The child's side: loads `table` from its `format` file into a new
/// database at `dir` with `wal_sync = always`, checkpoints, and prints a
/// [`ChildReport`] on stdout.
pub async fn child(files: &DataFiles, table: &str, format: &str, dir: &Path) -> Result<(), String> {
    let format = if format == "csv" {
        FileFormat::Csv
    } else {
        FileFormat::Parquet
    };
    let db = Database::open(dir).map_err(|e| e.to_string())?;
    db.set_wal_sync(WalSync::Always)
        .map_err(|e| e.to_string())?;
    let session = db.session();
    session
        .execute(&create_table_sql(table))
        .await
        .map_err(|e| e.to_string())?;
    let hwm_open_kib = vm_hwm_kib()?;
    let started = Instant::now();
    session
        .execute(&copy_sql(None, table, &files.path(table, format), format))
        .await
        .map_err(|e| e.to_string())?;
    let copy_seconds = started.elapsed().as_secs_f64();
    let hwm_copy_kib = vm_hwm_kib()?;
    let started = Instant::now();
    session
        .execute("CHECKPOINT")
        .await
        .map_err(|e| e.to_string())?;
    let checkpoint_seconds = started.elapsed().as_secs_f64();
    let report = ChildReport {
        hwm_open_kib,
        hwm_copy_kib,
        hwm_checkpoint_kib: vm_hwm_kib()?,
        copy_seconds,
        checkpoint_seconds,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("report serializes")
    );
    Ok(())
}

/// The parent's side: runs the child for `table` from its `format` file into
/// a fresh directory under `work` and measures what it left.
pub fn probe(
    files: &DataFiles,
    users: u64,
    seed: u64,
    table: &str,
    format: FileFormat,
    work: &Path,
) -> Result<Probe, String> {
    let format_name = if format == FileFormat::Csv {
        "csv"
    } else {
        "parquet"
    };
    let dir = work.join(format!("memory-{table}-{format_name}"));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(["load-child", "--users", &users.to_string()])
        .args(["--seed", &seed.to_string(), "--child-table", table])
        .args(["--child-format", format_name, "--child-data"])
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("starting the load child: {e}"))?;
    if !output.status.success() {
        return Err(format!("the load child failed: {}", output.status));
    }
    let child: ChildReport =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("load child output: {e}"))?;
    let probe = Probe {
        table: table.to_string(),
        format: format_name.to_string(),
        rows: files.rows(table),
        input_bytes: file_bytes(&files.path(table, format))?,
        child,
        directory_bytes: directory_bytes(&dir)?,
        segment_bytes: directory_bytes(&dir.join("segments"))?,
    };
    std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(probe)
}

/// This process's peak resident set size so far, in KiB.
pub fn vm_hwm_kib() -> Result<u64, String> {
    status_kib("VmHWM:")
}

/// This process's resident set size now, in KiB.
pub fn vm_rss_kib() -> Result<u64, String> {
    status_kib("VmRSS:")
}

/// A `/proc/self/status` figure in KiB (`VmHWM:`, `RssAnon:`, ...).
pub fn status_kib(field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}

pub fn file_bytes(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Bytes of every file below `dir` (0 when it does not exist).
pub fn directory_bytes(dir: &Path) -> Result<u64, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut total = 0;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        total += if kind.is_dir() {
            directory_bytes(&entry.path())?
        } else {
            file_bytes(&entry.path())?
        };
    }
    Ok(total)
}

/// The probes as a Markdown table for the load suite's notes.
pub fn markdown(probes: &[Probe]) -> String {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let mut out = String::from(
        "Memory of one load in a child process (`wal_sync = always`, COPY then CHECKPOINT; \
         MB = 10^6 bytes, peak = VmHWM):\n\n\
         | table | input | rows | input MB | peak RSS MB, opened | peak RSS MB, after COPY | \
         peak RSS MB, after CHECKPOINT | on-disk MB (segments) | peak ÷ on-disk | \
         (peak − opened) ÷ on-disk |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in probes {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} |\n",
            p.table,
            p.format,
            p.rows,
            mb(p.input_bytes),
            mb(p.child.hwm_open_kib * 1024),
            mb(p.child.hwm_copy_kib * 1024),
            mb(p.child.hwm_checkpoint_kib * 1024),
            mb(p.directory_bytes),
            mb(p.segment_bytes),
            p.ratio(),
            p.added_ratio(),
        ));
    }
    out
}

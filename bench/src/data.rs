//! The benchmark data: the demo dataset at a chosen scale, written once as CSV
//! (with header) and Parquet files and reused by later runs.

use std::fs;
use std::path::{Path, PathBuf};

use cohortdb_engine::demo::{self, DemoConfig};
use cohortdb_engine::export::FileWriter;
use cohortdb_engine::import::{CsvOptions, FileFormat};

/// Where the files of one dataset are, and how many rows each table has.
pub struct DataFiles {
    pub dir: PathBuf,
    pub tables: Vec<(String, u64)>,
}

impl DataFiles {
    pub fn path(&self, table: &str, format: FileFormat) -> PathBuf {
        let ext = match format {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        };
        self.dir.join(format!("{table}.{ext}"))
    }

    /// Rows of `table` (0 for a table not in the dataset).
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// Writes the dataset for (users, seed) unless it is already there. The files live
/// in the system temp directory, readable by every user (the PostgreSQL server
/// reads them as its own user).
pub fn prepare(users: u64, seed: u64) -> Result<DataFiles, String> {
    let dir = std::env::temp_dir()
        .join("cohortdb-bench")
        .join(format!("users{users}-seed{seed}"));
    let done = dir.join("COMPLETE");
    let names: Vec<&str> = demo::tables().iter().map(|(n, _)| *n).collect();
    if let Ok(text) = fs::read_to_string(&done) {
        let tables = text
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(t, n)| (t.to_string(), n.parse().unwrap_or(0)))
            })
            .collect();
        eprintln!("using the data in {}", dir.display());
        return Ok(DataFiles { dir, tables });
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    make_world_readable(&dir)?;
    eprintln!(
        "generating {users} users (seed {seed}) into {}",
        dir.display()
    );
    let config = DemoConfig {
        users,
        seed,
        ..DemoConfig::default()
    };
    let csv = CsvOptions {
        header: true,
        delimiter: b',',
    };
    let schemas: Vec<_> = demo::tables()
        .into_iter()
        .map(|(_, columns)| cohortdb_engine::types::table_schema(&columns).expect("demo schema"))
        .collect();
    let mut writers = Vec::new();
    for (name, schema) in names.iter().zip(&schemas) {
        let files = DataFiles {
            dir: dir.clone(),
            tables: Vec::new(),
        };
        for format in [FileFormat::Csv, FileFormat::Parquet] {
            let path = files.path(name, format);
            writers.push((
                (*name, format),
                FileWriter::create(&path, format, &csv, schema).map_err(|e| e.to_string())?,
            ));
        }
    }
    let mut counts = vec![0u64; names.len()];
    demo::generate(&config, &mut |table, batch| {
        let index = names.iter().position(|n| *n == table).expect("demo table");
        counts[index] += batch.num_rows() as u64;
        for ((name, _), writer) in writers.iter_mut() {
            if *name == table {
                writer.write(&batch)?;
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    for (_, writer) in writers {
        writer.finish().map_err(|e| e.to_string())?;
    }
    let tables: Vec<(String, u64)> = names.iter().map(|n| n.to_string()).zip(counts).collect();
    for entry in fs::read_dir(&dir).map_err(|e| e.to_string())? {
        make_world_readable(&entry.map_err(|e| e.to_string())?.path())?;
    }
    let listing: String = tables.iter().map(|(t, n)| format!("{t} {n}\n")).collect();
    fs::write(&done, listing).map_err(|e| e.to_string())?;
    Ok(DataFiles { dir, tables })
}

fn make_world_readable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    let mut parent = path.parent();
    // The parent created by create_dir_all must be traversable too.
    while let Some(p) = parent {
        if p.ends_with("cohortdb-bench") {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            break;
        }
        parent = p.parent();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

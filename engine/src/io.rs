//! The file operations by which the engine changes a data directory, behind one
//! trait, so tests can make any of them fail: a write or sync that errors, a
//! short write, a full disk (`tests` in catalog.rs drive a model-based random
//! test through [`Faulty`]). Reads (the manifest, the log at open, memory-mapped
//! segment files) go to the file system directly: they change nothing.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// How the engine writes. The provided methods are what the operating system
/// does; [`Os`] is that, and a test double overrides what it wants to fail.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path`, failing if it exists, for appending.
    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().create_new(true).append(true).open(path)
    }

    /// Opens `path` for reading and appending, creating it if needed.
    fn open_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
    }

    /// Creates or truncates `path` for writing.
    fn create(&self, path: &Path) -> io::Result<File> {
        File::create(path)
    }

    /// Writes all of `bytes` to `file` (at `path`).
    fn write(&self, file: &File, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let _ = path;
        let mut file = file;
        file.write_all(bytes)
    }

    /// Makes `file`'s data and size durable.
    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        let _ = path;
        file.sync_data()
    }

    /// Makes the entries of directory `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|d| d.sync_all())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// The operating system's file operations.
#[derive(Debug, Default)]
pub struct Os;

impl Storage for Os {}

#[cfg(test)]
pub(crate) use faulty::{Fault, Faulty};

#[cfg(test)]
mod faulty {
    use std::sync::Mutex;

    use super::*;

    /// What goes wrong at the chosen operation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Fault {
        /// The operation fails with an I/O error, having done nothing.
        Fail,
        /// A write stores the first half of its bytes, then fails (ENOSPC).
        ShortWrite,
        /// Every write from then on fails with ENOSPC, as on a full disk.
        DiskFull,
    }

    /// The operating system's operations, with a fault at the `countdown`-th
    /// write, sync or rename from when it is armed.
    #[derive(Debug, Default)]
    pub(crate) struct Faulty {
        state: Mutex<State>,
    }

    #[derive(Debug, Default)]
    struct State {
        countdown: Option<(u64, Fault)>,
        disk_full: bool,
        /// Faults that happened since the last [`Faulty::take_fired`].
        fired: u64,
    }

    impl Faulty {
        /// Makes the `n`-th operation from now (1 = the next) fail with `fault`.
        pub(crate) fn arm(&self, n: u64, fault: Fault) {
            let mut state = self.state.lock().expect("fault lock");
            state.countdown = Some((n, fault));
        }

        /// Stops injecting faults (a disk that was full has room again).
        pub(crate) fn disarm(&self) {
            let mut state = self.state.lock().expect("fault lock");
            state.countdown = None;
            state.disk_full = false;
        }

        /// How many faults were injected since the last call.
        pub(crate) fn take_fired(&self) -> u64 {
            std::mem::take(&mut self.state.lock().expect("fault lock").fired)
        }

        /// The fault for this operation, if it is the chosen one.
        fn next(&self, is_write: bool) -> Option<Fault> {
            let mut state = self.state.lock().expect("fault lock");
            if state.disk_full && is_write {
                state.fired += 1;
                return Some(Fault::DiskFull);
            }
            let (n, fault) = state.countdown?;
            if n > 1 {
                state.countdown = Some((n - 1, fault));
                return None;
            }
            state.countdown = None;
            state.fired += 1;
            match fault {
                Fault::DiskFull => {
                    state.disk_full = true;
                    is_write.then_some(Fault::DiskFull)
                }
                Fault::ShortWrite if !is_write => Some(Fault::Fail),
                fault => Some(fault),
            }
        }
    }

    fn injected(what: &str) -> io::Error {
        io::Error::other(format!("injected fault: {what}"))
    }

    fn no_space() -> io::Error {
        io::Error::from_raw_os_error(28)
    }

    impl Storage for Faulty {
        fn write(&self, file: &File, path: &Path, bytes: &[u8]) -> io::Result<()> {
            match self.next(true) {
                None => Os.write(file, path, bytes),
                Some(Fault::Fail) => Err(injected("write")),
                Some(Fault::ShortWrite) => {
                    Os.write(file, path, &bytes[..bytes.len() / 2])?;
                    Err(no_space())
                }
                Some(Fault::DiskFull) => Err(no_space()),
            }
        }

        fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
            match self.next(false) {
                None => Os.sync(file, path),
                Some(_) => Err(injected("fsync")),
            }
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            match self.next(false) {
                None => Os.sync_dir(dir),
                Some(_) => Err(injected("directory fsync")),
            }
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            match self.next(false) {
                None => Os.rename(from, to),
                Some(_) => Err(injected("rename")),
            }
        }
    }
}

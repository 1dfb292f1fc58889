//! `imserver backup` and `imserver restore`: a consistent copy of a live database through
//! SQLite's online backup API, and putting one back.
//!
//! The copy is made in one backup step, inside one read transaction of its own: it is the
//! database as of one commit, whatever the server writes meanwhile (in WAL mode a reader
//! never holds the writer up). Every message acknowledged before the backup began is in it.
//! The copy is checked (`PRAGMA quick_check`), synced, and renamed into place, so a
//! backup file is either whole or absent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::DB_FILE;
use crate::store::StoreError;

/// How long a backup waits, in all, for a lock it could not get at once.
const BUSY_FOR: Duration = Duration::from_secs(30);

/// Copies the database in `data_dir` to `to` (replaced if it exists) while the server may be
/// running; returns the copy's size in bytes.
pub fn backup(data_dir: &Path, to: &Path) -> Result<u64, StoreError> {
    let source = data_dir.join(DB_FILE);
    if !source.is_file() {
        return Err(failed(format!("no database in {}", data_dir.display())));
    }
    let from = Connection::open_with_flags(&source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    from.busy_timeout(BUSY_FOR)?;
    copy(&from, to)
}

/// Puts the backup `from` in place as the database of `data_dir`. The server must be
/// stopped. A data dir that has a database already is left alone unless `replace`.
pub fn restore(from: &Path, data_dir: &Path, replace: bool) -> Result<u64, StoreError> {
    let backup = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    check(&backup)
        .map_err(|e| failed(format!("{} is not a usable backup: {e}", from.display())))?;
    let version: i64 = backup.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        return Err(failed(format!(
            "{} is not an imserver database",
            from.display()
        )));
    }
    std::fs::create_dir_all(data_dir)?;
    let target = data_dir.join(DB_FILE);
    if target.exists() && !replace {
        return Err(failed(format!(
            "{} has a database already: stop the server, and pass --replace to overwrite it",
            data_dir.display()
        )));
    }
    let bytes = copy(&backup, &data_dir.join(format!("{DB_FILE}.restoring")))?;
    // The old database's write-ahead log must not be applied to the new one.
    for stale in [format!("{DB_FILE}-wal"), format!("{DB_FILE}-shm")] {
        match std::fs::remove_file(data_dir.join(stale)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::rename(data_dir.join(format!("{DB_FILE}.restoring")), &target)?;
    sync_dir(data_dir)?;
    Ok(bytes)
}

/// Copies the database `from` reads to `to`, through a temporary file next to it.
fn copy(from: &Connection, to: &Path) -> Result<u64, StoreError> {
    let partial = partial_name(to);
    let _ = std::fs::remove_file(&partial);
    {
        let mut dest = Connection::open(&partial)?;
        {
            let backup = Backup::new(from, &mut dest)?;
            let started = std::time::Instant::now();
            // All pages in one step: one read transaction, so one consistent snapshot.
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    StepResult::Busy | StepResult::Locked if started.elapsed() < BUSY_FOR => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    StepResult::Busy | StepResult::Locked => {
                        return Err(failed("the database stayed locked".into()));
                    }
                    _ => {}
                }
            }
        }
        check(&dest)?;
        // A file of its own, not a write-ahead log beside it.
        dest.pragma_update(None, "journal_mode", "DELETE")?;
    }
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, to)?;
    if let Some(dir) = to.parent() {
        sync_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    }
    Ok(std::fs::metadata(to)?.len())
}

/// `PRAGMA quick_check`: the pages and indexes are sound.
fn check(conn: &Connection) -> Result<(), StoreError> {
    let verdict: String = conn.pragma_query_value(None, "quick_check", |r| r.get(0))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(failed(format!("quick_check: {verdict}")))
    }
}

fn partial_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn failed(reason: String) -> StoreError {
    StoreError::Io(std::io::Error::other(reason))
}

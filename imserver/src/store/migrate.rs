//! `imserver migrate --from sqlite:DIR --to postgres://…`: copies a SQLite store, whole,
//! into an empty PostgreSQL database, in one transaction (all of it or nothing).
//!
//! Everything goes: accounts (password hashes as they are), tokens, the social graph,
//! groups (with their ids), every stream with its `seq`s, payloads, conversations and read
//! receipts' origins, acknowledgement and read positions, and the client ids that recognise
//! a retry. A device resumes on the new store from the `lastSeq` it had.

use std::path::Path;

use super::StoreError;
use super::postgres;
use super::sqlite::export::Export;

/// What was copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub groups: usize,
    pub streams: usize,
    pub entries: usize,
}

/// Copies the SQLite store in `data_dir` (its server stopped) into the empty PostgreSQL
/// database at `url`.
pub async fn sqlite_to_postgres(data_dir: &Path, url: &str) -> Result<Copied, StoreError> {
    let dir = data_dir.to_owned();
    let (export, tables) = blocking(move || {
        let export = Export::open(&dir)?;
        let tables = export.tables()?;
        Ok((export, tables))
    })
    .await?;
    let mut import = postgres::Import::begin(url).await?;
    import.tables(&tables).await?;
    let mut export = Some(export);
    let mut entries = 0;
    for &owner in &tables.owners {
        let from = export.take().expect("put back after each stream");
        let (from, stream) = blocking(move || {
            let stream = from.entries(owner)?;
            Ok((from, stream))
        })
        .await?;
        export = Some(from);
        entries += stream.len();
        import.stream(owner, &stream).await?;
    }
    import.commit().await?;
    Ok(Copied {
        users: tables.users.len(),
        groups: tables.groups.len(),
        streams: tables.owners.len(),
        entries,
    })
}

/// Runs `f` off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

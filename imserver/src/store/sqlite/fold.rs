//! Folding: the chunk and conversation rows of the latest transactions go to
//! `recent_stream_chunks` and `recent_conversation_chunks`, in the order they are written,
//! and the writer moves them into `stream_chunks` and `conversation_chunks` once there are
//! `--fold-rows` of them, in one statement each, sorted by stream.
//!
//! Why: the main tables are keyed by stream, so a transaction that appends to many streams
//! (a group message reaches every member's) would write one page per stream it touched,
//! and write it again in the next transaction. Appended in order, a transaction's rows fill
//! a few pages; folded sorted, each stream's page is written once per fold.
//!
//! Reads look at both tables (see `chunk` and `reads`). A fold moves every recent row, so
//! for any one stream every recent row comes after every row of the main tables; a reader
//! sees a fold whole or not at all (it is part of a transaction).

use rusqlite::Transaction;

/// Moves every recent row into the main tables.
pub(super) fn fold(tx: &Transaction) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO stream_chunks (owner, last_seq, first_seq, batch, entries)
         SELECT owner, last_seq, first_seq, batch, entries FROM recent_stream_chunks
         ORDER BY owner, last_seq",
    )?
    .execute([])?;
    tx.prepare_cached("DELETE FROM recent_stream_chunks")?
        .execute([])?;
    tx.prepare_cached(
        "INSERT INTO conversation_chunks (owner, peer, first_seq, last_seq, received)
         SELECT owner, peer, first_seq, last_seq, received FROM recent_conversation_chunks
         ORDER BY owner, peer, first_seq",
    )?
    .execute([])?;
    tx.prepare_cached("DELETE FROM recent_conversation_chunks")?
        .execute([])?;
    Ok(())
}

/// How many stream rows wait to be folded.
pub(super) fn waiting(c: &rusqlite::Connection) -> rusqlite::Result<usize> {
    c.query_row("SELECT count(*) FROM recent_stream_chunks", [], |r| {
        r.get(0)
    })
}

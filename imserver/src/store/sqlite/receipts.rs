//! Read positions and read receipts in SQLite (what they say: `store::receipts`): a `Read` moves
//! conversation forward and, unless `--read-receipts off`, tells the senders of the newly
//! read messages, each in their own terms: an `Event` of kind `read` whose `upTo` is the
//! `seq` of the newest of *their* messages now read, in *their* stream (every received
//! entry keeps that number, its origin; see `chunk`).
//!
//! A `Read` only ever names entries committed before its batch (a client is shown an entry
//! once it has committed), so the scan reads them from the database.

use std::collections::HashSet;

use improto::Envelope;
use rusqlite::{OptionalExtension, Transaction, params};

use super::chunk::{CHUNK_AT, CONVERSATION_TABLES, HEAD, conversation_of, entries};
use super::draft::load_head;
use super::reads::{Payloads, bound, corrupt};
use super::writer::State;
use crate::id::{Address, UserId};
use crate::store::queue::Then;
use crate::store::receipts::{ReadReceipts, receipt};

impl State<'_> {
    /// `owner` has read the conversation with `peer` up to `seq` of their stream.
    pub(super) fn read(
        &mut self,
        tx: &Transaction,
        owner: UserId,
        peer: Address,
        seq: u64,
        receipts: ReadReceipts,
        then: &mut Vec<Then>,
    ) -> rusqlite::Result<()> {
        // Never past what has committed (see the module docs).
        let mut head = tx.prepare_cached(HEAD)?;
        let seq = seq.min(load_head(self.heads, &mut head, owner)?);
        let before = self.draft.read_position(owner, peer).map_or_else(
            || stored_position(tx, owner, peer),
            |pending| Ok(pending.max(stored_position(tx, owner, peer)?)),
        )?;
        if seq <= before {
            return Ok(());
        }
        let newest = if receipts.on {
            senders_read(tx, owner, peer, before, seq, receipts.scan)?
        } else {
            Vec::new()
        };
        let mut told = Vec::with_capacity(newest.len());
        for (sender, up_to) in newest {
            // A user who blocks the reader is not told of their reading.
            if !self.blocks.contains(&(sender, owner)) {
                let stream = self.draft.stream(self.heads, &mut head, sender)?;
                told.push((sender, up_to, stream));
            }
        }
        // Nothing fails from here on.
        self.draft.read(owner, peer, seq);
        for (sender, up_to, stream) in told {
            self.append_event(sender, stream, receipt(owner, peer, up_to), then);
        }
        Ok(())
    }
}

/// Where `owner` had read the conversation with `peer` up to, as committed.
fn stored_position(tx: &Transaction, owner: UserId, peer: Address) -> rusqlite::Result<u64> {
    let seq = tx
        .prepare_cached("SELECT seq FROM read_positions WHERE owner = ?1 AND peer = ?2")?
        .query_row(params![owner.get(), peer.key()], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0))
}

/// The senders of `owner`'s messages from others in the conversation with `peer` after
/// `before` and up to `upto`, each with the origin of the newest one (their own `seq` of
/// it), looking through at most `scan` of them, newest first. A 1:1 conversation has one
/// sender at most.
fn senders_read(
    tx: &Transaction,
    owner: UserId,
    peer: Address,
    before: u64,
    upto: u64,
    scan: usize,
) -> rusqlite::Result<Vec<(UserId, u64)>> {
    // Newest first: the recent rows, then the folded ones (see `fold`).
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for table in CONVERSATION_TABLES.into_iter().rev() {
        let mut rows = tx.prepare_cached(&format!(
            "SELECT first_seq, last_seq FROM {table}
             WHERE owner = ?1 AND peer = ?2 AND first_seq <= ?3 AND last_seq > ?4
             ORDER BY first_seq DESC"
        ))?;
        let found = rows.query_map(
            params![owner.get(), peer.key(), bound(upto), bound(before)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for range in found {
            ranges.push(range?);
        }
    }
    let mut payloads = Payloads::new(tx);
    let mut newest: Vec<(UserId, u64)> = Vec::new();
    let mut seen = HashSet::new();
    let mut looked = 0;
    'ranges: for (first, last) in ranges {
        let (from, to) = (first.max(before + 1), last.min(upto));
        let chunk = tx
            .prepare_cached(CHUNK_AT)?
            .query_row(params![owner.get(), bound(to)], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .optional()?;
        let Some((chunk_first, batch, data)) = chunk else {
            continue;
        };
        let in_range: Vec<_> = entries(chunk_first, &data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?
            .into_iter()
            .filter(|e| (from..=to).contains(&e.seq) && e.origin != 0)
            .collect();
        for e in in_range.into_iter().rev() {
            if looked == scan {
                break 'ranges;
            }
            looked += 1;
            let payload = payloads.read(batch, e.slot)?;
            if conversation_of(&payload, owner) != Some((peer, true)) {
                continue;
            }
            let sender = Envelope::peek(&payload)
                .ok()
                .and_then(|env| UserId::parse(env.sender()?).ok());
            if let Some(sender) = sender
                && seen.insert(sender)
            {
                newest.push((sender, e.origin));
                if matches!(peer, Address::User(_)) {
                    break 'ranges;
                }
            }
        }
    }
    Ok(newest)
}

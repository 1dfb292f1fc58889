//! Retention: deleting stream entries past `--retention` (once acknowledged) or past
//! `--retention-unacked` (in any case), in the background, a few rows at a time.
//!
//! **What goes.** A stream is kept as chunk rows, one per transaction that appended to it
//! (see `chunk`), so whole chunks go: a chunk goes when every entry in it may (it was
//! committed before the cut-off and, for `--retention`, the stream is acknowledged past
//! it). With it go its conversation rows and the client ids of its messages (see `ids`),
//! and each payload batch once no chunk points into it (`batches.chunks` counts them). A
//! stream's **newest chunk always stays**, whatever its age: the head of a stream is its
//! highest stored `seq`, and the next entry must follow it. Chunks in the recent tables (see
//! `fold`) wait for the next fold.
//!
//! **When a batch was written.** Rather than a time on every row (a column on the hot path
//! and in the largest rows), each sweep step writes a *mark*, `(at, batch)`: every batch up
//! to `batch` was committed by `at`. Batches up to the newest mark older than the cut-off are
//! past it. Marks are written at most every thousandth of the shortest retention (so at
//! most about a thousand are kept), which deletes an entry at most that much late.
//!
//! **No pause for the relay.** The sweep runs on the writer thread as one request among the
//! others of a batch (see `writer`), a step of about `--retention-step` of the writer's
//! time; while a pass has more to do, the next step comes `--retention-pause` later, and a new
//! pass starts every `--retention-every`. So the sweep takes at most about step / (step +
//! pause) of the writer's time, and a message that waits for a step waits about that long.
//!
//! **Space.** New rows reuse the pages freed. When more than a quarter of the file is free
//! (a first sweep of an old database, or a load that fell), steps also return free pages to
//! the file system (`auto_vacuum = INCREMENTAL`), 16 at a time within the same budget,
//! keeping a few for what comes next.

use std::time::{Duration, Instant};

use rusqlite::{OptionalExtension, Transaction, params};

use super::ids;
use crate::config::StoreConfig;
use crate::id::UserId;
use crate::store::queue::Swept;

/// `--retention` and its companions.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Acknowledged entries older than this go.
    pub acked: Option<Duration>,
    /// Any entry older than this goes.
    pub unacked: Option<Duration>,
    /// The writer's time one step takes, about (it stops at the first stream or vacuum
    /// round past it).
    pub step: Duration,
}

impl Policy {
    pub fn of(config: &StoreConfig) -> Self {
        Policy {
            acked: config.retention.0,
            unacked: config.retention_unacked.0,
            step: config.retention_step,
        }
    }

    pub fn is_on(&self) -> bool {
        self.acked.is_some() || self.unacked.is_some()
    }

    /// How far apart marks may be: a thousandth of the shortest retention.
    fn mark_spacing_ms(&self) -> i64 {
        let shortest = [self.acked, self.unacked].into_iter().flatten().min();
        shortest.map_or(0, |d| ms(d) / 1000)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Pages a step returns to the file system at a time (each moves a page from the end of
/// the file into a free one), between looks at the clock.
const VACUUM_PAGES: i64 = 16;

/// Chunk rows of one stream a step deletes at a time, between looks at the clock.
const ROWS: usize = 16;

/// Free pages kept for new rows, however large a share of the file they are.
const SPARE_PAGES: i64 = 64;

/// The sweep's place between steps, kept by the writer thread.
#[derive(Debug)]
pub(super) struct Sweeper {
    policy: Policy,
    /// The next owner to look at in this pass.
    cursor: i64,
    /// The newest mark written, once read.
    last_mark: Option<(i64, i64)>,
}

impl Sweeper {
    pub fn new(policy: Policy) -> Self {
        Sweeper {
            policy,
            cursor: 0,
            last_mark: None,
        }
    }

    /// One step, inside the writer's transaction, at `now` (Unix milliseconds).
    pub fn step(&mut self, tx: &Transaction, now: i64) -> rusqlite::Result<Swept> {
        let started = Instant::now();
        let budget = self.policy.step;
        let spent = || started.elapsed() >= budget;
        self.mark(tx, now)?;
        let acked = self.policy.acked.map(|d| self.cut(tx, now - ms(d)));
        let any = self.policy.unacked.map(|d| self.cut(tx, now - ms(d)));
        let (acked, any) = (acked.transpose()?.flatten(), any.transpose()?.flatten());
        // Marks older than the one each cut-off uses are never needed again; until every
        // cut-off has one (the longer retention has not been reached yet), all are kept.
        let configured = [
            self.policy.acked.map(|_| acked),
            self.policy.unacked.map(|_| any),
        ];
        let used: Option<Vec<Mark>> = configured.into_iter().flatten().collect();
        if let Some(oldest) = used.and_then(|marks| marks.iter().map(|m| m.at).min()) {
            tx.prepare_cached("DELETE FROM retention_marks WHERE at < ?1")?
                .execute([oldest])?;
        }
        let cuts = Cuts {
            acked: acked.map(|c| c.batch),
            any: any.map(|c| c.batch),
        };
        let mut swept = Swept::default();
        if cuts.acked.is_some() || cuts.any.is_some() {
            let mut next_owner =
                tx.prepare_cached("SELECT min(owner) FROM stream_chunks WHERE owner >= ?1")?;
            loop {
                let next = next_owner.query_row([self.cursor], |r| r.get::<_, Option<i64>>(0))?;
                let Some(owner) = next else {
                    // The pass is done; the next starts from the first owner.
                    self.cursor = 0;
                    break;
                };
                let (chunks, entries) = sweep_stream(tx, owner, cuts, ROWS, &spent)?;
                swept.entries += entries;
                // A stream that gave as many as asked, or was cut short, may have more.
                self.cursor = if chunks == ROWS || spent() {
                    owner
                } else {
                    owner.saturating_add(1)
                };
                if spent() {
                    swept.more = true;
                    break;
                }
            }
        }
        while !spent() && vacuum(tx)? {
            swept.more = true;
        }
        tracing::debug!(
            entries = swept.entries,
            more = swept.more,
            took_us = started.elapsed().as_micros() as u64,
            "retention step"
        );
        Ok(swept)
    }

    /// Writes a mark for the batches committed since the last one, if it is time.
    fn mark(&mut self, tx: &Transaction, now: i64) -> rusqlite::Result<()> {
        let last = match self.last_mark {
            Some(last) => Some(last),
            None => tx
                .prepare_cached("SELECT at, batch FROM retention_marks ORDER BY at DESC LIMIT 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
        };
        let newest: Option<i64> = tx
            .prepare_cached("SELECT max(id) FROM batches")?
            .query_row([], |r| r.get(0))?;
        let Some(newest) = newest else {
            self.last_mark = last;
            return Ok(());
        };
        let due = match last {
            None => true,
            Some((at, batch)) => newest > batch && now - at >= self.policy.mark_spacing_ms(),
        };
        if due {
            // Marks only move forwards, even when the clock does not.
            let at = last.map_or(now, |(at, _)| now.max(at + 1));
            tx.prepare_cached("INSERT INTO retention_marks (at, batch) VALUES (?1, ?2)")?
                .execute(params![at, newest])?;
            self.last_mark = Some((at, newest));
        } else {
            self.last_mark = last;
        }
        Ok(())
    }

    /// The newest mark before `before`: every batch up to its `batch` is older.
    fn cut(&self, tx: &Transaction, before: i64) -> rusqlite::Result<Option<Mark>> {
        tx.prepare_cached(
            "SELECT at, batch FROM retention_marks WHERE at < ?1 ORDER BY at DESC LIMIT 1",
        )?
        .query_row([before], |r| {
            Ok(Mark {
                at: r.get(0)?,
                batch: r.get(1)?,
            })
        })
        .optional()
    }

    /// The writer's transaction failed: the marks it wrote are gone.
    pub fn forget(&mut self) {
        self.last_mark = None;
    }
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    at: i64,
    batch: i64,
}

/// Batches up to these ids are past `--retention` and `--retention-unacked`.
#[derive(Debug, Clone, Copy)]
struct Cuts {
    acked: Option<i64>,
    any: Option<i64>,
}

/// Deletes up to `rows` of `owner`'s oldest chunks that may go, with what hangs on them.
/// Returns the chunk rows and the entries deleted.
fn sweep_stream(
    tx: &Transaction,
    owner: i64,
    cuts: Cuts,
    rows: usize,
    spent: &dyn Fn() -> bool,
) -> rusqlite::Result<(usize, u64)> {
    let acked: u64 = tx
        .prepare_cached("SELECT acked FROM stream_acks WHERE owner = ?1")?
        .query_row([owner], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut oldest = tx.prepare_cached(
        "SELECT first_seq, last_seq, batch FROM stream_chunks WHERE owner = ?1
         ORDER BY last_seq LIMIT ?2",
    )?;
    let chunks: Vec<(u64, u64, i64)> = oldest
        .query_map(params![owner, rows.saturating_add(1)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    // Fewer than asked: the last one read is the stream's newest in this table, and the
    // newest of all unless the recent table has more.
    let mut candidates = &chunks[..chunks.len().min(rows)];
    if chunks.len() <= rows {
        let newer = tx
            .prepare_cached("SELECT 1 FROM recent_stream_chunks WHERE owner = ?1")?
            .exists([owner])?;
        if !newer {
            candidates = &candidates[..candidates.len().saturating_sub(1)];
        }
    }
    let past = |&&(_, last, batch): &&(u64, u64, i64)| {
        cuts.any.is_some_and(|cut| batch <= cut)
            || cuts.acked.is_some_and(|cut| batch <= cut) && last <= acked
    };
    let mut gone: Vec<_> = candidates.iter().take_while(past).collect();
    let mut release =
        tx.prepare_cached("UPDATE batches SET chunks = chunks - 1 WHERE id = ?1 RETURNING chunks")?;
    let mut drop_batch = tx.prepare_cached("DELETE FROM batches WHERE id = ?1")?;
    for (i, &&(_, _, batch)) in gone.iter().enumerate() {
        let left: Option<i64> = release.query_row([batch], |r| r.get(0)).optional()?;
        // Its last chunk gone, a batch goes (its payloads may fill many pages).
        if left == Some(0) {
            drop_batch.execute([batch])?;
        }
        if spent() {
            gone.truncate(i + 1);
            break;
        }
    }
    let Some(&&(_, through, _)) = gone.last() else {
        return Ok((0, 0));
    };
    tx.prepare_cached("DELETE FROM stream_chunks WHERE owner = ?1 AND last_seq <= ?2")?
        .execute(params![owner, through])?;
    // Per conversation, a range at its start (the table is keyed by owner, peer, first_seq):
    // the owner's other rows are not read.
    let mut next_peer = tx.prepare_cached(
        "SELECT min(peer) FROM conversation_chunks WHERE owner = ?1 AND peer > ?2",
    )?;
    let mut drop_conversation = tx.prepare_cached(
        "DELETE FROM conversation_chunks
         WHERE owner = ?1 AND peer = ?2 AND first_seq <= ?3 AND last_seq <= ?3",
    )?;
    let mut peer = i64::MIN;
    while let Some(next) =
        next_peer.query_row(params![owner, peer], |r| r.get::<_, Option<i64>>(0))?
    {
        drop_conversation.execute(params![owner, next, through])?;
        peer = next;
    }
    if let Some(user) = UserId::new(owner) {
        ids::forget_through(tx, user, through)?;
    }
    let entries = gone.iter().map(|&&(first, last, _)| last + 1 - first).sum();
    Ok((gone.len(), entries))
}

/// Returns a few free pages to the file system when more than a quarter of the file is
/// free; whether it did.
fn vacuum(tx: &Transaction) -> rusqlite::Result<bool> {
    let pages = |pragma: &str| tx.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0));
    let (free, total): (i64, i64) = (pages("freelist_count")?, pages("page_count")?);
    if free <= SPARE_PAGES || free * 4 <= total {
        return Ok(false);
    }
    let pages = (free - SPARE_PAGES).min(VACUUM_PAGES);
    // It frees a page per step (each answers a row): stepped to its end.
    let mut vacuum = tx.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = vacuum.query([])?;
    while rows.next()?.is_some() {}
    Ok(true)
}

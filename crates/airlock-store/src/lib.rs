//! airlock's event store: the journal's events, shipped here in the
//! background, for audit queries, `verify` against the journal, and sharing
//! between gateway replicas.
//!
//! Design, and why:
//!
//! - **One code path, two databases.** SQLite (embedded, the default:
//!   `sqlite://path?mode=rwc`) and PostgreSQL (several replicas) both go
//!   through `sqlx::Any` with SQL both dialects accept, and run the same
//!   embedded migrations (`migrations/`). A second dialect would be a second
//!   thing to test and to get wrong.
//! - **Portable columns.** Only `TEXT` and `BIGINT`: hashes are lowercase
//!   hex, payloads base64 (they are opaque bytes, not necessarily UTF-8),
//!   times are Unix milliseconds. `Any` maps these the same on both sides.
//! - **Shipping is idempotent.** `(stream, seq)` is the key. A shipper that
//!   crashed after inserting but before noting its progress re-sends events;
//!   the same event again is a no-op, while a *different* event under the
//!   same key is a [`StoreError::Conflict`] (a forked or forged stream),
//!   never a silent overwrite.
//! - **The tail is accounted for.** `streams` holds each stream's last
//!   shipped seq and hash, written in the same transaction as the events
//!   ([`Store::high_water`]), so deleting the newest events is detectable.
//! - **Retention keeps the chain checkable.** [`Store::prune`] deletes a
//!   prefix of a stream (never its last shipped event) and records the last
//!   deleted event's seq and hash in `anchors` in the same transaction; the
//!   events left chain from it.
//! - **Approvals are rows, decided by conditional updates.** Held
//!   statements and just-in-time access grants share `approvals` (votes in
//!   `approval_votes`, one per human; gateway liveness in `gateways`). Every
//!   status change is an `UPDATE … WHERE status = 'pending'` (or
//!   `'granted'`), and a vote updates the row before inserting itself, in
//!   one transaction, so concurrent voters and replicas serialise on the
//!   row and each change happens once ([`Store::vote`], `approvals.rs`).
//! - **Down is an error, quickly.** Every pool acquire is bounded by the
//!   connect timeout, so readiness and the shipper learn of an unreachable
//!   store instead of hanging; the journal keeps the events meanwhile.
#![forbid(unsafe_code)]

mod approvals;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};
use uuid::Uuid;

pub use approvals::{
    ApprovalFilter, ApprovalKind, ApprovalRow, ApprovalStatus, NewApproval, Vote, VoteKind,
    VoteOutcome, VoteRow,
};

/// A SHA-256 chain hash, as in `airlock_journal::Hash`.
pub type Hash = [u8; 32];

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached, or a query failed.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    /// The embedded migrations could not be applied.
    #[error("store: migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Connecting took longer than the timeout.
    #[error("store: no connection within {0:?}")]
    Timeout(Duration),
    /// The store already holds a different event under this key: the
    /// stream was forked or tampered with. Nothing of the batch was written.
    #[error("store: stream {stream} seq {seq} is already stored with hash {stored}, not {offered}")]
    Conflict {
        stream: Uuid,
        seq: u64,
        stored: String,
        offered: String,
    },
    /// A value the store cannot hold or a row it cannot read back.
    #[error("store: {0}")]
    Invalid(String),
}

/// One journal event, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The journal stream (one per gateway process).
    pub stream: Uuid,
    /// 1 for a stream's first event, then +1 each; at most `i64::MAX`.
    pub seq: u64,
    /// The previous event's hash (or the stream's genesis hash).
    pub prev: Hash,
    /// `SHA-256(prev || seq LE || payload)`, as the journal computed it.
    pub hash: Hash,
    /// The event, opaque bytes (canonical JSON by convention).
    pub payload: Vec<u8>,
    /// The session the event belongs to, for replay; none for e.g. reloads.
    pub session_id: Option<String>,
    /// The event kind (`session_start`, `statement`, ...), for filtering.
    pub kind: Option<String>,
    /// Who the session is (a `session_start`'s principal), for filtering.
    pub principal: Option<String>,
    /// The connection the session was routed to (`session_start`).
    pub connection: Option<String>,
    /// A statement's decision (`allow`, `deny`, `approve`).
    pub decision: Option<String>,
    /// When the event was recorded, Unix milliseconds.
    pub recorded_at: i64,
}

/// Which sessions [`Store::sessions`] lists. Every `Some` must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFilter {
    pub principal: Option<String>,
    pub connection: Option<String>,
    /// Sessions started at or after this time, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// Sessions with at least one statement that got this decision.
    pub decision: Option<String>,
    /// At most this many sessions (the newest).
    pub limit: u32,
}

impl Default for SessionFilter {
    /// Every session, the newest 100.
    fn default() -> Self {
        SessionFilter {
            principal: None,
            connection: None,
            since_ms: None,
            decision: None,
            limit: 100,
        }
    }
}

/// The columns every event query reads, as `decode_row` reads them.
const COLUMNS: &str = "stream, seq, prev, hash, payload, session_id, kind, \
                       principal, connection, decision, recorded_at";

/// A connection pool to the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite: bulk inserts use anonymous `?` parameters. (sqlx-sqlite looks
    /// each numbered `$N` up by name, a linear scan per parameter, which
    /// makes a many-row INSERT quadratic.)
    sqlite: bool,
}

impl Store {
    /// A default that fails fast on loopback and tolerates a busy network.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// [`connect_with`](Store::connect_with) the default timeout.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, Store::DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Connects to `sqlite://…` or `postgres://…` and applies the embedded
    /// migrations (idempotent; on PostgreSQL, replicas starting together
    /// serialise on sqlx's advisory lock). `timeout` bounds connecting now
    /// and every later wait for a pooled connection.
    pub async fn connect_with(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let connect = async {
            let pool = AnyPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(timeout)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if sqlite {
                            // WAL: a shipping transaction appends to the log
                            // instead of copying pages to a rollback journal
                            // and syncing twice. NORMAL sync: a power loss
                            // can lose the last transactions, which the
                            // journal still holds and ships again.
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            // A multi-row INSERT keeps a statement journal
                            // (to undo itself on a constraint error): in
                            // memory, not in a temporary file.
                            sqlx::query("PRAGMA temp_store = MEMORY")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            MIGRATOR.run(&pool).await?;
            Ok::<_, StoreError>(pool)
        };
        let pool = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        Ok(Store { pool, sqlite })
    }

    /// Readiness: the store answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool's connections; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Inserts `events` in one transaction and returns how many were new.
    /// Events already stored with the same hash are skipped, so a shipper
    /// may resend after a crash; one stored with a different hash fails the
    /// whole batch with [`StoreError::Conflict`]. Each stream's high-water
    /// mark moves up to the highest seq of the batch in the same
    /// transaction (never down).
    pub async fn insert_events(&self, events: &[EventRow]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        // Per stream, the highest seq of the batch and its hash.
        let mut marks: Vec<(Uuid, u64, Hash)> = Vec::new();
        for e in events {
            match marks.iter_mut().find(|m| m.0 == e.stream) {
                Some(m) if m.1 < e.seq => (m.1, m.2) = (e.seq, e.hash),
                Some(_) => {}
                None => marks.push((e.stream, e.seq, e.hash)),
            }
        }
        // Multi-row INSERTs: one statement per chunk, not per event (a
        // statement costs tens of µs through the driver, an event a few).
        for chunk in events.chunks(INSERT_CHUNK) {
            let sql = insert_sql(chunk.len(), self.sqlite);
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.stream.hyphenated().to_string())
                    .bind(to_i64(e.seq)?)
                    .bind(hex(&e.prev))
                    .bind(hex(&e.hash))
                    .bind(B64.encode(&e.payload))
                    .bind(e.session_id.clone())
                    .bind(e.kind.clone())
                    .bind(e.principal.clone())
                    .bind(e.connection.clone())
                    .bind(e.decision.clone())
                    .bind(e.recorded_at);
            }
            let done = query.execute(&mut *tx).await?;
            inserted += done.rows_affected();
            if done.rows_affected() == chunk.len() as u64 {
                continue;
            }
            // Some were stored already (a resend): each must be the same
            // event. The hash covers prev, seq and payload, so comparing it
            // is comparing the event.
            for e in chunk {
                let hash = hex(&e.hash);
                let stored: String =
                    sqlx::query_scalar("SELECT hash FROM events WHERE stream = $1 AND seq = $2")
                        .bind(e.stream.hyphenated().to_string())
                        .bind(to_i64(e.seq)?)
                        .fetch_one(&mut *tx)
                        .await?;
                if stored != hash {
                    return Err(StoreError::Conflict {
                        stream: e.stream,
                        seq: e.seq,
                        stored,
                        offered: hash,
                    });
                }
            }
        }
        for (stream, seq, hash) in marks {
            sqlx::query(
                "INSERT INTO streams (stream, shipped_seq, shipped_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream) DO UPDATE \
                 SET shipped_seq = excluded.shipped_seq, shipped_hash = excluded.shipped_hash \
                 WHERE streams.shipped_seq < excluded.shipped_seq",
            )
            .bind(stream.hyphenated().to_string())
            .bind(to_i64(seq)?)
            .bind(hex(&hash))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The high-water mark of `stream`: the highest seq ever shipped and its
    /// hash. Retention never deletes that event, so a store whose events end
    /// before it has lost its tail.
    pub async fn high_water(&self, stream: Uuid) -> Result<Option<(u64, Hash)>, StoreError> {
        let row = sqlx::query("SELECT shipped_seq, shipped_hash FROM streams WHERE stream = $1")
            .bind(stream.hyphenated().to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| seq_and_hash(&r, "shipped_seq", "shipped_hash"))
            .transpose()
    }

    /// Where retention cut `stream`: the seq and hash of the last event
    /// [`prune`](Store::prune) deleted. The first event kept chains from it.
    pub async fn anchor(&self, stream: Uuid) -> Result<Option<(u64, Hash)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM anchors WHERE stream = $1")
            .bind(stream.hyphenated().to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| seq_and_hash(&r, "seq", "hash")).transpose()
    }

    /// Retention: deletes `stream`'s events from its oldest up to (not
    /// including) the first one recorded at or after `before_ms`, and never
    /// its last shipped event, so the events left are a suffix of the chain
    /// and the high-water mark stays corroborated. In the same transaction
    /// the anchor becomes the last deleted event's seq and hash. Returns how
    /// many events were deleted.
    pub async fn prune(&self, stream: Uuid, before_ms: i64) -> Result<u64, StoreError> {
        let id = stream.hyphenated().to_string();
        let mut tx = self.pool.begin().await?;
        let high_water: Option<i64> =
            sqlx::query_scalar("SELECT shipped_seq FROM streams WHERE stream = $1")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM events WHERE stream = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
        // Without a mark (it was deleted), the last event stored stands in.
        let Some(keep_last) = high_water.or(last) else {
            return Ok(0);
        };
        let first_recent: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM events WHERE stream = $1 AND recorded_at >= $2 \
             ORDER BY seq LIMIT 1",
        )
        .bind(&id)
        .bind(before_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let keep_from = first_recent.map_or(keep_last, |s| s.min(keep_last));
        let Some(cut) = sqlx::query(
            "SELECT seq, hash FROM events WHERE stream = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(&id)
        .bind(keep_from)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(0);
        };
        let (seq, hash): (i64, String) = (cut.try_get("seq")?, cut.try_get("hash")?);
        let done = sqlx::query("DELETE FROM events WHERE stream = $1 AND seq <= $2")
            .bind(&id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO anchors (stream, seq, hash, pruned_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream) DO UPDATE \
             SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at \
             WHERE anchors.seq < excluded.seq",
        )
        .bind(&id)
        .bind(seq)
        .bind(&hash)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The `session_start` events of the sessions `filter` matches, newest
    /// first.
    pub async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<EventRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM events s WHERE s.kind = 'session_start'");
        let mut n = 0;
        let mut param = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if filter.principal.is_some() {
            param(&mut sql, " AND s.principal = ?");
        }
        if filter.connection.is_some() {
            param(&mut sql, " AND s.connection = ?");
        }
        if filter.since_ms.is_some() {
            param(&mut sql, " AND s.recorded_at >= ?");
        }
        if filter.decision.is_some() {
            param(
                &mut sql,
                " AND EXISTS (SELECT 1 FROM events d WHERE d.decision = ? \
                 AND d.session_id = s.session_id AND d.kind = 'statement')",
            );
        }
        param(
            &mut sql,
            " ORDER BY s.recorded_at DESC, s.stream DESC, s.seq DESC LIMIT ?",
        );
        let mut query = sqlx::query(&sql);
        if let Some(p) = &filter.principal {
            query = query.bind(p.as_str());
        }
        if let Some(c) = &filter.connection {
            query = query.bind(c.as_str());
        }
        if let Some(t) = filter.since_ms {
            query = query.bind(t);
        }
        if let Some(d) = &filter.decision {
            query = query.bind(d.as_str());
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_row).collect()
    }

    /// Every event of a session, in journal order (by stream, then seq).
    pub async fn session_events(&self, session_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE session_id = $1 ORDER BY stream, seq"
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// The highest stored seq of `stream` and its hash: where the shipper
    /// resumes, and what the next event's `prev` must be.
    ///
    /// It reads the events themselves: compare it with
    /// [`high_water`](Store::high_water) to tell a lost tail.
    pub async fn shipped(&self, stream: Uuid) -> Result<Option<(u64, Hash)>, StoreError> {
        let row =
            sqlx::query("SELECT seq, hash FROM events WHERE stream = $1 ORDER BY seq DESC LIMIT 1")
                .bind(stream.hyphenated().to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| seq_and_hash(&r, "seq", "hash")).transpose()
    }

    /// [`shipped`](Store::shipped) and [`high_water`](Store::high_water)
    /// read in one statement, so one snapshot: apart, a shipper committing
    /// in between would make them disagree as if the tail had been cut.
    pub async fn shipped_and_high_water(
        &self,
        stream: Uuid,
    ) -> Result<(Option<(u64, Hash)>, Option<(u64, Hash)>), StoreError> {
        let row = sqlx::query(
            "SELECT e.seq, e.hash, m.shipped_seq, m.shipped_hash \
             FROM (SELECT 1 AS one) k \
             LEFT JOIN (SELECT seq, hash FROM events WHERE stream = $1 \
                        ORDER BY seq DESC LIMIT 1) e ON 1 = 1 \
             LEFT JOIN streams m ON m.stream = $2",
        )
        .bind(stream.hyphenated().to_string())
        .bind(stream.hyphenated().to_string())
        .fetch_one(&self.pool)
        .await?;
        let pair = |seq: &str, hash: &str| -> Result<Option<(u64, Hash)>, StoreError> {
            match (
                row.try_get::<Option<i64>, _>(seq)?,
                row.try_get::<Option<String>, _>(hash)?,
            ) {
                (Some(s), Some(h)) => Ok(Some((from_i64(s)?, unhex(&h)?))),
                _ => Ok(None),
            }
        };
        Ok((pair("seq", "hash")?, pair("shipped_seq", "shipped_hash")?))
    }

    /// Every stream that has events or a high-water mark (a stream whose
    /// events were all deleted is still listed), in id order (UUID v7:
    /// oldest first).
    pub async fn streams(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT stream FROM events UNION SELECT stream FROM streams ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|s| Uuid::try_parse(s).map_err(|e| bad("stream", e)))
            .collect()
    }

    /// Up to `limit` events of `stream` with seq above `after_seq`, in seq
    /// order: page through a stream with the last seq of each page.
    pub async fn events(
        &self,
        stream: Uuid,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(stream.hyphenated().to_string())
        .bind(to_i64(after_seq)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// Deletes the events of `stream` with seq below `seq` and returns how
    /// many, without recording an anchor: `verify` then reports the events
    /// as missing. Retention is [`prune`](Store::prune).
    pub async fn delete_before(&self, stream: Uuid, seq: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM events WHERE stream = $1 AND seq < $2")
            .bind(stream.hyphenated().to_string())
            .bind(to_i64(seq)?)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Events per INSERT statement: 11 parameters each, well under SQLite's
/// and PostgreSQL's limits.
const INSERT_CHUNK: usize = 64;

/// `INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING` for `rows` events,
/// with `?` parameters (`anonymous`) or `$1, $2, …`.
fn insert_sql(rows: usize, anonymous: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO events \
         (stream, seq, prev, hash, payload, session_id, kind, \
          principal, connection, decision, recorded_at) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..11 {
            if c > 0 {
                sql.push_str(", ");
            }
            if anonymous {
                sql.push('?');
            } else {
                sql.push_str(&format!("${}", r * 11 + c + 1));
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (stream, seq) DO NOTHING");
    sql
}

fn decode_row(r: &AnyRow) -> Result<EventRow, StoreError> {
    let stream: String = r.try_get("stream")?;
    Ok(EventRow {
        stream: Uuid::try_parse(&stream).map_err(|e| bad("stream", e))?,
        seq: from_i64(r.try_get("seq")?)?,
        prev: unhex(&r.try_get::<String, _>("prev")?)?,
        hash: unhex(&r.try_get::<String, _>("hash")?)?,
        payload: B64
            .decode(r.try_get::<String, _>("payload")?)
            .map_err(|e| bad("payload", e))?,
        session_id: r.try_get("session_id")?,
        kind: r.try_get("kind")?,
        principal: r.try_get("principal")?,
        connection: r.try_get("connection")?,
        decision: r.try_get("decision")?,
        recorded_at: r.try_get("recorded_at")?,
    })
}

fn seq_and_hash(r: &AnyRow, seq: &str, hash: &str) -> Result<(u64, Hash), StoreError> {
    Ok((
        from_i64(r.try_get(seq)?)?,
        unhex(&r.try_get::<String, _>(hash)?)?,
    ))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("stored {what} is malformed: {e}"))
}

fn to_i64(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("seq {seq} is over i64::MAX")))
}

fn from_i64(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| bad("seq", seq))
}

fn hex(h: &Hash) -> String {
    // Twice per shipped event: a table, not a `format!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Result<Hash, StoreError> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(bad("hash", format_args!("{} hex digits", b.len())));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(bad("hash", "not lowercase hex")),
    };
    let mut h = [0; 32];
    for (i, out) in h.iter_mut().enumerate() {
        *out = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = (i * 37) as u8;
        }
        assert_eq!(unhex(&hex(&h)).unwrap(), h);
        assert!(unhex("00").is_err());
        assert!(unhex(&"G".repeat(64)).is_err());
    }
}

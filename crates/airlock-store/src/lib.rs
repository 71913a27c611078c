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
//! - **Down is an error, quickly.** Every pool acquire is bounded by the
//!   connect timeout, so readiness and the shipper learn of an unreachable
//!   store instead of hanging; the journal keeps the events meanwhile.
#![forbid(unsafe_code)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};
use uuid::Uuid;

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
    /// When the event was recorded, Unix milliseconds.
    pub recorded_at: i64,
}

/// A connection pool to the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
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
        let connect = async {
            let pool = AnyPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(timeout)
                .connect(url)
                .await?;
            MIGRATOR.run(&pool).await?;
            Ok::<_, StoreError>(pool)
        };
        let pool = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        Ok(Store { pool })
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
    /// whole batch with [`StoreError::Conflict`].
    pub async fn insert_events(&self, events: &[EventRow]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for e in events {
            let seq = to_i64(e.seq)?;
            let stream = e.stream.hyphenated().to_string();
            let hash = hex(&e.hash);
            let done = sqlx::query(
                "INSERT INTO events \
                 (stream, seq, prev, hash, payload, session_id, kind, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (stream, seq) DO NOTHING",
            )
            .bind(&stream)
            .bind(seq)
            .bind(hex(&e.prev))
            .bind(&hash)
            .bind(B64.encode(&e.payload))
            .bind(e.session_id.as_deref())
            .bind(e.kind.as_deref())
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                inserted += 1;
                continue;
            }
            // The hash covers prev, seq and payload, so comparing it is
            // comparing the event.
            let stored: String =
                sqlx::query_scalar("SELECT hash FROM events WHERE stream = $1 AND seq = $2")
                    .bind(&stream)
                    .bind(seq)
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
        tx.commit().await?;
        Ok(inserted)
    }

    /// The highest stored seq of `stream` and its hash: where the shipper
    /// resumes, and what the next event's `prev` must be.
    pub async fn shipped(&self, stream: Uuid) -> Result<Option<(u64, Hash)>, StoreError> {
        let row =
            sqlx::query("SELECT seq, hash FROM events WHERE stream = $1 ORDER BY seq DESC LIMIT 1")
                .bind(stream.hyphenated().to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let seq = from_i64(r.try_get("seq")?)?;
            let hash = unhex(&r.try_get::<String, _>("hash")?)?;
            Ok((seq, hash))
        })
        .transpose()
    }

    /// Every stream that has events, in id order (UUID v7: oldest first).
    pub async fn streams(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT stream FROM events ORDER BY stream")
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
        let rows = sqlx::query(
            "SELECT stream, seq, prev, hash, payload, session_id, kind, recorded_at \
             FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(stream.hyphenated().to_string())
        .bind(to_i64(after_seq)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// Retention: deletes the events of `stream` with seq below `seq` and
    /// returns how many. Keep the event just before the first one kept if
    /// `verify` is to check where the remaining chain starts.
    pub async fn delete_before(&self, stream: Uuid, seq: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM events WHERE stream = $1 AND seq < $2")
            .bind(stream.hyphenated().to_string())
            .bind(to_i64(seq)?)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
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
        recorded_at: r.try_get("recorded_at")?,
    })
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
    h.iter().map(|b| format!("{b:02x}")).collect()
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

-- Audit queries, the high-water mark and retention. Portable SQL only, as in
-- 0001: SQLite and PostgreSQL run this same file.

-- What sessions are listed and filtered by; NULL for events without them.
ALTER TABLE events ADD COLUMN principal TEXT;
ALTER TABLE events ADD COLUMN connection TEXT;
ALTER TABLE events ADD COLUMN decision TEXT;

-- Listing sessions newest first, overall and by principal or connection,
-- and sessions having a statement with a given decision. Partial indexes:
-- only the rows they find pay for them, so shipping a result event updates
-- no index but the key and session_id. (Time ranges for retention walk the
-- key, stream by stream.)
CREATE INDEX IF NOT EXISTS events_sessions ON events (recorded_at)
    WHERE kind = 'session_start';
CREATE INDEX IF NOT EXISTS events_principal ON events (principal, recorded_at)
    WHERE principal IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_connection ON events (connection, recorded_at)
    WHERE connection IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_decision ON events (decision, session_id)
    WHERE decision IS NOT NULL;

-- Per stream, the last event ever shipped, written in the same transaction
-- as the events: a store whose events end before it lost its tail.
CREATE TABLE IF NOT EXISTS streams (
    stream       TEXT    NOT NULL PRIMARY KEY,
    shipped_seq  BIGINT  NOT NULL,
    shipped_hash TEXT    NOT NULL
);

-- Stores that shipped before this migration: their last events are the marks.
INSERT INTO streams (stream, shipped_seq, shipped_hash)
SELECT e.stream, e.seq, e.hash FROM events e
WHERE e.seq = (SELECT MAX(m.seq) FROM events m WHERE m.stream = e.stream);

-- Per stream, the last event retention deleted: the remaining events chain
-- from its hash, so verify can still check them.
CREATE TABLE IF NOT EXISTS anchors (
    stream    TEXT    NOT NULL PRIMARY KEY,
    seq       BIGINT  NOT NULL,
    hash      TEXT    NOT NULL,
    pruned_at BIGINT  NOT NULL
);

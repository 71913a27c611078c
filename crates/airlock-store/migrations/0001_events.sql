-- Shipped journal events. Portable SQL only: SQLite and PostgreSQL run this
-- same file. Hashes are lowercase hex and payloads base64 (payloads are
-- opaque bytes and may not be UTF-8), so no BLOB/BYTEA type is needed.
CREATE TABLE IF NOT EXISTS events (
    stream      TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    prev        TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    session_id  TEXT,
    kind        TEXT,
    recorded_at BIGINT  NOT NULL,
    PRIMARY KEY (stream, seq)
);

CREATE INDEX IF NOT EXISTS events_session_id ON events (session_id);

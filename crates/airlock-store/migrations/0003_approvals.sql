-- Human approvals of held statements and just-in-time access grants.
-- Portable SQL only, as in 0001: SQLite and PostgreSQL run this same file.
-- Times are Unix milliseconds; ids are hyphenated UUIDs.

-- One row per held statement (kind 'statement') or access request (kind
-- 'access'). Every change of status is a conditional UPDATE on the status
-- it leaves ('pending', or 'granted' for a revocation or an expiry), so
-- replicas racing on a row change it once.
CREATE TABLE IF NOT EXISTS approvals (
    id                TEXT    NOT NULL PRIMARY KEY,
    kind              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    requester_issuer  TEXT    NOT NULL,
    requester_subject TEXT    NOT NULL,
    -- The human an agent acts for, if any.
    requester_act     TEXT,
    connection        TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    rule              TEXT    NOT NULL,
    -- The groups that may vote, as a JSON array of strings.
    approvers         TEXT    NOT NULL,
    min_approvals     BIGINT  NOT NULL,
    -- Approve votes so far.
    approvals         BIGINT  NOT NULL DEFAULT 0,
    -- Opaque JSON from the gateway: statement, classification, reason, ...
    detail            TEXT    NOT NULL,
    session_id        TEXT,
    -- The gateway process holding the statement.
    gateway           TEXT,
    created_ms        BIGINT  NOT NULL,
    -- A pending row cannot be approved at or after this time.
    deadline_ms       BIGINT,
    decided_ms        BIGINT,
    reason            TEXT,
    decided_by        TEXT,
    -- Access: the grant's length, and when the grant ends.
    duration_ms       BIGINT,
    expires_ms        BIGINT
);

-- Pending (and other) rows by status, oldest or newest first; also finds
-- the grants to expire.
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created_ms);
-- Listing everything newest first.
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created_ms);
-- A principal's grants on a connection.
CREATE INDEX IF NOT EXISTS approvals_grants
    ON approvals (requester_issuer, requester_subject, connection)
    WHERE kind = 'access';
-- The statements a gateway holds, for abandoning them.
CREATE INDEX IF NOT EXISTS approvals_gateway ON approvals (gateway)
    WHERE status = 'pending';

-- One vote per human per approval: an agent and the human it acts for, or
-- two identities of one person, count once.
CREATE TABLE IF NOT EXISTS approval_votes (
    approval_id TEXT    NOT NULL,
    voter       TEXT    NOT NULL,
    human       TEXT    NOT NULL,
    vote        TEXT    NOT NULL,
    reason      TEXT,
    at_ms       BIGINT  NOT NULL,
    PRIMARY KEY (approval_id, human)
);

-- Gateway processes' liveness: a pending statement whose gateway stopped
-- heartbeating is abandoned (nobody is left to run it).
CREATE TABLE IF NOT EXISTS gateways (
    id           TEXT    NOT NULL PRIMARY KEY,
    heartbeat_ms BIGINT  NOT NULL
);

-- wfmd's first schema: state history, transition attempts, the audit log, the outbox.
-- Times are INTEGER Unix milliseconds, UTC.

-- What state each agent was in, and when. One open interval (ended_at IS NULL) per agent.
CREATE TABLE state_intervals (
    id          INTEGER PRIMARY KEY,
    agent_id    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    reason      TEXT,
    origin      TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    attempt_id  TEXT,               -- the transition that opened it; NULL when observed
    CHECK (ended_at IS NULL OR ended_at >= started_at)
) STRICT;
CREATE UNIQUE INDEX state_intervals_one_open ON state_intervals (agent_id) WHERE ended_at IS NULL;
CREATE INDEX state_intervals_agent_start ON state_intervals (agent_id, started_at);

-- Every requested change and how it ended.
CREATE TABLE transition_attempts (
    id               TEXT    PRIMARY KEY,          -- UUID v7: sorts by time
    idempotency_key  TEXT    UNIQUE,
    agent_id         TEXT    NOT NULL,
    from_state       TEXT,
    target_state     TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    origin           TEXT    NOT NULL,
    actor            TEXT    NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'rejected', 'failed')),
    violation        TEXT,
    error            TEXT,
    latency_ms       INTEGER NOT NULL,
    requested_at     INTEGER NOT NULL,
    completed_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX transition_attempts_requested ON transition_attempts (requested_at);
CREATE INDEX transition_attempts_agent ON transition_attempts (agent_id, requested_at);

-- Append-only, hash-chained: hash = sha256(prev_hash || canonical entry).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    agent_id    TEXT,
    subject_id  TEXT,
    detail      TEXT    NOT NULL,   -- JSON
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
) STRICT;
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TRIGGER audit_log_refuses_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_refuses_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Events to deliver as webhooks, in commit order (seq).
CREATE TABLE outbox_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,   -- evt_…; the webhook-id
    event_type  TEXT    NOT NULL,
    agent_id    TEXT,
    payload     TEXT    NOT NULL,          -- the webhook body
    created_at  INTEGER NOT NULL
) STRICT;

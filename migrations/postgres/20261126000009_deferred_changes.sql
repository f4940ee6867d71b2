-- Changes that wait for the agent to be free, at most one per agent (as
-- migrations/sqlite/20261126000023_deferred_changes.sql).
CREATE TABLE deferred_changes (
    agent_id         TEXT    PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    target_state     TEXT    NOT NULL,
    reason           TEXT,
    origin           TEXT    NOT NULL,
    actor            TEXT    NOT NULL,
    idempotency_key  TEXT,
    bulk_job_id      TEXT,
    bulk_seq         BIGINT,
    busy_since       BIGINT,
    requested_at     BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);
CREATE INDEX deferred_changes_expiry ON deferred_changes (expires_at);

-- A bulk item may wait as `deferred` until its deferred change is settled.
ALTER TABLE bulk_items DROP CONSTRAINT bulk_items_outcome_check;
ALTER TABLE bulk_items ADD CONSTRAINT bulk_items_outcome_check
    CHECK (outcome IN ('pending', 'succeeded', 'unchanged', 'rejected', 'failed',
                       'cancelled', 'deferred'));

-- A bulk job's `defer_for` in ms when asked with `when_busy = "defer"`; NULL = `reject`.
ALTER TABLE bulk_jobs ADD COLUMN defer_for_ms BIGINT;

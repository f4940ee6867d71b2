-- Supervisor bulk jobs: one job, one item per agent. A job and all its items are written
-- in one transaction when the job is accepted; the runner then moves each item from
-- pending to its outcome. Times are INTEGER Unix milliseconds, UTC.

CREATE TABLE bulk_jobs (
    id                   TEXT    PRIMARY KEY,              -- job_<UUID v7>: sorts by time
    idempotency_key      TEXT    UNIQUE,
    request_hash         TEXT    NOT NULL,                 -- sha256 of the request, to refuse a key reused for another one
    target_state         TEXT,                             -- NULL for a revert (each item has its own)
    reason               TEXT,                             -- as asked; NULL = the state's default
    team                 TEXT,                             -- the team asked for, when not a list
    reverts_job_id       TEXT    REFERENCES bulk_jobs (id),
    actor                TEXT    NOT NULL,
    status               TEXT    NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'completed', 'cancelled')),
    cancel_requested_at  INTEGER,
    created_at           INTEGER NOT NULL,
    started_at           INTEGER,
    finished_at          INTEGER
) STRICT;
CREATE INDEX bulk_jobs_unfinished ON bulk_jobs (created_at) WHERE status IN ('queued', 'running');

CREATE TABLE bulk_items (
    job_id        TEXT    NOT NULL REFERENCES bulk_jobs (id),
    seq           INTEGER NOT NULL,                        -- position in the request
    agent_id      TEXT    NOT NULL,
    target_state  TEXT    NOT NULL,
    reason        TEXT,                                    -- NULL = the state's default
    outcome       TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (outcome IN ('pending', 'succeeded', 'rejected', 'failed', 'cancelled')),
    violation     TEXT,
    error         TEXT,
    attempt_id    TEXT,                                    -- the transition attempt that settled it
    started_at    INTEGER,                                 -- set when the runner takes it: no longer cancellable
    finished_at   INTEGER,
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, agent_id)
) STRICT;
CREATE INDEX bulk_items_outcome ON bulk_items (job_id, outcome);

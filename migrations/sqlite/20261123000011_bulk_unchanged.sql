-- A bulk item may be settled `unchanged`: state sync saw the agent in the target state
-- and reason at its last poll and nothing was commanded since, so no platform call was
-- made. SQLite cannot widen a CHECK in place: the table is rebuilt with the same
-- columns, keys and index, and every row copied.
CREATE TABLE bulk_items_new (
    job_id        TEXT    NOT NULL REFERENCES bulk_jobs (id),
    seq           INTEGER NOT NULL,                        -- position in the request
    agent_id      TEXT    NOT NULL,
    target_state  TEXT    NOT NULL,
    reason        TEXT,                                    -- NULL = the state's default
    outcome       TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (outcome IN ('pending', 'succeeded', 'unchanged', 'rejected',
                                     'failed', 'cancelled')),
    violation     TEXT,
    error         TEXT,
    attempt_id    TEXT,                                    -- the transition attempt that settled it
    started_at    INTEGER,                                 -- set when the runner takes it: no longer cancellable
    finished_at   INTEGER,
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, agent_id)
) STRICT;
INSERT INTO bulk_items_new (job_id, seq, agent_id, target_state, reason, outcome, violation,
                            error, attempt_id, started_at, finished_at)
SELECT job_id, seq, agent_id, target_state, reason, outcome, violation, error, attempt_id,
       started_at, finished_at
FROM bulk_items;
DROP TABLE bulk_items;
ALTER TABLE bulk_items_new RENAME TO bulk_items;
CREATE INDEX bulk_items_outcome ON bulk_items (job_id, outcome);

-- Changes that wait for the agent to be free (`when_busy = "defer"`): asked for while the
-- agent was on a contact or in after-contact work, carried out by the leader's deferred
-- worker once state sync records the agent free, or expired at `expires_at`. At most one
-- per agent: a newer one replaces the older in the transaction that stores it. Times are
-- Unix ms.
CREATE TABLE deferred_changes (
    agent_id         TEXT    PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,   -- named in events, the audit and the API
    target_state     TEXT    NOT NULL,
    reason           TEXT,                      -- NULL = the state's default
    origin           TEXT    NOT NULL,          -- api | cli | bulk | rule
    actor            TEXT    NOT NULL,
    idempotency_key  TEXT,                      -- carried into the change when it is made
    bulk_job_id      TEXT,                      -- the bulk item waiting on it, if any
    bulk_seq         INTEGER,
    -- The start of the agent's recorded interval when it was last found busy (or the
    -- platform refused the change as a conflict): the change is tried again only once a
    -- later interval, not a busy one, is recorded.
    busy_since       INTEGER,
    requested_at     INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX deferred_changes_expiry ON deferred_changes (expires_at);

-- A bulk item may wait as `deferred` (its agent was busy) until its deferred change is
-- settled. SQLite cannot widen a CHECK in place: the table is rebuilt as in
-- 20261123000011_bulk_unchanged.sql.
CREATE TABLE bulk_items_new (
    job_id        TEXT    NOT NULL REFERENCES bulk_jobs (id),
    seq           INTEGER NOT NULL,                        -- position in the request
    agent_id      TEXT    NOT NULL,
    target_state  TEXT    NOT NULL,
    reason        TEXT,                                    -- NULL = the state's default
    outcome       TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (outcome IN ('pending', 'succeeded', 'unchanged', 'rejected',
                                     'failed', 'cancelled', 'deferred')),
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

-- A bulk job asked with `when_busy = "defer"`: how long its items' changes wait for a busy
-- agent (ms); NULL = `reject`. Kept with the job so its items resume alike after a crash.
ALTER TABLE bulk_jobs ADD COLUMN defer_for_ms INTEGER;

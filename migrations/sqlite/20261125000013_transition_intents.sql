-- A change wfmd is about to send to the platform, committed before the call and removed
-- in the transaction that records its outcome. A row that outlives its call is a change
-- whose record failed (a full disk) or was cut short (a crash): it is settled later
-- against what the platform shows, so no change made on the platform goes unrecorded.
CREATE TABLE transition_intents (
    attempt_id       TEXT    PRIMARY KEY,   -- the attempt row the outcome will carry
    agent_id         TEXT    NOT NULL,
    target_state     TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    origin           TEXT    NOT NULL,
    actor            TEXT    NOT NULL,
    idempotency_key  TEXT,
    requested_at     INTEGER NOT NULL,      -- ms since the epoch
    owner            TEXT    NOT NULL       -- the process that sent it (see store::intents)
) STRICT;

-- One row `/readyz` rewrites to prove the database takes writes.
CREATE TABLE write_probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  INTEGER NOT NULL
) STRICT;

-- Schedules imports as jobs (#53): a file of the largest size is written aside in many
-- short transactions, put in force by one short transaction, then moved into place in
-- short transactions, so changes on the tenant never wait for a whole import and a crash
-- leaves the old schedules or the new ones, never half (see
-- src/engine/imported_schedules.rs).

-- One import: its progress, and what it imported. `state`: `storing` (its shifts are being
-- written aside, in force for nobody), `applying` (in force: readers take its staged shifts
-- over the ones they overlap while they are moved into imported_shifts), `completed`,
-- `failed` (nothing of it is in force). Times in ms since the epoch, UTC.
CREATE TABLE schedule_imports (
    id            TEXT    PRIMARY KEY,          -- UUID v7
    actor         TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,             -- hex SHA-256 of the file
    lines         INTEGER NOT NULL,             -- the file's lines after the header
    shifts        INTEGER NOT NULL,
    agents        INTEGER NOT NULL,
    state         TEXT    NOT NULL
        CHECK (state IN ('storing', 'applying', 'completed', 'failed')),
    stored        INTEGER NOT NULL DEFAULT 0,   -- shifts written aside
    applied       INTEGER NOT NULL DEFAULT 0,   -- shifts moved into place
    error         TEXT,
    created_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,             -- the last step of a `storing` import
    in_force_at   INTEGER,
    finished_at   INTEGER
) STRICT;
-- Readers look for the imports in force but not yet in place on every lookup.
CREATE INDEX schedule_imports_state ON schedule_imports (state);

-- The shifts of an import not yet in imported_shifts (same columns).
CREATE TABLE imported_shifts_staged (
    import_id    TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    shift_start  INTEGER NOT NULL,
    shift_end    INTEGER NOT NULL,
    timezone     TEXT,
    breaks       TEXT    NOT NULL,
    activities   TEXT    NOT NULL,
    PRIMARY KEY (import_id, agent_id, shift_start)
) STRICT;

-- Schedules imports as jobs (as migrations/sqlite/20261127000002_schedule_import_jobs.sql).
CREATE TABLE schedule_imports (
    id            TEXT    PRIMARY KEY,
    actor         TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    lines         BIGINT  NOT NULL,
    shifts        BIGINT  NOT NULL,
    agents        BIGINT  NOT NULL,
    state         TEXT    NOT NULL
        CHECK (state IN ('storing', 'applying', 'completed', 'failed')),
    stored        BIGINT  NOT NULL DEFAULT 0,
    applied       BIGINT  NOT NULL DEFAULT 0,
    error         TEXT,
    created_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    in_force_at   BIGINT,
    finished_at   BIGINT
);
CREATE INDEX schedule_imports_state ON schedule_imports (state);

CREATE TABLE imported_shifts_staged (
    import_id    TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    shift_start  BIGINT  NOT NULL,
    shift_end    BIGINT  NOT NULL,
    timezone     TEXT,
    breaks       TEXT    NOT NULL,
    activities   TEXT    NOT NULL,
    PRIMARY KEY (import_id, agent_id, shift_start)
);

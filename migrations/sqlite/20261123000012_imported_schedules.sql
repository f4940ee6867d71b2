-- Shifts loaded from a file by `wfmd schedules import` (a third-party WFM, or a tenant
-- without WFM access). When an agent has any, they answer its schedule and break status
-- instead of the platform.
CREATE TABLE imported_shifts (
    agent_id     TEXT    NOT NULL,
    shift_start  INTEGER NOT NULL,          -- ms since the epoch, UTC
    shift_end    INTEGER NOT NULL,
    timezone     TEXT,
    breaks       TEXT    NOT NULL,          -- JSON [{start, end, kind, mandatory}], ms
    imported_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, shift_start)
) STRICT;

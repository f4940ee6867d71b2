-- The schedule book and adherence exceptions. Times are INTEGER Unix milliseconds, UTC.

-- Each managed agent's shifts as the platform gave them: one row per agent and shift,
-- upserted at every fetch, so a restart has them at once and reports can compute
-- adherence for past windows.
CREATE TABLE agent_shifts (
    agent_id     TEXT    NOT NULL,
    shift_start  INTEGER NOT NULL,
    shift_end    INTEGER NOT NULL,
    timezone     TEXT,                -- the agent's IANA zone, when the platform gave one
    breaks       TEXT    NOT NULL,    -- JSON [{"start","end","kind","mandatory"}]
    -- 'schedule': the schedule listed its breaks; 'break_status': it omitted them and
    -- they come from the break-status endpoint (mandatory breaks only, one at a time).
    breaks_from  TEXT    NOT NULL CHECK (breaks_from IN ('schedule', 'break_status')),
    fetched_at   INTEGER NOT NULL,
    PRIMARY KEY (agent_id, shift_start),
    CHECK (shift_end > shift_start)
) STRICT, WITHOUT ROWID;

-- A deviation from the schedule that lasted longer than compliance.exception_threshold.
-- Open (closed_at IS NULL) until the agent is back in adherence; at most one open
-- exception per agent and kind.
CREATE TABLE adherence_exceptions (
    id          TEXT    PRIMARY KEY,  -- UUID v7: sorts by time
    agent_id    TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('working_in_mandatory_break',
                                                 'logged_in_outside_shift',
                                                 'not_working_in_shift')),
    state       TEXT    NOT NULL,     -- the agent's state when it opened
    expected    TEXT    NOT NULL,     -- what the schedule expected then (WORK, ...)
    started_at  INTEGER NOT NULL,     -- when the deviation began
    opened_at   INTEGER NOT NULL,     -- the sweep that opened it
    closed_at   INTEGER,
    CHECK (closed_at IS NULL OR closed_at >= opened_at)
) STRICT;
CREATE UNIQUE INDEX adherence_exceptions_one_open ON adherence_exceptions (agent_id, kind)
    WHERE closed_at IS NULL;
CREATE INDEX adherence_exceptions_opened ON adherence_exceptions (opened_at);

-- Adherence rules (#39): an exception may be one only a rule makes ('out_of_rule'), and
-- records the rule that opened it (its index in [[compliance.rules]]), the version of
-- the rule set, and when it turned severe. SQLite cannot alter a CHECK, so the table is
-- rebuilt with its rows and indexes.
CREATE TABLE adherence_exceptions_new (
    id            TEXT    PRIMARY KEY,  -- UUID v7: sorts by time
    agent_id      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('working_in_mandatory_break',
                                                   'logged_in_outside_shift',
                                                   'not_working_in_shift',
                                                   'out_of_rule')),
    state         TEXT    NOT NULL,     -- the agent's state when it opened
    expected      TEXT    NOT NULL,     -- what the schedule expected then (WORK, ...)
    started_at    INTEGER NOT NULL,     -- when the deviation began
    opened_at     INTEGER NOT NULL,     -- the sweep that opened it
    closed_at     INTEGER,
    rule          INTEGER CHECK (rule IS NULL OR rule >= 0),  -- NULL: the built-in kinds
    rules_version TEXT,                 -- NULL: no rules were configured
    severe_at     INTEGER,              -- when it turned severe (the rule's severe_after)
    CHECK (closed_at IS NULL OR closed_at >= opened_at),
    CHECK (severe_at IS NULL OR severe_at >= opened_at)
) STRICT;
INSERT INTO adherence_exceptions_new
    (id, agent_id, kind, state, expected, started_at, opened_at, closed_at)
SELECT id, agent_id, kind, state, expected, started_at, opened_at, closed_at
FROM adherence_exceptions;
DROP TABLE adherence_exceptions;
ALTER TABLE adherence_exceptions_new RENAME TO adherence_exceptions;
CREATE UNIQUE INDEX adherence_exceptions_one_open ON adherence_exceptions (agent_id, kind)
    WHERE closed_at IS NULL;
CREATE INDEX adherence_exceptions_opened ON adherence_exceptions (opened_at);

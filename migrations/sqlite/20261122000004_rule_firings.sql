-- WFM rule firings. A row per (rule, slot) is inserted in its own transaction before any
-- agent is touched: whoever inserts it fires the slot, so a slot fires at most once,
-- across restarts and the repeated hour of a daylight-saving change alike.
CREATE TABLE rule_firings (
    id                  INTEGER PRIMARY KEY,
    rule                TEXT    NOT NULL,
    slot_at             INTEGER NOT NULL,          -- the slot, Unix ms UTC
    -- running until every targeted agent is handled (a crash leaves it running and the
    -- next start resumes it); completed; partial: some changes failed; failed: nothing
    -- could be done (the selector could not be resolved); skipped: a slot missed while
    -- wfmd was down, past catch_up; abandoned: the rule changed or went away before an
    -- interrupted firing could be resumed.
    outcome             TEXT    NOT NULL CHECK (outcome IN
                            ('running', 'completed', 'partial', 'failed', 'skipped', 'abandoned')),
    definition          TEXT    NOT NULL,          -- the rule as configured then, JSON
    started_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    targets             INTEGER NOT NULL DEFAULT 0, -- agents the selector named
    changed             INTEGER NOT NULL DEFAULT 0,
    rejected            INTEGER NOT NULL DEFAULT 0,
    failed              INTEGER NOT NULL DEFAULT 0,
    skipped_condition   INTEGER NOT NULL DEFAULT 0, -- only_if_state not met
    skipped_on_contact  INTEGER NOT NULL DEFAULT 0,
    note                TEXT,                      -- why skipped, failed or abandoned
    UNIQUE (rule, slot_at)
) STRICT;
CREATE INDEX rule_firings_running ON rule_firings (rule) WHERE outcome = 'running';

-- What a firing did to each agent it targeted; the change itself is in
-- transition_attempts under the idempotency key rule:NAME:SLOT:AGENT.
CREATE TABLE rule_firing_agents (
    firing_id   INTEGER NOT NULL REFERENCES rule_firings (id),
    agent_id    TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('changed', 'rejected', 'failed', 'skipped')),
    reason      TEXT,       -- the violation, the failure kind, or condition / on_contact
    detail      TEXT,       -- for people: the error, or why the agent was skipped
    attempt_id  TEXT,
    PRIMARY KEY (firing_id, agent_id)
) STRICT;

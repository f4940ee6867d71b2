-- Where a change's compliance decision took the agent's schedule from: `book` (the
-- stored schedule, fresher than schedules.max_age) or `platform` (asked for it), and
-- how old it was then. NULL for changes that needed no schedule and older attempts.
ALTER TABLE transition_attempts ADD COLUMN schedule_source TEXT
    CHECK (schedule_source IN ('book', 'platform'));
ALTER TABLE transition_attempts ADD COLUMN schedule_age_ms INTEGER;

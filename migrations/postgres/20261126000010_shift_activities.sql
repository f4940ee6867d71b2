-- Titled work activities inside shifts (#39): "Team meeting", "Training" and the like,
-- which adherence rules judge by title (`activity = "Team meeting"`). Kept with the
-- shifts so reports judge past days as the sweep judged them. JSON
-- [{"start","end","title"}] in agent_shifts (RFC 3339, like its breaks) and
-- [{start, end, title}] in ms in imported_shifts (like its breaks); '[]' for shifts
-- stored before activities were kept, and for schedules that name none.
ALTER TABLE agent_shifts ADD COLUMN activities TEXT NOT NULL DEFAULT '[]';
ALTER TABLE imported_shifts ADD COLUMN activities TEXT NOT NULL DEFAULT '[]';

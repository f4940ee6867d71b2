-- What the tenant's leader shows on its wallboard and other instances cannot ask the
-- platform for themselves (several instances, PostgreSQL; on SQLite it stays empty):
-- the newest metric board ('board') and the agents the platform lists ('roster'), as
-- JSON, with when the leader published them (Unix ms, its clock). Followers read it
-- every few seconds, so every instance's wallboard shows the same figures and no
-- follower calls the platform.
CREATE TABLE live_shared (
    name          TEXT    PRIMARY KEY CHECK (name IN ('board', 'roster')),
    body          TEXT    NOT NULL,
    published_at  INTEGER NOT NULL
) STRICT;

-- What the tenant's leader shows on its wallboard and followers cannot ask the platform
-- for themselves (as migrations/sqlite/20261126000019_live_shared.sql).
CREATE TABLE live_shared (
    name          TEXT    PRIMARY KEY CHECK (name IN ('board', 'roster')),
    body          TEXT    NOT NULL,
    published_at  BIGINT  NOT NULL
);

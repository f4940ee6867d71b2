-- Authorised exceptions (#39), as migrations/sqlite/20261126000022_adherence_authorisations.sql.
CREATE TABLE adherence_authorisations (
    id            TEXT    PRIMARY KEY,  -- UUID v7: sorts by time
    agents        TEXT    NOT NULL,     -- JSON array of agent ids
    team          TEXT,                 -- the team asked for, when one was
    from_at       BIGINT NOT NULL,
    to_at         BIGINT NOT NULL,
    reason        TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,     -- the caller (token name) who authorised it
    created_at    BIGINT NOT NULL,
    withdrawn_at  BIGINT,
    withdrawn_by  TEXT,
    CHECK (to_at > from_at),
    CHECK ((withdrawn_at IS NULL) = (withdrawn_by IS NULL))
);
CREATE INDEX adherence_authorisations_to ON adherence_authorisations (to_at);

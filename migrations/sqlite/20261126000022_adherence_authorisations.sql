-- Authorised exceptions (#39): a supervisor authorises agents (listed, or a team's
-- members when authorised) for [from_at, to_at) with a reason; that time is neither in
-- nor out of adherence. A withdrawn authorisation no longer counts at all; both the
-- authorisation and its withdrawal stay in the audit log.
CREATE TABLE adherence_authorisations (
    id            TEXT    PRIMARY KEY,  -- UUID v7: sorts by time
    agents        TEXT    NOT NULL,     -- JSON array of agent ids
    team          TEXT,                 -- the team asked for, when one was
    from_at       INTEGER NOT NULL,
    to_at         INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,     -- the caller (token name) who authorised it
    created_at    INTEGER NOT NULL,
    withdrawn_at  INTEGER,
    withdrawn_by  TEXT,
    CHECK (to_at > from_at),
    CHECK ((withdrawn_at IS NULL) = (withdrawn_by IS NULL))
) STRICT;
CREATE INDEX adherence_authorisations_to ON adherence_authorisations (to_at);

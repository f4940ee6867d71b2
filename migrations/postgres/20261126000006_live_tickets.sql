-- Live-feed tickets issued while several instances serve the tenant, so that any
-- instance redeems them (as migrations/sqlite/20261126000020_live_tickets.sql).
CREATE TABLE live_tickets (
    digest      TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('viewer', 'supervisor', 'admin')),
    expires_at  BIGINT  NOT NULL
);

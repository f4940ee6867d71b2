-- Live-feed tickets issued while several instances serve the tenant (PostgreSQL; on
-- SQLite it stays empty): a browser asks one instance for a ticket and opens the feed
-- on whichever instance its load balancer picks, which finds the ticket here. Not the
-- ticket itself: its SHA-256, hex. A ticket's row is deleted when it is used (once),
-- and expired rows as new tickets are issued. `expires_at`: Unix ms.
CREATE TABLE live_tickets (
    digest      TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('viewer', 'supervisor', 'admin')),
    expires_at  INTEGER NOT NULL
) STRICT;

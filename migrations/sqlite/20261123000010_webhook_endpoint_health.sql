-- Webhook endpoint health and early retries (issue #14, item 5).
--
-- One row per endpoint: up, failing (since the first failure of the current run) or
-- disabled (the last answer was 410 Gone). While an endpoint fails, one queued
-- delivery is tried ahead of its schedule now and then (a probe, at next_probe_at);
-- once one succeeds after failing for a while, the retries that failed during the
-- outage are brought forward a few at a time (recovered_at marks which).
CREATE TABLE webhook_endpoints (
    endpoint         TEXT    PRIMARY KEY,        -- the webhook URL
    status           TEXT    NOT NULL CHECK (status IN ('up', 'failing', 'disabled')),
    since            INTEGER NOT NULL,           -- when it entered this status
    last_attempt_at  INTEGER,
    last_error       TEXT,
    next_probe_at    INTEGER,                    -- while failing: when to try ahead of schedule
    recovered_at     INTEGER                     -- while retries from the outage remain
) STRICT;

-- hasten_at: when a delivery is due ahead of its schedule (a probe or a recovery);
-- an attempt made that early that fails does not use up a scheduled retry.
ALTER TABLE webhook_deliveries ADD COLUMN hasten_at INTEGER;
ALTER TABLE webhook_deliveries ADD COLUMN last_attempt_at INTEGER;
CREATE INDEX webhook_deliveries_hastened ON webhook_deliveries (hasten_at)
    WHERE status = 'pending' AND hasten_at IS NOT NULL;

-- Webhook delivery: one row per (event, endpoint), so a slow endpoint never holds back
-- another. Rows are created by the dispatcher's fan-out from outbox_events, after the
-- cursor, in one transaction with the cursor's move.
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    event_seq        INTEGER NOT NULL REFERENCES outbox_events (seq),
    endpoint         TEXT    NOT NULL,             -- the webhook URL
    event_type       TEXT    NOT NULL,
    agent_id         TEXT,                         -- deliveries per (endpoint, agent) go in order
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead', 'disabled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER,                      -- claimed until then; NULL when free
    last_status      INTEGER,                      -- HTTP status of the last attempt
    last_error       TEXT,
    created_at       INTEGER NOT NULL,             -- when the event was committed
    delivered_at     INTEGER,
    UNIQUE (event_seq, endpoint)
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint, agent_id, event_seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (status, event_seq);

-- Every attempt: what the receiver answered and how long it took.
CREATE TABLE webhook_attempts (
    id             INTEGER PRIMARY KEY,
    delivery_id    INTEGER NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at   INTEGER NOT NULL,
    status_code    INTEGER,
    duration_ms    INTEGER NOT NULL,
    error          TEXT,
    response_body  TEXT                            -- truncated
) STRICT;
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

-- (endpoint, event type) pairs a receiver answered 410 Gone for: no more of those.
CREATE TABLE webhook_disabled (
    endpoint     TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    disabled_at  INTEGER NOT NULL,
    PRIMARY KEY (endpoint, event_type)
) STRICT;

-- The last outbox event fanned out into deliveries.
CREATE TABLE webhook_cursor (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_seq  INTEGER NOT NULL
) STRICT;
INSERT INTO webhook_cursor (id, last_event_seq) VALUES (1, 0);

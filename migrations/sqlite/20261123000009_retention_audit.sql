-- Retention, audit checkpoints and the keyed audit chain. Times are INTEGER Unix ms, UTC.

-- How far back each kind of record is complete. A pruning pass that removed records of
-- a kind older than its cutoff moves `kept_from` to that cutoff: reports and history
-- asked about an earlier window answer "not kept before kept_from" instead of smaller
-- numbers.
CREATE TABLE retention_horizons (
    kind         TEXT    PRIMARY KEY,   -- intervals, attempts, audit, outbox_delivered, ...
    kept_from    INTEGER NOT NULL,      -- records before this may have been removed
    pruned_rows  INTEGER NOT NULL DEFAULT 0,  -- removed so far, over every pass
    updated_at   INTEGER NOT NULL
) STRICT;

-- A signed record of the audit chain's head: verification can start here once the
-- entries up to `seq` are pruned, and the hash is what `audit.checkpoint` publishes.
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,    -- the last entry covered
    hash        TEXT    NOT NULL,       -- that entry's chain hash
    count       INTEGER NOT NULL,       -- entries from the first one through seq
    entry_at    INTEGER NOT NULL,       -- when that entry was written
    at          INTEGER NOT NULL,       -- when the checkpoint was made
    keyed_from  INTEGER,                -- the first keyed entry at or before seq, if any
    key_id      TEXT,                   -- which audit.key signed it (NULL: unsigned)
    signature   TEXT,                   -- hex HMAC-SHA-256 of the fields above
    -- 1: published as an `audit.checkpoint` webhook (kept for anchor lookups); 0: made
    -- by retention at a batch boundary, removed once a later one replaces it.
    published   INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1))
) STRICT;

-- From which entry on the chain hashes are keyed (HMAC-SHA-256 with audit.key), and
-- a fingerprint of that key. A hint for writers only: verification reads the keying
-- from the chain itself (the `audit.keyed` entry) and from signed checkpoints.
CREATE TABLE audit_keying (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    from_seq  INTEGER NOT NULL,
    key_id    TEXT    NOT NULL
) STRICT;

-- Entries covered by a checkpoint may be pruned; any other delete is still refused.
DROP TRIGGER audit_log_refuses_delete;
CREATE TRIGGER audit_log_refuses_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Pruning finds old rows by time without scanning whole tables.
CREATE INDEX outbox_events_created ON outbox_events (created_at);
CREATE INDEX webhook_attempts_at ON webhook_attempts (attempted_at);
CREATE INDEX state_intervals_ended ON state_intervals (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX bulk_jobs_finished ON bulk_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX bulk_jobs_reverts ON bulk_jobs (reverts_job_id) WHERE reverts_job_id IS NOT NULL;
CREATE INDEX rule_firings_started ON rule_firings (started_at);

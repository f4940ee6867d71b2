-- Every skill and queue sample the metric pollers took, for the wallboard's day curves
-- and trend analysis. Times are INTEGER Unix milliseconds, UTC. `sampled_at` is the
-- platform's time of the figures (its answer's Date header); the primary key keeps one
-- row per skill or queue and platform time, so an answer stored twice adds nothing.
CREATE TABLE metric_samples (
    family            TEXT    NOT NULL CHECK (family IN ('skills', 'queues')),
    entity_id         TEXT    NOT NULL,   -- skill or queue id
    sampled_at        INTEGER NOT NULL,
    name              TEXT    NOT NULL,   -- the skill or queue name then ('' unknown)
    service_level     REAL CHECK (service_level IS NULL OR service_level BETWEEN 0 AND 1),
    queued            INTEGER NOT NULL,   -- contacts queued (skills), calls waiting (queues)
    agents_available  INTEGER NOT NULL,
    agents_staffed    INTEGER NOT NULL,   -- staffed (skills), logged on (queues)
    agents_busy       INTEGER NOT NULL,   -- on contact + ACW (skills), busy (queues)
    -- Skills: contacts active, longest wait and estimated wait in seconds; NULL for queues.
    contacts_active   INTEGER,
    longest_wait_secs INTEGER,
    estimated_wait_secs INTEGER,
    -- Queues: average wait of the calls waiting, in milliseconds; NULL for skills.
    average_wait_ms   INTEGER,
    polled_at         INTEGER NOT NULL,   -- when wfmd stored it (our clock)
    PRIMARY KEY (family, entity_id, sampled_at)
) STRICT, WITHOUT ROWID;
-- Pruning by age.
CREATE INDEX metric_samples_time ON metric_samples (sampled_at);

-- Analytics: daily rollups of wfmd's own history, the team roster history queries group
-- by, and durable analytics jobs with their result rows. Times are INTEGER Unix
-- milliseconds, UTC.

-- One row per agent and completed UTC day: the compliance summary's figures of that day,
-- kept so that "adherence per agent per day" over months reads thousands of rows, not
-- millions of intervals. Written once the day is over (plus a settling margin).
CREATE TABLE analytics_daily (
    day              INTEGER NOT NULL,    -- 00:00 UTC of the day
    agent_id         TEXT    NOT NULL,
    idle_ms          INTEGER NOT NULL,    -- IDLE + PAUSED + NOT_READY
    ready_ms         INTEGER NOT NULL,
    not_ready_ms     INTEGER NOT NULL,
    paused_ms        INTEGER NOT NULL,
    idle_state_ms    INTEGER NOT NULL,
    logged_out_ms    INTEGER NOT NULL,
    on_contact_ms    INTEGER NOT NULL,
    acw_ms           INTEGER NOT NULL,
    scheduled_ms     INTEGER,             -- NULL: no shift of the agent stored
    in_adherence_ms  INTEGER,
    exceptions       INTEGER,
    transitions      INTEGER NOT NULL,
    violations       INTEGER NOT NULL,    -- rejected attempts
    latency_p95_ms   INTEGER,             -- nearest rank; NULL without attempts
    PRIMARY KEY (day, agent_id)
) STRICT, WITHOUT ROWID;

-- The days whose rollup is complete (a day with no activity has a row here and none
-- in analytics_daily).
CREATE TABLE analytics_rollup_days (
    day          INTEGER PRIMARY KEY,
    agents       INTEGER NOT NULL,
    computed_at  INTEGER NOT NULL
) STRICT;

-- Which team each agent belongs to, as the platform last listed it: history queries
-- group and filter by team without asking the platform.
CREATE TABLE analytics_roster (
    agent_id    TEXT    PRIMARY KEY,
    team_id     TEXT,
    team_name   TEXT,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Analytics jobs. A platform job remembers the platform's query id and how many result
-- rows are stored, so a restart resumes paging where it stopped.
CREATE TABLE analytics_jobs (
    id                 TEXT    PRIMARY KEY,            -- aq_<UUID v7>
    source             TEXT    NOT NULL CHECK (source IN ('platform', 'history')),
    spec               TEXT    NOT NULL,               -- the query, JSON
    actor              TEXT    NOT NULL,
    status             TEXT    NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    platform_query_id  TEXT,
    platform_status    TEXT,                           -- PENDING, RUNNING, ... as last seen
    total              INTEGER,                        -- rows the platform reported
    received           INTEGER NOT NULL DEFAULT 0,     -- rows stored so far
    rows               INTEGER,                        -- result rows, once completed
    sha256             TEXT,                           -- of the canonical result set
    error              TEXT,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER
) STRICT;
CREATE INDEX analytics_jobs_unfinished ON analytics_jobs (created_at)
    WHERE status IN ('queued', 'running');

-- A job's result rows: one per series (its dimension values) and bucket, so a duplicate
-- bucket from the platform is caught by the key.
CREATE TABLE analytics_results (
    job_id   TEXT    NOT NULL REFERENCES analytics_jobs (id),
    series   TEXT    NOT NULL,      -- the dimension values, canonical JSON object
    bucket   INTEGER NOT NULL,      -- start of the bucket
    vals     TEXT    NOT NULL,      -- JSON array, one value (or null) per metric
    PRIMARY KEY (job_id, series, bucket)
) STRICT, WITHOUT ROWID;

-- Several wfmd instances on one database (PostgreSQL only: on SQLite one daemon holds
-- the database's lock, and these tables stay empty; they are here so both backends
-- hold the same tables, and a database copied either way keeps them).
--
-- Which instance leads the tenant: one row (id 1), made by the first instance to take
-- it. `term` grows by one at each take-over; every write a leader makes is checked
-- against it, so one that lost the lease cannot write. Times are Unix milliseconds by
-- the database's clock, so the instances' own clocks do not matter.
CREATE TABLE cluster_lease (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    holder       TEXT    NOT NULL,
    term         INTEGER NOT NULL,
    acquired_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

-- The instances serving the tenant, as each last said (every few seconds).
CREATE TABLE cluster_instances (
    instance_id    TEXT    PRIMARY KEY,
    advertise_url  TEXT,
    started_at     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL
);

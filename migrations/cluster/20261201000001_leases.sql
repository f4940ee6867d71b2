-- The leases of every tenant in this database, in a schema of their own (wfmd_cluster),
-- so that one statement of an instance renews, frees and takes the leases of all its
-- tenants without touching any tenant's schema. Each tenant's term and fence stay in its
-- own schema (`cluster_lease`, `wfmd_leader_write_lock`): see src/cluster/mod.rs.

-- Who leads each tenant (named by its schema), in which term, until when (Unix ms by the
-- database's clock). `holder` is '' and `term` 0 until an instance first takes it.
CREATE TABLE wfmd_cluster.leases (
    tenant       TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    term         BIGINT  NOT NULL,
    acquired_at  BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);

CREATE INDEX leases_by_holder ON wfmd_cluster.leases (holder);

-- The instances serving this database's tenants. `liveness_key` names the advisory lock
-- (`pg_advisory_lock(2003201380, liveness_key)`) its liveness session holds: once that
-- session ends (the process died), its leases are free at once. NULL: it holds none, and
-- its leases last until they expire. `serving` is how many of the tenants it serves (0
-- while it stops), for the others to work out their share.
CREATE TABLE wfmd_cluster.instances (
    instance_id    TEXT     PRIMARY KEY,
    advertise_url  TEXT,
    started_at     BIGINT   NOT NULL,
    last_seen      BIGINT   NOT NULL,
    liveness_key   INTEGER,
    serving        INTEGER  NOT NULL DEFAULT 0
);

-- Each liveness session takes a key of its own from here.
CREATE SEQUENCE wfmd_cluster.liveness_keys AS INTEGER CYCLE;

-- Each instance and whether its liveness session is gone: it named one (liveness_key),
-- and no session of this database holds that lock any more. An instance that named none
-- is never gone by this; its leases end when they expire.
CREATE VIEW wfmd_cluster.instance_sessions AS
SELECT i.instance_id, i.advertise_url, i.started_at, i.last_seen, i.serving,
       i.liveness_key IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM pg_locks AS l
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
             AND l.classid = 2003201380 AND CAST(l.objid AS BIGINT) = i.liveness_key
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       ) AS gone
FROM wfmd_cluster.instances AS i;

-- Several wfmd instances on one database: which one leads the tenant, and the instances
-- serving it (as migrations/sqlite/20261126000018_cluster.sql, where they stay empty).
CREATE TABLE cluster_lease (
    id           BIGINT  PRIMARY KEY CHECK (id = 1),
    holder       TEXT    NOT NULL,
    term         BIGINT  NOT NULL,
    acquired_at  BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);

CREATE TABLE cluster_instances (
    instance_id    TEXT    PRIMARY KEY,
    advertise_url  TEXT,
    started_at     BIGINT  NOT NULL,
    last_seen      BIGINT  NOT NULL
);

-- Raises SQLSTATE WF001 unless `leader` holds the lease in `leader_term`.
CREATE FUNCTION wfmd_prove_term(leader TEXT, leader_term BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM cluster_lease WHERE id = 1 AND holder = leader AND term = leader_term;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wfmd instance % no longer leads this tenant: its term % is over',
            leader, leader_term
            USING ERRCODE = 'WF001';
    END IF;
END
$$;

-- A leader's write lock: the tenant's write lock (as every write transaction takes it),
-- then proof that `leader` still holds the lease in `leader_term`. A take-over changes
-- the term while holding the same lock, so a write of a leader that lost the lease
-- either commits before the take-over or fails here (SQLSTATE WF001), never after it.
-- The proof runs in a statement of its own, so it reads what was committed before the
-- lock was granted.
CREATE FUNCTION wfmd_leader_write_lock(lock_key BIGINT, leader TEXT, leader_term BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    PERFORM wfmd_prove_term(leader, leader_term);
END
$$;

-- A leader's unflushed write (a change's intent): not waiting for the commit to reach
-- the disk, and proving the term without the write lock, which such a write does not
-- take. A take-over committing meanwhile leaves at most an intent the new leader
-- settles like one left by a crash.
CREATE FUNCTION wfmd_leader_unflushed_write(leader TEXT, leader_term BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM wfmd_prove_term(leader, leader_term);
END
$$;

-- Whether an instance's liveness session is gone, asked of its lock alone: a session that
-- can take the lock shared for the rest of its transaction (then let go at its end) finds
-- that nobody holds it, so the session that took it is gone.
--
-- The view read pg_locks before, which copies every lock of the server (at a thousand
-- tenants, a few thousand: each instance holds every tenant's daemon lock) while holding
-- each of the lock table's partitions in turn, at every instance's look four times a
-- second and at every request a follower hands on: milliseconds each, and every other
-- session's lock taken meanwhile waits. Trying one lock costs a lookup.
--
-- The session holding the lock itself finds it free (a session's own locks never stand in
-- its way), so the instance's own row reads as gone on its own liveness session: what
-- reads the view there leaves its own row out (src/cluster/tick.rs).
CREATE OR REPLACE VIEW wfmd_cluster.instance_sessions AS
SELECT i.instance_id, i.advertise_url, i.started_at, i.last_seen, i.serving,
       i.liveness_key IS NOT NULL
       AND pg_try_advisory_xact_lock_shared(2003201380, i.liveness_key) AS gone
FROM wfmd_cluster.instances AS i;

-- The change path's tables are analysed and vacuumed once 1,000 of their rows changed,
-- not PostgreSQL's 50 (beside its share of the table's size either way: 10 % for an
-- analysis, 20 % for a vacuum, which decides past 10,000 and 5,000 rows).
--
-- Why: every analysis or vacuum of a table makes each connection to the database
-- describe the table again and plan again every statement it prepared on it. A fleet's
-- tenants start with empty tables, and at 50 rows all those a load reached were analysed
-- within the same seconds: the 1,000-tenant bench saw 700 analyses in six seconds of
-- its load, and its changes waited seconds behind them. The statements on these tables
-- read and write by key, whose plans do not depend on a small table's statistics.
ALTER TABLE state_intervals
    SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_threshold = 1000);
ALTER TABLE transition_attempts
    SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_threshold = 1000);
ALTER TABLE transition_intents
    SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_threshold = 1000);
ALTER TABLE audit_log
    SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_threshold = 1000);
ALTER TABLE outbox_events
    SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_threshold = 1000);
ALTER TABLE webhook_deliveries
    SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_threshold = 1000);

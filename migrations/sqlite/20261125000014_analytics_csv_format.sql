-- The format of an analytics job's canonical CSV (issue #33, item 6): 1 writes text
-- cells as they are; 2 puts a `'` before each one a spreadsheet would run as a formula
-- (starting with = + - @, a tab or a carriage return). The audit log holds the SHA-256
-- of the CSV a job completed with, so a job keeps the format it was hashed in: jobs
-- completed before this migration are format 1, later completions record theirs.
ALTER TABLE analytics_jobs ADD COLUMN csv_format INTEGER NOT NULL DEFAULT 1;

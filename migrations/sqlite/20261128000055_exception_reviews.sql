-- Reviews of adherence exceptions (#55): a supervisor excuses an exception (its span,
-- from when the deviation began to when it closed, then counts as authorised in every
-- report) or upholds it, with a note. The exception keeps its latest review; the audit
-- log keeps every one.
ALTER TABLE adherence_exceptions ADD COLUMN review_decision TEXT
    CHECK (review_decision IN ('excused', 'upheld'));
ALTER TABLE adherence_exceptions ADD COLUMN review_note TEXT;
ALTER TABLE adherence_exceptions ADD COLUMN reviewed_by TEXT;
ALTER TABLE adherence_exceptions ADD COLUMN reviewed_at INTEGER;
-- Reports read the excused spans overlapping their window.
CREATE INDEX adherence_exceptions_excused ON adherence_exceptions (started_at)
    WHERE review_decision = 'excused';

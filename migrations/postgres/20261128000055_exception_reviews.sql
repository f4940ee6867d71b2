-- Reviews of adherence exceptions (as migrations/sqlite/20261128000055_exception_reviews.sql).
ALTER TABLE adherence_exceptions ADD COLUMN review_decision TEXT
    CHECK (review_decision IN ('excused', 'upheld'));
ALTER TABLE adherence_exceptions ADD COLUMN review_note TEXT;
ALTER TABLE adherence_exceptions ADD COLUMN reviewed_by TEXT;
ALTER TABLE adherence_exceptions ADD COLUMN reviewed_at BIGINT;
CREATE INDEX adherence_exceptions_excused ON adherence_exceptions (started_at)
    WHERE review_decision = 'excused';

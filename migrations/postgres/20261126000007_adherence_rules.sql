-- Adherence rules (#39), as migrations/sqlite/20261126000021_adherence_rules.sql: the
-- 'out_of_rule' kind, the rule and rule-set version that opened an exception, and when
-- it turned severe.
ALTER TABLE adherence_exceptions DROP CONSTRAINT adherence_exceptions_kind_check;
ALTER TABLE adherence_exceptions ADD CONSTRAINT adherence_exceptions_kind_check
    CHECK (kind IN ('working_in_mandatory_break', 'logged_in_outside_shift',
                    'not_working_in_shift', 'out_of_rule'));
ALTER TABLE adherence_exceptions
    ADD COLUMN rule          BIGINT CHECK (rule IS NULL OR rule >= 0),
    ADD COLUMN rules_version TEXT,
    ADD COLUMN severe_at     BIGINT CHECK (severe_at IS NULL OR severe_at >= opened_at);

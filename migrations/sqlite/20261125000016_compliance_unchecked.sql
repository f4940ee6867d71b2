-- What a change's compliance check could not look at because the platform refuses this
-- API user schedule lookups and `[compliance] without_schedule = "allow"` let the change
-- go ahead: `schedule` (neither the shift nor the mandatory break was checked) or
-- `mandatory_break` (the shift was, the break was not). NULL: checked in full, or no
-- schedule was needed.
ALTER TABLE transition_attempts ADD COLUMN compliance_unchecked TEXT
    CHECK (compliance_unchecked IN ('schedule', 'mandatory_break'));

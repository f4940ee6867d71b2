-- Webhook endpoints without their credentials (issue #33, item 9).
--
-- A webhook URL may carry a receiver's credentials (`https://user:password@host/…`,
-- `?token=…`). From now on an endpoint is stored under its URL with the user part and
-- every query value replaced by `***`; the real URL stays in the configuration. Rows
-- written before hold the whole URL, in webhook_deliveries, webhook_endpoints and
-- webhook_disabled, and inside error texts (webhook_attempts.error and the last_error
-- columns). Masking a URL takes parsing it, so the rewrite is done by wfmd right after
-- migrating (`store::deliveries::redact_stored_endpoints`), in one transaction that also
-- deletes this marker: it runs once, and again after an interruption.
CREATE TABLE webhook_redaction_pending (
    id  INTEGER PRIMARY KEY CHECK (id = 1)
) STRICT;
INSERT INTO webhook_redaction_pending (id) VALUES (1);

-- Idempotency keys are kept 24 hours; the API deletes older ones, oldest first, by this index.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

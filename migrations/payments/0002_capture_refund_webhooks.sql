-- The rest of a payment's life: captured when its order ships, refunded after. Whose order it
-- is and which saga it belongs to, for the events a webhook or the reconciler writes (they have
-- no event to follow). And the provider's webhook events already taken, so that a replayed
-- one changes nothing.
ALTER TABLE payments DROP CONSTRAINT payments_state_check;
ALTER TABLE payments ADD CONSTRAINT payments_state_check
    CHECK (state IN ('DUE', 'AUTHORIZED', 'ACTION_REQUIRED', 'DECLINED', 'VOIDED', 'CAPTURED',
                     'REFUNDED'));
ALTER TABLE payments ADD COLUMN customer_id UUID;
ALTER TABLE payments ADD COLUMN correlation_id UUID;
-- The reconciler looks for what waits on the customer.
CREATE INDEX payments_waiting ON payments (updated_at) WHERE state = 'ACTION_REQUIRED';

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

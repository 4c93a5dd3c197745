-- When a RESERVED order must be paid by. Written by the status worker in the transaction that
-- reserves the order, so a deadline exists exactly when a reservation was recorded, and it
-- outlives any restart. Claimed with FOR UPDATE SKIP LOCKED when due; the row goes once the
-- deadline fired or the order no longer waits for payment.
CREATE TABLE payment_deadlines (
    order_id    UUID PRIMARY KEY REFERENCES orders (id),
    due_at      TIMESTAMPTZ NOT NULL,
    -- The event that started the clock, and its trace: the cancellation continues both.
    cause       UUID NOT NULL,
    traceparent TEXT
);
CREATE INDEX payment_deadlines_due ON payment_deadlines (due_at);

-- The payment step's database: one payment per order, and the same outbox and inbox every saga
-- service has.

-- What each order owes and where its money is. The PaymentIntent's id is written (and committed)
-- before the intent is confirmed, so that a redelivered event or a restart between the provider's
-- answer and this service's commit finds the intent again instead of making a second one.
CREATE TABLE payments (
    order_id       UUID PRIMARY KEY,
    amount_minor   BIGINT NOT NULL CHECK (amount_minor > 0),
    currency       CHAR(3) NOT NULL,
    payment_method TEXT NOT NULL,
    intent_id      TEXT UNIQUE,
    -- DUE: not yet asked; AUTHORIZED: held; ACTION_REQUIRED: the customer must authenticate;
    -- DECLINED: the card said no; VOIDED: released after the order was cancelled.
    state          TEXT NOT NULL DEFAULT 'DUE'
                   CHECK (state IN ('DUE', 'AUTHORIZED', 'ACTION_REQUIRED', 'DECLINED', 'VOIDED')),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       UUID NOT NULL UNIQUE,
    topic          TEXT NOT NULL,
    message_key    TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    payload        JSONB NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    correlation_id UUID NOT NULL,
    causation_id   UUID,
    traceparent    TEXT
);
-- The outbox rows the relay has yet to publish, as a queue of their ids.
CREATE TABLE outbox_pending (
    id BIGINT PRIMARY KEY
);

CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

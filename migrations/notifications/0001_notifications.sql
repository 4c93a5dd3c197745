-- The notification service's database: who each order belongs to, the notifications it decided
-- to send, and the same outbox and inbox every saga service has.

-- Learnt from OrderPlaced. Status changes do not name the customer; they arrive after the
-- OrderPlaced of their order (one key, one partition), so the customer is always known.
CREATE TABLE order_customers (
    order_id    UUID PRIMARY KEY,
    customer_id UUID NOT NULL
);

-- One row per event worth telling a customer about, written with the event's inbox record.
-- PENDING until a sender claims it; SENDING is committed before the message goes out, so a
-- crash mid-send leaves it SENDING and it is never sent twice. SENT or FAILED after.
CREATE TABLE notifications (
    id          UUID PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    order_id    UUID NOT NULL,
    customer_id UUID NOT NULL,
    kind        TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('EMAIL', 'SMS')),
    message     TEXT NOT NULL,
    -- The saga and trace the event belonged to; NotificationSent continues both.
    correlation_id UUID NOT NULL,
    traceparent TEXT,
    state       TEXT NOT NULL DEFAULT 'PENDING'
                CHECK (state IN ('PENDING', 'SENDING', 'SENT', 'FAILED')),
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at DESC, id DESC);
CREATE INDEX notifications_pending ON notifications (created_at) WHERE state = 'PENDING';

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
    traceparent    TEXT,
    published_at   TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

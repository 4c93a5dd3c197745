-- The order service's database: orders, idempotency keys and the transactional outbox.

CREATE TABLE orders (
    -- UUIDv7: time-ordered, so `ORDER BY id DESC` is newest first and keyset pages by id.
    id            UUID PRIMARY KEY,
    customer_id   UUID NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('CREATED', 'RESERVED', 'PAID', 'SHIPPED', 'COMPLETED', 'CANCELLED')),
    -- The lines never change after placement, so they live with the order as one document.
    items         JSONB NOT NULL,
    total         NUMERIC(24, 4) NOT NULL CHECK (total >= 0),
    status_reason TEXT,
    -- The id of the OrderPlaced event: every later event of this order's saga carries it.
    correlation_id UUID NOT NULL,
    -- Bumped on every change; caches and clients compare it.
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);
CREATE INDEX orders_by_status ON orders (status, id DESC);

-- A retried POST with the same Idempotency-Key returns the order the first one created.
CREATE TABLE idempotency_keys (
    -- The customer id and the client's key, so two customers' keys never collide.
    scope        TEXT PRIMARY KEY,
    request_hash BYTEA NOT NULL,
    order_id     UUID NOT NULL REFERENCES orders (id),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events written in the same transaction as the change they describe; the relay publishes them.
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

-- Every event of every order's saga, from every topic, as the order service's timeline consumer
-- reads them: the saga timeline. A projection: it can be rebuilt by rewinding that consumer.
CREATE TABLE saga_events (
    -- The order of recording, and the id a live stream resumes from.
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       UUID NOT NULL UNIQUE,
    order_key      TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    topic          TEXT NOT NULL,
    producer       TEXT NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    correlation_id UUID NOT NULL,
    causation_id   UUID,
    trace_id       TEXT,
    payload        JSONB NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX saga_events_by_order ON saga_events (order_key, occurred_at, seq);

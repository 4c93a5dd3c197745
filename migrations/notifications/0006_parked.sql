-- A consumer that dead-letters an event parks the later events of the same key (the same order)
-- here instead of applying them: none may overtake it. `oms dlq redrive` or `oms dlq discard`
-- sends the dead letter back with a release, and the consumer applies (or skips) it, then the
-- parked events in the order they came. Rows live only while an operator has not acted, so these
-- tables are not pruned.
CREATE TABLE parked_keys (
    consumer  TEXT NOT NULL,
    key       TEXT NOT NULL,
    -- Where the dead letter came from: the release names it.
    topic     TEXT NOT NULL,
    partition INT NOT NULL,
    "offset"  BIGINT NOT NULL,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, key)
);

CREATE TABLE parked_events (
    consumer      TEXT NOT NULL,
    key           TEXT NOT NULL,
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    topic         TEXT NOT NULL,
    partition     INT NOT NULL,
    "offset"      BIGINT NOT NULL,
    payload       BYTEA NOT NULL,
    header_names  TEXT[] NOT NULL,
    header_values BYTEA[] NOT NULL,
    PRIMARY KEY (consumer, key, seq),
    -- A delivery parked, then delivered again before its acknowledgement, is parked once.
    UNIQUE (consumer, topic, partition, "offset")
);

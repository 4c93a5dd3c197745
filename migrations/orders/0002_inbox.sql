-- Events this database's consumers have processed, recorded in the same transaction as their
-- effects: a redelivered event finds its id here and changes nothing.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

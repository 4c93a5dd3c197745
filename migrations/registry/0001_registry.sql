-- The schema registry's database.

-- Each distinct schema once: the same schema registered under any subject gets the same id.
CREATE TABLE schemas (
    id          SERIAL PRIMARY KEY,
    schema_type TEXT NOT NULL DEFAULT 'AVRO',
    -- The normalised text: parsed and re-serialised, so whitespace and key order do not matter.
    normalized  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE subject_versions (
    subject    TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    schema_id  INTEGER NOT NULL REFERENCES schemas (id),
    -- Soft-deleted versions stay until deleted permanently; their numbers are never reused.
    deleted    BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);

-- Compatibility levels: the row with subject '' is the global level.
CREATE TABLE config (
    subject       TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);

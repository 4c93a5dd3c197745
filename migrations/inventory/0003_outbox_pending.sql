-- The outbox rows the relay has yet to publish, as a queue of their ids. Publishing deletes the
-- ids here rather than marking the rows: a mark wrote a new version of the whole row and an
-- entry in each of its indexes, a delete writes a few bytes. The outbox itself is only ever
-- appended to: the record of every event this service emitted.
CREATE TABLE outbox_pending (
    id BIGINT PRIMARY KEY
);
INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;

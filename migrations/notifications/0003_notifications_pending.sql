-- The notifications waiting to be sent, as a queue of their ids (UUIDv7: in the order they were
-- made). A round takes the ids off it as it claims them. The state then lives in no index, so
-- its changes (SENDING, then SENT) rewrite the row in place on its page, a HOT update, rather
-- than writing a new version of it with an entry in each of its indexes; the table leaves a
-- fifth of each page free for that.
DROP INDEX notifications_pending;
CREATE TABLE notifications_pending (
    id UUID PRIMARY KEY
);
INSERT INTO notifications_pending (id) SELECT id FROM notifications WHERE state = 'PENDING';
ALTER TABLE notifications SET (fillfactor = 80);

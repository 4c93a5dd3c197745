-- Each consumer forgets its inbox records once the broker can no longer deliver their messages
-- again (`consumer.inbox_keep`), oldest first, by this index.
CREATE INDEX inbox_by_age ON inbox (consumer, processed_at);

-- All the stock a product has ever taken in (the first count and every restock since), so that
-- conservation can be checked: available + reserved + sold = received, always.
ALTER TABLE stock ADD COLUMN received INTEGER NOT NULL DEFAULT 0;
UPDATE stock SET received = available + reserved + sold;

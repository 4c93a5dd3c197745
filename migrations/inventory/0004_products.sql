-- The catalog: what the shop sells and at what price. Stock stays in `stock`; a product can be
-- priced before it is stocked and stocked before it is priced, but only a priced, active product
-- can be ordered (the order service prices orders from the ProductPriced events written here).
CREATE TABLE products (
    product_id  TEXT PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Integer minor units of `currency` (cents): money is never a float.
    price_minor BIGINT NOT NULL CHECK (price_minor > 0),
    currency    CHAR(3) NOT NULL,
    active      BOOLEAN NOT NULL,
    -- Bumped by every change and carried in its event, so readers keep the newest.
    version     BIGINT NOT NULL DEFAULT 1,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

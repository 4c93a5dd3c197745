-- The order service's own copy of the catalog's prices, kept from the inventory's ProductPriced
-- events (by the status worker, which consumes that topic), so that placing an order reads a
-- price here and never waits on another service.
CREATE TABLE product_prices (
    product_id  TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor > 0),
    currency    CHAR(3) NOT NULL,
    active      BOOLEAN NOT NULL,
    -- The catalog's version of the product: an event older than what is kept changes nothing.
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Every price in an order is in one currency, set by the server from the prices above; orders
-- placed before were in USD. The payment method is what the payment step charges.
ALTER TABLE orders
    ADD COLUMN currency CHAR(3) NOT NULL DEFAULT 'USD',
    ADD COLUMN payment_method TEXT;

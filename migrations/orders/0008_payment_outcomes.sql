-- What the payment step says of an order that the order needs to show: a refund ends its life
-- (REFUNDED), a capture that failed is kept on the order (it stays PAID) until it ships, and
-- a card that needs the customer's 3-D Secure action leaves its client secret for the owner to
-- read while the order waits, RESERVED.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('CREATED', 'RESERVED', 'PAID', 'SHIPPED', 'COMPLETED', 'CANCELLED', 'REFUNDED'));
ALTER TABLE orders ADD COLUMN payment_issue TEXT;
ALTER TABLE orders ADD COLUMN payment_client_secret TEXT;

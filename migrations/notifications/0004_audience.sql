-- Whom a notification is for: the order's customer, or the shop's admins (a payment the
-- provider would not capture needs someone to look at it). Customers list only their own.
ALTER TABLE notifications ADD COLUMN audience TEXT NOT NULL DEFAULT 'CUSTOMER'
    CHECK (audience IN ('CUSTOMER', 'ADMINS'));

-- Unconstrained NUMERIC keeps the scale the client used: a total of 4.50 stays 4.50 instead of
-- being padded to 4.5000.
ALTER TABLE orders ALTER COLUMN total TYPE NUMERIC;

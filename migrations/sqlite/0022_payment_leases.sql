-- How many holders have leased each payment: its first holder knows nobody tried to settle it before,
-- and spares the look for an earlier attempt. A payment from before this column may have been leased
-- already, so it counts as leased once; a new one is inserted with 0.
ALTER TABLE payments ADD COLUMN leases INTEGER NOT NULL DEFAULT 1;

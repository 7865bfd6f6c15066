-- Leases are short and renewed by their holder while it lives: the holder is named, so that only it
-- renews or gives back its lease, and a dead holder's payment is taken over within seconds.
ALTER TABLE payments ADD COLUMN lease_holder TEXT;

-- The transaction a remote facilitator said it submitted for a payment not yet settled: while the
-- authorization is valid it may still land, so the next attempt waits for it rather than asking again.
ALTER TABLE payments ADD COLUMN submitted_tx TEXT;

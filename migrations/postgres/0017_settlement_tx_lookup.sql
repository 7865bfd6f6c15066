-- The escrow audit asks whether a transfer into the escrow settled one of our payments.
CREATE INDEX payments_by_settlement_tx ON payments (settlement_tx);

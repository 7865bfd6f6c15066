-- When a remote facilitator was asked to settle a payment without answering (the ask failed, or its
-- holder died first): it may have submitted a settlement it never named, which may still land while the
-- authorization is valid, so a refusal to a later ask is not final. Failing the payment clears it: a
-- retry of a refused payment is asked afresh.
ALTER TABLE payments ADD COLUMN settle_asked_at BIGINT;

-- A payment in flight at this upgrade (still `verified`) may have been asked of a remote facilitator by
-- a server from before 0025, which did not store its asks: it is marked as asked, so a refusal to the
-- next ask stays in doubt while a settlement the facilitator never named may still land. A payment no
-- facilitator was asked about only waits longer for a refusal to be final (until its authorization
-- expires).
UPDATE payments SET settle_asked_at = updated_at WHERE status = 'verified' AND settle_asked_at IS NULL;

-- What registrations may cost the operator: the gas reserved for each (the mint's estimate plus the
-- transfer), counted per signer and per day; why a registration that could not be minted failed.
ALTER TABLE registrations ADD COLUMN gas BIGINT NOT NULL DEFAULT 0;
ALTER TABLE registrations ADD COLUMN problem TEXT;
CREATE INDEX registrations_by_owner ON registrations (owner, created_at);
CREATE INDEX registrations_by_time ON registrations (created_at);

-- Signed headers already used for a registration, kept until their window closes: a captured header
-- cannot register again.
CREATE TABLE used_signatures (
    signature  TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_signatures_expiry ON used_signatures (expires_at);

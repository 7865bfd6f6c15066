-- The agent index re-reads agents whose registration file could not be read, oldest first.
CREATE INDEX agents_to_retry ON agents (updated_at) WHERE problem IS NOT NULL;

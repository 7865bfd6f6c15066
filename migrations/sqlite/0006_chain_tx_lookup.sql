-- Every chain write is looked up by what it is for (purpose, subject) before it is retried: index it.
-- tasks.feedback_status (0002) takes one more value than 0002 lists: none | pending | sent | skipped
-- (skipped: the reputation registry refuses the feedback for good, e.g. self-feedback).
CREATE INDEX chain_txs_purpose_subject ON chain_txs (purpose, subject);

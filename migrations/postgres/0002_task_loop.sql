-- The task loop and money out. escrow_status gains the in-flight states 'releasing' and 'refunding':
-- the decision is stored before the chain write, and the task is final only once the chain confirms.
ALTER TABLE tasks ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;      -- when the deposit expires (ms)
ALTER TABLE tasks ADD COLUMN escrow_tx TEXT;                            -- the release or refund transaction
ALTER TABLE tasks ADD COLUMN feedback_status TEXT NOT NULL DEFAULT 'none'; -- none | pending | sent
ALTER TABLE tasks ADD COLUMN review_started_at BIGINT;                  -- a /complete under review (ms)
ALTER TABLE tasks ADD COLUMN review_reason TEXT;
ALTER TABLE tasks ADD COLUMN review_approved INTEGER;                   -- 1 approved, 0 rejected, NULL none
CREATE INDEX tasks_escrow ON tasks (escrow_status, feedback_status);

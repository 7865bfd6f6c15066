-- Every reconciler pass asks for tasks whose money is in flight or whose deposit has expired, and for
-- final tasks awaiting feedback: index both, or each pass reads every task ever sold. The index on
-- (escrow_status, feedback_status) is covered by the first.
CREATE INDEX tasks_expiring ON tasks (escrow_status, expires_at);
CREATE INDEX tasks_awaiting_feedback ON tasks (feedback_status, updated_at);
DROP INDEX tasks_escrow;

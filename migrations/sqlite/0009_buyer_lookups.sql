-- A buyer lists its own tasks and the payments it has in flight (GET /buyer/tasks).
CREATE INDEX tasks_by_buyer ON tasks (buyer, created_at);
CREATE INDEX payments_by_payer ON payments (payer, status);

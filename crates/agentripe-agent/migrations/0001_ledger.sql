-- The wallet's ledger. Amounts are token units as decimal text; times are unix seconds.

-- The audit log: every decision the wallet took and every person's act, append-only.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    -- signed, refused, queued, approved, rejected, paused, resumed, outcome
    kind TEXT NOT NULL,
    -- the rule that decided, or who acted
    rule TEXT NOT NULL,
    detail TEXT NOT NULL,
    server TEXT,
    agent_id TEXT,
    service_path TEXT,
    amount TEXT,
    pay_to TEXT,
    asset TEXT,
    chain_id INTEGER,
    -- the payer's balance when the wallet decided, if it was read
    balance TEXT,
    approval_id INTEGER,
    nonce TEXT,
    task_id TEXT
);

CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE INDEX events_by_kind_and_time ON events (kind, at);

-- Every payment the wallet signed, with the header it sent, so that a buyer whose answer was lost
-- resends the same payment or finds the task it became instead of paying twice.
CREATE TABLE payments (
    nonce TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    signed_at INTEGER NOT NULL,
    valid_before INTEGER NOT NULL,
    server TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    service_path TEXT NOT NULL,
    amount TEXT NOT NULL,
    header TEXT NOT NULL,
    -- unknown, recorded (task_id is set), refused or expired (nothing was charged)
    outcome TEXT NOT NULL DEFAULT 'unknown',
    task_id TEXT
);

CREATE INDEX payments_by_time ON payments (signed_at);

-- Payments waiting for a person: pending, then approved or rejected; an approved one is used once.
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    server TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    service_path TEXT NOT NULL,
    amount TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
);

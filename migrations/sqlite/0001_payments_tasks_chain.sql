-- Payments in, tasks, and every transaction the server signs. Amounts are decimal strings of token
-- units (never floats); addresses and hashes are lowercase 0x hex; times are UNIX milliseconds.

CREATE TABLE payments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id        BIGINT  NOT NULL,
    asset           TEXT    NOT NULL,
    payer           TEXT    NOT NULL,
    nonce           TEXT    NOT NULL,
    amount          TEXT    NOT NULL,
    agent_id        TEXT    NOT NULL,
    service_path    TEXT    NOT NULL,
    x402_version    INTEGER NOT NULL,
    payment         TEXT    NOT NULL, -- the signed authorization, JSON
    valid_before    BIGINT  NOT NULL, -- seconds
    request         TEXT    NOT NULL, -- the purchase request's fields, JSON
    search_from_block BIGINT NOT NULL, -- no settlement of this authorization is older
    status          TEXT    NOT NULL, -- verified | settled | recorded | failed
    deposit_id      TEXT,             -- the settlement transaction hash, once known
    failure         TEXT,             -- an x402 error reason
    lease_until     BIGINT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    UNIQUE (chain_id, asset, payer, nonce)
);
CREATE INDEX payments_open ON payments (status, lease_until);

CREATE TABLE tasks (
    id                  TEXT    PRIMARY KEY, -- = deposit id = settlement transaction hash
    payment_id          BIGINT  NOT NULL UNIQUE REFERENCES payments (id),
    agent_id            TEXT    NOT NULL,
    product_id          TEXT    NOT NULL,
    buyer               TEXT    NOT NULL,
    amount              TEXT    NOT NULL,
    request_payload     TEXT,
    task_detail         TEXT,
    task_metadata       TEXT,
    reviewer_request    TEXT,
    status              TEXT    NOT NULL, -- pending | processing | completed | failed | rejected
    result              TEXT,
    error_message       TEXT,
    review_reject_count INTEGER NOT NULL DEFAULT 0,
    escrow_status       TEXT    NOT NULL, -- deposited | released | refunded
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
CREATE INDEX tasks_by_agent ON tasks (agent_id, status, created_at);

CREATE TABLE signer_nonces (
    signer     TEXT   PRIMARY KEY,
    next_nonce BIGINT NOT NULL
);

CREATE TABLE chain_txs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    signer     TEXT    NOT NULL,
    nonce      BIGINT  NOT NULL,
    purpose    TEXT    NOT NULL, -- settle | record | release | refund | feedback
    subject    TEXT    NOT NULL, -- what it is for: a payment id or a task id
    tx_hash    TEXT    NOT NULL UNIQUE,
    raw_tx     TEXT    NOT NULL, -- signed, ready to (re)broadcast
    status     TEXT    NOT NULL, -- pending | mined | dropped
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE INDEX chain_txs_pending ON chain_txs (status, signer, nonce);

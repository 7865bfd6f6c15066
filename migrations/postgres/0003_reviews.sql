-- The reviewer's audit trail: every verdict with what produced it. A submission (the exact review
-- input, hashed) is reviewed at most once per task.
CREATE TABLE reviews (
    task_id        TEXT    NOT NULL REFERENCES tasks (id),
    attempt        INTEGER NOT NULL,  -- 1 for the first reviewed submission of the task
    model          TEXT    NOT NULL,
    prompt_version TEXT    NOT NULL,
    input_hash     TEXT    NOT NULL,  -- sha256 of the exact messages sent, 0x hex
    approved       INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    latency_ms     BIGINT  NOT NULL,
    total_tokens   BIGINT,
    created_at     BIGINT  NOT NULL,
    PRIMARY KEY (task_id, attempt),
    UNIQUE (task_id, input_hash)
);

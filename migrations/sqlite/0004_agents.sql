-- Agents known from the identity registry's logs (it cannot be enumerated), with their registration
-- files, for listing, search and x402 discovery.
CREATE TABLE agents (
    agent_id   TEXT   PRIMARY KEY,
    owner      TEXT   NOT NULL,
    uri        TEXT   NOT NULL,
    data       TEXT,            -- the AgentURIData JSON, when the file was readable
    problem    TEXT,            -- why it was not
    updated_at BIGINT NOT NULL
);

CREATE TABLE index_cursors (
    name       TEXT   PRIMARY KEY,
    next_block BIGINT NOT NULL
);

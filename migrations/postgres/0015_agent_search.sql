-- Agent search and x402 discovery from the database, by index: every word of an agent's name,
-- description and catalog (matched by prefix), and one row per catalog entry sold over x402.
CREATE TABLE agent_words (
    word     TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (word, agent_id)
);
CREATE INDEX agent_words_by_agent ON agent_words (agent_id);

CREATE TABLE agent_resources (
    agent_id    TEXT    NOT NULL,
    position    INTEGER NOT NULL, -- its place in the agent's catalog
    agent_name  TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    price       TEXT    NOT NULL, -- as the catalog writes it: $0.10
    amount      BIGINT  NOT NULL, -- in token units
    description TEXT    NOT NULL,
    PRIMARY KEY (agent_id, position)
);

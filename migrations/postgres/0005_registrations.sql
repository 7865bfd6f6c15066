-- Agents registered through the API: the server mints the agent NFT (paying the gas) and transfers it
-- to its owner; each step is stored so that a crash between them is finished by the reconciler.
CREATE TABLE registrations (
    id         BIGSERIAL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    uri        TEXT    NOT NULL,
    agent_id   TEXT,              -- once minted
    register_tx TEXT,
    status     TEXT    NOT NULL,  -- minting | transferring | done
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE INDEX registrations_open ON registrations (status);

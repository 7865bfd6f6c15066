-- A transfer into the escrow that no payment of ours sent (its buyer settled the authorization itself, a
-- front-runner, a remote facilitator) can be wanted twice: by a purchase presenting that authorization,
-- and by the operator giving it back to its sender (`agentripe refund-unrecorded`). Both claim it here
-- before acting on it, and the key lets only the first: 'give_back', or 'payment <id>'.
CREATE TABLE transfer_claims (
    transaction_hash TEXT   NOT NULL PRIMARY KEY,
    holder           TEXT   NOT NULL,
    claimed_at       BIGINT NOT NULL
);
-- Give-backs stored before this table hold their transfers.
INSERT INTO transfer_claims (transaction_hash, holder, claimed_at)
SELECT DISTINCT subject, 'give_back', 0 FROM chain_txs WHERE purpose = 'record_unrecorded';

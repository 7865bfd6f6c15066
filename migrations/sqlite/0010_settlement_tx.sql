-- The transaction that moved a payment into the escrow. The deposit id is its hash, unless that
-- transaction settled several authorizations (a batching facilitator, or a front-runner bundling
-- payments): then each payment's deposit id is keccak256(abi.encode(txHash, payer, nonce)).
ALTER TABLE payments ADD COLUMN settlement_tx TEXT;

-- A stuck transaction is replaced with higher fees under the same nonce; its twins are found by nonce.
CREATE INDEX chain_txs_by_nonce ON chain_txs (signer, nonce);

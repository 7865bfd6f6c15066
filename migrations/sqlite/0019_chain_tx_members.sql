-- One transaction may serve several subjects (recordDeposits, releaseToVendors, refundToBuyers). Its
-- members are listed by the signer and nonce they share with every fee-bumped replacement, so each
-- subject's write is found before anything is sent for it again.
CREATE TABLE chain_tx_members (
    signer  TEXT   NOT NULL,
    nonce   BIGINT NOT NULL,
    purpose TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    PRIMARY KEY (purpose, subject, signer, nonce)
);

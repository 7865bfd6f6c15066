-- A transfer is claimed by the deposit it would become: the transaction's hash when it spent one
-- authorization (every give-back, and a purchase's usual case), a deposit of its own per payment when
-- it spent several. Claiming the hash made a give-back of one transfer of such a transaction refuse
-- the purchases whose transfers shared it.
ALTER TABLE transfer_claims RENAME COLUMN transaction_hash TO deposit_id;

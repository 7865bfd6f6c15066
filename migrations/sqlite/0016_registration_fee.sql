-- A registration fee paid over x402 (the exact payload: authorization and signature), collected before
-- the agent is minted; such a registration starts as 'paying'.
ALTER TABLE registrations ADD COLUMN fee_payment TEXT;

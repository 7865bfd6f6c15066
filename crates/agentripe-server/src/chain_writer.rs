//! The one way the server writes to the chain: a signing key whose transactions are signed with a
//! database-allocated nonce and stored before they are broadcast (agentripe-store), then confirmed.
//!
//! A transaction is never lost: if the process dies after storing it, the next attempt to advance its
//! subject finds it pending, rebroadcasts the same bytes and waits for it. If the chain used its nonce
//! for something else (another program shares the key), it is marked dropped and the caller, whose
//! every step is idempotent, checks the chain and signs anew.

use std::{sync::Arc, time::Duration};

use agentripe_store::{ChainTx, ChainTxStatus, PaymentLease, SignedTx, Store, StoreError, VOID};
use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    eips::{Decodable2718, Encodable2718, eip1559::Eip1559Estimation},
    network::TxSignerSync,
    primitives::{Address, B256, Bytes, TxKind, U256},
    providers::{DynProvider, Provider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
};

use crate::{
    pipeline::{RpcError, rpc},
    util::{READING_TTL, Recent, hex, now_ms, to_i64},
};

/// Why a chain write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The call would revert; nothing was signed. Carries the node's message (with revert data).
    #[error("the call would revert: {0}")]
    WouldRevert(String),
    /// The node could not be reached or answered nonsense; try again later.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The database failed, or a write under a payment's lease found it gone ([`StoreError::Overtaken`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction was not mined within the wait.
    #[error("transaction {0} not mined in time; it stays stored and will be confirmed later")]
    NotMinedYet(B256),
    /// Its nonce was used by another transaction, so it will never be mined.
    #[error("transaction {0} was dropped: its nonce was used by another transaction")]
    Dropped(B256),
}

/// Timing of confirmations.
#[derive(Clone, Copy, Debug)]
pub struct Confirmation {
    /// Blocks on top of the including block before a transaction counts (0 on a dev chain).
    pub confirmations: u64,
    /// How often to ask for a receipt.
    pub poll_interval: Duration,
    /// How long to wait for one before giving up for now.
    pub timeout: Duration,
    /// How far the RPC's receipts and logs may trail its state: a transaction whose nonce the chain has
    /// passed is only taken for dropped once its receipt stayed missing this long.
    pub rpc_lag: Duration,
}

/// When and how far the fees of a transaction that is not mined are raised.
#[derive(Clone, Copy, Debug)]
pub struct FeePolicy {
    /// How long a transaction may stay unmined before it is replaced with higher fees (same nonce, same
    /// call): an underpriced transaction would otherwise hold back every later one of its key.
    pub bump_after: Duration,
    /// The most this key pays per gas, bumped or not: above it, a fee spike is waited out.
    pub max_fee_per_gas: u128,
}

/// A signing key that writes durably.
#[derive(Clone, Debug)]
pub struct ChainWriter {
    signer: PrivateKeySigner,
    provider: DynProvider,
    store: Store,
    chain_id: u64,
    confirmation: Confirmation,
    fees: FeePolicy,
    /// The fee estimate, read at most once per [`READING_TTL`]: under load, one read serves many
    /// transactions (a fee that rose meanwhile is what fee bumping is for).
    recent_fees: Arc<Recent<Eip1559Estimation>>,
}

impl ChainWriter {
    /// A writer for `signer`; syncs its nonce counter with the chain.
    pub async fn new(
        signer: PrivateKeySigner,
        provider: DynProvider,
        store: Store,
        chain_id: u64,
        confirmation: Confirmation,
        fees: FeePolicy,
    ) -> Result<Self, WriteError> {
        let recent_fees = Arc::new(Recent::new(READING_TTL));
        let writer = Self { signer, provider, store, chain_id, confirmation, fees, recent_fees };
        writer.sync_nonce().await?;
        Ok(writer)
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    async fn sync_nonce(&self) -> Result<u64, WriteError> {
        let pending = self
            .provider
            .get_transaction_count(self.address())
            .pending()
            .await
            .map_err(rpc("reading the signer's nonce"))?;
        self.store.sync_nonce(&hex(self.address()), to_i64(pending)).await?;
        Ok(pending)
    }

    /// Simulates `call` from this key (eth_estimateGas), signs it with the next nonce, stores it for each
    /// of `subjects` (one, or a batch's members), and broadcasts it. Returns the stored transaction;
    /// confirm it with [`Self::confirm`]. A write for a payment under its `lease` is signed only while the
    /// lease holds: a simulation that passed says nothing of who holds the payment by the time it is signed.
    pub async fn send(
        &self,
        purpose: &str,
        subjects: &[&str],
        lease: Option<PaymentLease<'_>>,
        to: Address,
        input: Bytes,
    ) -> Result<ChainTx, WriteError> {
        let request = TransactionRequest::default().from(self.address()).to(to).input(input.clone().into());
        // The node's answer to a simulation is a revert (or a call that fits no block); no answer is the
        // RPC's trouble, for a later attempt.
        let gas = self.provider.estimate_gas(request).await.map_err(|error| match error.as_error_resp() {
            Some(_) => WriteError::WouldRevert(error.to_string()),
            None => rpc("estimating gas")(error).into(),
        })?;
        let fees = self
            .recent_fees
            .get(|| self.provider.estimate_eip1559_fees())
            .await
            .map_err(rpc("estimating fees"))?;
        let cap = self.fees.max_fee_per_gas;
        if fees.max_fee_per_gas > cap {
            tracing::warn!(
                estimate = fees.max_fee_per_gas,
                cap,
                purpose,
                "fees above MAX_FEE_PER_GAS_WEI: signing at the cap, the transaction waits for fees to fall"
            );
        }
        let max_fee_per_gas = fees.max_fee_per_gas.min(cap);
        let max_priority_fee_per_gas = fees.max_priority_fee_per_gas.min(max_fee_per_gas);
        let chain_id = self.chain_id;
        let signer = self.signer.clone();
        let stored = self
            .store
            .sign_and_store(&hex(self.address()), purpose, subjects, lease, now_ms(), |nonce| {
                let tx = TxEip1559 {
                    chain_id,
                    nonce,
                    // Headroom over the estimate: state may shift between estimate and inclusion.
                    gas_limit: gas + gas / 5,
                    max_fee_per_gas,
                    max_priority_fee_per_gas,
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input,
                };
                sign(&signer, tx)
            })
            .await?
            .map_err(|message| RpcError { context: "signing", message })?;
        self.broadcast(&stored).await;
        Ok(stored)
    }

    /// [`Self::send`] then [`Self::confirm`]; when another transaction took the nonce, simulates and
    /// signs again with a fresh one (a few times), since every caller's step is idempotent.
    pub async fn send_and_confirm(
        &self,
        purpose: &str,
        subject: &str,
        to: Address,
        input: Bytes,
    ) -> Result<TransactionReceipt, WriteError> {
        self.send_and_confirm_under(purpose, &[subject], None, to, input).await
    }

    /// [`Self::send_and_confirm`] of a write for the payment `lease` holds, signed only while it holds
    /// ([`StoreError::Overtaken`] otherwise); its subject is the payment's id.
    pub async fn send_and_confirm_leased(
        &self,
        purpose: &str,
        lease: PaymentLease<'_>,
        to: Address,
        input: Bytes,
    ) -> Result<TransactionReceipt, WriteError> {
        self.send_and_confirm_under(purpose, &[&leased_subject(lease)], Some(lease), to, input).await
    }

    /// [`Self::send_and_confirm`] of one transaction serving several subjects: a batch.
    pub async fn send_and_confirm_for(
        &self,
        purpose: &str,
        subjects: &[&str],
        to: Address,
        input: Bytes,
    ) -> Result<TransactionReceipt, WriteError> {
        self.send_and_confirm_under(purpose, subjects, None, to, input).await
    }

    async fn send_and_confirm_under(
        &self,
        purpose: &str,
        subjects: &[&str],
        lease: Option<PaymentLease<'_>>,
        to: Address,
        input: Bytes,
    ) -> Result<TransactionReceipt, WriteError> {
        let mut attempts = 0;
        loop {
            let tx = self.send(purpose, subjects, lease, to, input.clone()).await?;
            // A nonce just taken has no replacements yet: there is nothing to read back.
            match self.await_mined(vec![stored_hash(&tx)?], tx.clone()).await {
                Err(WriteError::Dropped(hash)) if attempts < 3 => {
                    attempts += 1;
                    tracing::warn!(%hash, purpose, subject = %tx.subject, "nonce taken by another transaction; signing again");
                }
                result => return result,
            }
        }
    }

    async fn broadcast(&self, tx: &ChainTx) {
        let raw = match alloy::primitives::hex::decode(&tx.raw_tx) {
            Ok(raw) => raw,
            Err(error) => {
                tracing::error!(tx = %tx.tx_hash, %error, "stored transaction is not hex");
                return;
            }
        };
        // "already known" and "nonce too low" are expected after a restart; confirm() sorts them out.
        if let Err(error) = self.provider.send_raw_transaction(&raw).await {
            tracing::debug!(tx = %tx.tx_hash, %error, "broadcast not accepted");
        }
    }

    /// Waits until `tx` (or a fee-bumped replacement of it) is mined with the configured confirmations,
    /// rebroadcasting it while the node does not know it and raising its fees while it waits too long.
    /// Returns the receipt (which may show a revert).
    pub async fn confirm(&self, tx: &ChainTx) -> Result<TransactionReceipt, WriteError> {
        let twins = self.twins(tx).await?;
        let awaited = twins.iter().map(stored_hash).collect::<Result<_, _>>()?;
        self.await_mined(awaited, twins.last().cloned().unwrap_or_else(|| tx.clone())).await
    }

    /// [`Self::confirm`] of the transactions `awaited`, all of one nonce, `latest` the one to broadcast.
    async fn await_mined(
        &self,
        awaited: Vec<B256>,
        latest: ChainTx,
    ) -> Result<TransactionReceipt, WriteError> {
        let now = tokio::time::Instant::now();
        // Whoever hands a transaction to confirm has just broadcast it (send, resume, send_again, void, and
        // rebroadcast_pending before its watch).
        let mut rebroadcasting = Rebroadcasting {
            writer: self,
            awaited,
            latest,
            next_at: now + REBROADCAST_EVERY,
            bump_at: now + self.fees.bump_after,
            nonce_check_at: now + NONCE_CHECK_EVERY,
            nonce_passed_at: None,
        };
        let receipt = self.confirmation.wait_for_receipt(&self.provider, &mut rebroadcasting).await?;
        let Rebroadcasting { latest, .. } = rebroadcasting;
        self.store.mark_mined(&latest.signer, latest.nonce, &hex(receipt.transaction_hash), now_ms()).await?;
        Ok(receipt)
    }

    /// Our transactions marked mined that a chain come back behind what we saw (a node restarted behind
    /// its head, a reorg deeper than the confirmations) no longer has: those whose nonces it has not
    /// reached and whose receipts it does not show, in nonce order. Each must be sent again
    /// ([`Self::send_again`]) or its nonce taken by another ([`Self::void`]), in that order: a nonce
    /// left open holds every later transaction back.
    pub async fn vanished(&self) -> Result<Vec<ChainTx>, WriteError> {
        let mut vanished = Vec::new();
        for tx in self.stored_past_mined_nonce(ChainTxStatus::Mined).await? {
            // A receipt the node still has (its nonce read lagged) means nothing vanished.
            let receipt = self.provider.get_transaction_receipt(stored_hash(&tx)?).await;
            if receipt.map_err(rpc("reading a receipt"))?.is_none() {
                vanished.push(tx);
            }
        }
        Ok(vanished)
    }

    /// Sends a [vanished](Self::vanished) transaction again from its stored bytes, and confirms it in
    /// the background; false if another caller took it up first.
    pub async fn send_again(&self, vanished: ChainTx) -> Result<bool, WriteError> {
        if !self.store.mark_vanished(&vanished, now_ms()).await? {
            return Ok(false);
        }
        tracing::warn!(tx = %vanished.tx_hash, purpose = %vanished.purpose, subject = %vanished.subject, nonce = vanished.nonce,
            "a mined transaction is gone from the chain (a reorg, or a node behind its head): sending it again");
        self.broadcast(&vanished).await;
        self.watch(vanished);
        Ok(true)
    }

    /// Takes the nonce of a [vanished](Self::vanished) transaction that must not land again with a
    /// transfer of nothing to ourselves ([`VOID`]), and stores, sends and confirms it in the background;
    /// false if another caller took the vanished one up first. Its fees replace the vanished one's in
    /// a pool that took it back (as nodes do with a reorg's transactions): an eighth above them, and
    /// above the chain's, whatever `MAX_FEE_PER_GAS_WEI` says (and so are its fee bumps), since it
    /// costs 21,000 gas at those fees where losing to the vanished one charges a buyer for nothing.
    pub async fn void(&self, vanished: ChainTx) -> Result<bool, WriteError> {
        let old = stored_eip1559(&vanished)?;
        let asked = self.provider.estimate_eip1559_fees().await.map_err(rpc("estimating fees"))?;
        let (max_fee_per_gas, max_priority_fee_per_gas) = replacement_fees(&old, &asked);
        let void = TxEip1559 {
            chain_id: old.chain_id,
            nonce: old.nonce,
            gas_limit: 21_000,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            to: TxKind::Call(self.address()),
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::new(),
        };
        let signed = sign(&self.signer, void).map_err(|message| RpcError { context: "signing", message })?;
        let Some(void) = self.store.void_vanished(&vanished, &signed, now_ms()).await? else {
            return Ok(false);
        };
        tracing::warn!(tx = %vanished.tx_hash, purpose = %vanished.purpose, subject = %vanished.subject, nonce = vanished.nonce, void = %void.tx_hash,
            "a mined transaction is gone from the chain, and must not land again: its nonce is taken by a transfer of nothing");
        self.broadcast(&void).await;
        self.watch(void);
        Ok(true)
    }

    /// Confirms `tx`, sent again with no step waiting on it, for as long as it takes: its nonce holds
    /// every later one back. One that now reverts is logged as an error for the operator, and so is a
    /// void that lost to the transaction it was to keep off the chain.
    fn watch(&self, tx: ChainTx) {
        let writer = self.clone();
        tokio::spawn(async move {
            loop {
                match writer.confirm(&tx).await {
                    Ok(receipt) if receipt.status() => {
                        tracing::info!(tx = %receipt.transaction_hash, purpose = %tx.purpose, subject = %tx.subject, "a transaction sent again is mined");
                    }
                    Ok(receipt) => {
                        tracing::error!(tx = %receipt.transaction_hash, purpose = %tx.purpose, subject = %tx.subject,
                        "a transaction sent again reverted: its step must be looked at")
                    }
                    Err(WriteError::Dropped(_)) if tx.purpose == VOID => writer.void_lost(&tx).await,
                    Err(WriteError::Dropped(hash)) => {
                        tracing::warn!(tx = %hash, purpose = %tx.purpose, subject = %tx.subject, "a transaction sent again lost its nonce to another")
                    }
                    Err(error @ WriteError::Store(StoreError::Corrupt { .. })) => {
                        tracing::error!(tx = %tx.tx_hash, %error, "a transaction sent again cannot be watched")
                    }
                    Err(error) => {
                        tracing::warn!(tx = %tx.tx_hash, %error, "a transaction sent again is not mined yet; still waiting");
                        tokio::time::sleep(REBROADCAST_EVERY).await;
                        continue;
                    }
                }
                return;
            }
        });
    }

    /// After `void` lost its nonce: the transaction it was to keep off the chain (its subject) may have
    /// landed all the same, from a pool that kept it at fees the void could not beat.
    async fn void_lost(&self, void: &ChainTx) {
        let landed = match void.subject.parse::<B256>() {
            Ok(hash) => self.provider.get_transaction_receipt(hash).await,
            Err(_) => return,
        };
        match landed {
            Ok(Some(receipt)) => {
                if let Err(error) =
                    self.store.mark_mined(&void.signer, void.nonce, &void.subject, now_ms()).await
                {
                    tracing::warn!(tx = %void.subject, %error, "could not note a transaction mined");
                }
                if receipt.status() {
                    tracing::error!(tx = %void.subject,
                        "a settlement that was not to land again (its payment refused, forgotten or settled by another transaction) landed all the same: give its transfer back with `agentripe refund-unrecorded`")
                } else {
                    tracing::info!(tx = %void.subject, "a transaction a void was to keep off the chain landed, and reverted: nothing moved")
                }
            }
            Ok(None) => {
                tracing::warn!(void = %void.tx_hash, "a void lost its nonce to a transaction not of ours")
            }
            Err(error) => {
                tracing::warn!(void = %void.tx_hash, %error, "could not read what took a void's nonce")
            }
        }
    }

    /// Broadcasts again, in nonce order, every transaction of ours still pending past the chain's nonce,
    /// and watches each nonce until mined. At start-up nobody waits on them, and each is otherwise sent
    /// again only when its own step is resumed, one payment or payout at a time, if ever (a [`VOID`] has
    /// no step; a recorded payment's settlement, sent again after a reorg, has none left): a node that
    /// forgot them (restarted, or dropped its pool) would hold every later nonce back. A watch beside
    /// a step's own wait does no harm. Returns how many were sent.
    pub async fn rebroadcast_pending(&self) -> Result<usize, WriteError> {
        let pending = self.stored_past_mined_nonce(ChainTxStatus::Pending).await?;
        for tx in &pending {
            self.broadcast(tx).await;
        }
        // A nonce's transactions (an original and its replacements) are confirmed together.
        for nonce in pending.chunk_by(|one, next| one.nonce == next.nonce) {
            if let Some(latest) = nonce.last() {
                self.watch(latest.clone());
            }
        }
        Ok(pending.len())
    }

    /// Our transactions stored as `status` whose nonces the chain's last block has not reached, in nonce
    /// order.
    async fn stored_past_mined_nonce(&self, status: ChainTxStatus) -> Result<Vec<ChainTx>, WriteError> {
        let mined = self.mined_nonce().await?;
        Ok(self.store.txs_from(&hex(self.address()), status, to_i64(mined)).await?)
    }

    /// The nonce after our last transaction in the chain's last block.
    async fn mined_nonce(&self) -> Result<u64, WriteError> {
        let nonce = self.provider.get_transaction_count(self.address()).latest().await;
        Ok(nonce.map_err(rpc("reading the signer's nonce"))?)
    }

    /// `tx` and its replacements: the transactions of its nonce for the same purpose and subject.
    async fn twins(&self, tx: &ChainTx) -> Result<Vec<ChainTx>, WriteError> {
        let mut twins = self.store.txs_with_nonce(&tx.signer, tx.nonce).await?;
        twins.retain(|twin| (&twin.purpose, &twin.subject) == (&tx.purpose, &tx.subject));
        Ok(twins)
    }

    /// Signs `stuck` again with the same nonce and call and fees raised to what the chain asks now (by
    /// at least an eighth, as nodes require of a replacement), within the cap; stores and broadcasts it.
    /// None when its fees already meet the chain's, or the cap leaves no room; an error when its stored
    /// bytes are not an EIP-1559 transaction (every one we sign is).
    async fn replace(&self, stuck: &ChainTx) -> Result<Option<ChainTx>, WriteError> {
        let old = stored_eip1559(stuck)?;
        let asked = self.provider.estimate_eip1559_fees().await.map_err(rpc("estimating fees"))?;
        if old.max_fee_per_gas >= asked.max_fee_per_gas
            && old.max_priority_fee_per_gas >= asked.max_priority_fee_per_gas
        {
            return Ok(None);
        }
        // A void is raised past the cap, as it was signed: see `Self::void`.
        let cap = if stuck.purpose == VOID { u128::MAX } else { self.fees.max_fee_per_gas };
        let Some((max_fee_per_gas, max_priority_fee_per_gas)) = raised_fees(&old, &asked, cap) else {
            tracing::warn!(tx = %stuck.tx_hash, cap = self.fees.max_fee_per_gas, asked = asked.max_fee_per_gas, "a transaction is stuck at MAX_FEE_PER_GAS_WEI; it waits for fees to fall");
            return Ok(None);
        };
        let replacement = TxEip1559 { max_fee_per_gas, max_priority_fee_per_gas, ..old };
        let signed =
            sign(&self.signer, replacement).map_err(|message| RpcError { context: "signing", message })?;
        let stored = self.store.store_replacement(stuck, &signed, now_ms()).await?;
        tracing::info!(stuck = %stuck.tx_hash, replacement = %stored.tx_hash, max_fee_per_gas, "fees raised on a transaction that was not mined");
        self.broadcast(&stored).await;
        Ok(Some(stored))
    }

    /// The chain's mined nonce passed ours, yet none of `awaited` has a receipt: another one took it.
    async fn nonce_taken_by_another(&self, nonce: i64, awaited: &[B256]) -> Result<bool, WriteError> {
        let mined = self.mined_nonce().await?;
        if to_i64(mined) <= nonce {
            return Ok(false);
        }
        // Mined nonces passed ours: look once more for our receipts, which may have landed meanwhile.
        for &hash in awaited {
            if self.provider.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))?.is_some()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Self::resume`] of the writes [`Self::send_and_confirm_leased`] made for the payment `lease` holds
    /// (by this holder or any before it). The lease is not checked: resuming signs nothing.
    pub async fn resume_leased(
        &self,
        purpose: &str,
        lease: PaymentLease<'_>,
    ) -> Result<Option<TransactionReceipt>, WriteError> {
        self.resume(purpose, &leased_subject(lease)).await
    }

    /// What the chain says of the transactions stored for `purpose` on `subject`, latest first: the
    /// receipt of one that is mined (even one taken for dropped), after confirming one a crash left in
    /// flight. Every caller asks this before sending, so no write is sent twice.
    pub async fn resume(
        &self,
        purpose: &str,
        subject: &str,
    ) -> Result<Option<TransactionReceipt>, WriteError> {
        let txs = self.store.txs_for(purpose, subject).await?;
        for tx in txs.iter().rev() {
            match tx.status()? {
                // A crash may have come before the broadcast, and the node may have forgotten it since.
                ChainTxStatus::Pending => {
                    self.broadcast(tx).await;
                    match self.confirm(tx).await {
                        Ok(receipt) => return Ok(Some(receipt)),
                        Err(WriteError::Dropped(_)) => continue,
                        Err(error) => return Err(error),
                    }
                }
                // A transaction taken for dropped may have been mined after all (a receipt that lagged
                // longer than we waited): the chain is asked before anything is sent again.
                status @ (ChainTxStatus::Mined | ChainTxStatus::Dropped) => {
                    let receipt = self
                        .provider
                        .get_transaction_receipt(stored_hash(tx)?)
                        .await
                        .map_err(rpc("reading a receipt"))?;
                    if let Some(receipt) = receipt {
                        if status == ChainTxStatus::Dropped {
                            tracing::warn!(tx = %tx.tx_hash, purpose, subject, "a transaction taken for dropped was mined");
                            self.store.mark_mined(&tx.signer, tx.nonce, &tx.tx_hash, now_ms()).await?;
                        }
                        return Ok(Some(receipt));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether a transaction stored for `purpose` on `subject` was mined and did what it was sent for. One
    /// that reverted (its estimate passed, then the block it landed in had changed: an operator key
    /// rotated, an agent burned) counts as none, so the caller sends the write again.
    pub async fn succeeded(&self, purpose: &str, subject: &str) -> Result<bool, WriteError> {
        Ok(self.resume(purpose, subject).await?.is_some_and(|receipt| receipt.status()))
    }
}

/// Signs an EIP-1559 transaction: its hash and its encoding, as stored.
fn sign(signer: &PrivateKeySigner, mut tx: TxEip1559) -> Result<SignedTx, String> {
    let signature = signer.sign_transaction_sync(&mut tx).map_err(|error| error.to_string())?;
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    Ok(SignedTx {
        tx_hash: hex(*envelope.tx_hash()),
        raw_tx: format!("0x{}", alloy::primitives::hex::encode(envelope.encoded_2718())),
    })
}

/// The subject a write for the payment `lease` holds is stored under: the payment's id.
fn leased_subject(lease: PaymentLease<'_>) -> String {
    lease.payment.to_string()
}

/// The fees (max, priority) of a transaction that replaces one signed with `old`'s in a node's pool:
/// what the chain `asked`, and at least an eighth above `old`'s, as nodes require.
fn replacement_fees(old: &TxEip1559, asked: &Eip1559Estimation) -> (u128, u128) {
    let max_fee_per_gas = raised(old.max_fee_per_gas).max(asked.max_fee_per_gas);
    let max_priority_fee_per_gas =
        raised(old.max_priority_fee_per_gas).max(asked.max_priority_fee_per_gas).min(max_fee_per_gas);
    (max_fee_per_gas, max_priority_fee_per_gas)
}

/// [`replacement_fees`] within `cap`; none when the cap leaves no room for a replacement.
fn raised_fees(old: &TxEip1559, asked: &Eip1559Estimation, cap: u128) -> Option<(u128, u128)> {
    let (max_fee_per_gas, max_priority_fee_per_gas) = replacement_fees(old, asked);
    let (max_fee_per_gas, max_priority_fee_per_gas) =
        (max_fee_per_gas.min(cap), max_priority_fee_per_gas.min(cap));
    let room = max_fee_per_gas >= raised(old.max_fee_per_gas)
        && max_priority_fee_per_gas >= raised(old.max_priority_fee_per_gas);
    room.then_some((max_fee_per_gas, max_priority_fee_per_gas))
}

/// A fee raised by the eighth (and a wei) that nodes ask of a replacement.
fn raised(fee: u128) -> u128 {
    fee.saturating_add(fee / 8).saturating_add(1)
}

/// The EIP-1559 transaction `tx` stored (every one we sign is).
fn stored_eip1559(tx: &ChainTx) -> Result<TxEip1559, RpcError> {
    let corrupt =
        |detail: &str| RpcError { context: "reading a stored transaction", message: detail.to_owned() };
    let raw = alloy::primitives::hex::decode(&tx.raw_tx).map_err(|_| corrupt("not hex"))?;
    match TxEnvelope::decode_2718(&mut raw.as_slice()).map_err(|_| corrupt("not a transaction"))? {
        TxEnvelope::Eip1559(signed) => Ok(signed.tx().clone()),
        _ => Err(corrupt("not an EIP-1559 transaction")),
    }
}

fn stored_hash(tx: &ChainTx) -> Result<B256, RpcError> {
    tx.tx_hash.parse().map_err(|_| RpcError {
        context: "reading a stored transaction",
        message: format!("bad hash {}", tx.tx_hash),
    })
}

/// What is awaited, and what to do each time none of it has a receipt yet.
pub trait WhileMissing: Send {
    /// The transactions any of which ends the wait: one, or one and its fee-bumped replacements.
    fn awaited(&self) -> &[B256];
    /// Called on every poll without a receipt; an error ends the wait.
    fn missing(&mut self) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// Someone else's transaction: nothing to do but wait.
#[derive(Clone, Copy, Debug)]
pub struct Patiently(pub B256);

impl WhileMissing for Patiently {
    fn awaited(&self) -> &[B256] {
        std::slice::from_ref(&self.0)
    }

    async fn missing(&mut self) -> Result<(), WriteError> {
        Ok(())
    }
}

/// How often a transaction the node does not mine is broadcast again.
const REBROADCAST_EVERY: Duration = Duration::from_secs(5);

/// How often the key's mined nonce is read while a receipt is missing: only a transaction missing for
/// that long is in doubt (on a healthy chain its receipt comes first), so a wait costs receipt polls
/// alone.
const NONCE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Our own transaction: rebroadcast it now and then, replace it with higher fees when it waits too
/// long, and give up once another transaction took its nonce.
struct Rebroadcasting<'a> {
    writer: &'a ChainWriter,
    /// The transaction and its replacements.
    awaited: Vec<B256>,
    /// The one broadcast: the latest replacement.
    latest: ChainTx,
    next_at: tokio::time::Instant,
    bump_at: tokio::time::Instant,
    nonce_check_at: tokio::time::Instant,
    /// Since when the chain's nonce has been past ours with no receipt for us.
    nonce_passed_at: Option<tokio::time::Instant>,
}

impl WhileMissing for Rebroadcasting<'_> {
    fn awaited(&self) -> &[B256] {
        &self.awaited
    }

    async fn missing(&mut self) -> Result<(), WriteError> {
        let writer = self.writer;
        let now = tokio::time::Instant::now();
        if now >= self.nonce_check_at {
            self.nonce_check_at = now + NONCE_CHECK_EVERY;
            if writer.nonce_taken_by_another(self.latest.nonce, &self.awaited).await? {
                // Another waiter of this transaction (a resumed step, a batch's member) may have replaced
                // it with one this wait never heard of, or seen one of them mined where our RPC shows no
                // receipt yet: the store is asked before anything is taken for dropped.
                let twins = writer.twins(&self.latest).await?;
                let (mut heard_of_more, mut seen_mined) = (false, false);
                for twin in &twins {
                    let hash = stored_hash(twin)?;
                    if !self.awaited.contains(&hash) {
                        self.awaited.push(hash);
                        heard_of_more = true;
                    }
                    seen_mined |= twin.status()? == ChainTxStatus::Mined;
                }
                // A twin heard of just now is polled for before anything else, and starts the lag anew.
                if heard_of_more {
                    self.nonce_passed_at = Some(now);
                    return Ok(());
                }
                // A lagging RPC shows the nonce passed before it shows our receipt: only a receipt that
                // stays missing longer than the lag, of transactions no other waiter saw mined, means
                // another transaction took the nonce.
                let since = *self.nonce_passed_at.get_or_insert(now);
                if !seen_mined && since.elapsed() >= writer.confirmation.rpc_lag {
                    let (signer, nonce) = (&self.latest.signer, self.latest.nonce);
                    writer.store.mark_dropped(signer, nonce, now_ms()).await?;
                    writer.sync_nonce().await?;
                    return Err(WriteError::Dropped(stored_hash(&self.latest)?));
                }
                return Ok(());
            }
            self.nonce_passed_at = None;
        }
        // Past our nonce, the transaction can only be mined already (its receipt lagging) or replaced.
        if self.nonce_passed_at.is_some() {
            return Ok(());
        }
        if now >= self.bump_at {
            self.bump_at = now + writer.fees.bump_after;
            if let Some(replacement) = writer.replace(&self.latest).await? {
                self.awaited.push(stored_hash(&replacement)?);
                self.latest = replacement;
                self.next_at = now + REBROADCAST_EVERY;
            }
        }
        if now >= self.next_at {
            writer.broadcast(&self.latest).await;
            self.next_at = now + REBROADCAST_EVERY;
        }
        Ok(())
    }
}

impl Confirmation {
    /// The one receipt waiter: polls until transaction `hash` is mined `confirmations` deep and returns
    /// its receipt. While the node has no receipt, `while_missing` decides (rebroadcast, or give up);
    /// past the timeout the transaction is left for later as [`WriteError::NotMinedYet`].
    pub async fn wait_for_receipt(
        &self,
        provider: &DynProvider,
        while_missing: &mut impl WhileMissing,
    ) -> Result<TransactionReceipt, WriteError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let mut found = None;
            for &hash in while_missing.awaited().iter().rev() {
                found = provider.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))?;
                if found.is_some() {
                    break;
                }
            }
            match found {
                Some(receipt) => {
                    if self.is_deep_enough(provider, &receipt).await? {
                        return Ok(receipt);
                    }
                }
                None => while_missing.missing().await?,
            }
            if tokio::time::Instant::now() >= deadline {
                let latest = while_missing.awaited().last().copied().unwrap_or_default();
                return Err(WriteError::NotMinedYet(latest));
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    async fn is_deep_enough(
        &self,
        provider: &DynProvider,
        receipt: &TransactionReceipt,
    ) -> Result<bool, RpcError> {
        if self.confirmations == 0 {
            return Ok(true);
        }
        let head = provider.get_block_number().await.map_err(rpc("reading the head"))?;
        Ok(receipt.block_number.is_some_and(|block| head >= block + self.confirmations))
    }
}

//! The one way the server writes to the chain: a signing key whose transactions are signed with a
//! database-allocated nonce and stored before they are broadcast (agentripe-store), then confirmed.
//!
//! A transaction is never lost: if the process dies after storing it, the next attempt to advance its
//! subject finds it pending, rebroadcasts the same bytes and waits for it. If the chain used its nonce
//! for something else (another program shares the key), it is marked dropped and the caller, whose
//! every step is idempotent, checks the chain and signs anew.

use std::time::Duration;

use agentripe_store::{ChainTx, ChainTxStatus, SignedTx, Store, StoreError};
use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    eips::Encodable2718,
    network::TxSignerSync,
    primitives::{Address, B256, Bytes, TxKind, U256},
    providers::{DynProvider, Provider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
};

use crate::now_ms;

/// Why a chain write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The call would revert; nothing was signed. Carries the node's message (with revert data).
    #[error("the call would revert: {0}")]
    WouldRevert(String),
    /// The node could not be reached or answered nonsense; try again later.
    #[error("chain RPC error while {context}: {message}")]
    Rpc { context: &'static str, message: String },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction was not mined within the wait.
    #[error("transaction {0} not mined in time; it stays stored and will be confirmed later")]
    NotMinedYet(B256),
    /// Its nonce was used by another transaction, so it will never be mined.
    #[error("transaction {0} was dropped: its nonce was used by another transaction")]
    Dropped(B256),
}

fn rpc(context: &'static str) -> impl FnOnce(alloy::transports::TransportError) -> WriteError {
    move |error| WriteError::Rpc { context, message: error.to_string() }
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
}

/// A signing key that writes durably.
#[derive(Clone, Debug)]
pub struct ChainWriter {
    signer: PrivateKeySigner,
    provider: DynProvider,
    store: Store,
    chain_id: u64,
    confirmation: Confirmation,
}

impl ChainWriter {
    /// A writer for `signer`; syncs its nonce counter with the chain.
    pub async fn new(
        signer: PrivateKeySigner,
        provider: DynProvider,
        store: Store,
        chain_id: u64,
        confirmation: Confirmation,
    ) -> Result<Self, WriteError> {
        let writer = Self { signer, provider, store, chain_id, confirmation };
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

    /// Simulates `call` from this key (eth_estimateGas), signs it with the next nonce, stores it, and
    /// broadcasts it. Returns the stored transaction; confirm it with [`Self::confirm`].
    pub async fn send(
        &self,
        purpose: &str,
        subject: &str,
        to: Address,
        input: Bytes,
    ) -> Result<ChainTx, WriteError> {
        let request = TransactionRequest::default().from(self.address()).to(to).input(input.clone().into());
        let gas = self
            .provider
            .estimate_gas(request)
            .await
            .map_err(|error| WriteError::WouldRevert(error.to_string()))?;
        let fees = self.provider.estimate_eip1559_fees().await.map_err(rpc("estimating fees"))?;
        let chain_id = self.chain_id;
        let signer = self.signer.clone();
        let stored = self
            .store
            .sign_and_store(&hex(self.address()), purpose, subject, now_ms(), |nonce| {
                let mut tx = TxEip1559 {
                    chain_id,
                    nonce,
                    // Headroom over the estimate: state may shift between estimate and inclusion.
                    gas_limit: gas + gas / 5,
                    max_fee_per_gas: fees.max_fee_per_gas,
                    max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input,
                };
                let signature = signer.sign_transaction_sync(&mut tx).map_err(|error| error.to_string())?;
                let envelope = TxEnvelope::from(tx.into_signed(signature));
                Ok(SignedTx {
                    tx_hash: hex(*envelope.tx_hash()),
                    raw_tx: format!("0x{}", alloy::primitives::hex::encode(envelope.encoded_2718())),
                })
            })
            .await?
            .map_err(|message| WriteError::Rpc { context: "signing", message })?;
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
        let mut attempts = 0;
        loop {
            let tx = self.send(purpose, subject, to, input.clone()).await?;
            match self.confirm(&tx).await {
                Err(WriteError::Dropped(hash)) if attempts < 3 => {
                    attempts += 1;
                    tracing::warn!(%hash, purpose, subject, "nonce taken by another transaction; signing again");
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

    /// Waits until `tx` is mined with the configured confirmations, rebroadcasting it while the node
    /// does not know it. Returns its receipt (which may show a revert).
    pub async fn confirm(&self, tx: &ChainTx) -> Result<TransactionReceipt, WriteError> {
        let hash: B256 = tx.tx_hash.parse().map_err(|_| WriteError::Rpc {
            context: "reading a stored transaction",
            message: format!("bad hash {}", tx.tx_hash),
        })?;
        let deadline = tokio::time::Instant::now() + self.confirmation.timeout;
        let mut rebroadcast_at = tokio::time::Instant::now();
        loop {
            if let Some(receipt) =
                self.provider.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))?
            {
                if self.is_confirmed(&receipt).await? {
                    self.store.mark_tx(&tx.tx_hash, ChainTxStatus::Mined, now_ms()).await?;
                    return Ok(receipt);
                }
            } else if self.nonce_taken_by_another(tx).await? {
                self.store.mark_tx(&tx.tx_hash, ChainTxStatus::Dropped, now_ms()).await?;
                self.sync_nonce().await?;
                return Err(WriteError::Dropped(hash));
            } else if tokio::time::Instant::now() >= rebroadcast_at {
                self.broadcast(tx).await;
                rebroadcast_at = tokio::time::Instant::now() + Duration::from_secs(5);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NotMinedYet(hash));
            }
            tokio::time::sleep(self.confirmation.poll_interval).await;
        }
    }

    async fn is_confirmed(&self, receipt: &TransactionReceipt) -> Result<bool, WriteError> {
        if self.confirmation.confirmations == 0 {
            return Ok(true);
        }
        let head = self.provider.get_block_number().await.map_err(rpc("reading the head"))?;
        Ok(receipt.block_number.is_some_and(|block| head >= block + self.confirmation.confirmations))
    }

    /// The chain's mined nonce passed ours, yet our transaction has no receipt: another one took it.
    async fn nonce_taken_by_another(&self, tx: &ChainTx) -> Result<bool, WriteError> {
        let mined = self
            .provider
            .get_transaction_count(self.address())
            .latest()
            .await
            .map_err(rpc("reading the signer's nonce"))?;
        if to_i64(mined) <= tx.nonce {
            return Ok(false);
        }
        // Mined nonces passed ours: look once more for our receipt, which may have landed meanwhile.
        let hash: B256 = tx.tx_hash.parse().unwrap_or_default();
        Ok(self.provider.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))?.is_none())
    }

    /// Confirms the latest still-pending transaction stored for `purpose` on `subject`, if any: what a
    /// crash may have left in flight. Returns its receipt.
    pub async fn resume(
        &self,
        purpose: &str,
        subject: &str,
    ) -> Result<Option<TransactionReceipt>, WriteError> {
        let txs = self.store.txs_for(purpose, subject).await?;
        for tx in txs.iter().rev() {
            match tx.status()? {
                ChainTxStatus::Pending => match self.confirm(tx).await {
                    Ok(receipt) => return Ok(Some(receipt)),
                    Err(WriteError::Dropped(_)) => continue,
                    Err(error) => return Err(error),
                },
                ChainTxStatus::Mined => {
                    let hash: B256 = tx.tx_hash.parse().unwrap_or_default();
                    let receipt = self
                        .provider
                        .get_transaction_receipt(hash)
                        .await
                        .map_err(rpc("reading a receipt"))?;
                    if receipt.is_some() {
                        return Ok(receipt);
                    }
                }
                ChainTxStatus::Dropped => {}
            }
        }
        Ok(None)
    }
}

/// Lowercase 0x hex, the stored spelling of addresses and hashes.
pub fn hex(value: impl AsRef<[u8]>) -> String {
    format!("0x{}", alloy::primitives::hex::encode(value))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

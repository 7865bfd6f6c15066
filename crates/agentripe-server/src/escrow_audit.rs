//! Money in the escrow that no deposit accounts for: the token balance above `totalLiabilities`. It comes
//! from a settlement not recorded yet (in doubt, being recorded) or from a transfer nobody will ever
//! record (a stray transfer, a settlement by someone who never told us). Every reconciler pass measures
//! it and `/health` shows it; each transfer into the escrow that explains it (no deposit under its hash,
//! no payment of ours settled or settling by it) is logged once with its sender and amount; and the
//! operator gives such a transfer back with `agentripe refund-unrecorded`: recorded for its sender, then
//! refunded.

use std::{collections::HashSet, sync::Mutex};

use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, DepositStatus, IERC3009},
};
use agentripe_store::{PaymentStatus, Store, TransferHolder};
use alloy::{
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, Provider},
    rpc::types::Filter,
    sol_types::{SolCall, SolEvent},
};

use crate::{
    chain_writer::ChainWriter,
    pipeline::{PipelineError, RpcError, rpc},
    util::{hex, now_ms, to_i64},
};

/// A transfer into the escrow that no deposit and no payment of ours accounts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrecorded {
    pub transaction: B256,
    pub sender: Address,
    pub amount: U256,
}

#[derive(Debug)]
pub struct EscrowAudit {
    store: Store,
    provider: DynProvider,
    escrow: Address,
    token: Address,
    chain_id: u64,
    /// How far back transfers are looked for.
    lookback_blocks: u64,
    surplus: Mutex<Option<U256>>,
    reported: Mutex<HashSet<B256>>,
}

impl EscrowAudit {
    pub fn new(store: Store, provider: DynProvider, deployment: &Deployment, lookback_blocks: u64) -> Self {
        Self {
            store,
            provider,
            escrow: deployment.agentripe,
            token: deployment.usdc,
            chain_id: deployment.chain_id,
            lookback_blocks,
            surplus: Mutex::new(None),
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Measures the escrow's unrecorded money and logs, once each, the transfers that explain it.
    pub async fn pass(&self) -> Result<U256, PipelineError> {
        let balance = IERC3009::new(self.token, &self.provider)
            .balanceOf(self.escrow)
            .call()
            .await
            .map_err(rpc("reading the escrow's balance"))?;
        let liabilities = Agentripe::new(self.escrow, &self.provider)
            .totalLiabilities()
            .call()
            .await
            .map_err(rpc("reading the escrow's liabilities"))?;
        let surplus = balance.saturating_sub(U256::from(liabilities));
        *self.surplus.lock().expect("audit lock") = Some(surplus);
        if surplus.is_zero() {
            return Ok(surplus);
        }
        for transfer in self.strays().await? {
            if self.reported.lock().expect("audit lock").insert(transfer.transaction) {
                tracing::warn!(
                    tx = %transfer.transaction, sender = %transfer.sender, amount = %transfer.amount,
                    "USDC reached the escrow without a deposit: give it back with `agentripe refund-unrecorded {}`",
                    transfer.transaction
                );
            }
        }
        Ok(surplus)
    }

    /// The unrecorded money as last measured (token units), for `/health`.
    pub fn surplus(&self) -> Option<U256> {
        *self.surplus.lock().expect("audit lock")
    }

    /// The unrecorded transfers worth an operator's attention: those that are not the settlement of a
    /// payment here still settling. A settlement is mined before we learn its hash; until then it would
    /// look like a stray, and under load some payment always is in that window.
    pub async fn strays(&self) -> Result<Vec<Unrecorded>, PipelineError> {
        let mut strays = Vec::new();
        for transfer in self.unrecorded().await? {
            if self.settling_payment_of(&transfer).await? == Some(false) {
                strays.push(transfer);
            }
        }
        Ok(strays)
    }

    /// Whether `transfer` settles a payment of ours still settling: its transaction spent
    /// (`AuthorizationUsed`) an authorization of its sender's that a payment here claims and has not yet
    /// seen settle. A plain transfer, or the settlement of an authorization never presented here, does
    /// not. None while its receipt is not visible (a node behind the one that gave its log).
    async fn settling_payment_of(&self, transfer: &Unrecorded) -> Result<Option<bool>, PipelineError> {
        let receipt = self
            .provider
            .get_transaction_receipt(transfer.transaction)
            .await
            .map_err(rpc("reading a transfer's receipt"))?;
        let Some(receipt) = receipt else { return Ok(None) };
        let spent = receipt
            .logs()
            .iter()
            .filter(|log| log.address() == self.token)
            .filter_map(|log| log.log_decode::<IERC3009::AuthorizationUsed>().ok())
            .map(|used| used.inner.data)
            .filter(|used| used.authorizer == transfer.sender);
        let (chain_id, asset) = (to_i64(self.chain_id), hex(self.token));
        for used in spent {
            let payment = self
                .store
                .payment_by_authorization(chain_id, &asset, &hex(used.authorizer), &hex(used.nonce))
                .await?;
            if payment.is_some_and(|payment| payment.status == PaymentStatus::Verified) {
                return Ok(Some(true));
            }
        }
        Ok(Some(false))
    }

    /// Transfers into the escrow in the last `lookback_blocks` that no deposit under their hash and no
    /// settlement of ours accounts for.
    pub async fn unrecorded(&self) -> Result<Vec<Unrecorded>, PipelineError> {
        let head = self.provider.get_block_number().await.map_err(rpc("reading the head"))?;
        let filter = Filter::new()
            .address(self.token)
            .event_signature(IERC3009::Transfer::SIGNATURE_HASH)
            .topic2(self.escrow.into_word())
            .from_block(head.saturating_sub(self.lookback_blocks))
            .to_block(head);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc("reading transfers into the escrow"))?;
        let transfers: Vec<(B256, IERC3009::Transfer)> = logs
            .iter()
            .filter_map(|log| {
                Some((log.transaction_hash?, log.log_decode::<IERC3009::Transfer>().ok()?.inner.data))
            })
            .collect();
        // Under load nearly every transfer in the look-back is a settlement of ours: one query for all.
        let hashes: Vec<String> = transfers.iter().map(|(transaction, _)| hex(transaction)).collect();
        let ours = self.store.settlements_among(&hashes).await?;
        let escrow = Agentripe::new(self.escrow, &self.provider);
        let mut unrecorded = Vec::new();
        for (transaction, transfer) in transfers {
            if ours.contains(&hex(transaction)) {
                continue;
            }
            let deposit = escrow.getDeposit(transaction).call().await.map_err(rpc("reading a deposit"))?;
            if DepositStatus::try_from(deposit.status) != Ok(DepositStatus::None) {
                continue;
            }
            unrecorded.push(Unrecorded { transaction, sender: transfer.from, amount: transfer.value });
        }
        Ok(unrecorded)
    }

    /// Gives back the unrecorded transfer `transaction`: records it as a deposit of its sender under its
    /// hash, for agent `agent` (by default the first indexed: the deposit is refunded at once, so which
    /// agent does not matter, but the escrow records deposits for registered agents only), then refunds it
    /// (sent back to its sender). A give-back cut off between its record and its refund (a crash, a refund
    /// that reverted) is finished by the next call.
    ///
    /// Refused while a payment of ours accounts for the transfer: one it settled, one it is settling (about
    /// to be recorded), a task under its hash. Its sender may also present the authorization it settled
    /// as a purchase at any moment: the give-back and that purchase both claim the transfer in the
    /// database before acting on it, and whichever claims second is refused (first come, first served).
    pub async fn refund(
        &self,
        operator: &ChainWriter,
        transaction: B256,
        agent: Option<U256>,
    ) -> Result<Unrecorded, RefundError> {
        let subject = hex(transaction);
        if operator.succeeded(REFUND_UNRECORDED, &subject).await.map_err(PipelineError::from)? {
            return Err(RefundError::AlreadyGivenBack(transaction));
        }
        let unrecorded =
            self.unrecorded().await?.into_iter().find(|transfer| transfer.transaction == transaction);
        let transfer = match unrecorded {
            Some(transfer) => {
                self.ensure_no_payment_claims(&transfer).await?;
                let record = Agentripe::recordDepositCall {
                    depositId: transaction,
                    agentId: self.agent_or_first_indexed(agent).await?,
                    buyer: transfer.sender,
                    amount: transfer.amount,
                };
                // Last before the record: a run that stops before this leaves no claim to refuse a
                // purchase with.
                self.hold_for_give_back(&transfer).await?;
                write_once(operator, RECORD_UNRECORDED, &subject, self.escrow, record.abi_encode().into())
                    .await?;
                transfer
            }
            None => self
                .recorded_to_give_back(operator, transaction)
                .await?
                .ok_or(RefundError::NotUnrecorded(transaction))?,
        };
        let refund = Agentripe::refundToBuyerCall { depositId: transaction };
        write_once(operator, REFUND_UNRECORDED, &subject, self.escrow, refund.abi_encode().into()).await?;
        Ok(transfer)
    }

    /// Errs if a payment of ours accounts for `transfer` (it settled one, or a task has its hash) or may
    /// (it settles a payment still settling, whose settlement we do not know yet).
    async fn ensure_no_payment_claims(&self, transfer: &Unrecorded) -> Result<(), RefundError> {
        let hash = hex(transfer.transaction);
        let store = |error: agentripe_store::StoreError| RefundError::from(PipelineError::from(error));
        if self.store.settlements_among(std::slice::from_ref(&hash)).await.map_err(store)?.contains(&hash)
            || self.store.task(&hash).await.map_err(store)?.is_some()
        {
            return Err(RefundError::ClaimedByPurchase(transfer.transaction));
        }
        match self.settling_payment_of(transfer).await? {
            Some(false) => {}
            Some(true) => return Err(RefundError::PaymentInFlight(transfer.sender)),
            None => {
                let message = format!("the receipt of {} is not visible yet", transfer.transaction);
                return Err(RpcError { context: "reading a transfer's receipt", message }.into());
            }
        }
        Ok(())
    }

    /// Claims `transfer` for the give-back, before its record is sent: a purchase presenting the
    /// authorization it settled claims it too (`MoneyIn`'s `hold`), and only the first claim stands.
    async fn hold_for_give_back(&self, transfer: &Unrecorded) -> Result<(), RefundError> {
        let holder = self
            .store
            .claim_transfer(&hex(transfer.transaction), TransferHolder::GiveBack, now_ms())
            .await
            .map_err(PipelineError::from)?;
        match holder {
            TransferHolder::GiveBack => Ok(()),
            TransferHolder::Payment(_) => Err(RefundError::ClaimedByPurchase(transfer.transaction)),
        }
    }

    async fn agent_or_first_indexed(&self, agent: Option<U256>) -> Result<U256, RefundError> {
        if let Some(agent) = agent {
            return Ok(agent);
        }
        let (agents, _) = self.store.search_agents(&[], 1, 0).await.map_err(PipelineError::from)?;
        let first = agents.first().ok_or(RefundError::NoAgent)?;
        first.agent_id.parse().map_err(|_| {
            PipelineError::corrupt(format!("agent {}", first.agent_id), "its id is not a number").into()
        })
    }

    /// The transfer `transaction` if an earlier give-back recorded it and its deposit is still open: only
    /// a deposit our own `record_unrecorded` wrote.
    async fn recorded_to_give_back(
        &self,
        operator: &ChainWriter,
        transaction: B256,
    ) -> Result<Option<Unrecorded>, RefundError> {
        if !operator.succeeded(RECORD_UNRECORDED, &hex(transaction)).await.map_err(PipelineError::from)? {
            return Ok(None);
        }
        let deposit = Agentripe::new(self.escrow, &self.provider)
            .getDeposit(transaction)
            .call()
            .await
            .map_err(rpc("reading the deposit"))?;
        Ok((DepositStatus::try_from(deposit.status) == Ok(DepositStatus::Deposited)).then_some(Unrecorded {
            transaction,
            sender: deposit.buyer,
            amount: deposit.amount,
        }))
    }
}

/// What the give-back's two transactions are stored for.
pub const RECORD_UNRECORDED: &str = "record_unrecorded";
pub const REFUND_UNRECORDED: &str = "refund_unrecorded";

/// Sends `input` for `purpose` on `subject` unless a transaction of ours already did it; errs if it
/// reverted on chain.
async fn write_once(
    operator: &ChainWriter,
    purpose: &'static str,
    subject: &str,
    to: Address,
    input: Bytes,
) -> Result<(), RefundError> {
    if operator.succeeded(purpose, subject).await.map_err(PipelineError::from)? {
        return Ok(());
    }
    let receipt =
        operator.send_and_confirm(purpose, subject, to, input).await.map_err(PipelineError::from)?;
    if !receipt.status() {
        let message = format!("{} reverted on chain", receipt.transaction_hash);
        return Err(PipelineError::from(RpcError { context: purpose, message }).into());
    }
    Ok(())
}

/// Why an unrecorded transfer was not refunded.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error(
        "{0} is not an unrecorded transfer into the escrow within the look-back (SETTLEMENT_LOOKBACK_BLOCKS)"
    )]
    NotUnrecorded(B256),
    #[error("this transfer settles a payment of {0}'s still settling here: let the reconciler finish it")]
    PaymentInFlight(Address),
    #[error("{0} was already given back to its sender")]
    AlreadyGivenBack(B256),
    #[error(
        "a purchase here now accounts for {0} (its payer presented the authorization it settled): its deposit is that \
         purchase's, so nothing was refunded"
    )]
    ClaimedByPurchase(B256),
    #[error("no agent is indexed yet: name one with --agent")]
    NoAgent,
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<RpcError> for RefundError {
    fn from(error: RpcError) -> Self {
        Self::Pipeline(error.into())
    }
}

/// `agentripe refund-unrecorded`: with the server's configuration (its database and operator key),
/// gives back the unrecorded transfer `transaction` (see [`EscrowAudit::refund`]).
pub async fn refund_unrecorded(
    config: &crate::Config,
    transaction: B256,
    agent: Option<U256>,
) -> Result<Unrecorded, String> {
    let provider = config.connect_chain()?;
    let store = Store::connect(&config.database_url).await.map_err(|error| error.to_string())?;
    let deployment = &config.deployment;
    let operator = ChainWriter::new(
        config.operator_key.clone(),
        provider.clone(),
        store.clone(),
        deployment.chain_id,
        config.confirmation(),
        config.fees,
    )
    .await
    .map_err(|error| error.to_string())?;
    let audit = EscrowAudit::new(store, provider, deployment, config.settlement_lookback_blocks);
    audit.refund(&operator, transaction, agent).await.map_err(|error| error.to_string())
}

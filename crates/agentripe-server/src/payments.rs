//! Money in, exactly once: a verified payment is claimed in the database, settled into the escrow,
//! recorded as a deposit under its settlement transaction hash, and only then becomes a task.
//!
//! Each step checks the chain before acting, so running a step twice, after a crash, a timeout, or
//! alongside a front-runner, converges on the same single deposit:
//! - settled? the chain says so when the buyer's EIP-3009 nonce is used; the `AuthorizationUsed` log
//!   leads to the settling transaction, whose receipt must show the USDC `Transfer` into the escrow
//!   (whoever submitted it: us, a remote facilitator, or a front-runner);
//! - recorded? `getDeposit(txHash)` says so.
//!
//! Whoever holds a payment's lease (the request handler, or the reconciler after a crash) advances it.

use std::time::Duration;

use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, TestUSDC},
};
use agentripe_store::{Claim, NewPayment, NewTask, Payment, PaymentStatus, Store, StoreError};
use agentripe_x402::{ErrorReason, PaymentPayload, VerifiedPayment, exact::MIN_SETTLEMENT_WINDOW_SECONDS};
use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider},
    rpc::types::{Filter, TransactionReceipt},
    sol_types::{SolCall, SolEvent},
};
use serde::{Deserialize, Serialize};

use crate::{
    chain_writer::{ChainWriter, Confirmation, WriteError, hex},
    facilitator::{Attempt, Facilitator},
    now_ms, now_secs,
};

/// What a purchase request left stored with its payment, to replay the settlement and create the task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredPayment {
    pub x402_version: u8,
    /// The client's payment payload as received (decoded).
    pub payload: serde_json::Value,
    /// The requirements it was verified against, in its version (what a remote facilitator is sent).
    pub requirements: serde_json::Value,
}

impl StoredPayment {
    fn payload(&self) -> Result<PaymentPayload, serde_json::Error> {
        Ok(if self.x402_version == 1 {
            PaymentPayload::V1(Box::new(serde_json::from_value(self.payload.clone())?))
        } else {
            PaymentPayload::V2(Box::new(serde_json::from_value(self.payload.clone())?))
        })
    }
}

/// The purchase request's task fields, stored with the payment until the task exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task_detail: Option<String>,
    pub task_metadata: Option<String>,
    pub reviewer_request: Option<String>,
    pub request_payload: Option<String>,
}

/// Where a payment ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The deposit is recorded; this is the task id (= deposit id = settlement tx hash).
    Recorded(B256),
    /// Nothing was charged, for this reason.
    Failed(ErrorReason),
    /// Someone else is advancing it, or it is waiting on the chain.
    InProgress { deposit_id: Option<B256> },
}

/// Why a payment could not be advanced now (it stays claimed; the reconciler retries).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("chain RPC error while {context}: {message}")]
    Rpc { context: &'static str, message: String },
    #[error("stored payment {0} is unreadable: {1}")]
    Corrupt(i64, String),
    #[error("settlement outcome unknown: {0}")]
    SettlementUnknown(String),
    #[error("deposit {deposit} is recorded on chain with other terms than payment {payment}: {detail}")]
    Mismatch { payment: i64, deposit: B256, detail: String },
}

fn rpc<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> PipelineError {
    move |error| PipelineError::Rpc { context, message: error.to_string() }
}

/// The money-in pipeline.
#[derive(Debug)]
pub struct Payments {
    pub(crate) store: Store,
    provider: DynProvider,
    deployment: Deployment,
    operator: ChainWriter,
    facilitator: Facilitator,
    confirmation: Confirmation,
    lease: Duration,
}

impl Payments {
    pub fn new(
        store: Store,
        provider: DynProvider,
        deployment: Deployment,
        operator: ChainWriter,
        facilitator: Facilitator,
        confirmation: Confirmation,
    ) -> Self {
        // A lease outlives the longest wait for a receipt, so two holders never overlap.
        let lease = confirmation.timeout * 2 + Duration::from_secs(10);
        Self { store, provider, deployment, operator, facilitator, confirmation, lease }
    }

    /// The chain connection.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The chain head now: no settlement of a payment that arrives now can be in an older block.
    pub async fn search_from_block(&self) -> Result<i64, PipelineError> {
        let head = self.provider.get_block_number().await.map_err(rpc("reading the head"))?;
        Ok(i64::try_from(head).unwrap_or(i64::MAX))
    }

    /// Claims a verified payment (exactly once per authorization) and returns its id. A failed earlier
    /// claim of the same authorization is reopened: the buyer may have fixed what failed.
    pub async fn claim(&self, payment: NewPayment) -> Result<(i64, bool), PipelineError> {
        match self.store.claim_payment(&payment, now_ms()).await? {
            Claim::New(stored) => Ok((stored.id, true)),
            Claim::Existing(stored) => {
                if stored.status == PaymentStatus::Failed {
                    self.store.reopen_payment(stored.id, now_ms()).await?;
                }
                Ok((stored.id, false))
            }
        }
    }

    /// Advances a payment as far as it goes now, if no one else is.
    pub async fn advance(&self, id: i64) -> Result<Outcome, PipelineError> {
        let until = now_ms() + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        if !self.store.lease_payment(id, now_ms(), until).await? {
            return self.current(id).await;
        }
        let result = self.advance_leased(id).await;
        if let Err(error) = &result {
            tracing::warn!(payment = id, %error, "payment not advanced; the reconciler will retry");
        }
        self.store.unlease_payment(id).await?;
        result
    }

    /// Waits until the payment is recorded or failed, or `timeout` passes.
    pub async fn wait_for(&self, id: i64, timeout: Duration) -> Result<Outcome, PipelineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let outcome = self.current(id).await?;
            if !matches!(outcome, Outcome::InProgress { .. }) || tokio::time::Instant::now() >= deadline {
                return Ok(outcome);
            }
            tokio::time::sleep(self.confirmation.poll_interval).await;
        }
    }

    async fn current(&self, id: i64) -> Result<Outcome, PipelineError> {
        let payment = self.load(id).await?;
        Ok(match payment.status {
            PaymentStatus::Recorded => Outcome::Recorded(deposit_id(&payment)?),
            PaymentStatus::Failed => Outcome::Failed(failure(&payment)),
            PaymentStatus::Verified | PaymentStatus::Settled => Outcome::InProgress {
                deposit_id: payment.deposit_id.as_deref().and_then(|id| id.parse().ok()),
            },
        })
    }

    async fn load(&self, id: i64) -> Result<Payment, PipelineError> {
        self.store.payment(id).await?.ok_or_else(|| PipelineError::Corrupt(id, "no such payment".into()))
    }

    async fn advance_leased(&self, id: i64) -> Result<Outcome, PipelineError> {
        let mut payment = self.load(id).await?;
        if payment.status == PaymentStatus::Verified {
            match self.settle(&payment).await? {
                Ok(deposit) => self.store.mark_payment_settled(id, &hex(deposit), now_ms()).await?,
                Err(reason) => {
                    self.store.fail_payment(id, &reason.to_string(), now_ms()).await?;
                    tracing::info!(payment = id, %reason, "payment refused; nothing was charged");
                    return Ok(Outcome::Failed(reason));
                }
            }
            payment = self.load(id).await?;
        }
        if payment.status == PaymentStatus::Settled {
            let deposit = deposit_id(&payment)?;
            self.record(&payment, deposit).await?;
            let request: TaskRequest = serde_json::from_str(&payment.new.request)
                .map_err(|e| PipelineError::Corrupt(id, e.to_string()))?;
            let expires_at = Agentripe::new(self.deployment.agentripe, &self.provider)
                .depositExpiresAt(deposit)
                .call()
                .await
                .map_err(rpc("reading the deposit's expiry"))?;
            let task = NewTask {
                id: hex(deposit),
                agent_id: payment.new.agent_id.clone(),
                product_id: payment.new.service_path.clone(),
                buyer: payment.new.payer.clone(),
                amount: payment.new.amount.clone(),
                request_payload: request.request_payload,
                task_detail: request.task_detail,
                task_metadata: request.task_metadata,
                reviewer_request: request.reviewer_request,
                expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX).saturating_mul(1000),
            };
            self.store.record_payment(id, &task, now_ms()).await?;
            tracing::info!(payment = id, task = %task.id, "deposit recorded; task created");
        }
        self.current(id).await
    }

    // ------------------------------------------------------------------ settlement

    /// Gets the payment's tokens into the escrow, or a reason why they never will be.
    async fn settle(&self, payment: &Payment) -> Result<Result<B256, ErrorReason>, PipelineError> {
        let stored: StoredPayment = serde_json::from_str(&payment.new.payment)
            .map_err(|e| PipelineError::Corrupt(payment.id, e.to_string()))?;
        let payload = stored.payload().map_err(|e| PipelineError::Corrupt(payment.id, e.to_string()))?;
        let verified = VerifiedPayment {
            payer: payload.exact().authorization.from,
            authorization: payload.exact().authorization.clone(),
            signature: payload.exact().signature.clone(),
        };
        let asset: Address =
            payment.new.asset.parse().map_err(|_| PipelineError::Corrupt(payment.id, "asset".into()))?;

        // An attempt of ours that a crash left in flight.
        if let Facilitator::BuiltIn(writer) = &self.facilitator
            && let Some(receipt) = writer.resume("settle", &payment.id.to_string()).await?
            && let Some(hash) = self.transfer_into_escrow(&receipt, &verified, asset)
        {
            return Ok(Ok(hash));
        }
        // Settled by anyone, any time: the chain knows.
        if let Some(found) = self.settled_on_chain(&verified, asset, payment.new.search_from_block).await? {
            return Ok(found);
        }
        if U256::from(now_secs() + MIN_SETTLEMENT_WINDOW_SECONDS) >= verified.authorization.valid_before {
            return Ok(Err(ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore));
        }
        let token = TestUSDC::new(asset, &self.provider);
        let balance =
            token.balanceOf(verified.payer).call().await.map_err(rpc("reading the payer's balance"))?;
        if balance < verified.authorization.value {
            return Ok(Err(ErrorReason::InsufficientFunds));
        }

        let attempt =
            self.facilitator.settle(payment.id, &payload, asset, stored.requirements.clone()).await?;
        let receipt = match attempt {
            Attempt::Mined(receipt) => *receipt,
            Attempt::Submitted(hash) => self.wait_for_receipt(hash).await?,
            Attempt::Refused(reason) => {
                // A refusal may be a race lost to someone who settled the same authorization.
                return Ok(self
                    .settled_on_chain(&verified, asset, payment.new.search_from_block)
                    .await?
                    .unwrap_or(Err(reason)));
            }
            Attempt::Unknown(detail) => return Err(PipelineError::SettlementUnknown(detail)),
        };
        if let Some(hash) = self.transfer_into_escrow(&receipt, &verified, asset) {
            return Ok(Ok(hash));
        }
        Ok(self
            .settled_on_chain(&verified, asset, payment.new.search_from_block)
            .await?
            .unwrap_or(Err(ErrorReason::InvalidTransactionState)))
    }

    /// If the authorization's nonce is used on chain, where its tokens went: `Ok(hash)` if a
    /// transaction moved exactly the payment into the escrow, else the nonce was spent on something else.
    async fn settled_on_chain(
        &self,
        payment: &VerifiedPayment,
        asset: Address,
        from_block: i64,
    ) -> Result<Option<Result<B256, ErrorReason>>, PipelineError> {
        let token = TestUSDC::new(asset, &self.provider);
        let authorization = &payment.authorization;
        let used = token
            .authorizationState(authorization.from, authorization.nonce)
            .call()
            .await
            .map_err(rpc("reading the authorization state"))?;
        if !used {
            return Ok(None);
        }
        let filter = Filter::new()
            .address(asset)
            .event_signature(TestUSDC::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(authorization.from.into_word())
            .topic2(authorization.nonce)
            .from_block(u64::try_from(from_block).unwrap_or_default());
        let logs = self.provider.get_logs(&filter).await.map_err(rpc("searching for the settlement"))?;
        for log in logs {
            let Some(hash) = log.transaction_hash else { continue };
            let receipt = self.wait_for_receipt(hash).await?;
            if let Some(hash) = self.transfer_into_escrow(&receipt, payment, asset) {
                tracing::info!(tx = %hash, payer = %authorization.from, "found the settlement on chain");
                return Ok(Some(Ok(hash)));
            }
        }
        Ok(Some(Err(ErrorReason::InvalidExactEvmPayloadAuthorizationNonceUsed)))
    }

    /// The receipt's hash if it is successful and moved exactly the payment from the payer into the escrow.
    fn transfer_into_escrow(
        &self,
        receipt: &TransactionReceipt,
        payment: &VerifiedPayment,
        asset: Address,
    ) -> Option<B256> {
        if !receipt.status() {
            return None;
        }
        let paid = receipt.inner.logs().iter().any(|log| {
            log.address() == asset
                && log.log_decode::<TestUSDC::Transfer>().is_ok_and(|transfer| {
                    let transfer = transfer.inner.data;
                    transfer.from == payment.authorization.from
                        && transfer.to == self.deployment.agentripe
                        && transfer.value == payment.authorization.value
                })
        });
        paid.then_some(receipt.transaction_hash)
    }

    async fn wait_for_receipt(&self, hash: B256) -> Result<TransactionReceipt, PipelineError> {
        let deadline = tokio::time::Instant::now() + self.confirmation.timeout;
        loop {
            if let Some(receipt) =
                self.provider.get_transaction_receipt(hash).await.map_err(rpc("reading a receipt"))?
            {
                let head = self.provider.get_block_number().await.map_err(rpc("reading the head"))?;
                if receipt.block_number.is_some_and(|block| head >= block + self.confirmation.confirmations) {
                    return Ok(receipt);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NotMinedYet(hash).into());
            }
            tokio::time::sleep(self.confirmation.poll_interval).await;
        }
    }

    // ------------------------------------------------------------------ recording

    /// Records the deposit on chain unless it is already there.
    async fn record(&self, payment: &Payment, deposit: B256) -> Result<(), PipelineError> {
        if self.recorded_on_chain(payment, deposit).await? {
            return Ok(());
        }
        if self.operator.resume("record", &payment.id.to_string()).await?.is_some()
            && self.recorded_on_chain(payment, deposit).await?
        {
            return Ok(());
        }
        let parse = |what: &str, text: &str| {
            text.parse::<U256>().map_err(|_| PipelineError::Corrupt(payment.id, format!("{what} {text:?}")))
        };
        let call = Agentripe::recordDepositCall {
            depositId: deposit,
            agentId: parse("agent id", &payment.new.agent_id)?,
            buyer: payment
                .new
                .payer
                .parse()
                .map_err(|_| PipelineError::Corrupt(payment.id, "payer".into()))?,
            amount: parse("amount", &payment.new.amount)?,
        };
        let sent = self
            .operator
            .send_and_confirm(
                "record",
                &payment.id.to_string(),
                self.deployment.agentripe,
                call.abi_encode().into(),
            )
            .await;
        match sent {
            Ok(_) => {}
            // Reverts if someone recorded it meanwhile; the check below tells.
            Err(WriteError::WouldRevert(reason)) => {
                tracing::warn!(payment = payment.id, %reason, "recordDeposit reverts")
            }
            Err(error) => return Err(error.into()),
        }
        if self.recorded_on_chain(payment, deposit).await? {
            Ok(())
        } else {
            Err(PipelineError::Rpc { context: "recording the deposit", message: "not recorded yet".into() })
        }
    }

    async fn recorded_on_chain(&self, payment: &Payment, deposit: B256) -> Result<bool, PipelineError> {
        let escrow = Agentripe::new(self.deployment.agentripe, &self.provider);
        let on_chain = escrow.getDeposit(deposit).call().await.map_err(rpc("reading the deposit"))?;
        if on_chain.status == 0 {
            return Ok(false);
        }
        let expected =
            (payment.new.agent_id.as_str(), payment.new.payer.as_str(), payment.new.amount.as_str());
        let actual = (on_chain.agentId.to_string(), hex(on_chain.buyer), on_chain.amount.to_string());
        if (actual.0.as_str(), actual.1.as_str(), actual.2.as_str()) != expected {
            return Err(PipelineError::Mismatch {
                payment: payment.id,
                deposit,
                detail: format!("expected (agent, buyer, amount) {expected:?}, found {actual:?}"),
            });
        }
        Ok(true)
    }

    // ------------------------------------------------------------------ reconciler

    /// Advances every payment whose lease has run out (a crash, a timeout): at start-up and on a timer.
    pub async fn reconcile_once(&self) -> Result<usize, PipelineError> {
        let stalled = self.store.stalled_payments(now_ms(), 100).await?;
        for &id in &stalled {
            if let Err(error) = self.advance(id).await {
                tracing::warn!(payment = id, %error, "reconciler could not advance a payment");
            }
        }
        Ok(stalled.len())
    }
}

fn deposit_id(payment: &Payment) -> Result<B256, PipelineError> {
    payment
        .deposit_id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| PipelineError::Corrupt(payment.id, "settled without a deposit id".into()))
}

fn failure(payment: &Payment) -> ErrorReason {
    payment
        .failure
        .as_deref()
        .and_then(|reason| serde_json::from_value(serde_json::Value::String(reason.into())).ok())
        .unwrap_or(ErrorReason::UnexpectedSettleError)
}

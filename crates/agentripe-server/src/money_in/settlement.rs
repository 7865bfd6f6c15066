//! Getting a payment's tokens into the escrow, and finding out whether they got there. The chain has
//! the last word: whoever submitted the authorization (our facilitator, a remote one, a front-runner),
//! the buyer's used nonce and its `AuthorizationUsed` log lead to the transaction that moved the money,
//! whose receipt must show the token `Transfer` from the payer into the escrow.

use agentripe_chain::bindings::IERC3009;
use agentripe_store::{Payment, TransferHolder};
use agentripe_x402::{
    Authorization, ErrorReason, FacilitatorRequest,
    exact::{CLOCK_SKEW_SECONDS, MIN_SETTLEMENT_WINDOW_SECONDS},
};
use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::Provider,
    rpc::types::{Filter, TransactionReceipt},
    sol_types::{SolEvent, SolValue},
};

use super::{MoneyIn, facilitator::Attempt};
use crate::{
    chain_writer::Patiently,
    pipeline::{PipelineError, rpc},
    util::{hex, now_ms, now_secs},
};

/// A payment's tokens in the escrow: the transaction that moved them and the deposit id to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Settlement {
    pub deposit_id: B256,
    pub transaction: B256,
}

/// Where a payment's tokens went, or why they never will be in the escrow.
pub(super) type Settled = Result<Settlement, ErrorReason>;

/// The deposit id of a payment settled by `transaction`: the transaction's hash, as Agentripe keys
/// deposits, when it spent exactly one authorization of the token; when it spent several (a batching
/// facilitator, a front-runner bundling payments), `keccak256(abi.encode(txHash, payer, nonce))`, so
/// that each payment gets a deposit of its own and every observer derives the same id.
pub fn deposit_id(transaction: B256, authorizations_spent: usize, authorization: &Authorization) -> B256 {
    if authorizations_spent <= 1 {
        return transaction;
    }
    keccak256((transaction, authorization.from, authorization.nonce).abi_encode())
}

/// What the chain says of a buyer's authorization.
enum OnChain {
    /// Its nonce is unused: nothing moved.
    Unused,
    /// This transaction moved exactly the payment into the escrow.
    Settled(Settlement),
    /// Its nonce was spent on something else (another transfer, a cancellation).
    SpentElsewhere,
    /// Its nonce is used, but neither a settlement nor a cancellation is visible yet.
    InDoubt,
}

impl MoneyIn {
    /// Gets the payment's tokens into the escrow, or a reason why they never will be.
    pub(super) async fn settle(&self, payment: &Payment, holder: &str) -> Result<Settled, PipelineError> {
        let lease = payment.leased_by(holder);
        let subject = || format!("payment {}", payment.id);
        let request: FacilitatorRequest = serde_json::from_str(&payment.new.payment)
            .map_err(|error| PipelineError::corrupt(subject(), error.to_string()))?;
        let authorization = &request.payment_payload.exact().authorization;
        let asset: Address =
            payment.new.asset.parse().map_err(|_| PipelineError::corrupt(subject(), "asset"))?;
        let from_block = u64::try_from(payment.new.search_from_block).unwrap_or_default();

        // An attempt of ours that a crash left in flight: only a payment leased before can have one.
        if payment.leases > 1
            && let Some(writer) = self.facilitator.writer()
            && let Some(receipt) = writer.resume_leased("settle", lease).await?
            && let Some(settlement) = self.transfer_into_escrow(&receipt, authorization, asset)
        {
            return Ok(Ok(settlement));
        }
        // A remote facilitator's settlement an earlier attempt stopped waiting for may still land while the
        // authorization is valid: it is waited for, never asked for again (the facilitator would refuse
        // the nonce as spent while the chain still says unused, and the payment would fail with its money
        // on the way).
        if let Some(submitted) = payment.submitted_tx.as_deref().and_then(|tx| tx.parse::<B256>().ok())
            && U256::from(now_secs()) < authorization.valid_before
        {
            let receipt =
                self.confirmation.wait_for_receipt(&self.provider, &mut Patiently(submitted)).await?;
            if let Some(settlement) = self.transfer_into_escrow(&receipt, authorization, asset) {
                return self.hold(payment, settlement).await;
            }
        }
        // Too late to submit: the chain says whether anyone settled it meanwhile. Otherwise the chain is
        // asked only when the settlement is refused (its simulation reverts for a used nonce or missing
        // funds alike), which spares the happy path two reads.
        if U256::from(now_secs() + MIN_SETTLEMENT_WINDOW_SECONDS) >= authorization.valid_before {
            let found = self.on_chain(authorization, asset, from_block).await?;
            return self
                .conclude(
                    payment,
                    found,
                    authorization,
                    ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore,
                )
                .await;
        }

        // Only the lease's holder submits: one taken over, whose successor may have refused the payment
        // meanwhile, asks no facilitator and signs nothing (`PipelineError::Overtaken`) rather than
        // charge its buyer. Our own simulation may still run; the signature waits for the lease's check.
        let attempt = match self.facilitator.verify(&request).await {
            Some(end) => end,
            None => {
                // A remote facilitator may submit a settlement and fail to say so: that it was asked is
                // stored first, under the lease. Not before `/verify`, which submits nothing: a mark left
                // by a failed verification would keep a later refusal in doubt for nothing. Our own
                // settlement is signed under the lease.
                if self.facilitator.writer().is_none() {
                    self.store.note_settle_asked(lease, now_ms()).await?;
                }
                self.facilitator.settle(lease, &request, asset).await?
            }
        };
        let (receipt, sent_by_us) = match attempt {
            Attempt::Mined(receipt) => (*receipt, true),
            Attempt::Submitted(hash) => {
                self.store.note_submitted_settlement(payment.id, &hex(hash), now_ms()).await?;
                (self.confirmation.wait_for_receipt(&self.provider, &mut Patiently(hash)).await?, false)
            }
            Attempt::Refused(reason) => {
                // A refusal may be a race lost to someone who settled the same authorization, or a payer
                // whose funds are gone since the claim.
                let found = self.on_chain(authorization, asset, from_block).await?;
                let reason = match found {
                    OnChain::Unused if self.payer_is_short(authorization, asset).await? => {
                        ErrorReason::InsufficientFunds
                    }
                    _ => reason,
                };
                return self.conclude(payment, found, authorization, reason).await;
            }
            Attempt::Unknown(detail) => return Err(PipelineError::SettlementUnknown(detail)),
        };
        if let Some(settlement) = self.transfer_into_escrow(&receipt, authorization, asset) {
            return match sent_by_us {
                true => Ok(Ok(settlement)),
                false => self.hold(payment, settlement).await,
            };
        }
        let found = self.on_chain(authorization, asset, from_block).await?;
        self.conclude(payment, found, authorization, ErrorReason::InvalidTransactionState).await
    }

    /// Takes a settlement that our key did not send for this payment (found on chain, or a remote
    /// facilitator's) unless the operator is giving it back: its transfer may be one that reached the
    /// escrow before the payment reached us, and the operator is returning those to their senders
    /// (`agentripe refund-unrecorded`). Whoever claims the transfer first has it; a payment that comes
    /// second pays for nothing, as if its nonce had been spent elsewhere.
    async fn hold(&self, payment: &Payment, settlement: Settlement) -> Result<Settled, PipelineError> {
        let claimant = TransferHolder::Payment(payment.id);
        let holder = self.store.claim_transfer(&hex(settlement.deposit_id), claimant, now_ms()).await?;
        if holder == TransferHolder::GiveBack {
            tracing::warn!(payment = payment.id, tx = %settlement.transaction, "payment refused: the operator is giving its settlement back to its payer");
            return Ok(Err(ErrorReason::InvalidExactEvmPayloadAuthorizationNonceUsed));
        }
        Ok(Ok(settlement))
    }

    /// Whether the payer holds less than the authorization moves.
    async fn payer_is_short(
        &self,
        authorization: &Authorization,
        asset: Address,
    ) -> Result<bool, PipelineError> {
        let balance = IERC3009::new(asset, &self.provider)
            .balanceOf(authorization.from)
            .call()
            .await
            .map_err(rpc("reading the payer's balance"))?;
        Ok(balance < authorization.value)
    }

    /// What the chain says of the authorization: unused, settled into the escrow, spent otherwise, or
    /// used with neither its settlement nor its cancellation visible yet (a lagging RPC).
    async fn on_chain(
        &self,
        authorization: &Authorization,
        asset: Address,
        from_block: u64,
    ) -> Result<OnChain, PipelineError> {
        let token = IERC3009::new(asset, &self.provider);
        let used = token
            .authorizationState(authorization.from, authorization.nonce)
            .call()
            .await
            .map_err(rpc("reading the authorization state"))?;
        if !used {
            return Ok(OnChain::Unused);
        }
        let of_this_nonce = |event: B256| {
            Filter::new()
                .address(asset)
                .event_signature(event)
                .topic1(authorization.from.into_word())
                .topic2(authorization.nonce)
                .from_block(from_block)
        };
        let settlements = self
            .provider
            .get_logs(&of_this_nonce(IERC3009::AuthorizationUsed::SIGNATURE_HASH))
            .await
            .map_err(rpc("searching for the settlement"))?;
        for log in &settlements {
            let Some(hash) = log.transaction_hash else { continue };
            let receipt = self.confirmation.wait_for_receipt(&self.provider, &mut Patiently(hash)).await?;
            if let Some(settlement) = self.transfer_into_escrow(&receipt, authorization, asset) {
                tracing::info!(tx = %settlement.transaction, payer = %authorization.from, "found the settlement on chain");
                return Ok(OnChain::Settled(settlement));
            }
        }
        if !settlements.is_empty() {
            return Ok(OnChain::SpentElsewhere);
        }
        let cancellations = self
            .provider
            .get_logs(&of_this_nonce(IERC3009::AuthorizationCanceled::SIGNATURE_HASH))
            .await
            .map_err(rpc("searching for a cancellation"))?;
        Ok(if cancellations.is_empty() { OnChain::InDoubt } else { OnChain::SpentElsewhere })
    }

    /// Turns what the chain says into where the money is; `otherwise` is the reason when the nonce is
    /// still unused. A payment in doubt is never refused before the search horizon has passed: its
    /// buyer may have been charged.
    async fn conclude(
        &self,
        payment: &Payment,
        found: OnChain,
        authorization: &Authorization,
        otherwise: ErrorReason,
    ) -> Result<Settled, PipelineError> {
        match found {
            OnChain::Unused if may_yet_land(payment, authorization) => Err(PipelineError::InDoubt(
                "a remote facilitator that never answered may have submitted a settlement, which may still \
                 be mined while the authorization is valid"
                    .into(),
            )),
            OnChain::Unused => Ok(Err(otherwise)),
            OnChain::Settled(settlement) => self.hold(payment, settlement).await,
            OnChain::SpentElsewhere => Ok(Err(ErrorReason::InvalidExactEvmPayloadAuthorizationNonceUsed)),
            OnChain::InDoubt => {
                let horizon = U256::from(self.search_horizon.as_secs());
                if U256::from(now_secs()) > authorization.valid_before.saturating_add(horizon) {
                    tracing::error!(
                        payer = %authorization.from,
                        nonce = %authorization.nonce,
                        "the nonce is used but no settlement or cancellation was found before the search horizon"
                    );
                    return Ok(Err(ErrorReason::InvalidExactEvmPayloadAuthorizationNonceUsed));
                }
                Err(PipelineError::InDoubt(
                    "the authorization is used on chain, but its settlement is not visible yet".into(),
                ))
            }
        }
    }

    /// The settlement in `receipt` if it is successful, spent this authorization (its
    /// `AuthorizationUsed` log) and moved exactly the payment from the payer into the escrow. A receipt
    /// of another transfer of the same amount (a facilitator's mistake, or a lie) is not this payment's.
    fn transfer_into_escrow(
        &self,
        receipt: &TransactionReceipt,
        authorization: &Authorization,
        asset: Address,
    ) -> Option<Settlement> {
        if !receipt.status() {
            return None;
        }
        let logs = receipt.inner.logs();
        let spent: Vec<_> = logs
            .iter()
            .filter(|log| log.address() == asset)
            .filter_map(|log| log.log_decode::<IERC3009::AuthorizationUsed>().ok())
            .map(|used| (used.inner.data.authorizer, used.inner.data.nonce))
            .collect();
        let paid = logs.iter().any(|log| {
            log.address() == asset
                && log.log_decode::<IERC3009::Transfer>().is_ok_and(|transfer| {
                    let transfer = transfer.inner.data;
                    transfer.from == authorization.from
                        && transfer.to == self.deployment.agentripe
                        && transfer.value == authorization.value
                })
        });
        let ours = spent.contains(&(authorization.from, authorization.nonce));
        (ours && paid).then(|| Settlement {
            deposit_id: deposit_id(receipt.transaction_hash, spent.len(), authorization),
            transaction: receipt.transaction_hash,
        })
    }
}

/// Whether a settlement no one named may still be mined while the chain says the nonce is unused: an
/// earlier ask of a remote facilitator got no answer (the ask failed, or its holder died first), so it may
/// have submitted one that waits in a pool (asked again, the facilitator refuses the nonce as spent). It
/// can land until the authorization expires by the chain's clock, which ours may be ahead of; the same
/// [`CLOCK_SKEW_SECONDS`] as buyers get is allowed. `payment` is as read before this attempt's own ask.
fn may_yet_land(payment: &Payment, authorization: &Authorization) -> bool {
    payment.settle_asked_at.is_some()
        && U256::from(now_secs().saturating_sub(CLOCK_SKEW_SECONDS)) < authorization.valid_before
}

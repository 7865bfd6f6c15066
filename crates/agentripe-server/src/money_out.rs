//! Money out: approvals release the deposit to the vendor agent, failures, fifth rejections and
//! expiries refund the buyer, and the platform then posts reputation feedback. The decision is stored
//! first (`releasing`, `refunding`); the chain write goes through the durable chain writer; the task
//! becomes final only when `getDeposit` on chain says the money moved. Whoever moved it (us, or the
//! buyer reclaiming an expired deposit alone), the database follows the chain.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, DepositStatus, IERC8004Identity, ReputationRegistry},
};
use agentripe_store::{ChainTx, ChainTxStatus, EscrowStatus, Outcome, Store, Task};
use alloy::{
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, Provider},
    sol_types::{SolCall, SolEvent},
};

use crate::{
    batching::{BatchCall, BatchPolicy, Batcher},
    chain_writer::{ChainWriter, WriteError},
    pipeline::{PipelineError, RpcError, rpc},
    util::now_ms,
};

/// Feedback values: a release is +1, a refund -1 (0 decimals), tagged `escrow` and with the outcome
/// (`released`, `rejected`, `failed`, `expired`) so clients can filter and weigh.
const FEEDBACK_TAG: &str = "escrow";

/// How many payouts of one deposit may revert on chain before it is sent no more until someone looks:
/// each costs gas, and one that reverts every time (an estimate on a lagging node's state, a payee
/// changing its wallet between our estimate and the block) would otherwise burn gas on every pass.
const MAX_REVERTED_PAYOUTS: usize = 3;

/// The money-out pipeline.
#[derive(Debug)]
pub struct MoneyOut {
    store: Store,
    provider: DynProvider,
    deployment: Deployment,
    operator: ChainWriter,
    /// Releases and refunds go out in batches, through the operator's key.
    releases: Batcher<Release>,
    refunds: Batcher<Refund>,
    /// Tasks whose payouts kept reverting and are no longer sent (see [`MAX_REVERTED_PAYOUTS`]), for
    /// `/health`. Held in memory: after a restart the reconciler finds them again on its first pass.
    stuck: Mutex<HashSet<String>>,
}

/// A deposit to pay out, and who it goes to (the agent for a release, the buyer for a refund): a batch
/// sorted by payee pays each with one transfer.
#[derive(Clone, Debug)]
pub struct Payout {
    payee: String,
    deposit: B256,
}

/// The deposit ids of `payouts`, payee by payee.
fn by_payee(payouts: &[Payout]) -> Vec<B256> {
    let mut payouts = payouts.to_vec();
    payouts.sort_by(|a, b| a.payee.cmp(&b.payee));
    payouts.into_iter().map(|payout| payout.deposit).collect()
}

/// Deposits released together (`releaseToVendors`).
#[derive(Debug)]
pub struct Release;

impl BatchCall for Release {
    type Entry = Payout;
    const PURPOSE: &'static str = "release";

    fn input(payouts: &[Payout]) -> Bytes {
        match payouts {
            [one] => Agentripe::releaseToVendorCall { depositId: one.deposit }.abi_encode().into(),
            _ => Agentripe::releaseToVendorsCall { depositIds: by_payee(payouts) }.abi_encode().into(),
        }
    }
}

/// Deposits refunded together (`refundToBuyers`).
#[derive(Debug)]
pub struct Refund;

impl BatchCall for Refund {
    type Entry = Payout;
    const PURPOSE: &'static str = "refund";

    fn input(payouts: &[Payout]) -> Bytes {
        match payouts {
            [one] => Agentripe::refundToBuyerCall { depositId: one.deposit }.abi_encode().into(),
            _ => Agentripe::refundToBuyersCall { depositIds: by_payee(payouts) }.abi_encode().into(),
        }
    }
}

fn task_subject(id: &str) -> String {
    format!("task {id}")
}

impl MoneyOut {
    pub fn new(
        store: Store,
        provider: DynProvider,
        deployment: Deployment,
        operator: ChainWriter,
        batching: BatchPolicy,
    ) -> Self {
        let releases = Batcher::start(operator.clone(), deployment.agentripe, batching);
        let refunds = Batcher::start(operator.clone(), deployment.agentripe, batching);
        Self { store, provider, deployment, operator, releases, refunds, stuck: Mutex::default() }
    }

    /// Carries out a task's escrow decision (`releasing`, `refunding`, or an expiry), waiting for the
    /// chain within `timeout`; what does not finish now the reconciler finishes. Returns where the
    /// money is, when known.
    pub async fn carry_out_within(self: &Arc<Self>, id: &str, timeout: Duration) -> Option<EscrowStatus> {
        let money_out = self.clone();
        let id = id.to_owned();
        // On a task of its own: a client who hangs up does not stop a payout half-way.
        let carrying_out = tokio::spawn(async move { money_out.carry_out(&id).await });
        match tokio::time::timeout(timeout, carrying_out).await {
            Ok(Ok(Ok(status))) => Some(status),
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "escrow not moved yet; the reconciler will finish it");
                None
            }
            _ => None,
        }
    }

    /// Drives a task's money to where its decision says, as far as the chain allows now. Returns where
    /// the money is afterwards.
    pub async fn carry_out(&self, id: &str) -> Result<EscrowStatus, PipelineError> {
        let task = self.load(id).await?;
        let deposit: B256 =
            id.parse().map_err(|_| PipelineError::corrupt(task_subject(id), "not a deposit id"))?;
        if let Some(done) = self.follow_chain(&task, deposit).await? {
            return Ok(done);
        }
        let expired = now_ms() >= task.new.expires_at && task.new.expires_at > 0;
        let decision = match task.escrow_status {
            EscrowStatus::Releasing if expired => {
                self.store.refund_instead_of_release(id, now_ms()).await?;
                tracing::warn!(task = id, "approved too late: the deposit expired, so it is refunded");
                EscrowStatus::Refunding
            }
            EscrowStatus::Deposited if expired => {
                self.store.expire_task(id, now_ms()).await?;
                EscrowStatus::Refunding
            }
            other => other,
        };
        let (purpose, payee) = match decision {
            EscrowStatus::Releasing => (Release::PURPOSE, &task.new.agent_id),
            EscrowStatus::Refunding => (Refund::PURPOSE, &task.new.buyer),
            other => return Ok(other),
        };
        let last = self.operator.resume(purpose, id).await?;
        if !last.as_ref().is_some_and(|receipt| receipt.status()) {
            // Our last payout reverted; on a deposit still open, so did every one mined before it.
            if last.is_some() {
                let reverted = self
                    .store
                    .txs_for(purpose, id)
                    .await?
                    .iter()
                    .filter(|tx| matches!(tx.status(), Ok(ChainTxStatus::Mined)))
                    .count();
                if reverted >= MAX_REVERTED_PAYOUTS {
                    tracing::error!(
                        task = id,
                        purpose,
                        reverted,
                        "payouts of this deposit keep reverting on chain; not sending again until someone looks"
                    );
                    self.stuck.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned());
                    return Ok(decision);
                }
                tracing::warn!(task = id, purpose, reverted, "a payout reverted on chain; sending it again");
            }
            let payout = Payout { payee: payee.clone(), deposit };
            let written = match decision {
                EscrowStatus::Releasing => self.releases.write(id.to_owned(), payout).await,
                _ => self.refunds.write(id.to_owned(), payout).await,
            };
            match written {
                Ok(_) => {}
                // Someone moved it meanwhile (a reclaim), or it expired: the chain says which below.
                Err(WriteError::WouldRevert(reason)) => {
                    tracing::warn!(task = id, purpose, %reason, "escrow call reverts")
                }
                Err(error) => return Err(error.into()),
            }
        }
        let task = self.load(id).await?;
        Ok(self.follow_chain(&task, deposit).await?.unwrap_or(task.escrow_status))
    }

    /// Makes the database follow the chain: a released or refunded deposit finalizes its task.
    async fn follow_chain(&self, task: &Task, deposit: B256) -> Result<Option<EscrowStatus>, PipelineError> {
        let escrow = Agentripe::new(self.deployment.agentripe, &self.provider);
        let on_chain = escrow.getDeposit(deposit).call().await.map_err(rpc("reading the deposit"))?;
        let outcome = match DepositStatus::try_from(on_chain.status) {
            Ok(DepositStatus::Released) => EscrowStatus::Released,
            Ok(DepositStatus::Refunded) => EscrowStatus::Refunded,
            Ok(DepositStatus::Deposited) => return Ok(None),
            Ok(DepositStatus::None) | Err(_) => {
                return Err(PipelineError::Mismatch {
                    subject: task_subject(&task.new.id),
                    deposit,
                    detail: format!("task exists but the deposit's status on chain is {}", on_chain.status),
                });
            }
        };
        if matches!(task.escrow_status, EscrowStatus::Released | EscrowStatus::Refunded) {
            return Ok(Some(task.escrow_status));
        }
        let purpose = if outcome == EscrowStatus::Released { Release::PURPOSE } else { Refund::PURPOSE };
        // Whatever their stored status: a replacement taken for dropped, or one a reorg swapped in, may be
        // the one that paid.
        let mut ours = None;
        for tx in self.store.txs_for(purpose, &task.new.id).await?.into_iter().rev() {
            if self.moved(&tx, deposit).await? {
                ours = Some(tx.tx_hash);
                break;
            }
        }
        match (&ours, outcome) {
            (Some(_), _) => {}
            (None, EscrowStatus::Refunded) => {
                tracing::info!(task = %task.new.id, "the deposit was refunded on chain without us: the buyer reclaimed it")
            }
            (None, _) => {
                tracing::warn!(task = %task.new.id, "the deposit was released on chain, and none of our transactions shows it: a lagging node, or another holder of the operator key")
            }
        }
        self.store.confirm_escrow(&task.new.id, outcome, ours.as_deref(), now_ms()).await?;
        self.stuck.lock().unwrap_or_else(PoisonError::into_inner).remove(&task.new.id);
        Ok(Some(outcome))
    }

    /// How many tasks' payouts kept reverting on chain and wait for the operator.
    pub fn stuck(&self) -> usize {
        self.stuck.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether our transaction `tx` is the one that paid `deposit` out. One that lost the race to the
    /// buyer's reclaim did not (a lone call reverted, a batch only reported the deposit skipped), nor did
    /// one without a receipt.
    async fn moved(&self, tx: &ChainTx, deposit: B256) -> Result<bool, PipelineError> {
        let hash: B256 = tx.tx_hash.parse().map_err(|_| {
            PipelineError::corrupt(format!("{} transaction", tx.purpose), format!("hash {:?}", tx.tx_hash))
        })?;
        let Some(receipt) =
            self.provider.get_transaction_receipt(hash).await.map_err(rpc("reading a payout's receipt"))?
        else {
            return Ok(false);
        };
        let paid_out =
            [Agentripe::DepositReleased::SIGNATURE_HASH, Agentripe::DepositRefunded::SIGNATURE_HASH];
        Ok(receipt.logs().iter().any(|log| {
            log.address() == self.deployment.agentripe
                && log.topics().first().is_some_and(|event| paid_out.contains(event))
                && log.topics().get(1) == Some(&deposit)
        }))
    }

    /// Posts the platform's feedback on a final task: +1 for a release, -1 for a refund, with the
    /// deposit id (the payment's transaction hash) as the feedback hash: its proof of payment.
    pub async fn post_feedback(&self, task: &Task) -> Result<(), PipelineError> {
        let id = &task.new.id;
        if let Some(receipt) = self.operator.resume("feedback", id).await?
            && receipt.status()
        {
            self.store.finish_feedback(id, true).await?;
            return Ok(());
        }
        if !matches!(task.escrow_status, EscrowStatus::Released | EscrowStatus::Refunded) {
            return Ok(());
        }
        if self.buyer_controls_the_agent(task).await? {
            tracing::info!(task = %id, buyer = %task.new.buyer, "no platform feedback: the buyer controls the agent");
            self.store.finish_feedback(id, false).await?;
            return Ok(());
        }
        // +1 for a release, -1 for any refund, tagged with why the deposit ended so readers can weigh it.
        let outcome = task.outcome.unwrap_or(if task.escrow_status == EscrowStatus::Released {
            Outcome::Released
        } else {
            Outcome::Expired
        });
        let value: i128 = if outcome == Outcome::Released { 1 } else { -1 };
        let tag2 = outcome.as_str();
        let call = ReputationRegistry::giveFeedbackCall {
            agentId: task
                .new
                .agent_id
                .parse::<U256>()
                .map_err(|_| PipelineError::corrupt(task_subject(id), "agent id"))?,
            value,
            valueDecimals: 0,
            tag1: FEEDBACK_TAG.into(),
            tag2: tag2.into(),
            endpoint: String::new(),
            feedbackURI: String::new(),
            feedbackHash: id
                .parse()
                .map_err(|_| PipelineError::corrupt(task_subject(id), "not a deposit id"))?,
        };
        match self
            .operator
            .send_and_confirm("feedback", id, self.deployment.reputation_registry, call.abi_encode().into())
            .await
        {
            Ok(receipt) if receipt.status() => self.store.finish_feedback(id, true).await?,
            Ok(_) => return Err(RpcError { context: "posting feedback", message: "reverted".into() }.into()),
            Err(WriteError::WouldRevert(reason)) => {
                tracing::warn!(task = %id, %reason, "the reputation registry refuses our feedback; skipping it");
                self.store.finish_feedback(id, false).await?;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Whether the buyer is the agent's owner, its payout wallet, or approved to act for it: a purchase
    /// between an agent and itself earns no reputation (nor sinks it).
    async fn buyer_controls_the_agent(&self, task: &Task) -> Result<bool, PipelineError> {
        let subject = || task_subject(&task.new.id);
        let agent: U256 =
            task.new.agent_id.parse().map_err(|_| PipelineError::corrupt(subject(), "agent id"))?;
        let buyer: Address =
            task.new.buyer.parse().map_err(|_| PipelineError::corrupt(subject(), "buyer"))?;
        let identity = IERC8004Identity::new(self.deployment.identity_registry, &self.provider);
        let owner = match identity.ownerOf(agent).call().await {
            Ok(owner) => owner,
            // A burned agent has no one to collude with, and no one to receive feedback.
            Err(error) if error.as_revert_data().is_some() => return Ok(true),
            Err(error) => return Err(rpc("reading the agent's owner")(error).into()),
        };
        if buyer == owner {
            return Ok(true);
        }
        let wallet =
            identity.getAgentWallet(agent).call().await.map_err(rpc("reading the agent's wallet"))?;
        let approved =
            identity.getApproved(agent).call().await.map_err(rpc("reading the agent's approval"))?;
        let operator = identity
            .isApprovedForAll(owner, buyer)
            .call()
            .await
            .map_err(rpc("reading the owner's operators"))?;
        Ok(buyer == wallet || buyer == approved || operator)
    }

    async fn load(&self, id: &str) -> Result<Task, PipelineError> {
        self.store.task(id).await?.ok_or_else(|| PipelineError::corrupt(task_subject(id), "no such task"))
    }

    /// Finishes money in flight, expired deposits, reclaims and feedback: at start-up and on a timer.
    pub async fn reconcile_once(&self) -> Result<usize, PipelineError> {
        let open = self.store.tasks_to_reconcile(now_ms(), 100).await?;
        for task in &open {
            if let Err(error) = self.carry_out(&task.new.id).await {
                tracing::warn!(task = %task.new.id, %error, "reconciler could not settle a task's escrow");
            }
        }
        let awaiting = self.store.tasks_awaiting_feedback(100).await?;
        for task in &awaiting {
            if let Err(error) = self.post_feedback(task).await {
                tracing::warn!(task = %task.new.id, %error, "reconciler could not post feedback");
            }
        }
        Ok(open.len() + awaiting.len())
    }
}

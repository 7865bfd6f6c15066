//! Money in, exactly once: a verified payment is claimed in the database, settled into the escrow,
//! recorded as a deposit under its settlement transaction hash, and only then becomes a task.
//!
//! Each step checks the chain before acting, so running a step twice, after a crash, a timeout, or
//! alongside a front-runner, converges on the same single deposit:
//! - settled? the chain says so when the buyer's EIP-3009 nonce is used ([`settlement`]);
//! - recorded? `getDeposit(txHash)` says so ([`recording`]).
//!
//! Whoever holds a payment's lease (the request handler, or the reconciler after a crash) advances it.

pub mod facilitator;
mod recording;
pub use recording::Record;
mod settlement;

use std::{sync::Arc, time::Duration};

use agentripe_chain::{Deployment, bindings::IERC3009};
use agentripe_store::{ChainTx, Claim, NewPayment, Payment, PaymentStatus, Store, StoreError};
use agentripe_x402::{
    ErrorReason, FacilitatorRequest, Offer, PaymentPayload, VerifiedPayment, v2::ResourceInfo,
};
use alloy::{
    primitives::{B256, U256},
    providers::{DynProvider, Provider},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::{
    Config,
    batching::Batcher,
    chain_writer::{ChainWriter, Confirmation},
    pipeline::{PipelineError, rpc},
    util::{READING_TTL, Recent, hex, now_ms, now_secs, to_i64, to_ms},
};
pub use facilitator::Facilitator;

/// How long a purchase past its timeout may take to read where its payment has got to.
const SO_FAR_READ: Duration = Duration::from_secs(1);

/// How long after its authorization expired a refused payment is kept.
const REFUSALS_KEPT_SECONDS: u64 = 3600;

/// The purchase request's task fields, stored with the payment until the task exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task_detail: Option<String>,
    pub task_metadata: Option<String>,
    pub reviewer_request: Option<String>,
    pub request_payload: Option<String>,
}

/// A verified payment for something on sale: what a purchase request hands to money in.
#[derive(Clone, Debug)]
pub struct Purchase {
    pub agent_id: U256,
    pub service_path: String,
    pub offer: Offer,
    pub resource: ResourceInfo,
    pub payment: PaymentPayload,
    pub verified: VerifiedPayment,
    pub request: TaskRequest,
}

/// What claiming a payment found; `P` is what became of this purchase's payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed<P> {
    /// This purchase's payment: new, or a retry of the same purchase.
    Payment(P),
    /// The authorization was already presented for another purchase (another agent, path or body);
    /// it is that purchase's, and this one is refused.
    ForAnotherPurchase(Box<Payment>),
    /// A new authorization that could not settle now: refused, and nothing stored.
    Refused(ErrorReason),
}

impl<P> Claimed<P> {
    /// This purchase's payment, or the claim's other answer, which holds none.
    fn into_payment<Q>(self) -> Result<P, Claimed<Q>> {
        match self {
            Self::Payment(payment) => Ok(payment),
            Self::ForAnotherPurchase(earlier) => Err(Claimed::ForAnotherPurchase(earlier)),
            Self::Refused(reason) => Err(Claimed::Refused(reason)),
        }
    }
}

/// How far a purchase's payment went: where it ended up, or what stopped it (the reconciler retries).
pub type Advanced = Result<Outcome, PipelineError>;

/// A claimed payment, to advance.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ToAdvance {
    /// Stored by this claim and leased to it as it was stored.
    Held(Box<Held>),
    /// An earlier claim of the same purchase (a retry): leased when no one else holds it.
    Earlier(i64),
}

/// A payment and the holder of its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    payment: Payment,
    holder: String,
    /// When the lease runs out. It is reckoned before the statement that stores it, which may wait (for
    /// a connection, behind a lock) for most of the lease or longer.
    until_ms: i64,
}

impl ToAdvance {
    fn id(&self) -> i64 {
        match self {
            Self::Held(held) => held.payment.id,
            Self::Earlier(id) => *id,
        }
    }
}

/// A lease holder's name: random, so that no two holders share one.
fn new_holder() -> String {
    hex(B256::random())
}

/// What becomes of a transaction of ours that the chain no longer has (see [`MoneyIn::after_a_reorg`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAReorg {
    /// Sent again from its stored bytes.
    SendAgain,
    /// Its nonce taken by a transaction of nothing: it must not land.
    Void,
    /// Left for now to the live holder of its payment's lease, and asked again on the next pass.
    NotYet,
}

/// Where a payment ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The deposit is recorded under `task_id` (the deposit id); `transaction` moved the money (the
    /// same hash, unless it settled several payments).
    Recorded { task_id: B256, transaction: B256 },
    /// Nothing was charged, for this reason.
    Failed(ErrorReason),
    /// Someone else is advancing it, or it is waiting on the chain; the deposit id once settled.
    InProgress { deposit_id: Option<B256> },
}

/// The money-in pipeline.
#[derive(Debug)]
pub struct MoneyIn {
    store: Store,
    provider: DynProvider,
    deployment: Deployment,
    operator: ChainWriter,
    /// Deposits are recorded in batches, through the operator's key.
    records: Batcher<Record>,
    facilitator: Facilitator,
    confirmation: Confirmation,
    lease: Duration,
    /// How long after `validBefore` a used authorization's settlement is still searched for.
    search_horizon: Duration,
    /// How many blocks before a payment's arrival its settlement is searched from.
    lookback_blocks: u64,
    /// The head, read at most once per [`READING_TTL`]: a search may start a block earlier than it
    /// must, never later.
    recent_head: Recent<u64>,
    /// Places for purchases being claimed and advanced, as many as connections: their tasks outlive
    /// requests whose buyers hung up, so the connection cap no longer bounds them.
    places: Arc<Semaphore>,
    /// The tasks of those purchases, for a stopping server to wait for.
    in_flight: TaskTracker,
}

impl MoneyIn {
    pub fn new(
        store: Store,
        provider: DynProvider,
        config: &Config,
        operator: ChainWriter,
        facilitator: Facilitator,
        confirmation: Confirmation,
    ) -> Self {
        Self {
            store,
            provider,
            deployment: config.deployment.clone(),
            records: Batcher::start(operator.clone(), config.deployment.agentripe, config.batching),
            operator,
            facilitator,
            confirmation,
            lease: config.payment_lease,
            search_horizon: config.settlement_search_horizon,
            lookback_blocks: config.settlement_lookback_blocks,
            recent_head: Recent::new(READING_TTL),
            places: Arc::new(Semaphore::new(config.http.max_connections)),
            in_flight: TaskTracker::new(),
        }
    }

    /// Claims a purchase's payment and takes it as far as it goes within `timeout` of taking its place:
    /// settles it and records its deposit. What is only read comes first, in the request, so a buyer who
    /// hangs up then leaves nothing behind. The claim's insert and the steps after it run on a task of
    /// their own, which neither a hang-up nor the timeout stops: a payment is stored already leased to
    /// its claimant, so a claimant stopped between the two would leave it to no one until the lease ran
    /// out. The reconciler finishes what the task cannot.
    ///
    /// An error is the claim's; what stopped the payment once claimed (a panic included) is in
    /// [`Claimed::Payment`].
    pub async fn purchase(
        self: &Arc<Self>,
        purchase: &Purchase,
        timeout: Duration,
    ) -> Result<Claimed<Advanced>, PipelineError> {
        let claim = match self.assess(purchase).await? {
            Ok(claim) => claim,
            Err(reason) => return Ok(Claimed::Refused(reason)),
        };
        // While it waits for a place, the request still holds its connection.
        let place = self.places.clone().acquire_owned().await.map_err(|_| PipelineError::Stopping)?;
        let claiming = self.in_flight.spawn({
            let (money_in, claim) = (self.clone(), claim.clone());
            async move {
                let claimed = money_in.claim_and_advance(&claim).await;
                drop(place);
                // Its request may be gone, and with it the answer that would have said so.
                if let Err(error) = &claimed {
                    tracing::warn!(payer = claim.payer, nonce = claim.nonce, %error, "a payment could not be claimed");
                }
                claimed
            }
        });
        // A settlement and a record may each wait for the chain longer than a buyer should wait for its
        // answer: past the deadline, the buyer is told to follow the payment.
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(joined) = tokio::time::timeout_at(deadline, claiming).await else {
            return Ok(self.so_far(&claim).await);
        };
        let claimed = joined.map_err(|error| {
            PipelineError::corrupt("a purchase", format!("claiming its payment panicked: {error}"))
        })??;
        let (id, advanced) = match claimed.into_payment() {
            Ok(payment) => payment,
            Err(answer) => return Ok(answer),
        };
        Ok(Claimed::Payment(match advanced {
            Ok(Outcome::InProgress { .. }) => self.wait_until(id, deadline).await,
            Err(error) => {
                tracing::warn!(payment = id, %error, "purchase left to the reconciler");
                Err(error)
            }
            done => done,
        }))
    }

    /// Where the payment of a claim still running has got to, read within [`SO_FAR_READ`]. Only a
    /// recorded payment, or another purchase's, is an answer: a failed one may be the row this claim is
    /// about to reopen, and one not found (or not read in time) may be its insert still waiting.
    async fn so_far(&self, claim: &NewPayment) -> Claimed<Advanced> {
        let stored =
            self.store.payment_by_authorization(claim.chain_id, &claim.asset, &claim.payer, &claim.nonce);
        match tokio::time::timeout(SO_FAR_READ, stored).await {
            Ok(Ok(Some(stored)))
                if !same_purchase(&stored.new, &claim.agent_id, &claim.service_path, &claim.request) =>
            {
                Claimed::ForAnotherPurchase(Box::new(stored))
            }
            Ok(Ok(Some(stored))) if stored.status != PaymentStatus::Failed => {
                Claimed::Payment(outcome(&stored))
            }
            _ => Claimed::Payment(Ok(Outcome::InProgress { deposit_id: None })),
        }
    }

    /// [`Self::claim`], then [`Self::advance`] of the payment claimed, with its id. The advance runs on a
    /// task of its own, so that a panic there is this payment's error: the buyer is told to follow it.
    async fn claim_and_advance(
        self: &Arc<Self>,
        claim: &NewPayment,
    ) -> Result<Claimed<(i64, Advanced)>, PipelineError> {
        let payment = match self.claim(claim).await?.into_payment() {
            Ok(payment) => payment,
            Err(answer) => return Ok(answer),
        };
        let id = payment.id();
        let advancing = tokio::spawn({
            let money_in = self.clone();
            async move {
                match payment {
                    ToAdvance::Held(held) => money_in.advance_held(*held).await,
                    ToAdvance::Earlier(id) => money_in.advance(id).await,
                }
            }
        });
        let advanced = advancing.await.unwrap_or_else(|error| {
            Err(PipelineError::corrupt(format!("payment {id}"), format!("advancing it panicked: {error}")))
        });
        Ok(Claimed::Payment((id, advanced)))
    }

    /// What became of `payment`, a header that no longer passes verification, if that very header was
    /// claimed before: for this purchase (`agent_id`'s `service_path` with `request`), where its payment
    /// got to; for another, that purchase. Read only: nothing is stored or advanced (the reconciler
    /// advances a stored payment). Only the signed authorization stored once it was verified is answered
    /// for: a copy under another signature gets the refusal it always got. (A settled header is public on
    /// chain; what it is answered with, `GET /payments/{payer}/{nonce}` tells anyone.)
    pub async fn earlier_claim(
        &self,
        offer: &Offer,
        payment: &PaymentPayload,
        agent_id: U256,
        service_path: &str,
        request: &TaskRequest,
    ) -> Result<Option<Claimed<Advanced>>, PipelineError> {
        let authorization = &payment.exact().authorization;
        let (asset, payer, nonce) = (hex(offer.asset), hex(authorization.from), hex(authorization.nonce));
        let stored = self
            .store
            .payment_by_authorization(to_i64(offer.network.chain_id), &asset, &payer, &nonce)
            .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let corrupt = |error: serde_json::Error| {
            PipelineError::corrupt(format!("payment {}", stored.id), error.to_string())
        };
        let earlier: FacilitatorRequest = serde_json::from_str(&stored.new.payment).map_err(corrupt)?;
        if earlier.payment_payload.exact() != payment.exact() {
            return Ok(None);
        }
        let request = serde_json::to_string(request).map_err(corrupt)?;
        Ok(Some(if same_purchase(&stored.new, &agent_id.to_string(), service_path, &request) {
            Claimed::Payment(outcome(&stored))
        } else {
            Claimed::ForAnotherPurchase(Box::new(stored))
        }))
    }

    /// Takes no new purchase: one that asks for a place from now on is refused with
    /// [`PipelineError::Stopping`], before anything is stored. Those already claimed go on.
    pub fn stop_taking_purchases(&self) {
        self.places.close();
        self.in_flight.close();
    }

    /// Returns once [`Self::stop_taking_purchases`] was called and every purchase claimed before has
    /// finished its claim and its advance.
    pub async fn purchases_finished(&self) {
        self.in_flight.wait().await;
    }

    /// What claiming a verified payment would store, read without storing anything: the payment's row,
    /// or why it is refused.
    async fn assess(&self, purchase: &Purchase) -> Result<Result<NewPayment, ErrorReason>, PipelineError> {
        let authorization = &purchase.verified.authorization;
        let request = FacilitatorRequest::new(purchase.payment.clone(), &purchase.offer, &purchase.resource);
        let corrupt = |error: serde_json::Error| PipelineError::corrupt("a new payment", error.to_string());
        // Anyone may have settled the authorization before it reached us: its settlement is searched for
        // from a bounded look-back behind the head at arrival.
        let (chain_id, asset, payer, nonce) = (
            to_i64(purchase.offer.network.chain_id),
            hex(purchase.offer.asset),
            hex(purchase.verified.payer),
            hex(authorization.nonce),
        );
        // A stranger's unfunded authorization takes no row: only a payment that could settle is stored.
        let outlook = self.store.payer_outlook(chain_id, &asset, &payer, &nonce).await?;
        let (refusal, head) = tokio::try_join!(
            async {
                match outlook.known {
                    true => Ok(None),
                    false => self.cannot_settle(purchase, &outlook.not_yet_settled).await,
                }
            },
            async {
                let head = self.recent_head.get(|| self.provider.get_block_number()).await;
                head.map_err(|error| PipelineError::from(rpc("reading the head")(error)))
            },
        )?;
        if let Some(reason) = refusal {
            return Ok(Err(reason));
        }
        Ok(Ok(NewPayment {
            chain_id,
            asset,
            payer,
            nonce,
            amount: authorization.value.to_string(),
            agent_id: purchase.agent_id.to_string(),
            service_path: purchase.service_path.clone(),
            x402_version: i32::from(purchase.payment.version().number()),
            payment: serde_json::to_string(&request).map_err(corrupt)?,
            valid_before: i64::try_from(authorization.valid_before).unwrap_or(i64::MAX),
            request: serde_json::to_string(&purchase.request).map_err(corrupt)?,
            search_from_block: to_i64(head.saturating_sub(self.lookback_blocks)),
        }))
    }

    /// Claims a payment, exactly once per authorization. A retry of the same purchase gets the same
    /// payment back (a failed one is reopened: the buyer may have fixed what failed); the same
    /// authorization sent for another purchase is not this purchase's payment.
    async fn claim(&self, claim: &NewPayment) -> Result<Claimed<ToAdvance>, PipelineError> {
        let (holder, until_ms) = (new_holder(), now_ms().saturating_add(self.lease_ms()));
        Ok(match self.store.claim_payment(claim, Some((&holder, until_ms)), now_ms()).await? {
            Claim::New(payment) => {
                Claimed::Payment(ToAdvance::Held(Box::new(Held { payment, holder, until_ms })))
            }
            Claim::Existing(stored) => {
                if !same_purchase(&stored.new, &claim.agent_id, &claim.service_path, &claim.request) {
                    return Ok(Claimed::ForAnotherPurchase(Box::new(stored)));
                }
                if stored.status == PaymentStatus::Failed {
                    self.store.reopen_payment(stored.id, now_ms()).await?;
                }
                Claimed::Payment(ToAdvance::Earlier(stored.id))
            }
        })
    }

    /// Why a new authorization cannot settle now, read before anything is stored: the payer's balance
    /// must cover it and every payment of the payer's not yet settled (`not_yet_settled`, their amounts as
    /// stored). An authorization already used is claimed all the same: anyone may have settled it into the
    /// escrow, and it is looked for.
    async fn cannot_settle(
        &self,
        purchase: &Purchase,
        not_yet_settled: &[String],
    ) -> Result<Option<ErrorReason>, PipelineError> {
        let authorization = &purchase.verified.authorization;
        let token = IERC3009::new(purchase.offer.asset, &self.provider);
        // Asked together: one round trip, not two.
        let (used, balance) = tokio::try_join!(
            async {
                let state = token.authorizationState(authorization.from, authorization.nonce).call().await;
                state.map_err(rpc("reading the authorization state"))
            },
            async {
                token.balanceOf(authorization.from).call().await.map_err(rpc("reading the payer's balance"))
            },
        )?;
        if used {
            return Ok(None);
        }
        let in_flight = not_yet_settled
            .iter()
            .map(|amount| amount.parse::<U256>().unwrap_or_default())
            .fold(U256::ZERO, U256::saturating_add);
        Ok((balance < in_flight.saturating_add(authorization.value))
            .then_some(ErrorReason::InsufficientFunds))
    }

    /// Advances a payment as far as it goes now, if no one else is. The lease is short and renewed
    /// while this runs: if the process dies, another takes the payment over within one lease.
    pub async fn advance(&self, id: i64) -> Result<Outcome, PipelineError> {
        let (holder, until_ms) = (new_holder(), now_ms().saturating_add(self.lease_ms()));
        match self.store.lease_payment(id, &holder, now_ms(), until_ms).await? {
            Some(payment) => self.advance_held(Held { payment, holder, until_ms }).await,
            None => self.current(id).await,
        }
    }

    /// [`Self::advance`] of a payment already leased, renewing the lease while it runs. A holder whose
    /// lease is taken over all the same (its process or the database stalled for longer than the lease)
    /// stops, and says where the payment has got to: its new holder advances it.
    async fn advance_held(&self, Held { payment, holder, until_ms }: Held) -> Result<Outcome, PipelineError> {
        let (id, lease_ms) = (payment.id, self.lease_ms());
        let renew =
            async || self.store.renew_payment_lease(id, &holder, now_ms().saturating_add(lease_ms)).await;
        // Renewals come a third of a lease apart. A lease whose statement took longer than that (a pool
        // wait, a lock) is renewed before the first step, so that it keeps that margin and the reconciler
        // does not take the payment up alongside this holder.
        if until_ms.saturating_sub(now_ms()) < lease_ms - lease_ms / 3 && !renew().await? {
            return self.after_losing_the_lease(id).await;
        }
        let renewing = async {
            loop {
                tokio::time::sleep(self.lease / 3).await;
                if !renew().await? {
                    return Ok(None);
                }
            }
        };
        // Every step is idempotent and stored before it is taken: stopping one half-way (a lost lease)
        // leaves nothing the next holder cannot finish.
        let advanced = tokio::select! {
            advanced = self.advance_leased(payment, &holder) => advanced.map(Some),
            lost = renewing => lost,
        };
        // The steps are dropped by now: a holder that lost its lease has stopped before it reads.
        let result = match advanced {
            Ok(None) => return self.after_losing_the_lease(id).await,
            Err(PipelineError::Overtaken(_)) => {
                // Its lease may still be this holder's (another moved the payment on without it): given
                // back, so that the reconciler takes the payment up at once.
                self.store.unlease_payment(id, &holder).await?;
                return self.after_losing_the_lease(id).await;
            }
            Ok(Some(outcome)) => Ok(outcome),
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            tracing::warn!(payment = id, %error, "payment not advanced; the reconciler will retry");
        }
        // Recording or failing the payment released its lease.
        if !matches!(result, Ok(Outcome::Recorded { .. } | Outcome::Failed(_))) {
            self.store.unlease_payment(id, &holder).await?;
        }
        result
    }

    /// Where a payment whose lease is no longer this holder's has got to. The lease is gone when this
    /// holder's own steps finished the payment (its record or failure released it), or when another
    /// holder took it over.
    async fn after_losing_the_lease(&self, id: i64) -> Result<Outcome, PipelineError> {
        let outcome = self.current(id).await?;
        if matches!(outcome, Outcome::InProgress { .. }) {
            tracing::warn!(
                payment = id,
                "another holder took the payment over (a process or the database stalled for longer than a lease) and advances it"
            );
        }
        Ok(outcome)
    }

    fn lease_ms(&self) -> i64 {
        to_ms(self.lease)
    }

    /// Waits until the payment is recorded or failed, or `deadline` passes.
    async fn wait_until(&self, id: i64, deadline: tokio::time::Instant) -> Result<Outcome, PipelineError> {
        loop {
            let outcome = self.current(id).await?;
            let now = tokio::time::Instant::now();
            if !matches!(outcome, Outcome::InProgress { .. }) || now >= deadline {
                return Ok(outcome);
            }
            tokio::time::sleep(self.confirmation.poll_interval.min(deadline - now)).await;
        }
    }

    async fn current(&self, id: i64) -> Result<Outcome, PipelineError> {
        let payment = self.store.payment(id).await?;
        outcome(&payment.ok_or_else(|| PipelineError::corrupt(format!("payment {id}"), "no such payment"))?)
    }

    /// Settles, then records: each step reads the payment it was handed and says what became of it.
    async fn advance_leased(&self, mut payment: Payment, holder: &str) -> Result<Outcome, PipelineError> {
        let (id, lease) = (payment.id, payment.leased_by(holder));
        // A record is sent only for a settled payment, by its lease holder: one this call settles has none.
        let may_have_a_record = payment.status == PaymentStatus::Settled;
        if payment.status == PaymentStatus::Verified {
            match self.settle(&payment, holder).await? {
                Ok(settlement) => {
                    let (deposit, transaction) = (hex(settlement.deposit_id), hex(settlement.transaction));
                    // Only while the lease holds: one whose payment another holder failed meanwhile
                    // creates no task beside a refusal.
                    self.store.mark_payment_settled(lease, &deposit, &transaction, now_ms()).await?;
                    payment.status = PaymentStatus::Settled;
                    payment.deposit_id = Some(deposit);
                    payment.settlement_tx = Some(transaction);
                }
                Err(reason) => {
                    // Only while the lease holds: a successor may have settled it meanwhile.
                    self.store.fail_payment(lease, &reason.to_string(), now_ms()).await?;
                    tracing::info!(payment = id, %reason, "payment refused; nothing was charged");
                    return Ok(Outcome::Failed(reason));
                }
            }
        }
        if payment.status == PaymentStatus::Settled {
            self.record(&payment, deposit_id(&payment)?, may_have_a_record).await?;
            payment.status = PaymentStatus::Recorded;
        }
        outcome(&payment)
    }

    /// What becomes of our transaction `tx`, gone from the chain with a reorg. A settlement may not land
    /// again once its payment was refused (the settlement reverted, or a holder refused the payment
    /// before it landed) or forgotten: its buyer was told "refused", may have paid anew, and would be
    /// charged for nothing; nor once its payment was settled by another transaction (its
    /// `settlement_tx`). Every other write lands as it did before.
    pub async fn after_a_reorg(&self, tx: &ChainTx) -> Result<AfterAReorg, StoreError> {
        let id = match (tx.purpose.as_str(), tx.subject.parse::<i64>()) {
            ("settle", Ok(id)) => id,
            _ => return Ok(AfterAReorg::SendAgain),
        };
        let Some(payment) = self.store.payment(id).await? else {
            return Ok(AfterAReorg::Void);
        };
        Ok(match payment.status {
            PaymentStatus::Failed => AfterAReorg::Void,
            // Rows from before settlement transactions were stored name none.
            PaymentStatus::Settled | PaymentStatus::Recorded => {
                match payment.settlement_tx.is_none_or(|settlement| settlement == tx.tx_hash) {
                    true => AfterAReorg::SendAgain,
                    false => AfterAReorg::Void,
                }
            }
            // Its holder may hold the settlement's reverted receipt and be about to refuse the payment.
            // Taking its lease fences that holder out; the lease is left to run out, by which time the
            // settlement is pending again for whoever takes the payment up to wait for. A holder still
            // renewing its lease waits for the settlement itself, broadcasting it as it waits.
            PaymentStatus::Verified => {
                let until = now_ms().saturating_add(self.lease_ms());
                match self.store.lease_payment(id, &new_holder(), now_ms(), until).await? {
                    Some(_) => AfterAReorg::SendAgain,
                    None => AfterAReorg::NotYet,
                }
            }
        })
    }

    /// Advances every payment whose lease has run out (a crash, a timeout): at start-up and on a timer.
    pub async fn reconcile_once(&self) -> Result<usize, PipelineError> {
        // Refused payments are kept for their payers to look up while the authorization could still be
        // retried, then forgotten: strangers' refusals do not accumulate.
        let expired_before = now_secs().saturating_sub(REFUSALS_KEPT_SECONDS);
        self.store.prune_failed_payments(to_i64(expired_before)).await?;
        let stalled = self.store.stalled_payments(now_ms(), 100).await?;
        for &id in &stalled {
            if let Err(error) = self.advance(id).await {
                tracing::warn!(payment = id, %error, "reconciler could not advance a payment");
            }
        }
        Ok(stalled.len())
    }
}

/// Whether `earlier`, a stored claim of an authorization, is the purchase of `agent_id`'s `service_path`
/// with `request` (as stored): the same agent, path and body make a retry, anything else another purchase.
fn same_purchase(earlier: &NewPayment, agent_id: &str, service_path: &str, request: &str) -> bool {
    (earlier.agent_id.as_str(), earlier.service_path.as_str(), earlier.request.as_str())
        == (agent_id, service_path, request)
}

fn outcome(payment: &Payment) -> Result<Outcome, PipelineError> {
    Ok(match payment.status {
        PaymentStatus::Recorded => {
            let task_id = deposit_id(payment)?;
            // Rows from before settlement transactions were stored: the deposit id was the transaction.
            let transaction =
                payment.settlement_tx.as_deref().and_then(|tx| tx.parse().ok()).unwrap_or(task_id);
            Outcome::Recorded { task_id, transaction }
        }
        PaymentStatus::Failed => Outcome::Failed(failure(payment)),
        PaymentStatus::Verified | PaymentStatus::Settled => {
            Outcome::InProgress { deposit_id: payment.deposit_id.as_deref().and_then(|id| id.parse().ok()) }
        }
    })
}

fn deposit_id(payment: &Payment) -> Result<B256, PipelineError> {
    payment.deposit_id.as_deref().and_then(|id| id.parse().ok()).ok_or_else(|| {
        PipelineError::corrupt(format!("payment {}", payment.id), "settled without a deposit id")
    })
}

fn failure(payment: &Payment) -> ErrorReason {
    payment
        .failure
        .as_deref()
        .and_then(|reason| serde_json::from_value(serde_json::Value::String(reason.into())).ok())
        .unwrap_or(ErrorReason::UnexpectedSettleError)
}

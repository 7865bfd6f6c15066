//! How a verdict moves money. A vendor's submission is reviewed against the buyer's criteria (once per
//! exact input), the verdict is stored, applied to the task as an escrow decision (approval releases,
//! the fifth rejection refunds), and money out carries that decision to the chain. A vendor giving up
//! is a decision too: the buyer is refunded.
//!
//! A reviewer that gives no verdict decides nothing: the claim on the submission is given back and no
//! money moves. A verdict the store did not take (a concurrent review, a task that changed meanwhile)
//! is not applied, and not reported as applied.

use std::{sync::Arc, time::Duration};

use agentripe_review::{ReviewError, ReviewInput, Reviewer, input_hash};
use agentripe_store::{EscrowStatus, ReviewRecord, Store, StoreError, Submission, Task, TaskStatus, Verdict};

use crate::{
    money_out::MoneyOut,
    util::{now_ms, to_ms},
};

/// Reviews submissions and turns verdicts into escrow decisions.
#[derive(Debug)]
pub struct Verdicts {
    store: Store,
    reviewer: Reviewer,
    money_out: Arc<MoneyOut>,
    /// The rejection that refunds the buyer (Agentripe: the fifth).
    max_rejections: i32,
    /// How long a review claim holds without a renewal.
    review_lease: Duration,
    /// How long a request waits for the escrow to move before leaving it to the reconciler.
    payout_wait: Duration,
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The verdict applied (for a vendor's failure: none).
    pub verdict: Option<Verdict>,
    /// Where the money is after this call, when the chain answered in time.
    pub escrow: Option<EscrowStatus>,
}

/// Why nothing was decided.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// Another submission of the task holds the review claim.
    #[error("another submission of this task is being reviewed")]
    UnderReview,
    /// The task is not in a state that takes this (the current task attached).
    #[error("the task is {}", .0.status.as_str())]
    NotOpen(Box<Task>),
    /// This exact submission was reviewed before; it is never reviewed twice.
    #[error("this exact result was already reviewed")]
    AlreadyReviewed(Box<ReviewRecord>),
    /// The reviewer gave no verdict: nothing counted, no money moved.
    #[error(transparent)]
    NoVerdict(ReviewError),
    /// The verdict was not taken: the task changed while it was under review.
    #[error("the task changed while its submission was under review; the verdict was not applied")]
    Superseded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Verdicts {
    pub fn new(
        store: Store,
        reviewer: Reviewer,
        money_out: Arc<MoneyOut>,
        max_rejections: i32,
        review_lease: Duration,
        payout_wait: Duration,
    ) -> Self {
        Self { store, reviewer, money_out, max_rejections, review_lease, payout_wait }
    }

    /// Whether buyers can ask for a review here.
    pub fn reviewer(&self) -> &Reviewer {
        &self.reviewer
    }

    /// Reviews `result` for `task` (no `reviewer_request`: approved unreviewed), applies the verdict,
    /// and moves the money it decides.
    pub async fn submit(&self, task: &Task, result: &str) -> Result<Decided, DecisionError> {
        let id = &task.new.id;
        let claimed_at = now_ms();
        let lease_ms = to_ms(self.review_lease);
        if !self.store.begin_review(id, claimed_at, claimed_at.saturating_sub(lease_ms)).await? {
            return Err(self.why_not_open(id).await?);
        }
        let (reviewed, claimed_at) = self.renewing_claim(id, claimed_at, self.verdict(task, result)).await?;
        let (verdict, review) = match reviewed {
            Ok(reviewed) => reviewed,
            Err(error) => {
                self.store.abandon_review(id, claimed_at).await?;
                return Err(error);
            }
        };
        let submission = Submission { task_id: id, claimed_at_ms: claimed_at, result };
        let applied =
            self.store.apply_verdict(submission, &verdict, review.as_ref(), self.max_rejections, now_ms());
        if applied.await?.is_none() {
            self.store.abandon_review(id, claimed_at).await?;
            return Err(DecisionError::Superseded);
        }
        let escrow = self.money_out.carry_out_within(id, self.payout_wait).await;
        Ok(Decided { verdict: Some(verdict), escrow })
    }

    /// The vendor gives the task up: the buyer is refunded.
    pub async fn fail(&self, task: &Task, message: &str) -> Result<Decided, DecisionError> {
        if !self.store.fail_task(&task.new.id, message, now_ms()).await? {
            return Err(DecisionError::NotOpen(Box::new(self.reload(&task.new.id).await?)));
        }
        let escrow = self.money_out.carry_out_within(&task.new.id, self.payout_wait).await;
        Ok(Decided { verdict: None, escrow })
    }

    /// Runs `reviewing` while renewing the review claim of task `id` taken at `claimed_at` every third of
    /// a lease, so that the claim goes stale within a lease of its reviewer's death and not before.
    /// Returns the review's outcome and when the claim was last renewed; a claim taken over meanwhile
    /// (this process stalled for a lease) stops the review, whose verdict would not be its to apply.
    async fn renewing_claim<T>(
        &self,
        id: &str,
        mut claimed_at: i64,
        reviewing: impl std::future::Future<Output = T>,
    ) -> Result<(T, i64), DecisionError> {
        let every = self.review_lease / 3;
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut reviewing = std::pin::pin!(reviewing);
        loop {
            tokio::select! {
                reviewed = &mut reviewing => return Ok((reviewed, claimed_at)),
                _ = renewals.tick() => {
                    let now = now_ms();
                    match self.store.renew_review(id, claimed_at, now).await {
                        Ok(true) => claimed_at = now,
                        Ok(false) => return Err(DecisionError::Superseded),
                        // Two thirds of the lease are left for the next renewal: a paid review is not
                        // thrown away for one failed statement.
                        Err(error) => tracing::warn!(task = id, %error, "a review's claim could not be renewed"),
                    }
                }
            }
        }
    }

    async fn reload(&self, id: &str) -> Result<Task, DecisionError> {
        self.store.task(id).await?.ok_or_else(|| {
            StoreError::Corrupt { context: "reloading a task", detail: format!("task {id} vanished") }.into()
        })
    }

    /// A claim refused: either a review is running, or the task no longer takes submissions.
    async fn why_not_open(&self, id: &str) -> Result<DecisionError, DecisionError> {
        let task = self.reload(id).await?;
        let open = task.escrow_status == EscrowStatus::Deposited
            && matches!(task.status, TaskStatus::Processing | TaskStatus::Rejected);
        Ok(if open { DecisionError::UnderReview } else { DecisionError::NotOpen(Box::new(task)) })
    }

    /// The verdict on `result`, and the review that reached it, to store as the verdict is applied (none
    /// when the buyer asked for no review).
    async fn verdict(
        &self,
        task: &Task,
        result: &str,
    ) -> Result<(Verdict, Option<ReviewRecord>), DecisionError> {
        let Some(criteria) = &task.new.reviewer_request else {
            return Ok((Verdict { approved: true, reason: "no review requested".into() }, None));
        };
        let input = ReviewInput {
            reviewer_request: criteria.clone(),
            task_detail: task.new.task_detail.clone(),
            task_metadata: task.new.task_metadata.clone(),
            result: result.to_owned(),
        };
        let hash = input_hash(&input);
        let earlier = self.store.reviews(&task.new.id).await?;
        if let Some(same) = earlier.iter().find(|review| review.input_hash == hash) {
            return Err(DecisionError::AlreadyReviewed(Box::new(same.clone())));
        }
        let review = self.reviewer.review(&input).await.map_err(DecisionError::NoVerdict)?;
        let record = ReviewRecord::new(
            &task.new.id,
            i32::try_from(earlier.len()).unwrap_or(i32::MAX).saturating_add(1),
            &review.model,
            review.prompt_version,
            &hash,
            review.approved,
            &review.reason,
            to_ms(review.latency),
            review.total_tokens.map(i64::from),
            now_ms(),
        );
        Ok((Verdict { approved: review.approved, reason: review.reason }, Some(record)))
    }
}

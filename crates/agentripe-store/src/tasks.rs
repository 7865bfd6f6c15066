//! Tasks: one per recorded deposit, keyed by the deposit id (the settlement transaction hash).

use sqlx::{Any, Transaction};

use crate::{Context, ReviewRecord, Store, StoreError, reviews::insert_review};

/// Where the vendor's work is (the task states of Agentripe's guide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Rejected,
}

/// Where the task's money is. The `-ing` states are decisions stored before their chain write; the
/// task is final only once the chain confirms it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowStatus {
    /// Locked in the escrow.
    Deposited,
    /// Approved; `releaseToVendor` is being written.
    Releasing,
    /// Credited to the vendor agent.
    Released,
    /// Failed, rejected five times or expired; `refundToBuyer` is being written.
    Refunding,
    /// Credited back to the buyer.
    Refunded,
}

crate::text_enum!(TaskStatus {
    Pending => "pending",
    Processing => "processing",
    Completed => "completed",
    Failed => "failed",
    Rejected => "rejected",
});

/// Why a task's deposit ended: the tag of its reputation feedback, counted in the agent view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Approved (or asked for no review): released to the vendor.
    Released,
    /// The last allowed review refused it: refunded.
    Rejected,
    /// The vendor gave up: refunded.
    Failed,
    /// Unanswered when the deposit expired: refunded (by us, or reclaimed by the buyer).
    Expired,
}

crate::text_enum!(Outcome {
    Released => "released",
    Rejected => "rejected",
    Failed => "failed",
    Expired => "expired",
});

crate::text_enum!(EscrowStatus {
    Deposited => "deposited",
    Releasing => "releasing",
    Released => "released",
    Refunding => "refunding",
    Refunded => "refunded",
});

/// A task to create when its deposit is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    /// The deposit id: the settlement transaction hash.
    pub id: String,
    pub agent_id: String,
    /// The catalog path bought.
    pub product_id: String,
    pub buyer: String,
    pub amount: String,
    /// Request fields other than the three below, JSON.
    pub request_payload: Option<String>,
    pub task_detail: Option<String>,
    /// JSON.
    pub task_metadata: Option<String>,
    pub reviewer_request: Option<String>,
    /// When the deposit expires on chain (ms): after it, it can only be refunded.
    pub expires_at: i64,
}

/// A stored task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub new: NewTask,
    pub status: TaskStatus,
    pub result: Option<String>,
    pub error_message: Option<String>,
    pub review_reject_count: i32,
    pub escrow_status: EscrowStatus,
    /// The release or refund transaction, once confirmed.
    pub escrow_tx: Option<String>,
    /// The last review's verdict and reason.
    pub review_approved: Option<bool>,
    pub review_reason: Option<String>,
    /// Why the deposit ended (or will: set with the decision), once decided.
    pub outcome: Option<Outcome>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    agent_id: String,
    product_id: String,
    buyer: String,
    amount: String,
    request_payload: Option<String>,
    task_detail: Option<String>,
    task_metadata: Option<String>,
    reviewer_request: Option<String>,
    status: String,
    result: Option<String>,
    error_message: Option<String>,
    review_reject_count: i32,
    escrow_status: String,
    expires_at: i64,
    escrow_tx: Option<String>,
    review_approved: Option<i32>,
    review_reason: Option<String>,
    outcome: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<Row> for Task {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let corrupt = |detail| StoreError::Corrupt { context: "reading a task", detail };
        Ok(Self {
            status: row.status.parse().map_err(corrupt)?,
            escrow_status: row.escrow_status.parse().map_err(corrupt)?,
            new: NewTask {
                id: row.id,
                agent_id: row.agent_id,
                product_id: row.product_id,
                buyer: row.buyer,
                amount: row.amount,
                request_payload: row.request_payload,
                task_detail: row.task_detail,
                task_metadata: row.task_metadata,
                reviewer_request: row.reviewer_request,
                expires_at: row.expires_at,
            },
            escrow_tx: row.escrow_tx,
            review_approved: row.review_approved.map(|approved| approved != 0),
            review_reason: row.review_reason,
            outcome: row.outcome.as_deref().map(str::parse).transpose().map_err(corrupt)?,
            result: row.result,
            error_message: row.error_message,
            review_reject_count: row.review_reject_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl NewTask {
    /// Inserts the task, pending, its deposit locked; a task that exists already is left as it is.
    pub(crate) async fn insert(
        &self,
        tx: &mut Transaction<'static, Any>,
        payment_id: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tasks (id, payment_id, agent_id, product_id, buyer, amount, request_payload, task_detail, \
             task_metadata, reviewer_request, expires_at, status, escrow_status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', 'deposited', $12, $12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&self.id)
        .bind(payment_id)
        .bind(&self.agent_id)
        .bind(&self.product_id)
        .bind(&self.buyer)
        .bind(&self.amount)
        .bind(&self.request_payload)
        .bind(&self.task_detail)
        .bind(&self.task_metadata)
        .bind(&self.reviewer_request)
        .bind(self.expires_at)
        .bind(now_ms)
        .execute(&mut **tx)
        .await
        .context("creating a task")?;
        Ok(())
    }
}

macro_rules! columns {
    () => {
        "id, agent_id, product_id, buyer, amount, request_payload, task_detail, task_metadata, reviewer_request, \
         status, result, error_message, review_reject_count, escrow_status, expires_at, escrow_tx, review_approved, \
         review_reason, outcome, created_at, updated_at"
    };
}

/// A review's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub approved: bool,
    pub reason: String,
}

impl Store {
    /// A task by id (the deposit id).
    pub async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let row: Option<Row> = sqlx::query_as(concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .context("reading a task")?;
        row.map(Task::try_from).transpose()
    }

    /// An agent's tasks in the given states, oldest first.
    pub async fn agent_tasks(
        &self,
        agent_id: &str,
        statuses: &[TaskStatus],
        limit: i64,
    ) -> Result<Vec<Task>, StoreError> {
        // `?status=pending,pending,...` costs one query, not one per repetition.
        let mut distinct = statuses.to_vec();
        distinct.sort_by_key(|status| status.as_str());
        distinct.dedup();
        let mut tasks = Vec::new();
        for status in distinct {
            let rows: Vec<Row> = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM tasks WHERE agent_id = $1 AND status = $2 ORDER BY created_at LIMIT $3"
            ))
            .bind(agent_id)
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .context("listing an agent's tasks")?;
            for row in rows {
                tasks.push(Task::try_from(row)?);
            }
        }
        tasks.sort_by_key(|task| task.created_at);
        tasks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(tasks)
    }

    /// A buyer's tasks, newest first.
    pub async fn buyer_tasks(&self, buyer: &str, limit: i64) -> Result<Vec<Task>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM tasks WHERE buyer = $1 ORDER BY created_at DESC LIMIT $2"
        ))
        .bind(buyer)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("listing a buyer's tasks")?;
        rows.into_iter().map(Task::try_from).collect()
    }

    /// Tasks whose money is in flight (`releasing`, `refunding`), or whose deposit expired unresolved:
    /// work for the reconciler.
    pub async fn tasks_to_reconcile(&self, now_ms: i64, limit: i64) -> Result<Vec<Task>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM tasks WHERE escrow_status IN ('releasing', 'refunding') \
              OR (escrow_status = 'deposited' AND expires_at > 0 AND expires_at <= $1) ORDER BY updated_at LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("listing tasks to reconcile")?;
        rows.into_iter().map(Task::try_from).collect()
    }

    /// How many of an agent's tasks ended, by outcome: counted from our own records, so the agent view
    /// costs the same however much feedback the agent has on chain.
    pub async fn agent_outcomes(&self, agent_id: &str) -> Result<Vec<(Outcome, i64)>, StoreError> {
        // Tasks that ended before outcomes were recorded count by their status.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT ended, COUNT(*) FROM (SELECT COALESCE(outcome, CASE WHEN escrow_status = 'released' THEN 'released' \
             WHEN status = 'rejected' THEN 'rejected' ELSE 'failed' END) AS ended FROM tasks \
             WHERE agent_id = $1 AND escrow_status IN ('released', 'refunded')) AS final GROUP BY ended",
        )
        .bind(agent_id)
        .fetch_all(self.pool())
        .await
        .context("counting an agent's outcomes")?;
        let corrupt = |detail| StoreError::Corrupt { context: "counting an agent's outcomes", detail };
        rows.into_iter().map(|(outcome, count)| Ok((outcome.parse().map_err(corrupt)?, count))).collect()
    }

    /// Tasks whose payout is confirmed but whose reputation feedback is not yet posted.
    pub async fn tasks_awaiting_feedback(&self, limit: i64) -> Result<Vec<Task>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM tasks WHERE feedback_status = 'pending' ORDER BY updated_at LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("listing tasks awaiting feedback")?;
        rows.into_iter().map(Task::try_from).collect()
    }

    async fn transition(
        &self,
        context: &'static str,
        sql: &'static str,
        binds: &[Bind<'_>],
    ) -> Result<bool, StoreError> {
        Ok(bound(sql, binds).execute(self.pool()).await.context(context)?.rows_affected() == 1)
    }

    /// pending or rejected -> processing, for the task's own agent while its money is still locked and
    /// its deposit has not expired (work after expiry could never be paid).
    pub async fn start_task(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.transition(
            "starting a task",
            "UPDATE tasks SET status = 'processing', updated_at = $1 WHERE id = $2 \
             AND status IN ('pending', 'rejected') AND escrow_status = 'deposited' \
             AND (expires_at = 0 OR expires_at > $1)",
            &[Bind::Int(now_ms), Bind::Text(Some(id))],
        )
        .await
    }

    /// Claims the right to review a submission: one `/complete` at a time. A claim taken or last renewed
    /// before `stale_before_ms` (its reviewer died mid-review) may be taken over.
    pub async fn begin_review(
        &self,
        id: &str,
        now_ms: i64,
        stale_before_ms: i64,
    ) -> Result<bool, StoreError> {
        self.transition(
            "beginning a review",
            "UPDATE tasks SET review_started_at = $1, updated_at = $1 WHERE id = $2 \
             AND status IN ('processing', 'rejected') AND escrow_status = 'deposited' \
             AND (expires_at = 0 OR expires_at > $1) AND (review_started_at IS NULL OR review_started_at < $3)",
            &[Bind::Int(now_ms), Bind::Text(Some(id)), Bind::Int(stale_before_ms)],
        )
        .await
    }

    /// Renews the review claim taken or last renewed at `claimed_at_ms`, to `now_ms`; false if the claim
    /// is no longer that one (it went stale and was taken over, or was given back).
    pub async fn renew_review(&self, id: &str, claimed_at_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.transition(
            "renewing a review claim",
            "UPDATE tasks SET review_started_at = $1 WHERE id = $2 AND review_started_at = $3",
            &[Bind::Int(now_ms), Bind::Text(Some(id)), Bind::Int(claimed_at_ms)],
        )
        .await
    }

    /// Gives the review claim taken or last renewed at `claimed_at_ms` back without a verdict (the
    /// reviewer was unavailable): nothing counted. A claim taken over meanwhile is left to its holder.
    pub async fn abandon_review(&self, id: &str, claimed_at_ms: i64) -> Result<(), StoreError> {
        self.transition(
            "abandoning a review",
            "UPDATE tasks SET review_started_at = NULL WHERE id = $1 AND review_started_at = $2",
            &[Bind::Text(Some(id)), Bind::Int(claimed_at_ms)],
        )
        .await?;
        Ok(())
    }

    /// Applies a verdict to `submission`, under the review claim taken or last renewed at its
    /// `claimed_at_ms`, and stores the `review` that reached it in the same database transaction: both or
    /// neither, so that a crash cannot leave a submission reviewed on record but never applied (its
    /// vendor could not submit it again). None if the claim went stale and was taken over, or this
    /// review's attempt is already on record. Approval decides the release; a rejection counts, and the
    /// `max_rejections`-th decides the refund. Returns the rejection count after it.
    pub async fn apply_verdict(
        &self,
        submission: Submission<'_>,
        verdict: &Verdict,
        review: Option<&ReviewRecord>,
        max_rejections: i32,
        now_ms: i64,
    ) -> Result<Option<i32>, StoreError> {
        let Submission { task_id: id, claimed_at_ms, result } = submission;
        let mut tx = self.pool().begin().await.context("beginning to apply a verdict")?;
        if let Some(review) = review
            && !insert_review(&mut tx, review).await?
        {
            return Ok(None);
        }
        let (context, sql, binds) = if verdict.approved {
            (
                "approving a task",
                "UPDATE tasks SET result = $1, review_approved = 1, review_reason = $2, review_started_at = NULL, \
                 status = 'processing', escrow_status = 'releasing', outcome = 'released', updated_at = $3 \
                 WHERE id = $4 AND review_started_at = $5 AND escrow_status = 'deposited'",
                vec![
                    Bind::Text(Some(result)),
                    Bind::Text(Some(&verdict.reason)),
                    Bind::Int(now_ms),
                    Bind::Text(Some(id)),
                    Bind::Int(claimed_at_ms),
                ],
            )
        } else {
            (
                "rejecting a task",
                "UPDATE tasks SET result = $1, review_approved = 0, review_reason = $2, review_started_at = NULL, \
                 status = 'rejected', review_reject_count = review_reject_count + 1, \
                 escrow_status = CASE WHEN review_reject_count + 1 >= $3 THEN 'refunding' ELSE 'deposited' END, \
                 outcome = CASE WHEN review_reject_count + 1 >= $3 THEN 'rejected' ELSE NULL END, \
                 updated_at = $4 WHERE id = $5 AND review_started_at = $6 AND escrow_status = 'deposited'",
                vec![
                    Bind::Text(Some(result)),
                    Bind::Text(Some(&verdict.reason)),
                    Bind::Int(i64::from(max_rejections)),
                    Bind::Int(now_ms),
                    Bind::Text(Some(id)),
                    Bind::Int(claimed_at_ms),
                ],
            )
        };
        if bound(sql, &binds).execute(&mut *tx).await.context(context)?.rows_affected() != 1 {
            return Ok(None);
        }
        tx.commit().await.context("applying a verdict")?;
        Ok(self.task(id).await?.map(|task| task.review_reject_count))
    }

    /// The vendor gives up: -> failed, and the refund is decided.
    pub async fn fail_task(&self, id: &str, message: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.transition(
            "failing a task",
            "UPDATE tasks SET status = 'failed', error_message = $1, escrow_status = 'refunding', outcome = 'failed', \
             updated_at = $2 \
             WHERE id = $3 AND status IN ('pending', 'processing', 'rejected') AND escrow_status = 'deposited' \
             AND review_started_at IS NULL",
            &[Bind::Text(Some(message)), Bind::Int(now_ms), Bind::Text(Some(id))],
        )
        .await
    }

    /// The deposit expired unresolved: the refund is decided.
    pub async fn expire_task(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.transition(
            "expiring a task",
            "UPDATE tasks SET error_message = COALESCE(error_message, 'the deposit expired before the work was approved'), \
             escrow_status = 'refunding', outcome = 'expired', updated_at = $1 WHERE id = $2 \
             AND escrow_status = 'deposited' AND expires_at > 0 AND expires_at <= $1",
            &[Bind::Int(now_ms), Bind::Text(Some(id))],
        )
        .await
    }

    /// The chain confirmed where the money went (by our transaction `tx`, or by someone else's, e.g. a
    /// buyer's on-chain reclaim): the task becomes final and its reputation feedback is due.
    pub async fn confirm_escrow(
        &self,
        id: &str,
        outcome: EscrowStatus,
        tx: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (sql, context): (&'static str, &'static str) = match outcome {
            EscrowStatus::Released => (
                "UPDATE tasks SET escrow_status = 'released', status = 'completed', escrow_tx = $1, \
                 outcome = COALESCE(outcome, 'released'), \
                 feedback_status = 'pending', updated_at = $2 WHERE id = $3 \
                 AND escrow_status IN ('deposited', 'releasing', 'refunding')",
                "confirming a release",
            ),
            EscrowStatus::Refunded => (
                "UPDATE tasks SET escrow_status = 'refunded', escrow_tx = $1, feedback_status = 'pending', \
                 outcome = COALESCE(outcome, 'expired'), \
                 status = CASE WHEN status IN ('pending', 'processing') THEN 'failed' ELSE status END, \
                 updated_at = $2 WHERE id = $3 AND escrow_status IN ('deposited', 'releasing', 'refunding')",
                "confirming a refund",
            ),
            other => {
                return Err(StoreError::Corrupt {
                    context: "confirming escrow",
                    detail: format!("{other:?} is not final"),
                });
            }
        };
        self.transition(context, sql, &[Bind::Text(tx), Bind::Int(now_ms), Bind::Text(Some(id))]).await
    }

    /// An approved release that can no longer happen (the deposit expired first; the escrow then only
    /// refunds) becomes a refund.
    pub async fn refund_instead_of_release(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.transition(
            "turning a release into a refund",
            "UPDATE tasks SET escrow_status = 'refunding', outcome = 'expired', error_message = \
             COALESCE(error_message, 'approved, but the deposit expired before it was released'), updated_at = $1 \
             WHERE id = $2 AND escrow_status = 'releasing'",
            &[Bind::Int(now_ms), Bind::Text(Some(id))],
        )
        .await
    }

    /// The reputation feedback for a final task is done: `sent`, or `skipped` when the registry refuses
    /// it for good (e.g. the platform key owns the agent, and self-feedback is forbidden).
    pub async fn finish_feedback(&self, id: &str, sent: bool) -> Result<(), StoreError> {
        let sql = if sent {
            "UPDATE tasks SET feedback_status = 'sent' WHERE id = $1"
        } else {
            "UPDATE tasks SET feedback_status = 'skipped' WHERE id = $1"
        };
        self.transition("noting feedback", sql, &[Bind::Text(Some(id))]).await?;
        Ok(())
    }
}

/// A submission under review: the task's, under the review claim taken or last renewed at
/// `claimed_at_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Submission<'a> {
    pub task_id: &'a str,
    pub claimed_at_ms: i64,
    pub result: &'a str,
}

/// `sql` with `binds` bound in order.
fn bound<'q>(sql: &'static str, binds: &[Bind<'_>]) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for &bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind(text.map(str::to_owned)),
            Bind::Int(int) => query.bind(int),
        };
    }
    query
}

#[derive(Clone, Copy)]
enum Bind<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

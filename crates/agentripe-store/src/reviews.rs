//! The reviewer's audit trail.

use crate::{Context, Store, StoreError};

/// A stored verdict and what produced it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ReviewRecord {
    pub task_id: String,
    pub attempt: i32,
    pub model: String,
    pub prompt_version: String,
    pub input_hash: String,
    approved: i32,
    pub reason: String,
    pub latency_ms: i64,
    pub total_tokens: Option<i64>,
    pub created_at: i64,
}

impl ReviewRecord {
    #[allow(clippy::too_many_arguments, reason = "one field per audited fact")]
    pub fn new(
        task_id: &str,
        attempt: i32,
        model: &str,
        prompt_version: &str,
        input_hash: &str,
        approved: bool,
        reason: &str,
        latency_ms: i64,
        total_tokens: Option<i64>,
        created_at: i64,
    ) -> Self {
        Self {
            task_id: task_id.into(),
            attempt,
            model: model.into(),
            prompt_version: prompt_version.into(),
            input_hash: input_hash.into(),
            approved: i32::from(approved),
            reason: reason.into(),
            latency_ms,
            total_tokens,
            created_at,
        }
    }

    pub fn approved(&self) -> bool {
        self.approved != 0
    }
}

/// Stores a verdict on `connection` (a transaction's); `false` if this attempt is already on record.
pub(crate) async fn insert_review(
    connection: &mut sqlx::AnyConnection,
    review: &ReviewRecord,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO reviews (task_id, attempt, model, prompt_version, input_hash, approved, reason, latency_ms, \
         total_tokens, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(&review.task_id)
    .bind(review.attempt)
    .bind(&review.model)
    .bind(&review.prompt_version)
    .bind(&review.input_hash)
    .bind(review.approved)
    .bind(&review.reason)
    .bind(review.latency_ms)
    .bind(review.total_tokens)
    .bind(review.created_at)
    .execute(connection)
    .await
    .context("storing a review")?;
    Ok(result.rows_affected() == 1)
}

impl Store {
    /// A task's reviews, oldest first.
    pub async fn reviews(&self, task_id: &str) -> Result<Vec<ReviewRecord>, StoreError> {
        sqlx::query_as(
            "SELECT task_id, attempt, model, prompt_version, input_hash, approved, reason, latency_ms, total_tokens, \
             created_at FROM reviews WHERE task_id = $1 ORDER BY attempt",
        )
        .bind(task_id)
        .fetch_all(self.pool())
        .await
        .context("reading reviews")
    }
}

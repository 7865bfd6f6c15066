//! Tasks: one per recorded deposit, keyed by the deposit id (the settlement transaction hash).

use std::str::FromStr;

use sqlx::{Any, Transaction};

use crate::{Context, Store, StoreError};

/// Where the vendor's work is (the task states of Agentripe's guide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Rejected,
}

/// Where the task's money is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowStatus {
    /// Locked in the escrow.
    Deposited,
    /// Credited to the vendor agent.
    Released,
    /// Credited back to the buyer.
    Refunded,
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// The stored and wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

text_enum!(TaskStatus {
    Pending => "pending",
    Processing => "processing",
    Completed => "completed",
    Failed => "failed",
    Rejected => "rejected",
});

text_enum!(EscrowStatus { Deposited => "deposited", Released => "released", Refunded => "refunded" });

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
            },
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
             task_metadata, reviewer_request, status, escrow_status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 'deposited', $11, $11) \
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
        .bind(now_ms)
        .execute(&mut **tx)
        .await
        .context("creating a task")?;
        Ok(())
    }
}

impl Store {
    /// A task by id (the deposit id).
    pub async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, agent_id, product_id, buyer, amount, request_payload, task_detail, task_metadata, \
             reviewer_request, status, result, error_message, review_reject_count, escrow_status, created_at, \
             updated_at FROM tasks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .context("reading a task")?;
        row.map(Task::try_from).transpose()
    }
}

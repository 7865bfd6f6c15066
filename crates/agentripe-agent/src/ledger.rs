//! The wallet's ledger on SQLite: the append-only audit log, the payments it signed and the approval
//! queue. Decisions run in `BEGIN IMMEDIATE` transactions, so two processes sharing a wallet (the CLI
//! and the MCP server) cannot both spend the same budget.

use std::{path::Path, str::FromStr, time::Duration};

use alloy::primitives::U256;
use serde::Serialize;
use sqlx::{
    Row, SqliteConnection, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow},
};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the wallet ledger: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the wallet ledger cannot be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the wallet ledger holds a bad amount {0:?}")]
    Amount(String),
}

/// What a payment is for: the server, the agent and its service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    /// The server's origin, `https://host[:port]`.
    pub server: String,
    pub agent_id: String,
    pub service_path: String,
}

/// One line of the audit log.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: i64,
    pub at: u64,
    pub kind: String,
    pub rule: String,
    pub detail: String,
    pub server: Option<String>,
    pub agent_id: Option<String>,
    pub service_path: Option<String>,
    pub amount: Option<String>,
    pub pay_to: Option<String>,
    pub asset: Option<String>,
    pub chain_id: Option<u64>,
    pub balance: Option<String>,
    pub approval_id: Option<i64>,
    pub nonce: Option<String>,
    pub task_id: Option<String>,
}

impl Event {
    pub fn new(at: u64, kind: &str, rule: &str, detail: impl Into<String>) -> Self {
        Self { at, kind: kind.into(), rule: rule.into(), detail: detail.into(), ..Self::default() }
    }

    pub fn about(mut self, purchase: &Purchase) -> Self {
        self.server = Some(purchase.server.clone());
        self.agent_id = Some(purchase.agent_id.clone());
        self.service_path = Some(purchase.service_path.clone());
        self
    }
}

/// A payment the wallet signed.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedPayment {
    pub nonce: String,
    pub payer: String,
    pub signed_at: u64,
    pub valid_before: u64,
    #[serde(flatten)]
    pub purchase: Purchase,
    pub amount: String,
    #[serde(skip)]
    pub header: String,
    pub outcome: String,
    pub task_id: Option<String>,
}

/// A payment waiting for, or decided by, a person.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: i64,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(flatten)]
    pub purchase: Purchase,
    pub amount: String,
    pub reason: String,
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct Ledger {
    pool: SqlitePool,
}

pub fn parse_units(text: &str) -> Result<U256, LedgerError> {
    U256::from_str(text).map_err(|_| LedgerError::Amount(text.into()))
}

fn seconds(row: &SqliteRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(row.try_get::<i64, _>(column)?.max(0) as u64)
}

fn purchase(row: &SqliteRow) -> Result<Purchase, sqlx::Error> {
    Ok(Purchase {
        server: row.try_get("server")?,
        agent_id: row.try_get("agent_id")?,
        service_path: row.try_get("service_path")?,
    })
}

fn signed_payment(row: &SqliteRow) -> Result<SignedPayment, sqlx::Error> {
    Ok(SignedPayment {
        nonce: row.try_get("nonce")?,
        payer: row.try_get("payer")?,
        signed_at: seconds(row, "signed_at")?,
        valid_before: seconds(row, "valid_before")?,
        purchase: purchase(row)?,
        amount: row.try_get("amount")?,
        header: row.try_get("header")?,
        outcome: row.try_get("outcome")?,
        task_id: row.try_get("task_id")?,
    })
}

fn approval(row: &SqliteRow) -> Result<Approval, sqlx::Error> {
    Ok(Approval {
        id: row.try_get("id")?,
        created_at: seconds(row, "created_at")?,
        expires_at: seconds(row, "expires_at")?,
        purchase: purchase(row)?,
        amount: row.try_get("amount")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
    })
}

fn event(row: &SqliteRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: row.try_get("id")?,
        at: seconds(row, "at")?,
        kind: row.try_get("kind")?,
        rule: row.try_get("rule")?,
        detail: row.try_get("detail")?,
        server: row.try_get("server")?,
        agent_id: row.try_get("agent_id")?,
        service_path: row.try_get("service_path")?,
        amount: row.try_get("amount")?,
        pay_to: row.try_get("pay_to")?,
        asset: row.try_get("asset")?,
        chain_id: row.try_get::<Option<i64>, _>("chain_id")?.map(|id| id.max(0) as u64),
        balance: row.try_get("balance")?,
        approval_id: row.try_get("approval_id")?,
        nonce: row.try_get("nonce")?,
        task_id: row.try_get("task_id")?,
    })
}

impl Ledger {
    /// Opens (creating) the ledger file at `path`.
    pub async fn open(path: &Path) -> Result<Self, LedgerError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }

    /// A write transaction taken at once, so that what it reads stays true until it commits.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, LedgerError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The audit log, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<Event>, LedgerError> {
        let rows = sqlx::query("SELECT * FROM events ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(event).collect::<Result<_, _>>()?)
    }

    /// The payments signed, newest first.
    pub async fn payments(&self, limit: i64) -> Result<Vec<SignedPayment>, LedgerError> {
        let rows = sqlx::query("SELECT * FROM payments ORDER BY signed_at DESC, nonce LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(signed_payment).collect::<Result<_, _>>()?)
    }

    /// Notes what became of a signed payment (once it is known), in the payment and the audit log.
    pub async fn settle_outcome(
        &self,
        nonce: &str,
        outcome: &str,
        task_id: Option<&str>,
        at: u64,
    ) -> Result<(), LedgerError> {
        let mut transaction = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE payments SET outcome = ?, task_id = ? WHERE nonce = ? AND outcome = 'unknown'",
        )
        .bind(outcome)
        .bind(task_id)
        .bind(nonce)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if changed == 1 {
            let mut event =
                Event::new(at, "outcome", outcome, format!("the server reports the payment {outcome}"));
            event.nonce = Some(nonce.into());
            event.task_id = task_id.map(str::to_owned);
            append(&mut transaction, &event).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Approvals, newest first; only the pending ones unless `all`.
    pub async fn approvals(&self, all: bool, now: u64) -> Result<Vec<Approval>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM approvals WHERE ? OR (status = 'pending' AND expires_at > ?) ORDER BY id DESC LIMIT 200",
        )
        .bind(all)
        .bind(now as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(approval).collect::<Result<_, _>>()?)
    }

    /// A person's verdict on a pending approval; `None` when it is not pending (or has expired).
    pub async fn decide_approval(
        &self,
        id: i64,
        approve: bool,
        by: &str,
        now: u64,
    ) -> Result<Option<Approval>, LedgerError> {
        let mut transaction = self.begin().await?;
        let status = if approve { "approved" } else { "rejected" };
        let row = sqlx::query(
            "UPDATE approvals SET status = ? WHERE id = ? AND status = 'pending' AND expires_at > ? RETURNING *",
        )
        .bind(status)
        .bind(id)
        .bind(now as i64)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let decided = approval(&row)?;
        let mut event =
            Event::new(now, status, by, format!("approval #{id} {status}")).about(&decided.purchase);
        event.amount = Some(decided.amount.clone());
        event.approval_id = Some(id);
        append(&mut transaction, &event).await?;
        transaction.commit().await?;
        Ok(Some(decided))
    }

    /// Lifts a pause; the agent whose first payment tripped it counts as known from now on. `None` when
    /// the wallet was not paused.
    pub async fn resume(&self, by: &str, now: u64) -> Result<Option<Event>, LedgerError> {
        let mut transaction = self.begin().await?;
        let Some(pause) = paused(&mut transaction).await? else { return Ok(None) };
        let mut event = Event::new(now, "resumed", by, format!("resumed after: {}", pause.detail));
        event.server = pause.server.clone();
        event.agent_id = pause.agent_id.clone();
        append(&mut transaction, &event).await?;
        transaction.commit().await?;
        Ok(Some(pause))
    }

    /// What was signed in the last hour and the last day.
    pub async fn spent(&self, now: u64) -> Result<(U256, U256), LedgerError> {
        let mut connection = self.pool.acquire().await?;
        let (_, hour) = signed_since(&mut connection, now.saturating_sub(3_600)).await?;
        let (_, day) = signed_since(&mut connection, now.saturating_sub(86_400)).await?;
        Ok((hour, day))
    }

    pub async fn paused(&self) -> Result<Option<Event>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        paused(&mut connection).await
    }
}

pub async fn append(connection: &mut SqliteConnection, event: &Event) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO events (at, kind, rule, detail, server, agent_id, service_path, amount, pay_to, asset, \
         chain_id, balance, approval_id, nonce, task_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event.at as i64)
    .bind(&event.kind)
    .bind(&event.rule)
    .bind(&event.detail)
    .bind(&event.server)
    .bind(&event.agent_id)
    .bind(&event.service_path)
    .bind(&event.amount)
    .bind(&event.pay_to)
    .bind(&event.asset)
    .bind(event.chain_id.map(|id| id as i64))
    .bind(&event.balance)
    .bind(event.approval_id)
    .bind(&event.nonce)
    .bind(&event.task_id)
    .execute(connection)
    .await?;
    Ok(())
}

/// The pause in force, if the last pause was not followed by a resume.
pub async fn paused(connection: &mut SqliteConnection) -> Result<Option<Event>, LedgerError> {
    let row =
        sqlx::query("SELECT * FROM events WHERE kind IN ('paused', 'resumed') ORDER BY id DESC LIMIT 1")
            .fetch_optional(connection)
            .await?;
    Ok(row.map(|row| event(&row)).transpose()?.filter(|event| event.kind == "paused"))
}

/// When a person last resumed signing: the brakes count from there.
pub async fn last_resume(connection: &mut SqliteConnection) -> Result<u64, LedgerError> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT MAX(at) FROM events WHERE kind = 'resumed'").fetch_one(connection).await?;
    Ok(at.unwrap_or(0).max(0) as u64)
}

/// What the wallet signed after `since`: their number and their sum. Every signature counts, whatever
/// the server says became of it: a server that answers "refused" may still settle the authorization.
pub async fn signed_since(connection: &mut SqliteConnection, since: u64) -> Result<(u64, U256), LedgerError> {
    let amounts: Vec<String> = sqlx::query_scalar("SELECT amount FROM payments WHERE signed_at > ?")
        .bind(since as i64)
        .fetch_all(connection)
        .await?;
    let mut sum = U256::ZERO;
    for amount in &amounts {
        sum = sum.saturating_add(parse_units(amount)?);
    }
    Ok((amounts.len() as u64, sum))
}

/// The highest balance the wallet saw after `since`.
pub async fn highest_balance_since(
    connection: &mut SqliteConnection,
    since: u64,
) -> Result<U256, LedgerError> {
    let balances: Vec<String> =
        sqlx::query_scalar("SELECT balance FROM events WHERE at > ? AND balance IS NOT NULL")
            .bind(since as i64)
            .fetch_all(connection)
            .await?;
    balances.iter().try_fold(U256::ZERO, |highest, balance| Ok(highest.max(parse_units(balance)?)))
}

/// Whether the wallet has bought from this agent on this server before, or a person acknowledged it by
/// resuming after its first payment paused the wallet.
pub async fn knows_agent(
    connection: &mut SqliteConnection,
    purchase: &Purchase,
) -> Result<bool, LedgerError> {
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM payments WHERE server = ?1 AND agent_id = ?2 AND outcome = 'recorded') \
         OR EXISTS (SELECT 1 FROM events WHERE kind = 'resumed' AND server = ?1 AND agent_id = ?2)",
    )
    .bind(&purchase.server)
    .bind(&purchase.agent_id)
    .fetch_one(connection)
    .await?;
    Ok(known)
}

/// An approval for exactly this purchase and amount in `status`, unexpired.
pub async fn approval_for(
    connection: &mut SqliteConnection,
    purchase: &Purchase,
    amount: U256,
    status: &str,
    now: u64,
) -> Result<Option<Approval>, LedgerError> {
    let row = sqlx::query(
        "SELECT * FROM approvals WHERE server = ? AND agent_id = ? AND service_path = ? AND amount = ? \
         AND status = ? AND expires_at > ? ORDER BY id LIMIT 1",
    )
    .bind(&purchase.server)
    .bind(&purchase.agent_id)
    .bind(&purchase.service_path)
    .bind(amount.to_string())
    .bind(status)
    .bind(now as i64)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(|row| approval(&row)).transpose()?)
}

/// Spends an approval (found approved in the same transaction): it signs one payment, never two.
pub async fn use_approval(connection: &mut SqliteConnection, id: i64) -> Result<(), LedgerError> {
    sqlx::query("UPDATE approvals SET status = 'used' WHERE id = ? AND status = 'approved'")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}

pub async fn queue_approval(
    connection: &mut SqliteConnection,
    purchase: &Purchase,
    amount: U256,
    reason: &str,
    now: u64,
    expires_at: u64,
) -> Result<i64, LedgerError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO approvals (created_at, expires_at, server, agent_id, service_path, amount, reason) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(now as i64)
    .bind(expires_at as i64)
    .bind(&purchase.server)
    .bind(&purchase.agent_id)
    .bind(&purchase.service_path)
    .bind(amount.to_string())
    .bind(reason)
    .fetch_one(connection)
    .await?;
    Ok(id)
}

pub async fn record_payment(
    connection: &mut SqliteConnection,
    payment: &SignedPayment,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO payments (nonce, payer, signed_at, valid_before, server, agent_id, service_path, amount, header) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&payment.nonce)
    .bind(&payment.payer)
    .bind(payment.signed_at as i64)
    .bind(payment.valid_before as i64)
    .bind(&payment.purchase.server)
    .bind(&payment.purchase.agent_id)
    .bind(&payment.purchase.service_path)
    .bind(&payment.amount)
    .bind(&payment.header)
    .execute(connection)
    .await?;
    Ok(())
}

//! Agents registered through the API, minted by the server and handed to their owners.

use crate::{Context, Store, StoreError};

/// Where a registration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationStatus {
    /// The server is collecting the registration fee (`fee_payment`).
    Paying,
    /// The server is minting the agent to itself.
    Minting,
    /// Minted; the server is handing it to its owner.
    Transferring,
    /// The owner holds its agent.
    Done,
    /// The fee could not be collected, or the mint would revert: nothing was minted; why is in `problem`.
    Failed,
}

crate::text_enum!(RegistrationStatus {
    Paying => "paying",
    Minting => "minting",
    Transferring => "transferring",
    Done => "done",
    Failed => "failed",
});

/// A registration on its way.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Registration {
    pub id: i64,
    pub owner: String,
    pub uri: String,
    pub agent_id: Option<String>,
    pub register_tx: Option<String>,
    status: String,
    /// Why it failed.
    pub problem: Option<String>,
    /// The registration fee's x402 payment, to collect before minting.
    pub fee_payment: Option<String>,
}

impl Registration {
    /// Where it is.
    pub fn status(&self) -> Result<RegistrationStatus, StoreError> {
        self.status
            .parse()
            .map_err(|detail| StoreError::Corrupt { context: "reading a registration", detail })
    }
}

impl Store {
    /// Stores a registration about to be minted (or, with a fee, about to collect it), reserving `gas` of
    /// the operator's budget for it.
    pub async fn begin_registration(
        &self,
        owner: &str,
        uri: &str,
        gas: i64,
        fee_payment: Option<&str>,
        now_ms: i64,
    ) -> Result<Registration, StoreError> {
        let status =
            if fee_payment.is_some() { RegistrationStatus::Paying } else { RegistrationStatus::Minting };
        sqlx::query_as(
            "INSERT INTO registrations (owner, uri, status, gas, fee_payment, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id, owner, uri, agent_id, register_tx, status, problem, fee_payment",
        )
        .bind(owner)
        .bind(uri)
        .bind(status.as_str())
        .bind(gas)
        .bind(fee_payment)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await
        .context("storing a registration")
    }

    /// The agent is minted (to the server) by `register_tx`: next, the transfer to its owner.
    pub async fn registration_minted(
        &self,
        id: i64,
        agent_id: &str,
        register_tx: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE registrations SET agent_id = $1, register_tx = $2, status = 'transferring', updated_at = $3 \
             WHERE id = $4 AND status = 'minting'",
        )
        .bind(agent_id)
        .bind(register_tx)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await
        .context("noting a mint")?;
        Ok(())
    }

    /// The owner holds its agent.
    pub async fn registration_done(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE registrations SET status = 'done', updated_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await
            .context("finishing a registration")?;
        Ok(())
    }

    /// The fee is collected: next, the mint.
    pub async fn registration_fee_paid(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE registrations SET status = 'minting', updated_at = $1 WHERE id = $2 AND status = 'paying'")
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await
            .context("noting a registration fee")?;
        Ok(())
    }

    /// The fee could not be collected, or the mint would revert: the registration ends here, with why.
    pub async fn registration_failed(&self, id: i64, problem: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE registrations SET status = 'failed', problem = $1, updated_at = $2 \
             WHERE id = $3 AND status IN ('paying', 'minting')",
        )
        .bind(problem)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await
        .context("failing a registration")?;
        Ok(())
    }

    /// Puts a registration the reconciler could not advance at the back of its queue.
    pub async fn touch_registration(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE registrations SET updated_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await
            .context("touching a registration")?;
        Ok(())
    }

    /// How many registrations `owner` began since `since_ms`, failed ones included.
    pub async fn registrations_by(&self, owner: &str, since_ms: i64) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM registrations WHERE owner = $1 AND created_at >= $2")
            .bind(owner)
            .bind(since_ms)
            .fetch_one(self.pool())
            .await
            .context("counting a signer's registrations")
    }

    /// The gas reserved by registrations since `since_ms` (failed ones minted nothing and reserve nothing).
    pub async fn registration_gas_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        let gas: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(gas) AS BIGINT) FROM registrations WHERE created_at >= $1 AND status <> 'failed'",
        )
        .bind(since_ms)
        .fetch_one(self.pool())
        .await
        .context("summing the registrations' gas")?;
        Ok(gas.unwrap_or(0))
    }

    /// Marks a signed header used until `expires_at`; false when it already was (a replay). Forgets
    /// the headers whose window has closed.
    pub async fn use_signature(
        &self,
        signature: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM used_signatures WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await
            .context("forgetting expired signatures")?;
        let inserted = sqlx::query(
            "INSERT INTO used_signatures (signature, expires_at) VALUES ($1, $2) ON CONFLICT (signature) DO NOTHING",
        )
        .bind(signature)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .context("noting a used signature")?;
        Ok(inserted.rows_affected() == 1)
    }

    /// A registration by id.
    pub async fn registration(&self, id: i64) -> Result<Option<Registration>, StoreError> {
        sqlx::query_as(
            "SELECT id, owner, uri, agent_id, register_tx, status, problem, fee_payment FROM registrations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .context("reading a registration")
    }

    /// Registrations not finished and not touched for a while: work for the reconciler.
    pub async fn stalled_registrations(&self, before_ms: i64) -> Result<Vec<Registration>, StoreError> {
        sqlx::query_as(
            "SELECT id, owner, uri, agent_id, register_tx, status, problem, fee_payment FROM registrations \
             WHERE status IN ('paying', 'minting', 'transferring') AND updated_at < $1 ORDER BY updated_at LIMIT 50",
        )
        .bind(before_ms)
        .fetch_all(self.pool())
        .await
        .context("listing stalled registrations")
    }
}

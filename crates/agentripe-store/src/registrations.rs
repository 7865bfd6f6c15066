//! Agents registered through the API, minted by the server and handed to their owners.

use crate::{Context, Store, StoreError};

/// Where a registration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationStatus {
    /// The server is minting the agent to itself.
    Minting,
    /// Minted; the server is handing it to its owner.
    Transferring,
    /// The owner holds its agent.
    Done,
}

crate::text_enum!(RegistrationStatus {
    Minting => "minting",
    Transferring => "transferring",
    Done => "done",
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
    /// Stores a registration about to be minted.
    pub async fn begin_registration(
        &self,
        owner: &str,
        uri: &str,
        now_ms: i64,
    ) -> Result<Registration, StoreError> {
        sqlx::query_as(
            "INSERT INTO registrations (owner, uri, status, created_at, updated_at) VALUES ($1, $2, 'minting', $3, $3) \
             RETURNING id, owner, uri, agent_id, register_tx, status",
        )
        .bind(owner)
        .bind(uri)
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

    /// A registration by id.
    pub async fn registration(&self, id: i64) -> Result<Option<Registration>, StoreError> {
        sqlx::query_as(
            "SELECT id, owner, uri, agent_id, register_tx, status FROM registrations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .context("reading a registration")
    }

    /// Registrations not finished and not touched for a while: work for the reconciler.
    pub async fn stalled_registrations(&self, before_ms: i64) -> Result<Vec<Registration>, StoreError> {
        sqlx::query_as(
            "SELECT id, owner, uri, agent_id, register_tx, status FROM registrations \
             WHERE status <> 'done' AND updated_at < $1 ORDER BY id LIMIT 50",
        )
        .bind(before_ms)
        .fetch_all(self.pool())
        .await
        .context("listing stalled registrations")
    }
}

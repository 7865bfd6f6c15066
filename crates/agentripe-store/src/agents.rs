//! The agent index: what the identity registry's logs said, with each agent's registration file.

use crate::{Context, Store, StoreError};

/// An indexed agent.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct IndexedAgent {
    pub agent_id: String,
    pub owner: String,
    pub uri: String,
    /// The AgentURIData JSON, when readable.
    pub data: Option<String>,
    /// Why the registration file was not readable.
    pub problem: Option<String>,
    pub updated_at: i64,
}

impl Store {
    /// Inserts or refreshes an agent.
    pub async fn upsert_agent(&self, agent: &IndexedAgent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agents (agent_id, owner, uri, data, problem, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (agent_id) DO UPDATE SET owner = excluded.owner, uri = excluded.uri, data = excluded.data, \
             problem = excluded.problem, updated_at = excluded.updated_at",
        )
        .bind(&agent.agent_id)
        .bind(&agent.owner)
        .bind(&agent.uri)
        .bind(&agent.data)
        .bind(&agent.problem)
        .bind(agent.updated_at)
        .execute(self.pool())
        .await
        .context("indexing an agent")?;
        Ok(())
    }

    /// Records that an agent's registration file cannot be fetched now, keeping what was last read of it:
    /// a host that is down for a while does not delist an agent.
    pub async fn mark_agent_unreadable(
        &self,
        agent_id: &str,
        problem: &str,
        updated_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agents (agent_id, owner, uri, data, problem, updated_at) VALUES ($1, '', '', NULL, $2, $3) \
             ON CONFLICT (agent_id) DO UPDATE SET problem = excluded.problem, updated_at = excluded.updated_at",
        )
        .bind(agent_id)
        .bind(problem)
        .bind(updated_at)
        .execute(self.pool())
        .await
        .context("marking an agent unreadable")?;
        Ok(())
    }

    /// Up to `limit` agents whose registration file could not be read, last tried before `before`, oldest first.
    pub async fn agents_to_retry(&self, before: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT agent_id FROM agents WHERE problem IS NOT NULL AND updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("listing agents to re-read")
    }

    /// Forgets an agent the registry no longer has (burned).
    pub async fn remove_agent(&self, agent_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM agents WHERE agent_id = $1")
            .bind(agent_id)
            .execute(self.pool())
            .await
            .context("removing an agent")?;
        Ok(())
    }

    /// Agents with a readable registration file, by id, `limit` from `offset`; and how many there are.
    pub async fn listed_agents(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<IndexedAgent>, i64), StoreError> {
        let agents = sqlx::query_as(
            "SELECT agent_id, owner, uri, data, problem, updated_at FROM agents WHERE data IS NOT NULL \
             ORDER BY LENGTH(agent_id), agent_id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await
        .context("listing agents")?;
        let total = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE data IS NOT NULL")
            .fetch_one(self.pool())
            .await
            .context("counting agents")?;
        Ok((agents, total))
    }

    /// Where an index continues (the next block to read), if it started.
    pub async fn index_cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT next_block FROM index_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .context("reading an index cursor")
    }

    /// Moves an index forward.
    pub async fn set_index_cursor(&self, name: &str, next_block: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO index_cursors (name, next_block) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET next_block = excluded.next_block",
        )
        .bind(name)
        .bind(next_block)
        .execute(self.pool())
        .await
        .context("moving an index cursor")?;
        Ok(())
    }
}

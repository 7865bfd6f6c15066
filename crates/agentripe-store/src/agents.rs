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

/// One thing an agent sells over x402, as discovery lists it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentResource {
    pub agent_id: String,
    /// Its place in the agent's catalog.
    pub position: i64,
    pub agent_name: String,
    pub path: String,
    /// As the catalog writes it (`$0.10`).
    pub price: String,
    /// In token units.
    pub amount: i64,
    pub description: String,
}

#[derive(sqlx::FromRow)]
struct ResourceRow {
    #[sqlx(flatten)]
    resource: AgentResource,
    updated_at: i64,
    total: i64,
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    #[sqlx(flatten)]
    agent: IndexedAgent,
    total: i64,
}

/// How many words of a query are looked up; the rest are ignored.
pub const MAX_QUERY_WORDS: usize = 8;

/// `AND <alias>.agent_id IN (...)` once per word, each matching the words that start with it, with the
/// bounds' placeholders numbered from `first`; and the bounds.
fn having_words(alias: &str, words: &[String], first: usize) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    for (i, word) in words.iter().take(MAX_QUERY_WORDS).enumerate() {
        let (low, high) = (first + 2 * i, first + 2 * i + 1);
        sql.push_str(&format!(
            " AND {alias}.agent_id IN (SELECT agent_id FROM agent_words WHERE word >= ${low} AND word < ${high})"
        ));
        binds.push(word.clone());
        binds.push(after_prefix(word));
    }
    (sql, binds)
}

/// The least string greater than every string that starts with `prefix`.
fn after_prefix(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(u32::from(last) + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Only when `prefix` is empty or all U+10FFFF: nothing sorts after it.
    char::MAX.to_string().repeat(prefix.chars().count() + 1)
}

impl Store {
    /// Inserts or refreshes an agent, with the words it is found by and what it sells, in one transaction.
    pub async fn index_agent(
        &self,
        agent: &IndexedAgent,
        words: &[String],
        resources: &[AgentResource],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.context("beginning to index an agent")?;
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
        .execute(&mut *tx)
        .await
        .context("indexing an agent")?;
        for table in ["agent_words", "agent_resources"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE agent_id = $1")))
                .bind(&agent.agent_id)
                .execute(&mut *tx)
                .await
                .context("forgetting an agent's words and resources")?;
        }
        for word in words {
            sqlx::query("INSERT INTO agent_words (word, agent_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(word)
                .bind(&agent.agent_id)
                .execute(&mut *tx)
                .await
                .context("indexing an agent's words")?;
        }
        for resource in resources {
            sqlx::query(
                "INSERT INTO agent_resources (agent_id, position, agent_name, path, price, amount, description) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&agent.agent_id)
            .bind(resource.position)
            .bind(&resource.agent_name)
            .bind(&resource.path)
            .bind(&resource.price)
            .bind(resource.amount)
            .bind(&resource.description)
            .execute(&mut *tx)
            .await
            .context("indexing an agent's resources")?;
        }
        tx.commit().await.context("committing an indexed agent")?;
        Ok(())
    }

    /// Agents with a readable registration file in which every one of `words` starts a word (by id),
    /// `limit` from `offset`; and how many there are.
    pub async fn search_agents(
        &self,
        words: &[String],
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<IndexedAgent>, i64), StoreError> {
        let (filter, binds) = having_words("a", words, 1);
        let from = format!("FROM agents a WHERE a.data IS NOT NULL{filter}");
        let next = binds.len() + 1;
        // The total comes with the page, from the same snapshot: an agent indexed meanwhile is in both
        // or in neither.
        let sql = format!(
            "SELECT a.agent_id, a.owner, a.uri, a.data, a.problem, a.updated_at, COUNT(*) OVER () AS total {from} \
             ORDER BY LENGTH(a.agent_id), a.agent_id LIMIT ${next} OFFSET ${}",
            next + 1
        );
        let mut query = sqlx::query_as::<_, AgentRow>(sqlx::AssertSqlSafe(sql));
        for bind in &binds {
            query = query.bind(bind.clone());
        }
        let rows = query.bind(limit).bind(offset).fetch_all(self.pool()).await.context("searching agents")?;
        let total = match rows.first() {
            Some(row) => row.total,
            // An empty first page is the count, from the same snapshot: counting again could find an
            // agent indexed meanwhile, and answer a total with none listed.
            None if offset == 0 => 0,
            None => self.count(&from, None, &binds).await?,
        };
        Ok((rows.into_iter().map(|row| row.agent).collect(), total))
    }

    /// What listed agents matching `words` sell at `min_amount` or more, by agent id and catalog order,
    /// `limit` from `offset`; and how many there are; with when each agent was indexed.
    pub async fn search_resources(
        &self,
        words: &[String],
        min_amount: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<(AgentResource, i64)>, i64), StoreError> {
        let (filter, binds) = having_words("r", words, 2);
        let from = format!(
            "FROM agent_resources r JOIN agents a ON a.agent_id = r.agent_id \
             WHERE a.data IS NOT NULL AND r.amount >= $1{filter}"
        );
        let next = binds.len() + 2;
        let sql = format!(
            "SELECT r.agent_id, r.position, r.agent_name, r.path, r.price, r.amount, r.description, a.updated_at, \
             COUNT(*) OVER () AS total {from} \
             ORDER BY LENGTH(r.agent_id), r.agent_id, r.position LIMIT ${next} OFFSET ${}",
            next + 1
        );
        let mut query = sqlx::query_as::<_, ResourceRow>(sqlx::AssertSqlSafe(sql)).bind(min_amount);
        for bind in &binds {
            query = query.bind(bind.clone());
        }
        let rows =
            query.bind(limit).bind(offset).fetch_all(self.pool()).await.context("searching resources")?;
        let total = match rows.first() {
            Some(row) => row.total,
            // An empty first page is the count, from the same snapshot: counting again could find an
            // agent indexed meanwhile, and answer a total with none listed.
            None if offset == 0 => 0,
            None => self.count(&from, Some(min_amount), &binds).await?,
        };
        Ok((rows.into_iter().map(|row| (row.resource, row.updated_at)).collect(), total))
    }

    /// How many a search finds, for a page past its end (which carries no total).
    async fn count(&self, from: &str, first: Option<i64>, binds: &[String]) -> Result<i64, StoreError> {
        let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) {from}")));
        if let Some(first) = first {
            count = count.bind(first);
        }
        for bind in binds {
            count = count.bind(bind.clone());
        }
        count.fetch_one(self.pool()).await.context("counting what a search found")
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

    /// Forgets an agent the registry no longer has (burned), with its words and resources.
    pub async fn remove_agent(&self, agent_id: &str) -> Result<(), StoreError> {
        for table in ["agent_words", "agent_resources", "agents"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE agent_id = $1")))
                .bind(agent_id)
                .execute(self.pool())
                .await
                .context("removing an agent")?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn a_prefix_bounds_exactly_the_words_it_starts() {
        let high = after_prefix("summar");
        assert_eq!(high, "summas");
        for word in ["summar", "summarize", "summarizer", "summarzzz"] {
            assert!(word >= "summar" && word < high.as_str(), "{word}");
        }
        for word in ["summa", "summas", "summb", "sun"] {
            assert!(!(word >= "summar" && word < high.as_str()), "{word}");
        }
        let high = after_prefix("日本");
        assert!("日本語" < high.as_str() && "日本" < high.as_str(), "{high}");
        assert!("日杉" >= high.as_str(), "{high}");
    }
}

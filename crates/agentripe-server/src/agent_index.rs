//! The agent index. ERC-8004 registries cannot be enumerated, so the server follows the identity
//! registry's logs (`Registered`, `URIUpdated`, `Transfer`) from the deployment's start block, in
//! bounded chunks, and stores each touched agent with its registration file. It runs in a loop of its
//! own: a slow or broken registration file costs the index a skipped agent (re-read later), never the
//! cursor, and never delays money.

use std::sync::Arc;

use agentripe_chain::{Deployment, bindings::IERC8004Identity};
use agentripe_store::{AgentResource, IndexedAgent, Store};
use alloy::{
    primitives::{Address, U256},
    providers::{DynProvider, Provider},
    rpc::types::Filter,
    sol_types::SolEvent,
};

use crate::{
    catalog::{Catalog, CatalogError, parse_price},
    pipeline::{PipelineError, RpcError, rpc},
    util::{now_ms, to_i64},
};

/// Blocks per log query: public RPCs cap ranges.
const CHUNK: u64 = 2_000;
/// How long an agent whose registration file could not be read waits before it is read again.
const RETRY_AFTER_MS: i64 = 10 * 60 * 1000;
/// How many such agents one pass re-reads.
const RETRIES_PER_PASS: i64 = 20;

/// The index of the identity registry's agents.
#[derive(Debug)]
pub struct AgentIndex {
    store: Store,
    provider: DynProvider,
    catalog: Arc<Catalog>,
    registry: Address,
    start_block: u64,
    /// To read catalog prices in token units.
    token_decimals: u32,
}

impl AgentIndex {
    pub fn new(
        store: Store,
        provider: DynProvider,
        catalog: Arc<Catalog>,
        deployment: &Deployment,
        token_decimals: u32,
    ) -> Self {
        Self {
            store,
            provider,
            catalog,
            registry: deployment.identity_registry,
            start_block: deployment.start_block,
            token_decimals,
        }
    }

    /// Reads the registry's logs since the last pass and refreshes the agents they touch, then re-reads a
    /// few agents whose registration file could not be read before.
    pub async fn sync(&self) -> Result<usize, PipelineError> {
        let mut refreshed = self.follow_logs().await?;
        let before = now_ms() - RETRY_AFTER_MS;
        for id in self.store.agents_to_retry(before, RETRIES_PER_PASS).await? {
            let id = id.parse().map_err(|_| PipelineError::corrupt(format!("agent {id}"), "not a number"))?;
            index_agent(&self.store, &self.catalog, self.token_decimals, id).await?;
            refreshed += 1;
        }
        Ok(refreshed)
    }

    async fn follow_logs(&self) -> Result<usize, PipelineError> {
        let Self { store, provider, catalog, registry, start_block, token_decimals } = self;
        let (registry, start_block) = (*registry, *start_block);
        // Named after where it started: another registry, or an earlier start block, is a new scan.
        let cursor = format!("identity_registry:{registry}:{start_block}");
        let head = provider.get_block_number().await.map_err(rpc("reading the head"))?;
        let mut from =
            store.index_cursor(&cursor).await?.map_or(start_block, |next| u64::try_from(next).unwrap_or(0));
        let mut refreshed = 0;
        while from <= head {
            let to = (from + CHUNK - 1).min(head);
            let filter = Filter::new().address(registry).from_block(from).to_block(to).event_signature(vec![
                IERC8004Identity::Registered::SIGNATURE_HASH,
                IERC8004Identity::URIUpdated::SIGNATURE_HASH,
                IERC8004Identity::Transfer::SIGNATURE_HASH,
            ]);
            let logs = provider.get_logs(&filter).await.map_err(rpc("reading the registry's logs"))?;
            let mut touched: Vec<U256> = logs
                .iter()
                .filter_map(|log| {
                    let topics = log.topics();
                    // Transfer(from, to, tokenId) carries the agent third; the others first.
                    let topic = if topics.first() == Some(&IERC8004Identity::Transfer::SIGNATURE_HASH) {
                        topics.get(3)
                    } else {
                        topics.get(1)
                    };
                    topic.map(|word| U256::from_be_bytes(word.0))
                })
                .collect();
            touched.sort();
            touched.dedup();
            for id in touched {
                index_agent(store, catalog, *token_decimals, id).await?;
                refreshed += 1;
            }
            store.set_index_cursor(&cursor, to_i64(to + 1)).await?;
            from = to + 1;
        }
        Ok(refreshed)
    }
}

async fn index_agent(store: &Store, catalog: &Catalog, decimals: u32, id: U256) -> Result<(), PipelineError> {
    let agent_id = id.to_string();
    let (indexed, words, resources) = match catalog.fetch(id).await {
        Ok(agent) => {
            let resources = agent
                .data
                .x402_entries()
                .enumerate()
                .filter_map(|(position, entry)| {
                    // Entries whose price does not parse are never sold, so never listed.
                    let amount = parse_price(&entry.price, decimals).ok()?;
                    Some(AgentResource {
                        agent_id: agent_id.clone(),
                        position: i64::try_from(position).ok()?,
                        agent_name: agent.data.name.clone(),
                        path: entry.path.clone(),
                        price: entry.price.clone(),
                        amount: i64::try_from(amount).ok()?,
                        description: entry.description.clone(),
                    })
                })
                .collect();
            let indexed = IndexedAgent {
                agent_id: agent_id.clone(),
                owner: agent.owner.to_checksum(None),
                uri: agent.uri,
                data: Some(
                    serde_json::to_string(&agent.data)
                        .map_err(|error| PipelineError::corrupt(format!("agent {id}"), error.to_string()))?,
                ),
                problem: None,
                updated_at: now_ms(),
            };
            (indexed, agent.data.words(), resources)
        }
        Err(error @ CatalogError::BadRegistration { .. }) => {
            let indexed = IndexedAgent {
                agent_id: agent_id.clone(),
                owner: String::new(),
                uri: String::new(),
                data: None,
                problem: Some(error.to_string()),
                updated_at: now_ms(),
            };
            (indexed, Vec::new(), Vec::new())
        }
        // The file's host is down or too slow: keep what was last read, and read it again later.
        Err(error @ CatalogError::Unreachable { .. }) => {
            store.mark_agent_unreadable(&agent_id, &error.to_string(), now_ms()).await?;
            return Ok(());
        }
        // Burned, or gone: nothing to list.
        Err(CatalogError::UnknownAgent(_)) => return Ok(store.remove_agent(&agent_id).await?),
        // Our RPC's trouble: the pass stops here and the next one starts from this chunk again.
        Err(error @ CatalogError::Unavailable { .. }) => {
            return Err(RpcError { context: "reading an agent", message: error.to_string() }.into());
        }
    };
    store.index_agent(&indexed, &words, &resources).await?;
    Ok(())
}

//! The Agentripe marketplace server: Agentripe's HTTP API over axum, x402 purchases settled into the
//! escrow exactly once, and the durable pipeline that writes to the chain.

mod agent_index;
pub mod catalog;
pub mod chain_writer;
mod env;
mod error;
pub mod facilitator;
pub mod payments;
pub mod payouts;
pub mod registrar;
mod routes;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vendor_auth;

use std::{sync::Arc, time::Duration};

use agentripe_chain::Deployment;
use agentripe_store::Store;
use alloy::{
    providers::{Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use tokio::{net::TcpListener, task::JoinHandle};

pub use env::EnvError;
pub use error::ApiError;

use agentripe_review::{OpenAiReviewer, Reviewer, ReviewerConfig};

use crate::{
    catalog::Catalog,
    chain_writer::{ChainWriter, Confirmation},
    facilitator::{Facilitator, RemoteFacilitator},
    payments::Payments,
    payouts::Payouts,
    registrar::Registrar,
    vendor_auth::Authorizations,
};

/// Who settles payments.
#[derive(Clone, Debug)]
pub enum FacilitatorConfig {
    /// The server submits settlements itself, with this key (the operator's when `None`).
    BuiltIn(Option<PrivateKeySigner>),
    /// A remote x402 facilitator at this base URL.
    Remote(String),
}

/// Everything the server needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// Where the contracts live.
    pub deployment: Deployment,
    /// The escrow operator's key: records, releases, refunds.
    pub operator_key: PrivateKeySigner,
    pub facilitator: FacilitatorConfig,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// The server's public base URL, as buyers reach it (resource URLs in payment requirements).
    pub public_url: String,
    pub confirmations: u64,
    pub poll_interval: Duration,
    /// How long a chain write may take before it is left to the reconciler.
    pub chain_timeout: Duration,
    /// How long a purchase request waits for its deposit to be recorded before answering 503.
    pub purchase_timeout: Duration,
    pub reconcile_interval: Duration,
    /// The longest a buyer's authorization may stay valid (`maxTimeoutSeconds`).
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 domain name and version ("USDC", "2") and decimals (6).
    pub token_name: String,
    pub token_version: String,
    pub token_decimals: u32,
    pub catalog_ttl: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The LLM reviewer's endpoint; without one, tasks that ask for review wait (never auto-approved).
    pub reviewer: Option<ReviewerConfig>,
    /// The rejection that refunds the buyer (Agentripe: the fifth).
    pub max_rejections: i32,
    /// How long a vendor's authorization for an agent is cached.
    pub authorization_ttl: Duration,
}

impl Config {
    /// The terms of payment for something priced at `amount` token units: USDC into the escrow.
    pub fn offer(&self, amount: alloy::primitives::U256) -> agentripe_x402::Offer {
        agentripe_x402::Offer {
            network: agentripe_x402::Network::new(self.deployment.chain_id),
            asset: self.deployment.usdc,
            pay_to: self.deployment.agentripe,
            amount,
            max_timeout_seconds: self.max_timeout_seconds,
            token_name: self.token_name.clone(),
            token_version: self.token_version.clone(),
        }
    }

    /// The public URL of an agent's catalog entry, where it is bought.
    pub fn resource_url(&self, agent_id: &str, path: &str) -> String {
        format!("{}/{agent_id}/{path}", self.public_url.trim_end_matches('/'))
    }

    /// Defaults for everything but the chain, keys and database.
    pub fn new(
        rpc_url: String,
        deployment: Deployment,
        operator_key: PrivateKeySigner,
        database_url: String,
    ) -> Self {
        Self {
            rpc_url,
            deployment,
            operator_key,
            facilitator: FacilitatorConfig::BuiltIn(None),
            database_url,
            public_url: "http://127.0.0.1:3000".into(),
            confirmations: 0,
            poll_interval: Duration::from_millis(50),
            chain_timeout: Duration::from_secs(60),
            purchase_timeout: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(5),
            max_timeout_seconds: 300,
            token_name: "USDC".into(),
            token_version: "2".into(),
            token_decimals: 6,
            catalog_ttl: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            reviewer: None,
            max_rejections: 5,
            authorization_ttl: Duration::from_secs(30),
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub payments: Arc<Payments>,
    pub payouts: Arc<Payouts>,
    pub registrar: Arc<Registrar>,
    pub reviewer: Reviewer,
    pub authorizations: Authorizations,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad RPC URL {0:?}")]
    RpcUrl(String),
    #[error("the RPC serves chain {actual}, the deployment is on chain {expected}")]
    WrongChain { expected: u64, actual: u64 },
    #[error("cannot reach the chain: {0}")]
    Chain(String),
    #[error("the remote facilitator cannot settle our payments: {0}")]
    Facilitator(String),
    #[error(transparent)]
    Store(#[from] agentripe_store::StoreError),
    #[error(transparent)]
    Write(#[from] chain_writer::WriteError),
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub state: Arc<AppState>,
    pub reconciler: JoinHandle<()>,
    pub http: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops serving and reconciling at once, as a crash would (nothing is flushed that was not durable).
    pub fn abort(&self) {
        self.http.abort();
        self.reconciler.abort();
    }
}

/// Connects to the chain and the database, and serves the API on `listener`.
pub async fn start(config: Config, listener: TcpListener) -> Result<Running, StartError> {
    let url = config.rpc_url.parse().map_err(|_| StartError::RpcUrl(config.rpc_url.clone()))?;
    let provider = ProviderBuilder::new().connect_http(url).erased();
    let chain_id = provider.get_chain_id().await.map_err(|error| StartError::Chain(error.to_string()))?;
    if chain_id != config.deployment.chain_id {
        return Err(StartError::WrongChain { expected: config.deployment.chain_id, actual: chain_id });
    }
    let store = Store::connect(&config.database_url).await?;
    let confirmation = Confirmation {
        confirmations: config.confirmations,
        poll_interval: config.poll_interval,
        timeout: config.chain_timeout,
    };
    let operator = ChainWriter::new(
        config.operator_key.clone(),
        provider.clone(),
        store.clone(),
        chain_id,
        confirmation,
    )
    .await?;
    let facilitator = match &config.facilitator {
        FacilitatorConfig::BuiltIn(None) => Facilitator::BuiltIn(Box::new(operator.clone())),
        FacilitatorConfig::BuiltIn(Some(key)) => Facilitator::BuiltIn(Box::new(
            ChainWriter::new(key.clone(), provider.clone(), store.clone(), chain_id, confirmation).await?,
        )),
        FacilitatorConfig::Remote(url) => {
            Facilitator::Remote(RemoteFacilitator::new(url, config.chain_timeout))
        }
    };
    let payments = Arc::new(Payments::new(
        store.clone(),
        provider.clone(),
        config.deployment.clone(),
        operator.clone(),
        facilitator,
        confirmation,
    ));
    let payouts =
        Arc::new(Payouts::new(store.clone(), provider.clone(), config.deployment.clone(), operator.clone()));
    let registrar = Arc::new(Registrar::new(
        store.clone(),
        provider.clone(),
        config.deployment.identity_registry,
        operator,
    ));
    let catalog =
        Arc::new(Catalog::new(config.deployment.identity_registry, provider.clone(), config.catalog_ttl));
    let index = AgentIndexer {
        store: store.clone(),
        provider: provider.clone(),
        catalog: catalog.clone(),
        registry: config.deployment.identity_registry,
        start_block: config.deployment.start_block,
    };
    let reconciler = spawn_reconciler(
        payments.clone(),
        payouts.clone(),
        registrar.clone(),
        index,
        config.reconcile_interval,
    );
    let authorizations =
        Authorizations::new(config.deployment.identity_registry, provider, config.authorization_ttl);
    let reviewer = match &config.reviewer {
        Some(reviewer) => Reviewer::OpenAi(Box::new(OpenAiReviewer::new(reviewer.clone()))),
        None => {
            tracing::warn!(
                "no reviewer endpoint configured: tasks with a reviewer_request will wait for one"
            );
            Reviewer::Unconfigured
        }
    };
    let state =
        Arc::new(AppState { config, store, catalog, payments, payouts, registrar, reviewer, authorizations });
    let router = routes::router(state.clone());
    let http = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Running { state, reconciler, http })
}

/// What the agent index needs.
struct AgentIndexer {
    store: Store,
    provider: alloy::providers::DynProvider,
    catalog: Arc<Catalog>,
    registry: alloy::primitives::Address,
    start_block: u64,
}

/// Finishes what crashes and timeouts interrupted, money in and money out, and follows the identity
/// registry for the agent index: at start-up and every `interval`.
fn spawn_reconciler(
    payments: Arc<Payments>,
    payouts: Arc<Payouts>,
    registrar: Arc<Registrar>,
    index: AgentIndexer,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(error) = agent_index::sync(
                &index.store,
                &index.provider,
                &index.catalog,
                index.registry,
                index.start_block,
            )
            .await
            {
                tracing::warn!(%error, "agent index pass failed");
            }
            if let Err(error) = payments.reconcile_once().await {
                tracing::warn!(%error, "payment reconciler pass failed");
            }
            if let Err(error) = payouts.reconcile_once().await {
                tracing::warn!(%error, "payout reconciler pass failed");
            }
            if let Err(error) = registrar.reconcile_once().await {
                tracing::warn!(%error, "registration reconciler pass failed");
            }
            tokio::time::sleep(interval).await;
        }
    })
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn now_secs() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

//! Everything the server needs to run; read from the environment by [`Config::from_env`].

mod env;

use std::{
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use agentripe_chain::Deployment;
use agentripe_review::ReviewerConfig;
use agentripe_x402::{Network, Offer};
use alloy::{
    primitives::U256,
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};

pub use env::EnvError;

use crate::{
    batching::BatchPolicy,
    catalog::{format_price, parse_price},
    chain_writer::{Confirmation, FeePolicy},
    http_server::HttpLimits,
};

/// Who settles payments (keys print as their address only).
#[derive(Clone, Debug)]
pub enum FacilitatorConfig {
    /// The server submits settlements itself, with this key (the operator's when `None`).
    BuiltIn(Option<PrivateKeySigner>),
    /// A remote x402 facilitator at this base URL.
    Remote(String),
}

/// What registrations through the API may cost the operator, who pays their gas.
#[derive(Clone, Copy, Debug)]
pub struct RegistrationLimits {
    /// The largest registration file minted, in bytes of its `data:` URI: a mint's gas grows with it
    /// (about 700 gas a byte).
    pub max_bytes: usize,
    /// Registrations one signer may begin in 24 hours.
    pub per_signer_per_day: i64,
    /// Gas the operator may spend on registrations in 24 hours: each reserves its mint's estimate and a
    /// transfer when it is admitted.
    pub gas_per_day: u64,
    /// A fee (token units) each registrant pays the operator over x402 before its agent is minted, so
    /// that registrants pay their own gas.
    pub fee: Option<U256>,
}

/// How many requests each client address may make.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// How often one request's allowance returns: a second over the sustained rate per second.
    pub refill: Duration,
    /// Requests at once, after a quiet spell.
    pub burst: NonZeroU32,
    /// Key clients by `X-Forwarded-For` (behind a proxy that sets it), not by the peer address.
    pub trust_forwarded_for: bool,
}

/// Everything the server needs to run.
#[derive(Clone)]
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
    /// The longest one RPC request may take: a node that takes a request and never answers would
    /// otherwise hold the payout waiting on it (and the batch and the reconciler pass behind it) forever.
    pub rpc_timeout: Duration,
    /// How deposits recorded, released and refunded at about the same time share transactions.
    pub batching: BatchPolicy,
    /// How far the RPC's receipts and logs may trail its state (load-balanced providers lag).
    pub rpc_lag: Duration,
    /// How long after an authorization's `validBefore` its settlement is still searched for when its
    /// nonce is used but no settlement can be found: until then the payment is in doubt, not failed.
    pub settlement_search_horizon: Duration,
    /// How many blocks before a payment arrives its settlement is searched from: anyone may have
    /// submitted the buyer's authorization before the request reached us.
    pub settlement_lookback_blocks: u64,
    /// How long a purchase request waits for its deposit to be recorded before answering 503.
    pub purchase_timeout: Duration,
    pub reconcile_interval: Duration,
    /// How long a payment stays with the process advancing it without a renewal: the longest a
    /// crashed process delays a payment (renewed every third of it while the holder lives).
    pub payment_lease: Duration,
    /// How long a submission's review stays claimed by the request reviewing it without a renewal: the
    /// longest a reviewer that died mid-review holds its task (renewed every third of it meanwhile).
    pub review_lease: Duration,
    /// The longest a buyer's authorization may stay valid (`maxTimeoutSeconds`).
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 domain name and version ("USDC", "2") and decimals (6).
    pub token_name: String,
    pub token_version: String,
    pub token_decimals: u32,
    pub catalog_ttl: Duration,
    /// Whether agents' registration files may be fetched from loopback and private addresses: for local
    /// development only, as any registrant chooses the URL the server fetches.
    pub catalog_allow_private: bool,
    /// The least price (token units) an agent may sell at here: each purchase costs the operator four
    /// transactions, and dust prices only farm reputation.
    pub min_price: U256,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The LLM reviewer's endpoint; without one, tasks that ask for review wait (never auto-approved).
    pub reviewer: Option<ReviewerConfig>,
    /// The rejection that refunds the buyer (Agentripe: the fifth).
    pub max_rejections: i32,
    /// Show every reader what a task's buyer sees (Agentripe's public results); by default a task's
    /// request and result are private to its buyer and its agent's vendors.
    pub public_task_results: bool,
    /// How long a vendor's authorization for an agent is cached.
    pub authorization_ttl: Duration,
    pub registration: RegistrationLimits,
    /// Per-client rate limits on every route; `None` turns them off (load runs from one address).
    pub rate_limit: Option<RateLimit>,
    /// When stuck transactions get higher fees, and the most ever paid per gas.
    pub fees: FeePolicy,
    /// Below this balance (wei) the operator's ETH is reported low, and a warning logged.
    pub operator_min_balance: U256,
    /// How long clients may take to send a request, and how many may be connected at once.
    pub http: HttpLimits,
}

/// Never prints what may hold a credential: the RPC URL's path and query (providers put API keys there),
/// the database URL (passwords), the reviewer's key; keys print as their address.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = self.database_url.split(':').next().unwrap_or_default();
        f.debug_struct("Config")
            .field("rpc_url", &crate::pipeline::without_urls(&self.rpc_url))
            .field("deployment", &self.deployment)
            .field("operator", &self.operator_key.address())
            .field("facilitator", &self.facilitator)
            .field("database", &engine)
            .field("public_url", &self.public_url)
            .field("reviewer", &self.reviewer)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The terms of payment for something priced at `amount` token units: USDC into the escrow.
    pub fn offer(&self, amount: U256) -> Offer {
        Offer {
            network: Network::new(self.deployment.chain_id),
            asset: self.deployment.usdc,
            pay_to: self.deployment.agentripe,
            amount,
            max_timeout_seconds: self.max_timeout_seconds,
            token_name: self.token_name.clone(),
            token_version: self.token_version.clone(),
        }
    }

    /// The chain at `RPC_URL`, none of whose requests may take longer than `rpc_timeout`. Errs with what
    /// is wrong when the URL is not one.
    pub fn connect_chain(&self) -> Result<DynProvider, String> {
        let client = agentripe_chain::rpc::rpc_client(&self.rpc_url, self.rpc_timeout)?;
        Ok(ProviderBuilder::new().connect_client(client).erased())
    }

    /// How chain writes are confirmed.
    pub fn confirmation(&self) -> Confirmation {
        Confirmation {
            confirmations: self.confirmations,
            poll_interval: self.poll_interval,
            timeout: self.chain_timeout,
            rpc_lag: self.rpc_lag,
        }
    }

    /// A catalog price (`$0.10`) in token units, if this server sells at it.
    pub fn price(&self, text: &str) -> Result<U256, String> {
        let amount = parse_price(text, self.token_decimals)?;
        if amount < self.min_price {
            return Err(format!(
                "price {text:?} is below this server's minimum of {}",
                format_price(self.min_price, self.token_decimals)
            ));
        }
        Ok(amount)
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
            rpc_timeout: agentripe_chain::rpc::DEFAULT_RPC_TIMEOUT,
            batching: BatchPolicy::default(),
            rpc_lag: Duration::from_secs(5),
            settlement_search_horizon: Duration::from_secs(600),
            settlement_lookback_blocks: 1_000,
            purchase_timeout: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(5),
            payment_lease: Duration::from_secs(10),
            review_lease: Duration::from_secs(30),
            max_timeout_seconds: 300,
            token_name: "USDC".into(),
            token_version: "2".into(),
            token_decimals: 6,
            catalog_ttl: Duration::from_secs(30),
            min_price: U256::from(10_000),
            catalog_allow_private: false,
            max_body_bytes: 64 * 1024,
            reviewer: None,
            max_rejections: 5,
            authorization_ttl: Duration::from_secs(30),
            public_task_results: false,
            registration: RegistrationLimits {
                max_bytes: 4 * 1024,
                per_signer_per_day: 3,
                gas_per_day: 50_000_000,
                fee: None,
            },
            rate_limit: Some(RateLimit {
                refill: Duration::from_millis(50),
                burst: NonZeroU32::new(60).expect("non-zero"),
                trust_forwarded_for: false,
            }),
            fees: FeePolicy { bump_after: Duration::from_secs(30), max_fee_per_gas: 100_000_000_000 },
            operator_min_balance: U256::from(1_000_000_000_000_000u64),
            http: HttpLimits {
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(10),
                body_deadline: Duration::from_secs(20),
                response_deadline: Duration::from_secs(20),
                max_connections: 1024,
                max_connections_per_client: NonZeroUsize::new(64),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_credential() {
        let key = PrivateKeySigner::random();
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "agentripe": "0x0000000000000000000000000000000000000001", "chainId": 8453, "depositTimeoutSeconds": 1,
            "identityRegistry": "0x0000000000000000000000000000000000000002", "operator": "0x0000000000000000000000000000000000000003",
            "reputationRegistry": "0x0000000000000000000000000000000000000004", "startBlock": 0,
            "usdc": "0x0000000000000000000000000000000000000005", "usdcIsTestToken": false
        }))
        .expect("deployment");
        let mut config = Config::new(
            "https://base.example/v2/sk-RPC-SECRET".into(),
            deployment,
            key.clone(),
            "postgres://agentripe:DB-SECRET@db/agentripe".into(),
        );
        config.reviewer = Some(ReviewerConfig {
            base_url: "https://api.example/v1".into(),
            api_key: "sk-REVIEWER-SECRET".into(),
            model: "m".into(),
            timeout: Duration::from_secs(1),
            max_retries: 0,
            backoff: Duration::from_secs(1),
            structured_output: true,
            breaker_threshold: 1,
            breaker_cooldown: Duration::from_secs(1),
        });
        let printed = format!("{config:?}");
        for secret in
            ["RPC-SECRET", "DB-SECRET", "REVIEWER-SECRET", &alloy::primitives::hex::encode(key.to_bytes())]
        {
            assert!(!printed.contains(secret), "{secret} printed in {printed}");
        }
        assert!(printed.contains(&format!("{:#x}", key.address())), "{printed}");
    }
}

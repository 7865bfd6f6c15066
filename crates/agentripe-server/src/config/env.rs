//! Configuration from the environment (and `.env`), every setting documented in `.env.example`.

use std::{
    num::{NonZeroU32, NonZeroUsize},
    str::FromStr,
    time::Duration,
};

use agentripe_chain::Deployment;
use agentripe_review::ReviewerConfig;
use alloy::signers::local::PrivateKeySigner;

use super::{Config, FacilitatorConfig, RateLimit};
use crate::batching::MAX_BATCH;

/// A missing or malformed setting.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is required (see .env.example)")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(transparent)]
    Deployment(#[from] agentripe_chain::DeploymentError),
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

fn required(name: &'static str) -> Result<String, EnvError> {
    var(name).ok_or(EnvError::Missing(name))
}

fn parsed<T: FromStr>(name: &'static str) -> Result<Option<T>, EnvError>
where
    T::Err: std::fmt::Display,
{
    var(name)
        .map(|value| {
            value.parse().map_err(|error: T::Err| EnvError::Invalid { name, reason: error.to_string() })
        })
        .transpose()
}

fn key(name: &'static str) -> Result<Option<PrivateKeySigner>, EnvError> {
    // Never echo the value: it is a private key.
    var(name)
        .map(|value| {
            value
                .parse()
                .map_err(|_| EnvError::Invalid { name, reason: "not a 32-byte hex private key".into() })
        })
        .transpose()
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, EnvError> {
        let deployment = Deployment::load(required("DEPLOYMENTS_FILE")?)?;
        // A guard against pointing a server at the wrong deployment file.
        if let Some(chain_id) = parsed::<u64>("CHAIN_ID")?
            && chain_id != deployment.chain_id
        {
            return Err(EnvError::Invalid {
                name: "CHAIN_ID",
                reason: format!(
                    "it is {chain_id}, but DEPLOYMENTS_FILE is a deployment on chain {}",
                    deployment.chain_id
                ),
            });
        }
        let operator = key("OPERATOR_PRIVATE_KEY")?.ok_or(EnvError::Missing("OPERATOR_PRIVATE_KEY"))?;
        let mut config = Config::new(
            required("RPC_URL")?,
            deployment,
            operator,
            var("DATABASE_URL").unwrap_or_else(|| "sqlite://agentripe.db".into()),
        );
        config.facilitator = match var("FACILITATOR_URL") {
            Some(url) => FacilitatorConfig::Remote(url),
            None => FacilitatorConfig::BuiltIn(key("FACILITATOR_PRIVATE_KEY")?),
        };
        if let Some(url) = var("PUBLIC_URL") {
            config.public_url = url;
        }
        let seconds = |name| Ok::<_, EnvError>(parsed::<u64>(name)?.map(Duration::from_secs));
        let millis = |name| Ok::<_, EnvError>(parsed::<u64>(name)?.map(Duration::from_millis));
        // A limit of 0 would refuse everything it limits.
        let at_least_a_second = |name: &'static str, default: Duration| {
            let limit = seconds(name)?.unwrap_or(default);
            if limit.is_zero() {
                return Err(EnvError::Invalid { name, reason: "must be at least 1".into() });
            }
            Ok(limit)
        };
        config.confirmations = parsed("CONFIRMATIONS")?.unwrap_or(config.confirmations);
        config.poll_interval = millis("POLL_INTERVAL_MS")?.unwrap_or(config.poll_interval);
        config.chain_timeout = seconds("CHAIN_TIMEOUT_SECONDS")?.unwrap_or(config.chain_timeout);
        config.rpc_timeout = at_least_a_second("RPC_TIMEOUT_SECONDS", config.rpc_timeout)?;
        config.rpc_lag = millis("RPC_LAG_MS")?.unwrap_or(config.rpc_lag);
        config.batching.max_wait = millis("CHAIN_BATCH_WAIT_MS")?.unwrap_or(config.batching.max_wait);
        config.batching.max_size = parsed("CHAIN_BATCH_MAX")?.unwrap_or(config.batching.max_size);
        if !(1..=MAX_BATCH).contains(&config.batching.max_size) {
            return Err(EnvError::Invalid {
                name: "CHAIN_BATCH_MAX",
                reason: format!("must be between 1 and {MAX_BATCH}"),
            });
        }
        config.settlement_search_horizon =
            seconds("SETTLEMENT_SEARCH_HORIZON_SECONDS")?.unwrap_or(config.settlement_search_horizon);
        config.settlement_lookback_blocks =
            parsed("SETTLEMENT_LOOKBACK_BLOCKS")?.unwrap_or(config.settlement_lookback_blocks);
        config.purchase_timeout = seconds("PURCHASE_TIMEOUT_SECONDS")?.unwrap_or(config.purchase_timeout);
        config.reconcile_interval =
            seconds("RECONCILE_INTERVAL_SECONDS")?.unwrap_or(config.reconcile_interval);
        config.payment_lease = at_least_a_second("PAYMENT_LEASE_SECONDS", config.payment_lease)?;
        config.review_lease = at_least_a_second("REVIEW_LEASE_SECONDS", config.review_lease)?;
        config.max_timeout_seconds = parsed("MAX_TIMEOUT_SECONDS")?.unwrap_or(config.max_timeout_seconds);
        config.token_name = var("TOKEN_EIP712_NAME").unwrap_or(config.token_name);
        config.token_version = var("TOKEN_EIP712_VERSION").unwrap_or(config.token_version);
        config.public_task_results = parsed("PUBLIC_TASK_RESULTS")?.unwrap_or(config.public_task_results);
        if let Some(price) = var("MIN_PRICE") {
            config.min_price = crate::catalog::parse_price(&price, config.token_decimals)
                .map_err(|reason| EnvError::Invalid { name: "MIN_PRICE", reason })?;
        }
        config.catalog_allow_private =
            parsed("CATALOG_ALLOW_PRIVATE_ADDRESSES")?.unwrap_or(config.catalog_allow_private);
        config.catalog_ttl = seconds("CATALOG_CACHE_SECONDS")?.unwrap_or(config.catalog_ttl);
        let registration = &mut config.registration;
        registration.max_bytes = parsed("REGISTRATION_MAX_BYTES")?.unwrap_or(registration.max_bytes);
        registration.per_signer_per_day =
            parsed("REGISTRATIONS_PER_SIGNER_PER_DAY")?.unwrap_or(registration.per_signer_per_day);
        registration.gas_per_day = parsed("REGISTRATION_GAS_PER_DAY")?.unwrap_or(registration.gas_per_day);
        if let Some(fee) = var("REGISTRATION_FEE") {
            let fee = crate::catalog::parse_price(&fee, config.token_decimals)
                .map_err(|reason| EnvError::Invalid { name: "REGISTRATION_FEE", reason })?;
            config.registration.fee = (!fee.is_zero()).then_some(fee);
        }
        config.fees.bump_after = seconds("FEE_BUMP_AFTER_SECONDS")?.unwrap_or(config.fees.bump_after);
        config.fees.max_fee_per_gas = parsed("MAX_FEE_PER_GAS_WEI")?.unwrap_or(config.fees.max_fee_per_gas);
        config.operator_min_balance =
            parsed("OPERATOR_MIN_BALANCE_WEI")?.unwrap_or(config.operator_min_balance);
        let http = &mut config.http;
        http.header_timeout = at_least_a_second("HTTP_HEADER_TIMEOUT_SECONDS", http.header_timeout)?;
        http.body_timeout = at_least_a_second("HTTP_BODY_TIMEOUT_SECONDS", http.body_timeout)?;
        http.body_deadline = at_least_a_second("HTTP_BODY_DEADLINE_SECONDS", http.body_deadline)?;
        http.response_deadline = at_least_a_second("HTTP_RESPONSE_DEADLINE_SECONDS", http.response_deadline)?;
        http.max_connections = parsed("MAX_CONNECTIONS")?.unwrap_or(http.max_connections);
        // Behind a reverse proxy every client arrives from the proxy's address.
        let behind_proxy = parsed::<bool>("RATE_LIMIT_TRUST_FORWARDED_FOR")?;
        // 0 requests per second turns rate limiting off.
        config.rate_limit = match (config.rate_limit, parsed::<u32>("RATE_LIMIT_PER_SECOND")?) {
            (_, Some(0)) | (None, _) => None,
            (Some(limit), per_second) => Some(RateLimit {
                refill: per_second
                    .and_then(NonZeroU32::new)
                    .map_or(limit.refill, |rate| Duration::from_secs(1) / rate.get()),
                burst: parsed("RATE_LIMIT_BURST")?.unwrap_or(limit.burst),
                trust_forwarded_for: behind_proxy.unwrap_or(limit.trust_forwarded_for),
            }),
        };
        // No cap per client behind a proxy, unless one is set.
        config.http.max_connections_per_client = match parsed::<usize>("MAX_CONNECTIONS_PER_CLIENT")? {
            Some(cap) => NonZeroUsize::new(cap),
            None if behind_proxy == Some(true) => None,
            None => config.http.max_connections_per_client,
        };
        config.reviewer = match var("REVIEWER_BASE_URL") {
            None => None,
            Some(base_url) => Some(ReviewerConfig {
                base_url,
                api_key: var("REVIEWER_API_KEY").unwrap_or_default(),
                model: required("REVIEWER_MODEL")?,
                timeout: seconds("REVIEWER_TIMEOUT_SECONDS")?.unwrap_or(Duration::from_secs(30)),
                max_retries: parsed("REVIEWER_MAX_RETRIES")?.unwrap_or(2),
                backoff: millis("REVIEWER_BACKOFF_MS")?.unwrap_or(Duration::from_millis(500)),
                structured_output: parsed("REVIEWER_STRUCTURED_OUTPUT")?.unwrap_or(true),
                breaker_threshold: parsed("REVIEWER_BREAKER_FAILURES")?.unwrap_or(5),
                breaker_cooldown: seconds("REVIEWER_BREAKER_COOLDOWN_SECONDS")?
                    .unwrap_or(Duration::from_secs(30)),
            }),
        };
        Ok(config)
    }
}

//! Per-client rate limits in front of every route: each client address gets a bucket of `burst`
//! requests, one refilled every `refill`. Beyond it, 429 with `Retry-After` and the API's JSON error,
//! before any handler, database or RPC work.

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, http::StatusCode, response::IntoResponse};
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::GovernorConfigBuilder,
    key_extractor::{KeyExtractor, PeerIpKeyExtractor, SmartIpKeyExtractor},
};

use crate::{ApiError, config::RateLimit, http_server::client_network};

/// How often the buckets of clients that went quiet are dropped, so a scan from many addresses does not
/// keep memory.
const FORGET_QUIET_CLIENTS: Duration = Duration::from_secs(60);

/// `router` behind `limit`, keyed by the peer address, or by `X-Forwarded-For` when the server sits
/// behind a proxy that sets it (any client could set it otherwise).
pub fn limited(router: Router, limit: RateLimit) -> Router {
    if limit.trust_forwarded_for {
        layer(router, limit, ByNetwork(SmartIpKeyExtractor))
    } else {
        layer(router, limit, ByNetwork(PeerIpKeyExtractor))
    }
}

/// Keys a client by its network ([`client_network`]): its IPv4 address, or its IPv6 /64.
#[derive(Clone, Copy, Debug)]
struct ByNetwork<K>(K);

impl<K: KeyExtractor<Key = IpAddr>> KeyExtractor for ByNetwork<K> {
    type Key = IpAddr;

    fn extract<T>(&self, request: &axum::http::Request<T>) -> Result<IpAddr, GovernorError> {
        self.0.extract(request).map(client_network)
    }
}

fn layer<K>(router: Router, limit: RateLimit, key: K) -> Router
where
    K: KeyExtractor<Key = IpAddr> + Send + Sync + 'static,
{
    let config = GovernorConfigBuilder::default()
        .key_extractor(key)
        .period(limit.refill)
        .burst_size(limit.burst.get())
        .finish()
        .map(Arc::new);
    let Some(config) = config else { return router };
    let limiter = config.limiter().clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FORGET_QUIET_CLIENTS).await;
            limiter.retain_recent();
        }
    });
    router.layer(GovernorLayer::new(config).error_handler(too_many))
}

fn too_many(error: GovernorError) -> axum::http::Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => ApiError {
            retry_after: Some(wait_time.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from your address: retry in {} s", wait_time.max(1)),
            )
        }
        .into_response(),
        GovernorError::UnableToExtractKey => {
            ApiError::bad_request("bad_request", "the client address could not be read").into_response()
        }
        GovernorError::Other { code, msg, .. } => {
            ApiError::new(code, "rate_limited", msg.unwrap_or_else(|| "refused".into())).into_response()
        }
    }
}

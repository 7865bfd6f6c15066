//! Reaching a node: every JSON-RPC request over HTTP is bounded in time, so a node that accepts a request
//! and never answers fails the call instead of hanging its caller, and whatever the caller holds (a
//! subject's write, a wallet's ledger), forever.

use std::time::Duration;

use alloy::{rpc::client::RpcClient, transports::http::reqwest};

/// How long one request may take when nothing else is configured.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON-RPC client for the node at `rpc_url`, each request given up after `timeout`; a provider is
/// built on it with `ProviderBuilder::connect_client`.
pub fn rpc_client(rpc_url: &str, timeout: Duration) -> Result<RpcClient, String> {
    let url = rpc_url.parse().map_err(|_| format!("RPC URL {rpc_url:?} is not a URL"))?;
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|error| format!("building the RPC client: {error}"))?;
    Ok(RpcClient::new_http_with_client(http, url))
}

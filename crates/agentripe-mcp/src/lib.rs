//! `agentripe mcp`: the marketplace as Model Context Protocol tools, so that any AI agent can buy and
//! sell here. Buying goes through the [`Wallet`]: the tools can ask for a payment, never sign one the
//! spend policy refuses, and offer nothing that changes the policy, approves a payment or resumes
//! signing (those are a person's commands). Served over stdio or Streamable HTTP.

mod http;
mod tools;

use std::{path::PathBuf, sync::Arc};

use agentripe_agent::{Market, Wallet};
use alloy::signers::local::PrivateKeySigner;

pub use http::serve_http;
pub use tools::MarketTools;

/// What the tools act with.
#[derive(Debug)]
pub struct Settings {
    pub market: Market,
    /// The agent's key: it pays as a buyer (through the wallet) and signs as a vendor.
    pub key: PrivateKeySigner,
    /// The wallet's directory (its spend policy and ledger).
    pub wallet_dir: PathBuf,
    /// The agent the vendor tools act for; without it they answer that they are off.
    pub vendor_agent: Option<String>,
}

/// The shared state behind every session's tools.
#[derive(Debug)]
pub(crate) struct Shared {
    market: Market,
    key: PrivateKeySigner,
    wallet_dir: PathBuf,
    /// The wallet, opened on first use: a person may write its policy after the server started, and
    /// until then the buying tools say so while the others work.
    wallet: tokio::sync::OnceCell<Wallet<PrivateKeySigner>>,
    vendor_agent: Option<String>,
}

impl Settings {
    pub fn open(self) -> MarketTools {
        MarketTools::new(Arc::new(Shared {
            market: self.market,
            key: self.key,
            wallet_dir: self.wallet_dir,
            wallet: tokio::sync::OnceCell::new(),
            vendor_agent: self.vendor_agent,
        }))
    }
}

/// Serves the tools on stdin and stdout until the client goes away.
pub async fn serve_stdio(tools: MarketTools) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running = tools.serve(rmcp::transport::stdio()).await.map_err(|error| error.to_string())?;
    running.waiting().await.map_err(|error| error.to_string())?;
    Ok(())
}

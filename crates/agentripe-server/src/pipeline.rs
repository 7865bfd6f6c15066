//! Why a step of money in, money out or registration could not be taken now. Nothing is lost when it
//! happens: the step stays stored and the reconciler takes it again.

use std::fmt::Display;

use agentripe_store::StoreError;
use alloy::primitives::B256;

use crate::chain_writer::WriteError;

/// The chain's RPC failed or answered nonsense while doing something; a later attempt may succeed.
#[derive(Debug, thiserror::Error)]
#[error("chain RPC error while {context}: {message}")]
pub struct RpcError {
    pub context: &'static str,
    pub message: String,
}

/// `map_err(rpc("reading the head"))`: an RPC failure with what was being done. URLs in the transport's
/// message are cut out: RPC providers put API keys in them, and these errors are logged.
pub fn rpc<E: Display>(context: &'static str) -> impl FnOnce(E) -> RpcError {
    move |error| RpcError { context, message: without_urls(&error.to_string()) }
}

/// `text` with every http(s) URL replaced by its scheme and host.
pub fn without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http://").or_else(|| rest.find("https://")) {
        let (before, url) = rest.split_at(start);
        out.push_str(before);
        let end =
            url.find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | ',')).unwrap_or(url.len());
        let (scheme, after_scheme) = url[..end].split_once("://").unwrap_or(("http", ""));
        let host = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit('@').next().unwrap_or_default();
        out.push_str(&format!("{scheme}://{host}/…"));
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}

/// Why a payment, payout or registration could not be advanced now.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Write(WriteError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A stored row is not what this code wrote.
    #[error("{subject} is unreadable: {detail}")]
    Corrupt { subject: String, detail: String },
    /// A remote facilitator's answer was lost; the chain will tell.
    #[error("settlement outcome unknown: {0}")]
    SettlementUnknown(String),
    /// The buyer may have been charged, and the chain does not show it yet: never a refusal.
    #[error("payment in doubt: {0}")]
    InDoubt(String),
    /// Another holder took the payment over or moved it on before a step this one may not take
    /// without it; this one steps aside.
    #[error("{0} was taken over by another holder")]
    Overtaken(String),
    /// The server is stopping and takes no new purchase; nothing was stored.
    #[error("the server is stopping")]
    Stopping,
    /// The chain holds a deposit under this id with terms other than ours.
    #[error("deposit {deposit} is on chain with other terms than {subject}: {detail}")]
    Mismatch { subject: String, deposit: B256, detail: String },
}

/// A store that refused a write because its payment's lease is no longer this holder's says so as
/// [`PipelineError::Overtaken`], however deep the write was made.
impl From<StoreError> for PipelineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Overtaken(payment) => Self::Overtaken(format!("payment {payment}")),
            error => Self::Store(error),
        }
    }
}

impl From<WriteError> for PipelineError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Store(error) => error.into(),
            error => Self::Write(error),
        }
    }
}

impl PipelineError {
    /// A stored `subject` ("payment 7", "task 0x...") that cannot be read.
    pub fn corrupt(subject: impl Display, detail: impl Into<String>) -> Self {
        Self::Corrupt { subject: subject.to_string(), detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_carry_no_url_paths_or_credentials() {
        let error =
            "error sending request for url (https://user:pw@base.example/v2/sk-SECRET?key=K): refused";
        let message = rpc("reading the head")(error).to_string();
        assert_eq!(
            message,
            "chain RPC error while reading the head: error sending request for url (https://base.example/…): refused"
        );
        assert_eq!(without_urls("no url here"), "no url here");
        assert_eq!(without_urls("at http://127.0.0.1:8545"), "at http://127.0.0.1:8545/…");
    }
}

//! An agent's side of the marketplace: the [`wallet`] that signs x402 payments only within a
//! [`policy`] a person wrote, its [`ledger`] (the audit log, the payments it signed, the approval
//! queue), what it reads on the [`chain`] itself, and the [`market`] client for the server's API.

pub mod chain;
pub mod ledger;
pub mod market;
pub mod policy;
pub mod wallet;

pub use ledger::{Ledger, Purchase};
pub use market::{Bought, Market, Purchased};
pub use policy::Policy;
pub use wallet::{Ask, Context, Decision, Rule, Wallet};

/// Unix seconds.
pub fn now() -> u64 {
    agentripe_server::util::now_secs()
}

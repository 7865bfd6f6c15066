//! alloy bindings generated from the forge artifacts of `contracts/src` (built by this crate's build
//! script, so they always match the Solidity sources). Each module carries the contract's calls, events,
//! custom errors and, for the contracts we deploy, its bytecode.
//!
//! [`IERC8004Identity`] and [`IERC8004Reputation`] are the surfaces of the official ERC-8004 registries,
//! and [`IERC3009`] that of Circle's USDC: code that must also work against those deployments binds to
//! them instead of to our implementations ([`TestUSDC`] is a token for local chains and tests only).

use alloy::sol;

/// Ties these bindings to the artifacts they were generated from (see build.rs): rustc records the
/// variable, so new artifacts mean new bindings.
const _ARTIFACTS: &str = env!("AGENTRIPE_ARTIFACTS_FINGERPRINT");

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Agentripe,
    "../../out/Agentripe.sol/Agentripe.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    IdentityRegistry,
    "../../out/IdentityRegistry.sol/IdentityRegistry.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ReputationRegistry,
    "../../out/ReputationRegistry.sol/ReputationRegistry.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestUSDC,
    "../../out/TestUSDC.sol/TestUSDC.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    IERC3009,
    "../../out/IERC3009.sol/IERC3009.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    IERC8004Identity,
    "../../out/IERC8004Identity.sol/IERC8004Identity.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    IERC8004Reputation,
    "../../out/IERC8004Reputation.sol/IERC8004Reputation.json"
);

/// The status codes of [`Agentripe::getDepositCall`], part of the escrow's public interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositStatus {
    /// Never recorded.
    None,
    /// Locked in the escrow.
    Deposited,
    /// Credited to the vendor agent's payout address.
    Released,
    /// Credited back to the buyer.
    Refunded,
}

impl TryFrom<u8> for DepositStatus {
    type Error = u8;

    fn try_from(code: u8) -> Result<Self, u8> {
        match code {
            0 => Ok(Self::None),
            1 => Ok(Self::Deposited),
            2 => Ok(Self::Released),
            3 => Ok(Self::Refunded),
            other => Err(other),
        }
    }
}

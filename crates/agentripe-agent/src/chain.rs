//! What the wallet reads and sends on the pinned chain itself, never through the marketplace server:
//! balances, withdrawals, and the check of a server's terms before a person trusts them.

use agentripe_chain::{
    bindings::{Agentripe, IERC3009},
    rpc::{DEFAULT_RPC_TIMEOUT, rpc_client},
};
use agentripe_x402::Offer;
use alloy::{
    network::EthereumWallet,
    primitives::{Address, B256, U256},
    providers::{Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
    sol,
};

use crate::policy::Trust;

sol! {
    #[sol(rpc)]
    interface IERC20Balance {
        function balanceOf(address account) external view returns (uint256);
    }
}

fn reader(rpc_url: &str) -> Result<impl Provider + use<>, String> {
    Ok(ProviderBuilder::new().connect_client(rpc_client(rpc_url, DEFAULT_RPC_TIMEOUT)?))
}

/// How long a withdrawal's receipt is waited for.
const WITHDRAW_RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The payer's token balance.
pub async fn usdc_balance(trust: &Trust, payer: Address) -> Result<U256, String> {
    let provider = reader(&trust.rpc_url)?;
    IERC20Balance::new(trust.asset, &provider)
        .balanceOf(payer)
        .call()
        .await
        .map_err(|error| format!("cannot read the balance of {payer}: {error}"))
}

/// What `escrow` holds for `account` to withdraw (refunds, or a vendor's payouts).
pub async fn withdrawable(rpc_url: &str, escrow: Address, account: Address) -> Result<U256, String> {
    let provider = reader(rpc_url)?;
    Agentripe::new(escrow, &provider)
        .withdrawableBalance(account)
        .call()
        .await
        .map_err(|error| format!("cannot read the escrow's credit for {account}: {error}"))
}

/// Pulls `key`'s credit from `escrow` (it pays the gas); `None` when there is none.
pub async fn withdraw(
    rpc_url: &str,
    escrow: Address,
    key: &PrivateKeySigner,
) -> Result<Option<(U256, B256)>, String> {
    let credit = withdrawable(rpc_url, escrow, key.address()).await?;
    if credit.is_zero() {
        return Ok(None);
    }
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(key.clone()))
        .connect_client(rpc_client(rpc_url, DEFAULT_RPC_TIMEOUT)?);
    let pending = Agentripe::new(escrow, &provider)
        .withdraw()
        .send()
        .await
        .map_err(|error| format!("withdraw: {error}"))?;
    let hash = *pending.tx_hash();
    // A withdrawal the network dropped is reported, not waited on forever; a slow one may still land, so
    // the credit is to be checked before another is sent (which would revert, at the caller's gas).
    let receipt = pending.with_timeout(Some(WITHDRAW_RECEIPT_TIMEOUT)).get_receipt().await.map_err(|error| {
        format!("withdraw {hash:#x}: {error}; it may still be mined: check the credit before withdrawing again")
    })?;
    if !receipt.status() {
        return Err(format!("withdraw reverted in {:#x}", receipt.transaction_hash));
    }
    Ok(Some((credit, receipt.transaction_hash)))
}

/// Checks a server's offer against the chain at `rpc_url` before anyone trusts it: the chain is the
/// one named, the escrow's token is the asset, and the token's EIP-712 domain is the one named.
pub async fn verify_offer(offer: &Offer, rpc_url: &str) -> Result<Trust, String> {
    let provider = reader(rpc_url)?;
    let chain_id =
        provider.get_chain_id().await.map_err(|error| format!("cannot reach {rpc_url}: {error}"))?;
    if chain_id != offer.network.chain_id {
        return Err(format!(
            "the server names chain {}, the RPC serves chain {chain_id}",
            offer.network.chain_id
        ));
    }
    let token = Agentripe::new(offer.pay_to, &provider)
        .token()
        .call()
        .await
        .map_err(|error| format!("{} is not an Agentripe escrow: {error}", offer.pay_to))?;
    if token != offer.asset {
        return Err(format!("the escrow {} holds {token}, not the asset {}", offer.pay_to, offer.asset));
    }
    let separator = IERC3009::new(offer.asset, &provider)
        .DOMAIN_SEPARATOR()
        .call()
        .await
        .map_err(|error| format!("cannot read the token's EIP-712 domain: {error}"))?;
    if separator != offer.token_domain().separator() {
        return Err(format!(
            "the token's EIP-712 domain is not {:?} version {:?}",
            offer.token_name, offer.token_version
        ));
    }
    Ok(Trust {
        chain_id,
        escrow: offer.pay_to,
        asset: offer.asset,
        token_name: offer.token_name.clone(),
        token_version: offer.token_version.clone(),
        rpc_url: rpc_url.to_owned(),
    })
}

//! Operator and vendor set-up: deploying the contracts, registering an agent.

use std::path::Path;

use agentripe_agent::Market;
use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, IdentityRegistry, ReputationRegistry, TestUSDC},
};
use alloy::{
    contract::RawCallBuilder,
    primitives::{Address, U256},
    providers::{Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use serde_json::Value;

use crate::output::Output;

/// What `deploy` reuses instead of deploying.
#[derive(Debug, Default)]
pub struct Reuse {
    pub usdc: Option<Address>,
    /// The identity registry and its first block (agents older than the new escrow are indexed too).
    pub identity: Option<(Address, u64)>,
    pub reputation: Option<Address>,
}

/// Deploys what is not reused (a TestUSDC only when no USDC is given) and writes the deployment file
/// the server reads, in the format of contracts/script/Deploy.s.sol.
pub async fn deploy(
    out: Output,
    key: &PrivateKeySigner,
    rpc_url: &str,
    operator: Option<Address>,
    timeout: u64,
    reuse: Reuse,
    path: &Path,
) -> Result<(), String> {
    let client = agentripe_chain::rpc::rpc_client(rpc_url, agentripe_chain::rpc::DEFAULT_RPC_TIMEOUT)?;
    let provider = ProviderBuilder::new().wallet(key.clone()).connect_client(client);
    let chain_id = provider.get_chain_id().await.map_err(|e| format!("cannot reach {rpc_url}: {e}"))?;
    let deployer = key.address();
    let test_token = reuse.usdc.is_none();
    let usdc = match reuse.usdc {
        Some(usdc) => usdc,
        None => deployed("TestUSDC", TestUSDC::deploy_builder(&provider, deployer)).await?,
    };
    let (identity, start_block) = match reuse.identity {
        Some(reused) => reused,
        None => {
            let start_block = provider.get_block_number().await.map_err(|e| e.to_string())?;
            (deployed("IdentityRegistry", IdentityRegistry::deploy_builder(&provider)).await?, start_block)
        }
    };
    let reputation = match reuse.reputation {
        Some(reputation) => reputation,
        None => {
            deployed("ReputationRegistry", ReputationRegistry::deploy_builder(&provider, identity)).await?
        }
    };
    let operator = operator.unwrap_or(deployer);
    let escrow =
        Agentripe::deploy_builder(&provider, usdc, identity, operator, deployer, U256::from(timeout));
    let escrow = deployed("Agentripe", escrow).await?;
    let deployment = Deployment {
        chain_id,
        agentripe: escrow,
        usdc,
        usdc_is_test_token: test_token,
        identity_registry: identity,
        reputation_registry: reputation,
        operator,
        deposit_timeout_seconds: timeout,
        start_block,
    };
    let deployment = serde_json::to_value(&deployment).map_err(|e| e.to_string())?;
    std::fs::write(path, serde_json::to_string_pretty(&deployment).unwrap_or_default())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    out.show(&deployment, || {
        format!(
            "deployed on chain {chain_id}\n  escrow              {}\n  USDC                {}{}\n  IdentityRegistry    {identity}\n  ReputationRegistry  {reputation}\n  operator            {operator}\nwritten to {}",
            escrow,
            usdc,
            if test_token { " (TestUSDC: local chains only)" } else { "" },
            path.display()
        )
    });
    Ok(())
}

/// How long a deployment's receipt is waited for: one the network dropped is reported, not waited on
/// forever.
const DEPLOY_RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Sends the deployment `builder` builds and waits for its contract's address.
async fn deployed<P: Provider>(what: &str, builder: RawCallBuilder<P>) -> Result<Address, String> {
    let fail = |error: &dyn std::fmt::Display| format!("deploying {what}: {error}");
    let pending = builder.send().await.map_err(|error| fail(&error))?;
    let hash = *pending.tx_hash();
    let receipt = pending
        .with_timeout(Some(DEPLOY_RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|error| fail(&format!("{error} (transaction {hash}: it may still be mined)")))?;
    match receipt.contract_address {
        Some(address) if receipt.status() => Ok(address),
        _ => Err(fail(&format!("transaction {hash} reverted"))),
    }
}

/// Registers an agent through the server: this key signs, the server mints and hands the agent over.
/// The file holds the registration data, bare or as Agentripe's body `{"data": ...}`.
pub async fn register(
    market: &Market,
    out: Output,
    key: &PrivateKeySigner,
    file: &Path,
) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let registration: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
    let answer = market.register(key, registration).await.map_err(|e| e.to_string())?;
    out.show(&answer, || {
        format!(
            "registered agent #{} for {}\ntransaction {}",
            answer["agentId"],
            key.address(),
            answer["transactionHash"].as_str().unwrap_or("?")
        )
    });
    Ok(())
}

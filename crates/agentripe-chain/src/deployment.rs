//! Where the contracts live: the JSON file `contracts/script/Deploy.s.sol` writes.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// The addresses and parameters of one deployment, as written by `contracts/script/Deploy.s.sol` (and
/// by `agentripe deploy`, which serializes this).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The chain the contracts are on.
    pub chain_id: u64,
    /// The escrow.
    pub agentripe: Address,
    /// The escrowed token (USDC).
    pub usdc: Address,
    /// Whether `usdc` is our TestUSDC (local chains) rather than Circle's.
    pub usdc_is_test_token: bool,
    /// The ERC-8004 identity registry.
    pub identity_registry: Address,
    /// The ERC-8004 reputation registry.
    pub reputation_registry: Address,
    /// The escrow's operator at deployment time.
    pub operator: Address,
    /// Seconds from recording until a buyer may reclaim a deposit alone.
    pub deposit_timeout_seconds: u64,
    /// No event of these contracts is older than this block.
    pub start_block: u64,
}

/// Why a deployment file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// The file could not be read.
    #[error("cannot read the deployment file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not a deployment.
    #[error("{path} is not a deployment written by contracts/script/Deploy.s.sol: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

impl Deployment {
    /// Reads a deployment file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DeploymentError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| DeploymentError::Read { path: path.to_owned(), source })?;
        serde_json::from_str(&text).map_err(|source| DeploymentError::Parse { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN_BY_FORGE: &str = r#"{
      "agentripe": "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
      "chainId": 31337,
      "depositTimeoutSeconds": 604800,
      "identityRegistry": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
      "operator": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
      "reputationRegistry": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
      "startBlock": 0,
      "usdc": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
      "usdcIsTestToken": true
    }"#;

    #[test]
    fn parses_the_deploy_scripts_output() {
        let deployment: Deployment = serde_json::from_str(WRITTEN_BY_FORGE).expect("valid deployment");
        let written = serde_json::to_string(&deployment).expect("serializes");
        assert_eq!(serde_json::from_str::<Deployment>(&written).expect("reads back"), deployment);
        let forge: serde_json::Value = serde_json::from_str(WRITTEN_BY_FORGE).expect("json");
        let ours: serde_json::Value = serde_json::from_str(&written).expect("json");
        let keys =
            |value: &serde_json::Value| value.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&ours), keys(&forge), "the same fields as the deploy script writes");
        assert_eq!(deployment.chain_id, 31337);
        assert_eq!(deployment.deposit_timeout_seconds, 604_800);
        assert!(deployment.usdc_is_test_token);
        assert_eq!(
            deployment.agentripe,
            "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9".parse::<Address>().expect("address")
        );
    }

    #[test]
    fn load_names_the_file_it_cannot_use() {
        let missing = Deployment::load("/nonexistent/deployment.json").expect_err("no such file");
        assert!(missing.to_string().contains("/nonexistent/deployment.json"), "{missing}");

        let dir = std::env::temp_dir().join(format!("agentripe-deployment-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"chainId": 1}"#).expect("write");
        let error = Deployment::load(&bad).expect_err("incomplete deployment");
        assert!(matches!(error, DeploymentError::Parse { .. }), "{error}");
        assert!(error.to_string().contains("agentripe"), "names the missing field: {error}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

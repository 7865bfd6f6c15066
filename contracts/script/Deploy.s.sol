// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Script} from "forge-std/Script.sol";
import {IdentityRegistry} from "../src/IdentityRegistry.sol";
import {ReputationRegistry} from "../src/ReputationRegistry.sol";
import {Agentripe} from "../src/Agentripe.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// @notice Deploys the marketplace contracts to any chain and writes their addresses to a JSON file that
///         the server reads. Existing registries and USDC are reused when their addresses are given, so on
///         a public network only the escrow is new (ERC-8004 registries and USDC are shared infrastructure).
///
/// Environment (all optional; forge takes the broadcasting key from --private-key):
///   OPERATOR_ADDRESS             escrow operator, the server's key        (default: the deployer)
///   ESCROW_OWNER                 admin who may rotate the operator         (default: the deployer)
///   DEPOSIT_TIMEOUT_SECONDS      time until a buyer may reclaim alone      (default: 7 days)
///   USDC_ADDRESS                 reuse this token instead of a new TestUSDC
///   IDENTITY_REGISTRY_ADDRESS    reuse this ERC-8004 identity registry
///   REPUTATION_REGISTRY_ADDRESS  reuse this ERC-8004 reputation registry
///   IDENTITY_REGISTRY_START_BLOCK  with a reused identity registry: its first block, where the server's
///                                agent index starts (default: 0, every block; agents registered before
///                                the escrow existed must be listed too)
///   DEPLOYMENTS_FILE             output path                               (default: deployments/<chainId>.json)
contract Deploy is Script {
    /// @notice What to deploy; a zero address means "deploy a new one".
    struct Config {
        address operator;
        address owner;
        uint256 depositTimeout;
        address usdc;
        address identityRegistry;
        address reputationRegistry;
        /// @dev Read only when `identityRegistry` is reused: no agent is older than this block.
        uint256 identityRegistryStartBlock;
    }

    /// @notice What was deployed or reused.
    struct Deployment {
        address usdc;
        bool usdcIsTestToken;
        address identityRegistry;
        address reputationRegistry;
        address agentripe;
        uint256 startBlock;
    }

    function run() external {
        address deployer = msg.sender;
        Config memory config = Config({
            operator: vm.envOr("OPERATOR_ADDRESS", deployer),
            owner: vm.envOr("ESCROW_OWNER", deployer),
            depositTimeout: vm.envOr("DEPOSIT_TIMEOUT_SECONDS", uint256(7 days)),
            usdc: vm.envOr("USDC_ADDRESS", address(0)),
            identityRegistry: vm.envOr("IDENTITY_REGISTRY_ADDRESS", address(0)),
            reputationRegistry: vm.envOr("REPUTATION_REGISTRY_ADDRESS", address(0)),
            identityRegistryStartBlock: vm.envOr("IDENTITY_REGISTRY_START_BLOCK", uint256(0))
        });
        string memory out =
            vm.envOr("DEPLOYMENTS_FILE", string.concat("deployments/", vm.toString(block.chainid), ".json"));

        vm.startBroadcast();
        Deployment memory deployment = deploy(config, deployer);
        vm.stopBroadcast();
        vm.writeJson(toJson(config, deployment), out);
    }

    /// @notice Deploys what `config` does not name. The caller (or the broadcast) is the deployer;
    ///         `minter` owns a new TestUSDC.
    function deploy(Config memory config, address minter) public returns (Deployment memory deployment) {
        // No event of these contracts is older than this block: where the agent index starts scanning. A
        // reused registry has agents older than the escrow, so its own first block counts.
        deployment.startBlock = config.identityRegistry == address(0) ? block.number : config.identityRegistryStartBlock;
        deployment.usdcIsTestToken = config.usdc == address(0);
        deployment.usdc = deployment.usdcIsTestToken ? address(new TestUSDC(minter)) : config.usdc;
        deployment.identityRegistry =
            config.identityRegistry == address(0) ? address(new IdentityRegistry()) : config.identityRegistry;
        deployment.reputationRegistry = config.reputationRegistry == address(0)
            ? address(new ReputationRegistry(deployment.identityRegistry))
            : config.reputationRegistry;
        deployment.agentripe = address(
            new Agentripe(
                deployment.usdc, deployment.identityRegistry, config.operator, config.owner, config.depositTimeout
            )
        );
    }

    /// @notice The deployment file the server reads (crates/agentripe-chain, `Deployment`).
    function toJson(Config memory config, Deployment memory deployment) public returns (string memory) {
        string memory key = "deployment";
        vm.serializeUint(key, "chainId", block.chainid);
        vm.serializeAddress(key, "usdc", deployment.usdc);
        vm.serializeBool(key, "usdcIsTestToken", deployment.usdcIsTestToken);
        vm.serializeAddress(key, "identityRegistry", deployment.identityRegistry);
        vm.serializeAddress(key, "reputationRegistry", deployment.reputationRegistry);
        vm.serializeAddress(key, "operator", config.operator);
        vm.serializeUint(key, "depositTimeoutSeconds", config.depositTimeout);
        vm.serializeUint(key, "startBlock", deployment.startBlock);
        return vm.serializeAddress(key, "agentripe", deployment.agentripe);
    }
}

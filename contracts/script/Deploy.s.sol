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
/// Environment (all optional but the broadcasting key, which forge takes from --private-key):
///   OPERATOR_ADDRESS             escrow operator, the server's key        (default: the deployer)
///   ESCROW_OWNER                 admin who may rotate the operator         (default: the deployer)
///   DEPOSIT_TIMEOUT_SECONDS      time until a buyer may reclaim alone      (default: 7 days)
///   USDC_ADDRESS                 reuse this token instead of a new TestUSDC
///   IDENTITY_REGISTRY_ADDRESS    reuse this ERC-8004 identity registry
///   REPUTATION_REGISTRY_ADDRESS  reuse this ERC-8004 reputation registry
///   DEPLOYMENTS_FILE             output path                               (default: deployments/<chainId>.json)
contract Deploy is Script {
    function run() external {
        uint256 chainId = block.chainid;
        address deployer = msg.sender;
        address operator = vm.envOr("OPERATOR_ADDRESS", deployer);
        address owner = vm.envOr("ESCROW_OWNER", deployer);
        uint256 timeout = vm.envOr("DEPOSIT_TIMEOUT_SECONDS", uint256(7 days));
        string memory out = vm.envOr("DEPLOYMENTS_FILE", string.concat("deployments/", vm.toString(chainId), ".json"));

        address usdc = vm.envOr("USDC_ADDRESS", address(0));
        address identity = vm.envOr("IDENTITY_REGISTRY_ADDRESS", address(0));
        address reputation = vm.envOr("REPUTATION_REGISTRY_ADDRESS", address(0));
        bool testToken = usdc == address(0);

        vm.startBroadcast();
        if (testToken) usdc = address(new TestUSDC(deployer));
        if (identity == address(0)) identity = address(new IdentityRegistry());
        if (reputation == address(0)) reputation = address(new ReputationRegistry(identity));
        address escrow = address(new Agentripe(usdc, identity, operator, owner, timeout));
        vm.stopBroadcast();

        string memory key = "deployment";
        vm.serializeUint(key, "chainId", chainId);
        vm.serializeAddress(key, "usdc", usdc);
        vm.serializeBool(key, "usdcIsTestToken", testToken);
        vm.serializeAddress(key, "identityRegistry", identity);
        vm.serializeAddress(key, "reputationRegistry", reputation);
        vm.serializeAddress(key, "operator", operator);
        vm.serializeUint(key, "depositTimeoutSeconds", timeout);
        // No event of these contracts is older than this block: where an indexer starts scanning.
        vm.serializeUint(key, "startBlock", block.number);
        string memory json = vm.serializeAddress(key, "agentripe", escrow);
        vm.writeJson(json, out);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "forge-std/Test.sol";
import {Deploy} from "../script/Deploy.s.sol";
import {Agentripe} from "../src/Agentripe.sol";
import {IdentityRegistry} from "../src/IdentityRegistry.sol";
import {ReputationRegistry} from "../src/ReputationRegistry.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

contract DeployTest is Test {
    Deploy internal script = new Deploy();
    address internal operator = makeAddr("operator");
    address internal owner = makeAddr("owner");
    address internal minter = makeAddr("minter");

    function _config() internal view returns (Deploy.Config memory) {
        return Deploy.Config({
            operator: operator,
            owner: owner,
            depositTimeout: 3 days,
            usdc: address(0),
            identityRegistry: address(0),
            reputationRegistry: address(0),
            identityRegistryStartBlock: 0
        });
    }

    function test_deploy_freshChainGetsAllFour() public {
        Deploy.Deployment memory d = script.deploy(_config(), minter);
        assertTrue(d.usdcIsTestToken);
        assertEq(TestUSDC(d.usdc).owner(), minter);
        assertEq(ReputationRegistry(d.reputationRegistry).getIdentityRegistry(), d.identityRegistry);
        Agentripe escrow = Agentripe(d.agentripe);
        assertEq(address(escrow.token()), d.usdc);
        assertEq(address(escrow.identityRegistry()), d.identityRegistry);
        assertEq(escrow.operator(), operator);
        assertEq(escrow.owner(), owner);
        assertEq(escrow.depositTimeout(), 3 days);
    }

    function test_deploy_reusesGivenRegistriesAndToken() public {
        Deploy.Config memory config = _config();
        config.usdc = address(new TestUSDC(minter));
        config.identityRegistry = address(new IdentityRegistry());
        config.reputationRegistry = address(new ReputationRegistry(config.identityRegistry));

        Deploy.Deployment memory d = script.deploy(config, minter);
        assertFalse(d.usdcIsTestToken);
        assertEq(d.usdc, config.usdc);
        assertEq(d.identityRegistry, config.identityRegistry);
        assertEq(d.reputationRegistry, config.reputationRegistry);
        assertEq(address(Agentripe(d.agentripe).token()), config.usdc);
        assertEq(address(Agentripe(d.agentripe).identityRegistry()), config.identityRegistry);
    }

    function test_deploy_indexesAReusedRegistryFromItsOwnStart() public {
        Deploy.Config memory config = _config();
        config.identityRegistry = address(new IdentityRegistry());
        vm.roll(block.number + 1000);
        assertEq(script.deploy(config, minter).startBlock, 0, "by default, every block of a reused registry");
        config.identityRegistryStartBlock = 17;
        assertEq(script.deploy(config, minter).startBlock, 17, "the registry's first block, when given");
        config.identityRegistry = address(0);
        assertEq(script.deploy(config, minter).startBlock, block.number, "a new registry starts with the escrow");
    }

    function test_toJson_hasEveryFieldTheServerReads() public {
        Deploy.Config memory config = _config();
        Deploy.Deployment memory d = script.deploy(config, minter);
        string memory json = script.toJson(config, d);
        assertEq(vm.parseJsonUint(json, ".chainId"), block.chainid);
        assertEq(vm.parseJsonAddress(json, ".agentripe"), d.agentripe);
        assertEq(vm.parseJsonAddress(json, ".usdc"), d.usdc);
        assertTrue(vm.parseJsonBool(json, ".usdcIsTestToken"));
        assertEq(vm.parseJsonAddress(json, ".identityRegistry"), d.identityRegistry);
        assertEq(vm.parseJsonAddress(json, ".reputationRegistry"), d.reputationRegistry);
        assertEq(vm.parseJsonAddress(json, ".operator"), operator);
        assertEq(vm.parseJsonUint(json, ".depositTimeoutSeconds"), 3 days);
        assertEq(vm.parseJsonUint(json, ".startBlock"), d.startBlock);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ReputationRegistry} from "../src/ReputationRegistry.sol";
import {IERC8004Reputation} from "../src/interfaces/IERC8004Reputation.sol";
import {Fixture} from "./utils/Fixture.sol";

contract ReputationRegistryTest is Fixture {
    address internal client1 = makeAddr("client1");
    address internal client2 = makeAddr("client2");

    function _give(address client, int128 value, uint8 decimals, string memory tag1, string memory tag2) internal {
        vm.prank(client);
        reputation.giveFeedback(agentId, value, decimals, tag1, tag2, "", "", bytes32(0));
    }

    function _clients() internal view returns (address[] memory list) {
        list = new address[](2);
        list[0] = client1;
        list[1] = client2;
    }

    function test_constructor() public {
        assertEq(reputation.getIdentityRegistry(), address(identity));
        vm.expectRevert(ReputationRegistry.ZeroIdentityRegistry.selector);
        new ReputationRegistry(address(0));
    }

    function test_giveFeedback_storesAndEmits() public {
        vm.expectEmit(address(reputation));
        emit IERC8004Reputation.NewFeedback(
            agentId, client1, 1, 9977, 2, "quality", "quality", "speed", "/translate", "ipfs://f", bytes32("h")
        );
        vm.prank(client1);
        reputation.giveFeedback(agentId, 9977, 2, "quality", "speed", "/translate", "ipfs://f", bytes32("h"));

        (int128 value, uint8 decimals, string memory tag1, string memory tag2, bool revoked) =
            reputation.readFeedback(agentId, client1, 1);
        assertEq(value, 9977);
        assertEq(decimals, 2);
        assertEq(tag1, "quality");
        assertEq(tag2, "speed");
        assertFalse(revoked);
        assertEq(reputation.getLastIndex(agentId, client1), 1);
        assertEq(reputation.getLastIndex(agentId, client2), 0);
        assertEq(reputation.getClients(agentId).length, 1);
    }

    function test_giveFeedback_indexesPerClientAndListsClientsOnce() public {
        _give(client1, 1, 0, "", "");
        _give(client1, 2, 0, "", "");
        _give(client2, 3, 0, "", "");
        assertEq(reputation.getLastIndex(agentId, client1), 2);
        assertEq(reputation.getLastIndex(agentId, client2), 1);
        address[] memory clients = reputation.getClients(agentId);
        assertEq(clients.length, 2);
        assertEq(clients[0], client1);
        assertEq(clients[1], client2);
    }

    function test_giveFeedback_refusesSelfFeedback() public {
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.SelfFeedback.selector, vendor, agentId));
        _give(vendor, 100, 0, "", "");

        vm.prank(vendor);
        identity.approve(client1, agentId);
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.SelfFeedback.selector, client1, agentId));
        _give(client1, 100, 0, "", "");

        vm.prank(vendor);
        identity.setApprovalForAll(client2, true);
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.SelfFeedback.selector, client2, agentId));
        _give(client2, 100, 0, "", "");
    }

    function test_giveFeedback_refusesUnknownAgentAndTooManyDecimals() public {
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.AgentNotFound.selector, 42));
        vm.prank(client1);
        reputation.giveFeedback(42, 1, 0, "", "", "", "", bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.ValueDecimalsTooLarge.selector, 19));
        _give(client1, 1, 19, "", "");
    }

    function test_revokeFeedback() public {
        _give(client1, 80, 0, "", "");
        vm.expectEmit(address(reputation));
        emit IERC8004Reputation.FeedbackRevoked(agentId, client1, 1);
        vm.prank(client1);
        reputation.revokeFeedback(agentId, 1);
        (,,,, bool revoked) = reputation.readFeedback(agentId, client1, 1);
        assertTrue(revoked);

        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.FeedbackAlreadyRevoked.selector, agentId, client1, 1));
        vm.prank(client1);
        reputation.revokeFeedback(agentId, 1);
    }

    function test_revokeFeedback_onlyOwnFeedback() public {
        _give(client1, 80, 0, "", "");
        // client2 has no feedback 1: it cannot touch client1's.
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.FeedbackNotFound.selector, agentId, client2, 1));
        vm.prank(client2);
        reputation.revokeFeedback(agentId, 1);
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.FeedbackNotFound.selector, agentId, client1, 0));
        vm.prank(client1);
        reputation.revokeFeedback(agentId, 0);
    }

    function test_readFeedback_revertsOutOfRange() public {
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.FeedbackNotFound.selector, agentId, client1, 1));
        reputation.readFeedback(agentId, client1, 1);
    }

    function test_appendResponse_andCount() public {
        _give(client1, 10, 0, "", "");
        _give(client1, 20, 0, "", "");
        _give(client2, 30, 0, "", "");
        vm.expectEmit(address(reputation));
        emit IERC8004Reputation.ResponseAppended(agentId, client1, 1, vendor, "ipfs://reply", bytes32("r"));
        vm.prank(vendor);
        reputation.appendResponse(agentId, client1, 1, "ipfs://reply", bytes32("r"));
        vm.prank(vendor);
        reputation.appendResponse(agentId, client1, 1, "ipfs://reply2", bytes32(0));
        vm.prank(client2);
        reputation.appendResponse(agentId, client1, 2, "ipfs://note", bytes32(0));
        vm.prank(vendor);
        reputation.appendResponse(agentId, client2, 1, "ipfs://reply3", bytes32(0));

        address[] memory none = new address[](0);
        address[] memory onlyVendor = new address[](1);
        onlyVendor[0] = vendor;
        assertEq(reputation.getResponseCount(agentId, client1, 1, none), 2);
        assertEq(reputation.getResponseCount(agentId, client1, 0, none), 3);
        assertEq(reputation.getResponseCount(agentId, client1, 0, onlyVendor), 2);
        assertEq(reputation.getResponseCount(agentId, address(0), 0, none), 4);
        assertEq(reputation.getResponseCount(agentId, address(0), 0, onlyVendor), 3);
    }

    function test_appendResponse_revertsOnMissingFeedbackOrURI() public {
        vm.expectRevert(abi.encodeWithSelector(ReputationRegistry.FeedbackNotFound.selector, agentId, client1, 1));
        reputation.appendResponse(agentId, client1, 1, "ipfs://x", bytes32(0));
        _give(client1, 10, 0, "", "");
        vm.expectRevert(ReputationRegistry.EmptyResponseURI.selector);
        reputation.appendResponse(agentId, client1, 1, "", bytes32(0));
    }

    function test_getSummary_averagesAtLargestPrecision() public {
        _give(client1, 100, 0, "escrow", "released"); // 100
        _give(client1, 5050, 2, "escrow", "released"); // 50.50
        _give(client2, -25, 1, "escrow", "refunded"); // -2.5
        (uint64 count, int128 value, uint8 decimals) = reputation.getSummary(agentId, _clients(), "", "");
        assertEq(count, 3);
        assertEq(decimals, 2);
        assertEq(value, 4933); // (100 + 50.5 - 2.5) / 3 = 49.333..., truncated at 2 decimals
    }

    function test_getSummary_saturatesInsteadOfWrapping() public {
        // int128.max at 0 decimals beside 1e-18: the mean at 18 decimals is far past int128.
        _give(client1, type(int128).max, 0, "", "");
        _give(client1, 1, 18, "", "");
        (uint64 count, int128 value, uint8 decimals) = reputation.getSummary(agentId, _clients(), "", "");
        assertEq(count, 2);
        assertEq(decimals, 18);
        assertEq(value, type(int128).max);

        _give(client2, type(int128).min, 0, "low", "");
        _give(client2, -1, 18, "low", "");
        (, value,) = reputation.getSummary(agentId, _clients(), "low", "");
        assertEq(value, type(int128).min);
    }

    function test_getSummary_filtersByTagsClientsAndRevocation() public {
        _give(client1, 100, 0, "escrow", "released");
        _give(client1, 0, 0, "escrow", "refunded");
        _give(client2, 60, 0, "quality", "");
        address[] memory onlyClient1 = new address[](1);
        onlyClient1[0] = client1;

        (uint64 count, int128 value,) = reputation.getSummary(agentId, _clients(), "escrow", "");
        assertEq(count, 2);
        assertEq(value, 50);
        (count, value,) = reputation.getSummary(agentId, _clients(), "escrow", "released");
        assertEq(count, 1);
        assertEq(value, 100);
        (count, value,) = reputation.getSummary(agentId, onlyClient1, "", "");
        assertEq(count, 2);

        vm.prank(client1);
        reputation.revokeFeedback(agentId, 2);
        (count, value,) = reputation.getSummary(agentId, onlyClient1, "", "");
        assertEq(count, 1);
        assertEq(value, 100);
    }

    function test_getSummary_emptyAndNoMatch() public {
        address[] memory none = new address[](0);
        vm.expectRevert(ReputationRegistry.EmptyClientList.selector);
        reputation.getSummary(agentId, none, "", "");
        (uint64 count, int128 value, uint8 decimals) = reputation.getSummary(agentId, _clients(), "", "");
        assertEq(count, 0);
        assertEq(value, 0);
        assertEq(decimals, 0);
    }

    function test_readAllFeedback() public {
        _give(client1, 1, 0, "a", "");
        _give(client1, 2, 0, "b", "");
        _give(client2, 3, 1, "a", "x");
        vm.prank(client1);
        reputation.revokeFeedback(agentId, 1);
        address[] memory none = new address[](0);

        (address[] memory clients, uint64[] memory indexes, int128[] memory values,,,, bool[] memory revoked) =
            reputation.readAllFeedback(agentId, none, "", "", false);
        assertEq(clients.length, 2);
        assertEq(clients[0], client1);
        assertEq(indexes[0], 2);
        assertEq(values[0], 2);
        assertEq(clients[1], client2);
        assertFalse(revoked[1]);

        (clients, indexes, values,,,, revoked) = reputation.readAllFeedback(agentId, none, "a", "", true);
        assertEq(clients.length, 2);
        assertTrue(revoked[0]);
        assertEq(values[1], 3);

        string[] memory tag2s;
        uint8[] memory decimals;
        (clients,,, decimals,, tag2s,) = reputation.readAllFeedback(agentId, _clients(), "a", "x", true);
        assertEq(clients.length, 1);
        assertEq(decimals[0], 1);
        assertEq(tag2s[0], "x");
    }

    /// The summary is the mean of the values, whatever their precisions.
    function testFuzz_getSummaryIsTheMean(int64 a, int64 b, uint8 da, uint8 db) public {
        da = uint8(bound(da, 0, 18));
        db = uint8(bound(db, 0, 18));
        _give(client1, a, da, "", "");
        _give(client2, b, db, "", "");
        (uint64 count, int128 value, uint8 decimals) = reputation.getSummary(agentId, _clients(), "", "");
        assertEq(count, 2);
        assertEq(decimals, da > db ? da : db);
        int256 meanAt18 = (int256(a) * int256(10 ** (18 - da)) + int256(b) * int256(10 ** (18 - db))) / 2;
        assertEq(int256(value), meanAt18 / int256(10 ** (18 - decimals)));
    }
}

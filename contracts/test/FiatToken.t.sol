// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Agentripe} from "../src/Agentripe.sol";
import {FiatTokenFixture} from "./utils/Fixture.sol";

/// @notice The escrow on Circle's FiatTokenV2_2 (the npm artifacts, initialised as Base's USDC): the money
///         path, and the two ways the real token refuses a payout, a blacklisted payee and a paused token.
///         A refused push must become a credit, never a stuck deposit, and the credit must be collectable
///         once the token lets it go.
contract EscrowOnFiatTokenTest is FiatTokenFixture {
    bytes32 internal constant ID = keccak256("x402 settlement tx");

    event PayoutCredited(address indexed payee, uint256 amount);

    function test_deployedAsBaseUsdc() public view {
        assertEq(fiatToken.token.name(), "USD Coin");
        assertEq(fiatToken.token.version(), "2");
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("USD Coin"),
                keccak256("2"),
                block.chainid,
                address(usdc)
            )
        );
        assertEq(usdc.DOMAIN_SEPARATOR(), domain);
    }

    function test_buyerToVendorAndRefund() public {
        _deposit(ID, PRICE);
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        assertEq(usdc.balanceOf(vendor), PRICE);

        bytes32 second = keccak256("second");
        _deposit(second, PRICE);
        vm.prank(operator);
        escrow.refundToBuyer(second);
        assertEq(usdc.balanceOf(buyer), PRICE);
        assertEq(usdc.balanceOf(address(escrow)), 0);
    }

    function test_blacklistedVendorIsCreditedAndCollectsOnceCleared() public {
        _deposit(ID, PRICE);
        vm.prank(admin);
        fiatToken.token.blacklist(vendor);

        vm.expectEmit(address(escrow));
        emit PayoutCredited(vendor, PRICE);
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        (,,, uint8 status) = escrow.getDeposit(ID);
        assertEq(status, uint8(Agentripe.Status.RELEASED));
        assertEq(escrow.withdrawableBalance(vendor), PRICE);

        // Still blacklisted: the credit stays, and the withdrawal fails whole.
        vm.prank(vendor);
        vm.expectRevert("Blacklistable: account is blacklisted");
        escrow.withdraw();
        assertEq(escrow.withdrawableBalance(vendor), PRICE);

        vm.prank(admin);
        fiatToken.token.unBlacklist(vendor);
        vm.prank(vendor);
        escrow.withdraw();
        assertEq(usdc.balanceOf(vendor), PRICE);
        assertEq(usdc.balanceOf(address(escrow)), 0);
    }

    function test_blacklistedBuyerRefundIsCredited() public {
        _deposit(ID, PRICE);
        vm.prank(admin);
        fiatToken.token.blacklist(buyer);
        vm.expectEmit(address(escrow));
        emit PayoutCredited(buyer, PRICE);
        vm.prank(operator);
        escrow.refundToBuyer(ID);
        assertEq(escrow.withdrawableBalance(buyer), PRICE);
        assertEq(usdc.balanceOf(address(escrow)), PRICE);
    }

    /// A batch meets one blacklisted vendor with two deposits in a row: they are credited together, and
    /// the other vendor is paid.
    function test_batchWithOneBlacklistedVendorPushesTheRest() public {
        bytes32 second = keccak256("second");
        _deposit(ID, PRICE);
        _deposit(second, PRICE);
        vm.prank(admin);
        fiatToken.token.blacklist(vendor);
        (address otherVendor,) = makeAddrAndKey("other vendor");
        vm.prank(otherVendor);
        uint256 otherAgent = identity.register("https://example.test/other.json");
        bytes32 other = keccak256("other");
        _payIntoEscrow(buyer, buyerKey, PRICE, other);
        vm.prank(operator);
        escrow.recordDeposit(other, otherAgent, buyer, PRICE);

        bytes32[] memory ids = new bytes32[](3);
        (ids[0], ids[1], ids[2]) = (ID, second, other);
        vm.expectEmit(address(escrow));
        emit PayoutCredited(vendor, 2 * PRICE);
        vm.prank(operator);
        escrow.releaseToVendors(ids);
        assertEq(escrow.withdrawableBalance(vendor), 2 * PRICE);
        assertEq(usdc.balanceOf(otherVendor), PRICE);
        assertEq(escrow.totalLiabilities(), 2 * PRICE, "the credit is still owed");
    }

    /// Circle blacklists the escrow itself: every payout is credited, no withdrawal succeeds, and the money
    /// waits in the escrow until it is cleared.
    function test_blacklistedEscrowKeepsEveryPayoutUntilCleared() public {
        _deposit(ID, PRICE);
        vm.prank(admin);
        fiatToken.token.blacklist(address(escrow));
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        assertEq(escrow.withdrawableBalance(vendor), PRICE);
        vm.prank(vendor);
        vm.expectRevert("Blacklistable: account is blacklisted");
        escrow.withdraw();
        assertEq(usdc.balanceOf(address(escrow)), PRICE);

        vm.prank(admin);
        fiatToken.token.unBlacklist(address(escrow));
        vm.prank(vendor);
        escrow.withdraw();
        assertEq(usdc.balanceOf(vendor), PRICE);
    }

    function test_pausedTokenRefusesSettlementAndCreditsPayouts() public {
        _deposit(ID, PRICE);
        vm.prank(admin);
        fiatToken.token.pause();

        // No x402 settlement can move a buyer's money while the token is paused.
        bytes32 nonce = keccak256("while paused");
        vm.prank(admin);
        vm.expectRevert("Pausable: paused");
        usdc.mint(buyer, PRICE);
        (uint8 v, bytes32 r, bytes32 s) =
            _signTransfer(buyerKey, buyer, address(escrow), PRICE, 0, block.timestamp + 1 hours, nonce);
        vm.expectRevert("Pausable: paused");
        usdc.transferWithAuthorization(buyer, address(escrow), PRICE, 0, block.timestamp + 1 hours, nonce, v, r, s);

        // A verdict reached while paused is final on chain; the payout waits as a credit.
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        assertEq(escrow.withdrawableBalance(vendor), PRICE);

        vm.prank(admin);
        fiatToken.token.unpause();
        vm.prank(vendor);
        escrow.withdraw();
        assertEq(usdc.balanceOf(vendor), PRICE);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IERC721Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Agentripe} from "../src/Agentripe.sol";
import {Vm} from "forge-std/Vm.sol";
import {Fixture} from "./utils/Fixture.sol";
import {GasHungryToken, HostileToken, RefusingToken} from "./utils/Mocks.sol";

contract AgentripeTest is Fixture {
    bytes32 internal constant ID = keccak256("x402 settlement tx");

    event DepositRecorded(bytes32 indexed depositId, uint256 indexed agentId, address indexed buyer, uint256 amount);
    event DepositReleased(bytes32 indexed depositId, address indexed agentWallet, uint256 amount);
    event DepositRefunded(bytes32 indexed depositId, address indexed buyer, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);
    event PayoutCredited(address indexed payee, uint256 amount);
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);

    // ------------------------------------------------------------ constructor

    function test_constructor_setsConfiguration() public view {
        assertEq(address(escrow.token()), address(usdc));
        assertEq(address(escrow.identityRegistry()), address(identity));
        assertEq(escrow.operator(), operator);
        assertEq(escrow.owner(), admin);
        assertEq(escrow.depositTimeout(), DEPOSIT_TIMEOUT);
    }

    function test_constructor_revertsOnZeroAddresses() public {
        vm.expectRevert(Agentripe.ZeroAddress.selector);
        new Agentripe(address(0), address(identity), operator, admin, 1 days);
        vm.expectRevert(Agentripe.ZeroAddress.selector);
        new Agentripe(address(usdc), address(0), operator, admin, 1 days);
        vm.expectRevert(Agentripe.ZeroAddress.selector);
        new Agentripe(address(usdc), address(identity), address(0), admin, 1 days);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new Agentripe(address(usdc), address(identity), operator, address(0), 1 days);
    }

    function test_constructor_revertsOnBadTimeout() public {
        vm.expectRevert(abi.encodeWithSelector(Agentripe.InvalidDepositTimeout.selector, 0));
        new Agentripe(address(usdc), address(identity), operator, admin, 0);
        uint256 tooLong = uint256(type(uint32).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(Agentripe.InvalidDepositTimeout.selector, tooLong));
        new Agentripe(address(usdc), address(identity), operator, admin, tooLong);
    }

    // ------------------------------------------------------------ recordDeposit

    function test_recordDeposit_locksPayment() public {
        _payIntoEscrow(buyer, buyerKey, PRICE, ID);
        vm.expectEmit(address(escrow));
        emit DepositRecorded(ID, agentId, buyer, PRICE);
        vm.prank(operator);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);

        (uint256 gotAgent, address gotBuyer, uint256 gotAmount, uint8 status) = escrow.getDeposit(ID);
        assertEq(gotAgent, agentId);
        assertEq(gotBuyer, buyer);
        assertEq(gotAmount, PRICE);
        assertEq(status, 1);
        assertEq(escrow.totalLiabilities(), PRICE);
        assertEq(escrow.depositExpiresAt(ID), block.timestamp + DEPOSIT_TIMEOUT);
    }

    function test_getDeposit_unknownIsNone() public view {
        (uint256 gotAgent, address gotBuyer, uint256 gotAmount, uint8 status) = escrow.getDeposit(ID);
        assertEq(gotAgent, 0);
        assertEq(gotBuyer, address(0));
        assertEq(gotAmount, 0);
        assertEq(status, 0);
        assertEq(escrow.depositExpiresAt(ID), 0);
    }

    function test_recordDeposit_revertsForNonOperator() public {
        _payIntoEscrow(buyer, buyerKey, PRICE, ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, buyer));
        vm.prank(buyer);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
    }

    function test_recordDeposit_revertsWhenUnbacked() public {
        vm.expectRevert(abi.encodeWithSelector(Agentripe.InsufficientBacking.selector, 0, PRICE));
        vm.prank(operator);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
    }

    function test_recordDeposit_cannotDoubleCountOnePayment() public {
        _deposit(ID, PRICE);
        // The same tokens cannot back a second deposit under another id.
        vm.expectRevert(abi.encodeWithSelector(Agentripe.InsufficientBacking.selector, PRICE, 2 * PRICE));
        vm.prank(operator);
        escrow.recordDeposit(keccak256("another"), agentId, buyer, PRICE);
    }

    function test_recordDeposit_cannotCountWithdrawableCredit() public {
        (Agentripe victim, RefusingToken token) = _refusingEscrow(ID, PRICE);
        token.setBlocked(vendor, true);
        vm.prank(operator);
        victim.releaseToVendor(ID);
        // Released but refused by the token: a credit still owed to the vendor, so it backs nothing new.
        vm.expectRevert(abi.encodeWithSelector(Agentripe.InsufficientBacking.selector, PRICE, 2 * PRICE));
        vm.prank(operator);
        victim.recordDeposit(keccak256("another"), agentId, buyer, PRICE);
    }

    function test_recordDeposit_revertsOnDuplicateId() public {
        _deposit(ID, PRICE);
        _payIntoEscrow(buyer, buyerKey, PRICE, keccak256("second payment"));
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositAlreadyRecorded.selector, ID));
        vm.prank(operator);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
    }

    function test_recordDeposit_idNeverReusedAfterPayout() public {
        _deposit(ID, PRICE);
        vm.prank(operator);
        escrow.refundToBuyer(ID);
        _payIntoEscrow(buyer, buyerKey, PRICE, keccak256("second payment"));
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositAlreadyRecorded.selector, ID));
        vm.prank(operator);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
    }

    function test_recordDeposit_revertsOnBadInput() public {
        _payIntoEscrow(buyer, buyerKey, PRICE, ID);
        vm.startPrank(operator);
        vm.expectRevert(Agentripe.ZeroDepositId.selector);
        escrow.recordDeposit(bytes32(0), agentId, buyer, PRICE);
        vm.expectRevert(Agentripe.ZeroAddress.selector);
        escrow.recordDeposit(ID, agentId, address(0), PRICE);
        vm.expectRevert(Agentripe.ZeroAmount.selector);
        escrow.recordDeposit(ID, agentId, buyer, 0);
        uint256 huge = uint256(type(uint96).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(Agentripe.AmountTooLarge.selector, huge));
        escrow.recordDeposit(ID, agentId, buyer, huge);
        uint256 hugeId = uint256(type(uint208).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(Agentripe.AgentIdTooLarge.selector, hugeId));
        escrow.recordDeposit(ID, hugeId, buyer, PRICE);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 999));
        escrow.recordDeposit(ID, 999, buyer, PRICE);
        vm.stopPrank();
    }

    function test_recordDeposit_revertsWhenTotalOwedOverflows96Bits() public {
        uint256 max = type(uint96).max;
        _deposit(ID, max);
        bytes32 second = keccak256("second");
        _payIntoEscrow(buyer, buyerKey, 1, second);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.AmountTooLarge.selector, 1));
        vm.prank(operator);
        escrow.recordDeposit(second, agentId, buyer, 1);
    }

    // ------------------------------------------------------------ releaseToVendor

    function test_releaseToVendor_paysOwnerWhenNoWallet() public {
        _deposit(ID, PRICE);
        vm.prank(vendor);
        identity.unsetAgentWallet(agentId);

        vm.expectEmit(address(escrow));
        emit DepositReleased(ID, vendor, PRICE);
        vm.prank(operator);
        escrow.releaseToVendor(ID);

        // Paid in the same transaction: the vendor needs no ETH to receive it.
        assertEq(usdc.balanceOf(vendor), PRICE);
        assertEq(escrow.withdrawableBalance(vendor), 0);
        (,,, uint8 status) = escrow.getDeposit(ID);
        assertEq(status, 2);
        assertEq(escrow.totalLiabilities(), 0);
        assertEq(usdc.balanceOf(address(escrow)), 0);
    }

    function test_releaseToVendor_paysAgentWalletChosenAfterRecording() public {
        _deposit(ID, PRICE);
        (address wallet, uint256 walletKey) = makeAddrAndKey("vendor payout wallet");
        uint256 deadline = block.timestamp + 60;
        bytes memory consent = _sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, consent);

        vm.prank(operator);
        escrow.releaseToVendor(ID);
        assertEq(usdc.balanceOf(wallet), PRICE);
        assertEq(usdc.balanceOf(vendor), 0);
    }

    function test_releaseToVendor_followsTokenTransfer() public {
        _deposit(ID, PRICE);
        address newOwner = makeAddr("new owner");
        vm.prank(vendor);
        identity.transferFrom(vendor, newOwner, agentId);
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        assertEq(usdc.balanceOf(newOwner), PRICE);
        assertEq(usdc.balanceOf(vendor), 0);
    }

    function test_releaseToVendor_revertsForNonOperator() public {
        _deposit(ID, PRICE);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, vendor));
        vm.prank(vendor);
        escrow.releaseToVendor(ID);
    }

    function test_releaseToVendor_revertsForUnknownDeposit() public {
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotActive.selector, ID, Agentripe.Status.NONE));
        vm.prank(operator);
        escrow.releaseToVendor(ID);
    }

    function test_releaseToVendor_onlyOnce() public {
        _deposit(ID, PRICE);
        vm.startPrank(operator);
        escrow.releaseToVendor(ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotActive.selector, ID, Agentripe.Status.RELEASED));
        escrow.releaseToVendor(ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotActive.selector, ID, Agentripe.Status.RELEASED));
        escrow.refundToBuyer(ID);
        vm.stopPrank();
        assertEq(usdc.balanceOf(vendor), PRICE);
        assertEq(usdc.balanceOf(buyer), 0);
    }

    function test_releaseToVendor_revertsAfterExpiry() public {
        _deposit(ID, PRICE);
        uint256 expiresAt = escrow.depositExpiresAt(ID);
        vm.warp(expiresAt);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositExpired.selector, ID, expiresAt));
        vm.prank(operator);
        escrow.releaseToVendor(ID);
    }

    // ------------------------------------------------------------ refundToBuyer

    function test_refundToBuyer_paysBuyer() public {
        _deposit(ID, PRICE);
        vm.expectEmit(address(escrow));
        emit DepositRefunded(ID, buyer, PRICE);
        vm.prank(operator);
        escrow.refundToBuyer(ID);
        // The buyer paid gaslessly (EIP-3009) and is refunded without ETH as well.
        assertEq(usdc.balanceOf(buyer), PRICE);
        assertEq(escrow.withdrawableBalance(buyer), 0);
        (,,, uint8 status) = escrow.getDeposit(ID);
        assertEq(status, 3);
    }

    function test_refundToBuyer_allowedAfterExpiry() public {
        _deposit(ID, PRICE);
        vm.warp(block.timestamp + DEPOSIT_TIMEOUT + 1);
        vm.prank(operator);
        escrow.refundToBuyer(ID);
        assertEq(usdc.balanceOf(buyer), PRICE);
    }

    function test_refundToBuyer_revertsForNonOperator() public {
        _deposit(ID, PRICE);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, buyer));
        vm.prank(buyer);
        escrow.refundToBuyer(ID);
    }

    function test_refundToBuyer_onlyOnce() public {
        _deposit(ID, PRICE);
        vm.startPrank(operator);
        escrow.refundToBuyer(ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotActive.selector, ID, Agentripe.Status.REFUNDED));
        escrow.refundToBuyer(ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotActive.selector, ID, Agentripe.Status.REFUNDED));
        escrow.releaseToVendor(ID);
        vm.stopPrank();
    }

    // ------------------------------------------------------------ reclaimExpired

    function test_reclaimExpired_anyoneCanRefundBuyerAfterExpiry() public {
        _deposit(ID, PRICE);
        vm.warp(escrow.depositExpiresAt(ID));
        vm.expectEmit(address(escrow));
        emit DepositRefunded(ID, buyer, PRICE);
        vm.prank(makeAddr("keeper"));
        escrow.reclaimExpired(ID);
        assertEq(usdc.balanceOf(buyer), PRICE);
        assertEq(escrow.totalLiabilities(), 0);
    }

    function test_reclaimExpired_revertsBeforeExpiry() public {
        _deposit(ID, PRICE);
        uint256 expiresAt = escrow.depositExpiresAt(ID);
        vm.warp(expiresAt - 1);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotExpired.selector, ID, expiresAt));
        vm.prank(buyer);
        escrow.reclaimExpired(ID);
    }

    function test_reclaimExpired_revertsAfterRelease() public {
        _deposit(ID, PRICE);
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        vm.warp(block.timestamp + DEPOSIT_TIMEOUT);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.DepositNotActive.selector, ID, Agentripe.Status.RELEASED));
        vm.prank(buyer);
        escrow.reclaimExpired(ID);
    }

    function test_reclaimExpired_worksWithOperatorGone() public {
        _deposit(ID, PRICE);
        // Even a hostile owner swapping the operator cannot stop the buyer.
        vm.prank(admin);
        escrow.setOperator(makeAddr("somebody else"));
        vm.warp(block.timestamp + DEPOSIT_TIMEOUT);
        vm.prank(buyer);
        escrow.reclaimExpired(ID);
        assertEq(usdc.balanceOf(buyer), PRICE);
    }

    // ------------------------------------------------------------ payouts the token refuses, and withdraw

    /// An escrow over a token that can refuse transfers, with `amount` deposited under `id`.
    function _refusingEscrow(bytes32 id, uint256 amount) internal returns (Agentripe victim, RefusingToken token) {
        token = new RefusingToken();
        victim = new Agentripe(address(token), address(identity), operator, admin, DEPOSIT_TIMEOUT);
        token.mint(address(victim), amount);
        vm.prank(operator);
        victim.recordDeposit(id, agentId, buyer, amount);
    }

    function test_releaseToVendor_blocklistedPayeeGetsACreditNotABlockedDeposit() public {
        (Agentripe victim, RefusingToken token) = _refusingEscrow(ID, PRICE);
        token.setBlocked(vendor, true);

        vm.expectEmit(address(victim));
        emit DepositReleased(ID, vendor, PRICE);
        vm.expectEmit(address(victim));
        emit PayoutCredited(vendor, PRICE);
        vm.prank(operator);
        victim.releaseToVendor(ID);

        (,,, uint8 status) = victim.getDeposit(ID);
        assertEq(status, 2, "resolved all the same");
        assertEq(victim.withdrawableBalance(vendor), PRICE);
        assertEq(victim.totalLiabilities(), PRICE, "still owed");

        // Blocked, the vendor cannot pull it either; once unblocked it withdraws it, once.
        vm.expectRevert(abi.encodeWithSelector(RefusingToken.Blocked.selector, vendor));
        vm.prank(vendor);
        victim.withdraw();
        token.setBlocked(vendor, false);
        vm.expectEmit(address(victim));
        emit Withdrawn(vendor, PRICE);
        vm.prank(vendor);
        victim.withdraw();
        assertEq(token.balanceOf(vendor), PRICE);
        assertEq(victim.totalLiabilities(), 0);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NothingToWithdraw.selector, vendor));
        vm.prank(vendor);
        victim.withdraw();
    }

    function test_refundToBuyer_pausedTokenLeavesACredit() public {
        (Agentripe victim, RefusingToken token) = _refusingEscrow(ID, PRICE);
        token.setPaused(true);
        vm.prank(operator);
        victim.refundToBuyer(ID);
        assertEq(victim.withdrawableBalance(buyer), PRICE);
        token.setPaused(false);
        vm.prank(buyer);
        victim.withdraw();
        assertEq(token.balanceOf(buyer), PRICE);
        assertEq(token.balanceOf(address(victim)), 0);
    }

    function test_withdraw_accumulatesSeveralCredits() public {
        (Agentripe victim, RefusingToken token) = _refusingEscrow(ID, PRICE);
        token.mint(address(victim), 3 * PRICE);
        vm.prank(operator);
        victim.recordDeposit(keccak256("second"), agentId, buyer, 3 * PRICE);
        token.setBlocked(vendor, true);
        vm.startPrank(operator);
        victim.releaseToVendor(ID);
        victim.releaseToVendor(keccak256("second"));
        vm.stopPrank();
        assertEq(victim.withdrawableBalance(vendor), 4 * PRICE);
        token.setBlocked(vendor, false);
        vm.prank(vendor);
        victim.withdraw();
        assertEq(token.balanceOf(vendor), 4 * PRICE);
    }

    /// Whatever gas the operator's transaction carries, a payout the token would make is made, or the call
    /// reverts: starving the transfer never turns it into a credit (which eth_estimateGas would otherwise
    /// pick for a token whose transfers are dear, the credit being the cheaper path).
    function test_payout_starvedOfGasRevertsInsteadOfCrediting() public {
        GasHungryToken token = new GasHungryToken();
        Agentripe victim = new Agentripe(address(token), address(identity), operator, admin, DEPOSIT_TIMEOUT);
        token.mint(address(victim), PRICE);
        vm.prank(operator);
        victim.recordDeposit(ID, agentId, buyer, PRICE);

        uint256 paidAt;
        for (uint256 gasLimit = 500_000; gasLimit <= 4_000_000; gasLimit += 50_000) {
            uint256 snapshot = vm.snapshotState();
            vm.prank(operator);
            (bool ok,) = address(victim).call{gas: gasLimit}(abi.encodeCall(Agentripe.releaseToVendor, (ID)));
            (,,, uint8 status) = victim.getDeposit(ID);
            assertEq(victim.withdrawableBalance(vendor), 0, "a starved transfer became a credit");
            if (ok) {
                assertEq(token.balanceOf(vendor), PRICE);
                if (paidAt == 0) paidAt = gasLimit;
            } else {
                assertEq(status, 1, "a failed release left the deposit open");
            }
            vm.revertToState(snapshot);
        }
        assertGt(paidAt, 500_000, "too little gas reverts");
        assertLt(paidAt, 4_000_000, "enough gas pays");
    }

    function test_withdraw_revertsWithNothing() public {
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NothingToWithdraw.selector, buyer));
        vm.prank(buyer);
        escrow.withdraw();
    }

    /// An escrow over a token that re-enters on transfers, with two deposits past their expiry (so that
    /// `reclaimExpired` of either would succeed on its own).
    function _hostileEscrowWithTwoExpired()
        internal
        returns (HostileToken hostile, Agentripe victim, bytes32 first, bytes32 second)
    {
        hostile = new HostileToken();
        victim = new Agentripe(address(hostile), address(identity), operator, admin, DEPOSIT_TIMEOUT);
        (first, second) = (keccak256("first"), keccak256("second"));
        hostile.mint(address(victim), 2 * PRICE);
        vm.startPrank(operator);
        victim.recordDeposit(first, agentId, buyer, PRICE);
        victim.recordDeposit(second, agentId, buyer, PRICE);
        vm.stopPrank();
        vm.warp(block.timestamp + DEPOSIT_TIMEOUT);
    }

    function test_payout_reentrancyThroughThePayeesTokenHookIsBlocked() public {
        (HostileToken hostile, Agentripe victim, bytes32 first, bytes32 second) = _hostileEscrowWithTwoExpired();

        // While the refund is pushed, the token re-enters with a call that would succeed on its own.
        hostile.arm(address(victim), abi.encodeCall(Agentripe.reclaimExpired, (second)));
        vm.prank(operator);
        victim.refundToBuyer(first);

        assertFalse(hostile.lastReentrySucceeded());
        assertEq(
            hostile.lastReentryError(),
            abi.encodeWithSelector(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector)
        );
        (,,, uint8 status) = victim.getDeposit(second);
        assertEq(status, 1, "the re-entered deposit did not move");
        assertEq(hostile.balanceOf(buyer), PRICE, "the first refund was paid once");
        assertEq(victim.totalLiabilities(), PRICE);
    }

    function test_withdraw_reentrancyThroughHostileTokenIsBlocked() public {
        (HostileToken hostile, Agentripe victim, bytes32 first, bytes32 second) = _hostileEscrowWithTwoExpired();

        // The first refund cannot be pushed (the hook's re-entry makes the transfer revert), so it is a
        // credit; during its withdrawal the token re-enters again.
        hostile.arm(address(victim), abi.encodeCall(Agentripe.reclaimExpired, (second)));
        hostile.setRevertOnFailedReentry(true);
        vm.prank(operator);
        victim.refundToBuyer(first);
        assertEq(victim.withdrawableBalance(buyer), PRICE);

        vm.expectRevert();
        vm.prank(buyer);
        victim.withdraw();
        hostile.setRevertOnFailedReentry(false);
        vm.prank(buyer);
        victim.withdraw();

        assertFalse(hostile.lastReentrySucceeded());
        (,,, uint8 status) = victim.getDeposit(second);
        assertEq(status, 1);
        assertEq(hostile.balanceOf(buyer), PRICE);
    }

    // ------------------------------------------------------------ batches

    event DepositSkipped(bytes32 indexed depositId, Agentripe.Status status);

    function _records(bytes32[] memory ids, uint256 amount)
        internal
        view
        returns (Agentripe.DepositRecord[] memory records)
    {
        records = new Agentripe.DepositRecord[](ids.length);
        for (uint256 i; i < ids.length; ++i) {
            records[i] = Agentripe.DepositRecord(ids[i], agentId, buyer, amount);
        }
    }

    function _ids(uint256 count) internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](count);
        for (uint256 i; i < count; ++i) {
            ids[i] = keccak256(abi.encode("batch", i));
        }
    }

    function test_recordDeposits_recordsEachOnceAndSkipsWhatIsRecorded() public {
        bytes32[] memory ids = _ids(3);
        for (uint256 i; i < 3; ++i) {
            _payIntoEscrow(buyer, buyerKey, PRICE, ids[i]);
        }
        vm.prank(operator);
        escrow.recordDeposit(ids[1], agentId, buyer, PRICE);

        vm.expectEmit(address(escrow));
        emit DepositRecorded(ids[0], agentId, buyer, PRICE);
        vm.expectEmit(address(escrow));
        emit DepositSkipped(ids[1], Agentripe.Status.DEPOSITED);
        vm.prank(operator);
        bool[] memory recorded = escrow.recordDeposits(_records(ids, PRICE));
        assertTrue(recorded[0] && !recorded[1] && recorded[2]);
        assertEq(escrow.totalLiabilities(), 3 * PRICE);

        // Sent again (a retry after a crash): nothing recorded twice, nothing reverted.
        vm.prank(operator);
        recorded = escrow.recordDeposits(_records(ids, PRICE));
        assertTrue(!recorded[0] && !recorded[1] && !recorded[2]);
        assertEq(escrow.totalLiabilities(), 3 * PRICE);
    }

    function test_recordDeposits_needsBackingForTheWholeBatchAndValidEntries() public {
        bytes32[] memory ids = _ids(2);
        _payIntoEscrow(buyer, buyerKey, PRICE, ids[0]);
        _payIntoEscrow(buyer, buyerKey, PRICE - 1, ids[1]);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.InsufficientBacking.selector, 2 * PRICE - 1, 2 * PRICE));
        vm.prank(operator);
        escrow.recordDeposits(_records(ids, PRICE));

        Agentripe.DepositRecord[] memory records = _records(ids, 1);
        records[1].agentId = 999;
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 999));
        vm.prank(operator);
        escrow.recordDeposits(records);
        assertEq(escrow.totalLiabilities(), 0, "a reverted batch records nothing");

        // An agent is looked up once per run of entries, and the first of a run is always looked up.
        records[0].agentId = 999;
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 999));
        vm.prank(operator);
        escrow.recordDeposits(records);

        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, buyer));
        vm.prank(buyer);
        escrow.recordDeposits(_records(ids, 1));
    }

    function test_releaseToVendors_paysOpenDepositsAndSkipsTheRest() public {
        bytes32[] memory ids = _ids(4);
        for (uint256 i; i < 4; ++i) {
            _deposit(ids[i], PRICE);
        }
        vm.startPrank(operator);
        escrow.refundToBuyer(ids[1]);
        escrow.releaseToVendor(ids[2]);
        vm.stopPrank();
        bytes32[] memory batch = new bytes32[](5);
        (batch[0], batch[1], batch[2], batch[3], batch[4]) = (ids[0], ids[1], ids[2], ids[3], keccak256("unknown"));

        vm.expectEmit(address(escrow));
        emit DepositSkipped(ids[1], Agentripe.Status.REFUNDED);
        vm.prank(operator);
        bool[] memory released = escrow.releaseToVendors(batch);
        assertTrue(released[0] && !released[1] && !released[2] && released[3] && !released[4]);
        assertEq(usdc.balanceOf(vendor), 3 * PRICE, "two from the batch, one from before");
        assertEq(escrow.totalLiabilities(), 0);

        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, vendor));
        vm.prank(vendor);
        escrow.releaseToVendors(batch);
    }

    /// Deposits for vendor, vendor, other, vendor: three transfers (2, 1 and 1 deposits' worth), one
    /// DepositReleased each, and liabilities back to zero.
    function test_releaseToVendors_paysEachRunOfOnePayeeWithOneTransfer() public {
        address other = makeAddr("other vendor");
        vm.prank(other);
        uint256 otherAgent = identity.register("https://example.test/other.json");
        bytes32[] memory ids = _ids(4);
        for (uint256 i; i < 4; ++i) {
            _payIntoEscrow(buyer, buyerKey, PRICE, ids[i]);
        }
        Agentripe.DepositRecord[] memory records = _records(ids, PRICE);
        records[2].agentId = otherAgent;
        vm.prank(operator);
        escrow.recordDeposits(records);

        vm.recordLogs();
        vm.prank(operator);
        escrow.releaseToVendors(ids);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        uint256[3] memory expected = [2 * PRICE, PRICE, PRICE];
        address[3] memory payees = [vendor, other, vendor];
        uint256 transfers;
        uint256 releases;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(usdc) && logs[i].topics[0] == keccak256("Transfer(address,address,uint256)"))
            {
                assertEq(address(uint160(uint256(logs[i].topics[2]))), payees[transfers]);
                assertEq(abi.decode(logs[i].data, (uint256)), expected[transfers]);
                ++transfers;
            } else if (logs[i].emitter == address(escrow) && logs[i].topics[0] == DepositReleased.selector) {
                ++releases;
            }
        }
        assertEq(transfers, 3, "one transfer per run of one payee");
        assertEq(releases, 4, "one event per deposit");
        assertEq(usdc.balanceOf(vendor), 3 * PRICE);
        assertEq(usdc.balanceOf(other), PRICE);
        assertEq(escrow.totalLiabilities(), 0);
    }

    function test_releaseToVendors_skipsExpiredDeposits() public {
        bytes32[] memory ids = _ids(1);
        _deposit(ids[0], PRICE);
        vm.warp(escrow.depositExpiresAt(ids[0]));
        vm.prank(operator);
        bool[] memory released = escrow.releaseToVendors(ids);
        assertFalse(released[0]);
        (,,, uint8 status) = escrow.getDeposit(ids[0]);
        assertEq(status, 1, "still open, for a refund");
    }

    function test_refundToBuyers_paysOpenDepositsAndSkipsTheRest() public {
        bytes32[] memory ids = _ids(3);
        for (uint256 i; i < 3; ++i) {
            _deposit(ids[i], PRICE);
        }
        vm.prank(operator);
        escrow.releaseToVendor(ids[0]);
        vm.warp(escrow.depositExpiresAt(ids[2]));
        vm.prank(operator);
        bool[] memory refunded = escrow.refundToBuyers(ids);
        assertTrue(!refunded[0] && refunded[1] && refunded[2], "expired deposits are refundable");
        assertEq(usdc.balanceOf(buyer), 2 * PRICE);
        vm.prank(operator);
        refunded = escrow.refundToBuyers(ids);
        assertTrue(!refunded[0] && !refunded[1] && !refunded[2], "once");
        assertEq(usdc.balanceOf(buyer), 2 * PRICE);

        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, buyer));
        vm.prank(buyer);
        escrow.refundToBuyers(ids);
    }

    // ------------------------------------------------------------ operator rotation

    function test_setOperator_rotatesKey() public {
        address next = makeAddr("next operator");
        vm.expectEmit(address(escrow));
        emit OperatorChanged(operator, next);
        vm.prank(admin);
        escrow.setOperator(next);
        assertEq(escrow.operator(), next);

        _payIntoEscrow(buyer, buyerKey, PRICE, ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, operator));
        vm.prank(operator);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
        vm.prank(next);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
    }

    function test_setOperator_onlyOwnerAndNonZero() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator));
        vm.prank(operator);
        escrow.setOperator(operator);
        vm.expectRevert(Agentripe.ZeroAddress.selector);
        vm.prank(admin);
        escrow.setOperator(address(0));
    }

    function test_ownership_transferIsTwoStep() public {
        address next = makeAddr("next admin");
        vm.prank(admin);
        escrow.transferOwnership(next);
        assertEq(escrow.owner(), admin);
        vm.prank(next);
        escrow.acceptOwnership();
        assertEq(escrow.owner(), next);
    }

    // ------------------------------------------------------------ fuzz

    /// Whatever the amount and the path, each deposit pays out exactly once, to the right party.
    function testFuzz_depositPaysOutExactlyOnce(uint96 amount, bool approve, uint32 delay) public {
        amount = uint96(bound(amount, 1, type(uint96).max));
        _deposit(ID, amount);
        vm.warp(block.timestamp + delay);
        bool expired = uint256(delay) >= DEPOSIT_TIMEOUT;

        vm.startPrank(operator);
        if (approve && !expired) {
            escrow.releaseToVendor(ID);
        } else {
            escrow.refundToBuyer(ID);
        }
        vm.expectRevert();
        escrow.refundToBuyer(ID);
        vm.expectRevert();
        escrow.releaseToVendor(ID);
        vm.stopPrank();
        vm.expectRevert();
        escrow.reclaimExpired(ID);

        address payee = approve && !expired ? vendor : buyer;
        assertEq(usdc.balanceOf(payee), amount);
        assertEq(escrow.withdrawableBalance(payee), 0);
        assertEq(usdc.balanceOf(address(escrow)), 0);
        assertEq(escrow.totalLiabilities(), 0);
    }

    /// Recording never succeeds for more than the unowed part of the balance.
    function testFuzz_recordDepositRequiresFullBacking(uint96 paid, uint96 claimed) public {
        paid = uint96(bound(paid, 1, type(uint96).max));
        claimed = uint96(bound(claimed, 1, type(uint96).max));
        _payIntoEscrow(buyer, buyerKey, paid, ID);
        vm.prank(operator);
        if (claimed > paid) {
            vm.expectRevert(abi.encodeWithSelector(Agentripe.InsufficientBacking.selector, paid, claimed));
            escrow.recordDeposit(ID, agentId, buyer, claimed);
        } else {
            escrow.recordDeposit(ID, agentId, buyer, claimed);
            assertLe(escrow.totalLiabilities(), usdc.balanceOf(address(escrow)));
        }
    }

    /// No caller other than the operator moves a deposit.
    function testFuzz_onlyOperatorMovesDeposits(address caller) public {
        vm.assume(caller != operator);
        _deposit(ID, PRICE);
        vm.startPrank(caller);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, caller));
        escrow.releaseToVendor(ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, caller));
        escrow.refundToBuyer(ID);
        vm.expectRevert(abi.encodeWithSelector(Agentripe.NotOperator.selector, caller));
        escrow.recordDeposit(keccak256("x"), agentId, caller, 1);
        vm.stopPrank();
    }
}

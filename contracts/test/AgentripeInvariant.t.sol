// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "forge-std/Test.sol";
import {Agentripe} from "../src/Agentripe.sol";
import {IdentityRegistry} from "../src/IdentityRegistry.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// @dev Drives the escrow through random sequences of payments, recordings, payouts, reclaims,
///      stray transfers, wallet changes and the passing of time, keeping ghost books of
///      what every deposit should be. Every action is valid by construction, and attacks (moving a
///      deposit twice, releasing after expiry, recording unbacked) must revert or the run fails.
contract EscrowHandler is Test {
    Agentripe internal immutable escrow;
    TestUSDC internal immutable usdc;
    IdentityRegistry internal immutable identity;
    address internal immutable operator;
    address internal immutable minter;

    address[] public actors;
    uint256[] public agents;
    bytes32[] public depositIds;
    mapping(bytes32 => uint8) public finalStatus; // first terminal status seen
    mapping(bytes32 => uint256) public exits; // times the deposit left DEPOSITED
    mapping(address => uint256) public paid; // what payouts sent each account
    uint256 public lockedSum;
    uint256 internal nonceCounter;

    constructor(Agentripe escrow_, TestUSDC usdc_, IdentityRegistry identity_, address operator_, address minter_) {
        escrow = escrow_;
        usdc = usdc_;
        identity = identity_;
        operator = operator_;
        minter = minter_;
        for (uint256 i; i < 4; ++i) {
            address actor = makeAddr(string.concat("actor", vm.toString(i)));
            actors.push(actor);
            vm.prank(actor);
            agents.push(identity.register());
        }
    }

    function depositCount() external view returns (uint256) {
        return depositIds.length;
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    /// A buyer pays into the escrow and the operator records it.
    function payAndRecord(uint256 buyerSeed, uint256 agentSeed, uint256 amount) external {
        address buyer = actors[buyerSeed % actors.length];
        uint256 agentId = agents[agentSeed % agents.length];
        amount = bound(amount, 1, 1e15);
        bytes32 id = keccak256(abi.encode("deposit", ++nonceCounter));
        vm.prank(minter);
        usdc.mint(address(escrow), amount);
        vm.prank(operator);
        escrow.recordDeposit(id, agentId, buyer, amount);
        depositIds.push(id);
        lockedSum += amount;
    }

    /// The operator tries to record more than the unowed balance: must revert.
    function recordUnbacked(uint256 amount) external {
        uint256 free = usdc.balanceOf(address(escrow)) - escrow.totalLiabilities();
        amount = bound(amount, free + 1, free + 1e15);
        bytes32 id = keccak256(abi.encode("unbacked", ++nonceCounter));
        vm.prank(operator);
        try escrow.recordDeposit(id, agents[0], actors[0], amount) {
            revert("unbacked deposit recorded");
        } catch {}
    }

    /// Someone sends tokens straight to the escrow: surplus that backs nothing until recorded.
    function strayTransfer(uint256 amount) external {
        amount = bound(amount, 1, 1e12);
        vm.prank(minter);
        usdc.mint(address(escrow), amount);
    }

    function release(uint256 seed) external {
        (bool found, bytes32 id) = _pick(seed);
        if (!found) return;
        (uint256 agentId,, uint256 amount, uint8 status) = escrow.getDeposit(id);
        bool releasable = status == 1 && block.timestamp < escrow.depositExpiresAt(id);
        if (!releasable) {
            vm.prank(operator);
            try escrow.releaseToVendor(id) {
                revert("inactive or expired deposit released");
            } catch {}
            return;
        }
        address payee = identity.getAgentWallet(agentId);
        if (payee == address(0)) payee = identity.ownerOf(agentId);
        uint256 before = usdc.balanceOf(payee);
        vm.prank(operator);
        escrow.releaseToVendor(id);
        _exit(id, 2, payee, amount, before);
    }

    function refund(uint256 seed) external {
        (bool found, bytes32 id) = _pick(seed);
        if (!found) return;
        (, address buyer, uint256 amount, uint8 status) = escrow.getDeposit(id);
        if (status != 1) {
            vm.prank(operator);
            try escrow.refundToBuyer(id) {
                revert("inactive deposit refunded");
            } catch {}
            return;
        }
        uint256 before = usdc.balanceOf(buyer);
        vm.prank(operator);
        escrow.refundToBuyer(id);
        _exit(id, 3, buyer, amount, before);
    }

    function reclaim(uint256 seed, uint256 callerSeed) external {
        (bool found, bytes32 id) = _pick(seed);
        if (!found) return;
        (, address buyer, uint256 amount, uint8 status) = escrow.getDeposit(id);
        bool reclaimable = status == 1 && block.timestamp >= escrow.depositExpiresAt(id);
        address caller = actors[callerSeed % actors.length];
        if (!reclaimable) {
            vm.prank(caller);
            try escrow.reclaimExpired(id) {
                revert("deposit reclaimed early or twice");
            } catch {}
            return;
        }
        uint256 before = usdc.balanceOf(buyer);
        vm.prank(caller);
        escrow.reclaimExpired(id);
        _exit(id, 3, buyer, amount, before);
    }

    /// An agent's owner moves its payout wallet to another actor (who consents) or clears it.
    function changeWallet(uint256 agentSeed, uint256 walletSeed, bool clear) external {
        uint256 agentId = agents[agentSeed % agents.length];
        address owner = identity.ownerOf(agentId);
        if (clear) {
            vm.prank(owner);
            identity.unsetAgentWallet(agentId);
            return;
        }
        uint256 walletKey = uint256(keccak256(abi.encode("wallet", walletSeed % 3))) % (2 ** 160) + 1;
        address wallet = vm.addr(walletKey);
        uint256 deadline = block.timestamp + 60;
        bytes32 structHash =
            keccak256(abi.encode(identity.AGENT_WALLET_SET_TYPEHASH(), agentId, wallet, owner, deadline));
        (, string memory name, string memory version, uint256 chainId, address verifyingContract,,) =
            identity.eip712Domain();
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256(bytes(name)),
                keccak256(bytes(version)),
                chainId,
                verifyingContract
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(walletKey, keccak256(abi.encodePacked("\x19\x01", domain, structHash)));
        vm.prank(owner);
        identity.setAgentWallet(agentId, wallet, deadline, abi.encodePacked(r, s, v));
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + bound(seconds_, 1, 3 days));
    }

    function _pick(uint256 seed) private view returns (bool, bytes32) {
        if (depositIds.length == 0) return (false, bytes32(0));
        return (true, depositIds[seed % depositIds.length]);
    }

    /// A deposit left DEPOSITED: its payee got `amount` in that same call (this token never refuses).
    function _exit(bytes32 id, uint8 status, address payee, uint256 amount, uint256 before) private {
        exits[id] += 1;
        finalStatus[id] = status;
        lockedSum -= amount;
        paid[payee] += amount;
        assertEq(usdc.balanceOf(payee), before + amount, "paid out in the same transaction");
    }
}

contract AgentripeInvariantTest is Test {
    Agentripe internal escrow;
    TestUSDC internal usdc;
    IdentityRegistry internal identity;
    EscrowHandler internal handler;

    function setUp() public {
        address admin = makeAddr("admin");
        address operator = makeAddr("operator");
        usdc = new TestUSDC(admin);
        identity = new IdentityRegistry();
        escrow = new Agentripe(address(usdc), address(identity), operator, admin, 7 days);
        handler = new EscrowHandler(escrow, usdc, identity, operator, admin);
        targetContract(address(handler));
    }

    /// Solvency: the escrow always holds at least what it owes, and it knows exactly what it owes.
    function invariant_solvent() public view {
        uint256 credits;
        for (uint256 i; i < handler.actorCount(); ++i) {
            credits += escrow.withdrawableBalance(handler.actors(i));
        }
        for (uint256 i; i < 3; ++i) {
            credits += escrow.withdrawableBalance(vm.addr(uint256(keccak256(abi.encode("wallet", i))) % (2 ** 160) + 1));
        }
        assertEq(escrow.totalLiabilities(), handler.lockedSum() + credits, "liabilities = locked + withdrawable");
        assertGe(usdc.balanceOf(address(escrow)), escrow.totalLiabilities(), "balance covers liabilities");
    }

    /// Each deposit leaves DEPOSITED at most once, and a terminal state never changes.
    function invariant_terminalStatesAreFinal() public view {
        for (uint256 i; i < handler.depositCount(); ++i) {
            bytes32 id = handler.depositIds(i);
            (,,, uint8 status) = escrow.getDeposit(id);
            uint256 exits = handler.exits(id);
            assertLe(exits, 1, "left DEPOSITED more than once");
            if (exits == 0) {
                assertEq(status, 1, "active deposit changed without a payout");
            } else {
                assertEq(status, handler.finalStatus(id), "terminal state changed");
            }
        }
    }

    /// Every payout reached its payee: each actor holds exactly what was paid to it, and no credit waits.
    function invariant_payoutsArePushed() public view {
        for (uint256 i; i < handler.actorCount(); ++i) {
            address actor = handler.actors(i);
            assertEq(usdc.balanceOf(actor), handler.paid(actor), "holds what payouts sent it");
            assertEq(escrow.withdrawableBalance(actor), 0, "no credit left behind");
        }
    }
}

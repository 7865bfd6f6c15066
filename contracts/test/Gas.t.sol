// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Agentripe} from "../src/Agentripe.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Execution gas of the money path (the call frame's own gas: no 21,000 intrinsic cost, no calldata),
///         recorded with forge's gas snapshot cheatcodes into snapshots/Agentripe.json and checked in CI.
///         Each figure is for a fresh transaction: every account and slot it touches starts cold, as on a
///         real chain.
/// @dev    The budgets of the foundation issue are asserted too, so a regression fails loudly.
contract GasTest is Fixture {
    bytes32 internal constant ID = keccak256("x402 settlement tx");
    bytes32 internal constant NONCE = keccak256("buyer nonce");

    function setUp() public override {
        super.setUp();
        vm.prank(admin);
        usdc.mint(buyer, 10 * PRICE);
        // An unrelated earlier deposit, so that the liability counter is not being written for the first time.
        _deposit(keccak256("earlier"), PRICE);
    }

    function test_gas_buyerToVendorPath() public {
        (uint8 v, bytes32 r, bytes32 s) =
            _signTransfer(buyerKey, buyer, address(escrow), PRICE, 0, block.timestamp + 600, NONCE);

        _coolAll();
        usdc.transferWithAuthorization(buyer, address(escrow), PRICE, 0, block.timestamp + 600, NONCE, v, r, s);
        uint256 transferGas = vm.snapshotGasLastCall("Agentripe", "1_transferWithAuthorization");

        _coolAll();
        vm.prank(operator);
        escrow.recordDeposit(ID, agentId, buyer, PRICE);
        uint256 recordGas = vm.snapshotGasLastCall("Agentripe", "2_recordDeposit");

        // The release pushes the money to a vendor that held no tokens yet: nothing left for it to do.
        _coolAll();
        vm.prank(operator);
        escrow.releaseToVendor(ID);
        uint256 releaseGas = vm.snapshotGasLastCall("Agentripe", "3_releaseToVendor_pushToNewHolder");

        uint256 path = transferGas + recordGas + releaseGas;
        vm.snapshotValue("Agentripe", "4_buyerToVendorPath", path);

        assertLe(recordGas, 70_000, "recordDeposit budget");
        assertLe(releaseGas, 70_000, "releaseToVendor budget");
        assertLe(path, 200_000, "buyer-to-vendor path budget");
        assertEq(usdc.balanceOf(vendor), PRICE);
        assertEq(escrow.withdrawableBalance(vendor), 0);
    }

    function test_gas_refundToBuyer() public {
        _deposit(ID, PRICE);
        _coolAll();
        vm.prank(operator);
        escrow.refundToBuyer(ID);
        uint256 refundGas = vm.snapshotGasLastCall("Agentripe", "refundToBuyer_push");
        assertLe(refundGas, 65_000, "refundToBuyer budget");
        assertEq(escrow.withdrawableBalance(buyer), 0);
    }

    /// Ten purchases recorded in one call and released in another: the operator's share per purchase.
    function test_gas_batchOfTen() public {
        Agentripe.DepositRecord[] memory records = new Agentripe.DepositRecord[](10);
        bytes32[] memory ids = new bytes32[](10);
        for (uint256 i; i < 10; ++i) {
            ids[i] = keccak256(abi.encode("batch", i));
            address payer = vm.addr(uint256(keccak256(abi.encode("payer", i))));
            vm.prank(admin);
            usdc.mint(address(escrow), PRICE);
            records[i] = Agentripe.DepositRecord(ids[i], agentId, payer, PRICE);
        }
        _coolAll();
        vm.prank(operator);
        escrow.recordDeposits(records);
        uint256 recordGas = vm.snapshotGasLastCall("Agentripe", "batch10_1_recordDeposits");

        _coolAll();
        vm.prank(operator);
        escrow.releaseToVendors(ids);
        uint256 releaseGas = vm.snapshotGasLastCall("Agentripe", "batch10_2_releaseToVendors");
        vm.snapshotValue("Agentripe", "batch10_3_operatorGasPerPurchase", (recordGas + releaseGas) / 10);
        assertEq(usdc.balanceOf(vendor), 10 * PRICE);
    }

    function _coolAll() private {
        vm.cool(address(usdc));
        vm.cool(address(escrow));
        vm.cool(address(identity));
    }
}

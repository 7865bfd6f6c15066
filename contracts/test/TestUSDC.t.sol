// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {TestUSDC} from "../src/TestUSDC.sol";
import {Fixture} from "./utils/Fixture.sol";
import {ERC1271Wallet} from "./utils/Mocks.sol";

contract TestUSDCTest is Fixture {
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);

    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    bytes32 internal constant NONCE = keccak256("nonce");
    address internal payee = makeAddr("payee");
    // Fixed times: under via-IR a `block.timestamp` kept in a local may be re-read after `vm.warp`.
    uint256 internal constant NOW = 1_700_000_000;
    uint256 internal constant validBefore = NOW + 300;

    function setUp() public override {
        super.setUp();
        vm.warp(NOW);
        vm.prank(admin);
        usdc.mint(buyer, 1_000_000);
    }

    function _signReceive(uint256 key, address from, address to, uint256 value, bytes32 nonce)
        internal
        view
        returns (bytes memory)
    {
        bytes32 structHash = keccak256(
            abi.encode(usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(), from, to, value, 0, validBefore, nonce)
        );
        return _sign(key, _typedDigest(usdc.DOMAIN_SEPARATOR(), structHash));
    }

    function _signCancel(uint256 key, address authorizer, bytes32 nonce) internal view returns (bytes memory) {
        bytes32 structHash = keccak256(abi.encode(usdc.CANCEL_AUTHORIZATION_TYPEHASH(), authorizer, nonce));
        return _sign(key, _typedDigest(usdc.DOMAIN_SEPARATOR(), structHash));
    }

    function test_metadataAndDomain() public view {
        TestUSDC token = TestUSDC(address(usdc));
        assertEq(token.decimals(), 6);
        assertEq(token.name(), "USDC");
        assertEq(token.symbol(), "USDC");
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("USDC"),
                keccak256("2"),
                block.chainid,
                address(usdc)
            )
        );
        assertEq(usdc.DOMAIN_SEPARATOR(), expected);
    }

    function test_mint_onlyOwner() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, buyer));
        vm.prank(buyer);
        usdc.mint(buyer, 1);
    }

    function test_transferWithAuthorization_vrs() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 250_000, 0, validBefore, NONCE);
        vm.expectEmit(address(usdc));
        emit AuthorizationUsed(buyer, NONCE);
        usdc.transferWithAuthorization(buyer, payee, 250_000, 0, validBefore, NONCE, v, r, s);
        assertEq(usdc.balanceOf(payee), 250_000);
        assertEq(usdc.balanceOf(buyer), 750_000);
        assertTrue(usdc.authorizationState(buyer, NONCE));
    }

    function test_transferWithAuthorization_bytesSignature() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 1, 0, validBefore, NONCE);
        usdc.transferWithAuthorization(buyer, payee, 1, 0, validBefore, NONCE, abi.encodePacked(r, s, v));
        assertEq(usdc.balanceOf(payee), 1);
    }

    function test_transferWithAuthorization_replayReverts() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 1, 0, validBefore, NONCE);
        usdc.transferWithAuthorization(buyer, payee, 1, 0, validBefore, NONCE, v, r, s);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.AuthorizationAlreadyUsed.selector, buyer, NONCE));
        usdc.transferWithAuthorization(buyer, payee, 1, 0, validBefore, NONCE, v, r, s);
    }

    function test_transferWithAuthorization_timeWindow() public {
        uint256 validAfter = NOW;
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 1, validAfter, validBefore, NONCE);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.AuthorizationNotYetValid.selector, validAfter, NOW));
        usdc.transferWithAuthorization(buyer, payee, 1, validAfter, validBefore, NONCE, v, r, s);

        vm.warp(validBefore);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.AuthorizationExpired.selector, validBefore, validBefore));
        usdc.transferWithAuthorization(buyer, payee, 1, validAfter, validBefore, NONCE, v, r, s);

        vm.warp(validAfter + 1);
        usdc.transferWithAuthorization(buyer, payee, 1, validAfter, validBefore, NONCE, v, r, s);
        assertEq(usdc.balanceOf(payee), 1);
    }

    function test_transferWithAuthorization_tamperedFieldsRevert() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 100, 0, validBefore, NONCE);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, buyer));
        usdc.transferWithAuthorization(buyer, payee, 101, 0, validBefore, NONCE, v, r, s);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, buyer));
        usdc.transferWithAuthorization(buyer, vendor, 100, 0, validBefore, NONCE, v, r, s);
        assertFalse(usdc.authorizationState(buyer, NONCE), "a failed attempt burns no nonce");
    }

    function test_transferWithAuthorization_rejectsMalleableHighS() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 1, 0, validBefore, NONCE);
        bytes32 highS = bytes32(N - uint256(s));
        uint8 flipped = v == 27 ? 28 : 27;
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, buyer));
        usdc.transferWithAuthorization(buyer, payee, 1, 0, validBefore, NONCE, flipped, r, highS);
    }

    function test_transferWithAuthorization_wrongChainIdReverts() public {
        bytes32 structHash =
            keccak256(abi.encode(usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(), buyer, payee, 1, 0, validBefore, NONCE));
        bytes32 foreignDomain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("USDC"),
                keccak256("2"),
                uint256(84532),
                address(usdc)
            )
        );
        bytes memory sig = _sign(buyerKey, _typedDigest(foreignDomain, structHash));
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, buyer));
        usdc.transferWithAuthorization(buyer, payee, 1, 0, validBefore, NONCE, sig);
    }

    function test_transferWithAuthorization_insufficientBalanceReverts() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 2_000_000, 0, validBefore, NONCE);
        vm.expectRevert();
        usdc.transferWithAuthorization(buyer, payee, 2_000_000, 0, validBefore, NONCE, v, r, s);
        assertFalse(usdc.authorizationState(buyer, NONCE));
    }

    function test_transferWithAuthorization_fromERC1271Wallet() public {
        ERC1271Wallet smartWallet = new ERC1271Wallet(buyer);
        vm.prank(admin);
        usdc.mint(address(smartWallet), 10);
        (uint8 v, bytes32 r, bytes32 s) =
            _signTransfer(buyerKey, address(smartWallet), payee, 10, 0, validBefore, NONCE);
        usdc.transferWithAuthorization(
            address(smartWallet), payee, 10, 0, validBefore, NONCE, abi.encodePacked(r, s, v)
        );
        assertEq(usdc.balanceOf(payee), 10);

        (v, r, s) = _signTransfer(vendorKey, address(smartWallet), payee, 10, 0, validBefore, keccak256("other"));
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, address(smartWallet)));
        usdc.transferWithAuthorization(
            address(smartWallet), payee, 10, 0, validBefore, keccak256("other"), abi.encodePacked(r, s, v)
        );
    }

    function test_receiveWithAuthorization_onlyPayeeSubmits() public {
        bytes memory sig = _signReceive(buyerKey, buyer, payee, 5, NONCE);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.CallerMustBePayee.selector, vendor, payee));
        vm.prank(vendor);
        usdc.receiveWithAuthorization(buyer, payee, 5, 0, validBefore, NONCE, sig);

        vm.prank(payee);
        usdc.receiveWithAuthorization(buyer, payee, 5, 0, validBefore, NONCE, sig);
        assertEq(usdc.balanceOf(payee), 5);
    }

    function test_receiveWithAuthorization_vrs() public {
        bytes memory sig = _signReceive(buyerKey, buyer, payee, 5, NONCE);
        (bytes32 r, bytes32 s) = abi.decode(sig, (bytes32, bytes32));
        uint8 v = uint8(sig[64]);
        vm.prank(payee);
        usdc.receiveWithAuthorization(buyer, payee, 5, 0, validBefore, NONCE, v, r, s);
        assertEq(usdc.balanceOf(payee), 5);
        // A transfer-typed use of the same signature is refused: the type hash differs.
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.AuthorizationAlreadyUsed.selector, buyer, NONCE));
        usdc.transferWithAuthorization(buyer, payee, 5, 0, validBefore, NONCE, v, r, s);
    }

    function test_cancelAuthorization_blocksLaterUse() public {
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(buyerKey, buyer, payee, 1, 0, validBefore, NONCE);
        bytes memory cancel = _signCancel(buyerKey, buyer, NONCE);
        vm.expectEmit(address(usdc));
        emit AuthorizationCanceled(buyer, NONCE);
        usdc.cancelAuthorization(buyer, NONCE, cancel);
        assertTrue(usdc.authorizationState(buyer, NONCE));
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.AuthorizationAlreadyUsed.selector, buyer, NONCE));
        usdc.transferWithAuthorization(buyer, payee, 1, 0, validBefore, NONCE, v, r, s);
    }

    function test_cancelAuthorization_vrsAndWrongSigner() public {
        bytes memory forged = _signCancel(vendorKey, buyer, NONCE);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, buyer));
        usdc.cancelAuthorization(buyer, NONCE, forged);

        bytes memory sig = _signCancel(buyerKey, buyer, NONCE);
        (bytes32 r, bytes32 s) = abi.decode(sig, (bytes32, bytes32));
        usdc.cancelAuthorization(buyer, NONCE, uint8(sig[64]), r, s);
        assertTrue(usdc.authorizationState(buyer, NONCE));
    }

    function testFuzz_onlyTheSignerAuthorizes(uint256 key, uint256 value) public {
        key = bound(key, 1, N - 1);
        vm.assume(key != buyerKey);
        value = bound(value, 1, 1_000_000);
        (uint8 v, bytes32 r, bytes32 s) = _signTransfer(key, buyer, payee, value, 0, validBefore, NONCE);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.InvalidAuthorizationSignature.selector, buyer));
        usdc.transferWithAuthorization(buyer, payee, value, 0, validBefore, NONCE, v, r, s);
    }
}

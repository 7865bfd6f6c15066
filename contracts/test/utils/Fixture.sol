// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "forge-std/Test.sol";
import {IdentityRegistry} from "../../src/IdentityRegistry.sol";
import {ReputationRegistry} from "../../src/ReputationRegistry.sol";
import {Agentripe} from "../../src/Agentripe.sol";
import {TestUSDC} from "../../src/TestUSDC.sol";
import {FiatTokenDeployer, IFiatTokenV2_2, IMintableUsdc} from "./FiatToken.sol";

/// @dev The four contracts deployed as the server will see them, plus signing helpers for EIP-3009 and
///      the ERC-8004 wallet consent.
abstract contract Fixture is Test {
    uint256 internal constant DEPOSIT_TIMEOUT = 7 days;
    uint256 internal constant PRICE = 100_000; // $0.10 in USDC units

    IdentityRegistry internal identity;
    ReputationRegistry internal reputation;
    Agentripe internal escrow;
    IMintableUsdc internal usdc;

    address internal admin = makeAddr("admin");
    address internal operator = makeAddr("operator");
    address internal vendor;
    uint256 internal vendorKey;
    address internal buyer;
    uint256 internal buyerKey;
    uint256 internal agentId;

    function setUp() public virtual {
        (vendor, vendorKey) = makeAddrAndKey("vendor");
        (buyer, buyerKey) = makeAddrAndKey("buyer");
        usdc = _newUsdc();
        identity = new IdentityRegistry();
        reputation = new ReputationRegistry(address(identity));
        escrow = new Agentripe(address(usdc), address(identity), operator, admin, DEPOSIT_TIMEOUT);
        vm.prank(vendor);
        agentId = identity.register("https://example.test/agent.json");
    }

    /// @dev The escrowed token, minted by `admin`: TestUSDC unless a test runs on Circle's FiatToken.
    function _newUsdc() internal virtual returns (IMintableUsdc) {
        return IMintableUsdc(address(new TestUSDC(admin)));
    }

    /// @dev What an x402 facilitator does: move the buyer's signed payment into the escrow.
    function _payIntoEscrow(address from, uint256 fromKey, uint256 amount, bytes32 nonce) internal {
        vm.prank(admin);
        usdc.mint(from, amount);
        (uint8 v, bytes32 r, bytes32 s) =
            _signTransfer(fromKey, from, address(escrow), amount, 0, block.timestamp + 1 hours, nonce);
        usdc.transferWithAuthorization(from, address(escrow), amount, 0, block.timestamp + 1 hours, nonce, v, r, s);
    }

    /// @dev Pays and records one deposit for the fixture's agent and buyer.
    function _deposit(bytes32 depositId, uint256 amount) internal {
        _payIntoEscrow(buyer, buyerKey, amount, depositId);
        vm.prank(operator);
        escrow.recordDeposit(depositId, agentId, buyer, amount);
    }

    function _signTransfer(
        uint256 key,
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce
    ) internal view returns (uint8 v, bytes32 r, bytes32 s) {
        bytes32 structHash = keccak256(
            abi.encode(usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(), from, to, value, validAfter, validBefore, nonce)
        );
        return vm.sign(key, _typedDigest(usdc.DOMAIN_SEPARATOR(), structHash));
    }

    function _walletConsentDigest(uint256 id, address newWallet, address owner, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(identity.AGENT_WALLET_SET_TYPEHASH(), id, newWallet, owner, deadline));
        return _typedDigest(_identityDomainSeparator(block.chainid), structHash);
    }

    function _identityDomainSeparator(uint256 chainId) internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("ERC8004IdentityRegistry"),
                keccak256("1"),
                chainId,
                address(identity)
            )
        );
    }

    function _typedDigest(bytes32 domainSeparator, bytes32 structHash) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator, structHash));
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}

/// @dev The same fixture on Circle's FiatTokenV2_2, initialised as Base mainnet's USDC ("USD Coin"); `admin`
///      holds every role of the token.
abstract contract FiatTokenFixture is Fixture {
    FiatTokenDeployer.Deployed internal fiatToken;

    function _newUsdc() internal override returns (IMintableUsdc) {
        fiatToken = FiatTokenDeployer.deploy("USD Coin", admin, makeAddr("proxy admin"));
        return fiatToken.token;
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC721Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IdentityRegistry} from "../src/IdentityRegistry.sol";
import {Fixture} from "./utils/Fixture.sol";
import {ERC1271Wallet} from "./utils/Mocks.sol";

contract IdentityRegistryTest is Fixture {
    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
    event MetadataSet(
        uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue
    );
    event MetadataUpdate(uint256 _tokenId);

    // secp256k1 group order, to build the high-s twin of a signature.
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    address internal wallet;
    uint256 internal walletKey;
    address internal stranger = makeAddr("stranger");

    function setUp() public override {
        super.setUp();
        (wallet, walletKey) = makeAddrAndKey("payout wallet");
    }

    // ------------------------------------------------------------ registration

    function test_register_mintsSequentialIdsFromOne() public {
        assertEq(agentId, 1);
        vm.expectEmit(address(identity));
        emit Registered(2, "", stranger);
        vm.prank(stranger);
        assertEq(identity.register(), 2);
        assertEq(identity.ownerOf(2), stranger);
        assertEq(identity.tokenURI(2), "");
        assertEq(identity.balanceOf(stranger), 1);
    }

    function test_register_withURI() public view {
        assertEq(identity.ownerOf(agentId), vendor);
        assertEq(identity.tokenURI(agentId), "https://example.test/agent.json");
        assertEq(identity.getAgentWallet(agentId), vendor);
    }

    function test_register_withMetadata() public {
        IdentityRegistry.MetadataEntry[] memory entries = new IdentityRegistry.MetadataEntry[](2);
        entries[0] = IdentityRegistry.MetadataEntry("category", bytes("translation"));
        entries[1] = IdentityRegistry.MetadataEntry("price", abi.encode(uint256(100_000)));
        vm.expectEmit(address(identity));
        emit MetadataSet(2, "category", "category", bytes("translation"));
        vm.prank(stranger);
        uint256 id = identity.register("ipfs://agent", entries);
        assertEq(identity.getMetadata(id, "category"), bytes("translation"));
        assertEq(abi.decode(identity.getMetadata(id, "price"), (uint256)), 100_000);
        assertEq(identity.tokenURI(id), "ipfs://agent");
    }

    function test_register_refusesReservedWalletKey() public {
        IdentityRegistry.MetadataEntry[] memory entries = new IdentityRegistry.MetadataEntry[](1);
        entries[0] = IdentityRegistry.MetadataEntry("agentWallet", abi.encodePacked(stranger));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.ReservedMetadataKey.selector, "agentWallet"));
        vm.prank(stranger);
        identity.register("ipfs://agent", entries);
    }

    function test_register_contractWithoutReceiverReverts() public {
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721InvalidReceiver.selector, address(usdc)));
        vm.prank(address(usdc));
        identity.register();
    }

    // ------------------------------------------------------------ agent URI

    function test_setAgentURI_byOwner() public {
        vm.expectEmit(address(identity));
        emit URIUpdated(agentId, "https://new.test/agent.json", vendor);
        vm.expectEmit(address(identity));
        emit MetadataUpdate(agentId);
        vm.prank(vendor);
        identity.setAgentURI(agentId, "https://new.test/agent.json");
        assertEq(identity.tokenURI(agentId), "https://new.test/agent.json");
    }

    function test_setAgentURI_byApprovedAndOperator() public {
        vm.prank(vendor);
        identity.approve(stranger, agentId);
        vm.prank(stranger);
        identity.setAgentURI(agentId, "approved");
        address operatorOfAll = makeAddr("operator of all");
        vm.prank(vendor);
        identity.setApprovalForAll(operatorOfAll, true);
        vm.prank(operatorOfAll);
        identity.setAgentURI(agentId, "operator");
        assertEq(identity.tokenURI(agentId), "operator");
    }

    function test_setAgentURI_revertsForStranger() public {
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.NotAuthorized.selector, stranger, agentId));
        vm.prank(stranger);
        identity.setAgentURI(agentId, "hijack");
    }

    function test_unknownAgent_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 99));
        identity.tokenURI(99);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 99));
        identity.getAgentWallet(99);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 99));
        identity.isAuthorizedOrOwner(vendor, 99);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 99));
        vm.prank(vendor);
        identity.setAgentURI(99, "x");
    }

    // ------------------------------------------------------------ metadata

    function test_setMetadata_storesAndEmits() public {
        vm.expectEmit(address(identity));
        emit MetadataSet(agentId, "region", "region", bytes("eu"));
        vm.prank(vendor);
        identity.setMetadata(agentId, "region", bytes("eu"));
        assertEq(identity.getMetadata(agentId, "region"), bytes("eu"));
        assertEq(identity.getMetadata(agentId, "missing"), bytes(""));
    }

    function test_setMetadata_revertsForStrangerAndReservedKey() public {
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.NotAuthorized.selector, stranger, agentId));
        vm.prank(stranger);
        identity.setMetadata(agentId, "region", bytes("eu"));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.ReservedMetadataKey.selector, "agentWallet"));
        vm.prank(vendor);
        identity.setMetadata(agentId, "agentWallet", abi.encodePacked(stranger));
    }

    function test_getMetadata_exposesWallet() public {
        assertEq(identity.getMetadata(agentId, "agentWallet"), abi.encodePacked(vendor));
        vm.prank(vendor);
        identity.unsetAgentWallet(agentId);
        assertEq(identity.getMetadata(agentId, "agentWallet"), bytes(""));
    }

    // ------------------------------------------------------------ agent wallet

    function test_setAgentWallet_withEOAConsent() public {
        uint256 deadline = block.timestamp + 5 minutes;
        bytes memory sig = _sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.expectEmit(address(identity));
        emit MetadataSet(agentId, "agentWallet", "agentWallet", abi.encodePacked(wallet));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
        assertEq(identity.getAgentWallet(agentId), wallet);
    }

    function test_setAgentWallet_withERC1271Wallet() public {
        ERC1271Wallet smartWallet = new ERC1271Wallet(wallet);
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(walletKey, _walletConsentDigest(agentId, address(smartWallet), vendor, deadline));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, address(smartWallet), deadline, sig);
        assertEq(identity.getAgentWallet(agentId), address(smartWallet));
    }

    function test_setAgentWallet_rejectsERC1271WalletThatDeclines() public {
        ERC1271Wallet smartWallet = new ERC1271Wallet(wallet);
        uint256 deadline = block.timestamp + 60;
        // Signed by someone the smart wallet does not recognise.
        bytes memory sig = _sign(vendorKey, _walletConsentDigest(agentId, address(smartWallet), vendor, deadline));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.InvalidWalletSignature.selector, address(smartWallet)));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, address(smartWallet), deadline, sig);
    }

    function test_setAgentWallet_rejectsOwnerSigningForWallet() public {
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(vendorKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.InvalidWalletSignature.selector, wallet));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
    }

    function test_setAgentWallet_rejectsMalleableHighS() public {
        uint256 deadline = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        bytes memory twin = abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.InvalidWalletSignature.selector, wallet));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, twin);
    }

    function test_setAgentWallet_rejectsWrongChainId() public {
        uint256 deadline = block.timestamp + 60;
        bytes32 structHash =
            keccak256(abi.encode(identity.AGENT_WALLET_SET_TYPEHASH(), agentId, wallet, vendor, deadline));
        bytes memory sig = _sign(walletKey, _typedDigest(_identityDomainSeparator(84532), structHash));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.InvalidWalletSignature.selector, wallet));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
    }

    function test_setAgentWallet_rejectsExpiredDeadline() public {
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.warp(deadline + 1);
        vm.expectRevert(
            abi.encodeWithSelector(IdentityRegistry.WalletSignatureExpired.selector, deadline, deadline + 1)
        );
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
    }

    function test_setAgentWallet_rejectsDeadlineTooFarAhead() public {
        uint256 deadline = block.timestamp + 5 minutes + 1;
        bytes memory sig = _sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.expectRevert(
            abi.encodeWithSelector(
                IdentityRegistry.WalletDeadlineTooFar.selector, deadline, block.timestamp + 5 minutes
            )
        );
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
    }

    function test_setAgentWallet_signatureBoundToOwner() public {
        // A consent signed while the vendor owned the agent is useless once the agent changes hands.
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.prank(vendor);
        identity.transferFrom(vendor, stranger, agentId);
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.InvalidWalletSignature.selector, wallet));
        vm.prank(stranger);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
    }

    function test_setAgentWallet_rejectsStrangerAndZeroWallet() public {
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(walletKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.NotAuthorized.selector, stranger, agentId));
        vm.prank(stranger);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
        vm.expectRevert(IdentityRegistry.ZeroWallet.selector);
        vm.prank(vendor);
        identity.setAgentWallet(agentId, address(0), deadline, sig);
    }

    function test_unsetAgentWallet_byOwnerOnly() public {
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.NotAuthorized.selector, stranger, agentId));
        vm.prank(stranger);
        identity.unsetAgentWallet(agentId);
        vm.prank(vendor);
        identity.unsetAgentWallet(agentId);
        assertEq(identity.getAgentWallet(agentId), address(0));
    }

    function test_transfer_clearsWallet() public {
        vm.expectEmit(address(identity));
        emit MetadataSet(agentId, "agentWallet", "agentWallet", bytes(""));
        vm.prank(vendor);
        identity.safeTransferFrom(vendor, stranger, agentId);
        assertEq(identity.getAgentWallet(agentId), address(0));
        assertEq(identity.ownerOf(agentId), stranger);
    }

    function test_selfTransfer_keepsWallet() public {
        vm.prank(vendor);
        identity.transferFrom(vendor, vendor, agentId);
        assertEq(identity.getAgentWallet(agentId), vendor);
    }

    // ------------------------------------------------------------ authorization

    function test_isAuthorizedOrOwner() public {
        assertTrue(identity.isAuthorizedOrOwner(vendor, agentId));
        assertFalse(identity.isAuthorizedOrOwner(stranger, agentId));
        vm.prank(vendor);
        identity.approve(stranger, agentId);
        assertTrue(identity.isAuthorizedOrOwner(stranger, agentId));
        vm.prank(vendor);
        identity.transferFrom(vendor, buyer, agentId);
        assertFalse(identity.isAuthorizedOrOwner(vendor, agentId));
        assertFalse(identity.isAuthorizedOrOwner(stranger, agentId), "approval cleared by transfer");
        assertTrue(identity.isAuthorizedOrOwner(buyer, agentId));
    }

    function test_eip712Domain() public view {
        (, string memory name, string memory version, uint256 chainId, address verifyingContract,,) =
            identity.eip712Domain();
        assertEq(name, "ERC8004IdentityRegistry");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifyingContract, address(identity));
    }

    function test_supportsInterfaces() public view {
        assertTrue(identity.supportsInterface(0x80ac58cd)); // ERC-721
        assertTrue(identity.supportsInterface(0x5b5e139f)); // ERC-721 metadata
        assertTrue(identity.supportsInterface(0x49064906)); // ERC-4906
        assertTrue(identity.supportsInterface(0x01ffc9a7)); // ERC-165
        assertFalse(identity.supportsInterface(0xffffffff));
    }

    function testFuzz_walletConsentOnlyFromWallet(uint256 signerKey) public {
        signerKey = bound(signerKey, 1, N - 1);
        vm.assume(signerKey != walletKey);
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(signerKey, _walletConsentDigest(agentId, wallet, vendor, deadline));
        vm.expectRevert(abi.encodeWithSelector(IdentityRegistry.InvalidWalletSignature.selector, wallet));
        vm.prank(vendor);
        identity.setAgentWallet(agentId, wallet, deadline, sig);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IERC4906} from "@openzeppelin/contracts/interfaces/IERC4906.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title IdentityRegistry
/// @notice ERC-8004 (January 2026 revision) identity registry: every agent is an ERC-721 token whose
///         `tokenURI` is the agent's registration file, with free-form on-chain metadata and a verified
///         payment wallet. Exposes the ABI of the official deployed registries, without their proxy
///         and ownership machinery, plus `isAuthorizedOrOwner` for marketplaces that authenticate agents.
/// @dev    Agent ids start at 1, so that 0 never names an agent. The payment wallet is the reserved
///         metadata key `agentWallet`: it cannot be written through `setMetadata`, starts as the
///         registrant, changes only with a signature from the new wallet (EIP-712 for EOAs, ERC-1271 for
///         contracts), and is cleared whenever the token changes hands.
contract IdentityRegistry is ERC721, EIP712, IERC4906 {
    /// @notice A key-value pair set at registration.
    struct MetadataEntry {
        string metadataKey;
        bytes metadataValue;
    }

    /// @notice The reserved metadata key under which the payment wallet is published.
    string public constant AGENT_WALLET_KEY = "agentWallet";

    /// @notice The longest a wallet signature may stay valid, counted from the block it is used in.
    uint256 public constant MAX_WALLET_SIGNATURE_WINDOW = 5 minutes;

    /// @notice EIP-712 type of the new wallet's consent to receive the agent's payments.
    bytes32 public constant AGENT_WALLET_SET_TYPEHASH =
        keccak256("AgentWalletSet(uint256 agentId,address newWallet,address owner,uint256 deadline)");

    bytes32 private constant AGENT_WALLET_KEY_HASH = keccak256(bytes(AGENT_WALLET_KEY));

    uint256 private _lastAgentId;
    mapping(uint256 agentId => string) private _agentURIs;
    mapping(uint256 agentId => address) private _agentWallets;
    mapping(uint256 agentId => mapping(string metadataKey => bytes)) private _metadata;

    /// @notice An agent was minted to `owner`.
    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);

    /// @notice The agent's registration file moved to `newURI`.
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);

    /// @notice A metadata value changed (including the reserved `agentWallet` key).
    event MetadataSet(
        uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue
    );

    /// @notice `caller` may not manage agent `agentId`.
    error NotAuthorized(address caller, uint256 agentId);

    /// @notice `agentWallet` can only change through `setAgentWallet` and `unsetAgentWallet`.
    error ReservedMetadataKey(string metadataKey);

    /// @notice The wallet signature expired at `deadline` (now `currentTime`).
    error WalletSignatureExpired(uint256 deadline, uint256 currentTime);

    /// @notice The wallet signature's `deadline` is further ahead than `maxDeadline` allows.
    error WalletDeadlineTooFar(uint256 deadline, uint256 maxDeadline);

    /// @notice `newWallet` did not sign its consent (ECDSA for EOAs, ERC-1271 for contracts).
    error InvalidWalletSignature(address newWallet);

    /// @notice The zero address cannot be a payment wallet.
    error ZeroWallet();

    constructor() ERC721("AgentIdentity", "AGENT") EIP712("ERC8004IdentityRegistry", "1") {}

    // ---------------------------------------------------------------- registration

    /// @notice Mints a new agent to the caller, with no registration file yet.
    function register() external returns (uint256 agentId) {
        agentId = _register("");
    }

    /// @notice Mints a new agent to the caller, pointing at its registration file.
    function register(string calldata agentURI) external returns (uint256 agentId) {
        agentId = _register(agentURI);
    }

    /// @notice Mints a new agent with its registration file and initial metadata.
    /// @dev    The reserved `agentWallet` key is refused here as in `setMetadata`.
    function register(string calldata agentURI, MetadataEntry[] calldata metadata) external returns (uint256 agentId) {
        agentId = _register(agentURI);
        for (uint256 i; i < metadata.length; ++i) {
            _setMetadata(agentId, metadata[i].metadataKey, metadata[i].metadataValue);
        }
    }

    /// @notice Points the agent at a new registration file.
    function setAgentURI(uint256 agentId, string calldata newURI) external {
        _requireAuthorized(agentId);
        _agentURIs[agentId] = newURI;
        emit URIUpdated(agentId, newURI, msg.sender);
        emit MetadataUpdate(agentId);
    }

    /// @notice The agent's registration file (ERC-8004 calls it the agentURI).
    function tokenURI(uint256 agentId) public view override returns (string memory) {
        _requireOwned(agentId);
        return _agentURIs[agentId];
    }

    // ---------------------------------------------------------------- metadata

    /// @notice The metadata value under `metadataKey`; `agentWallet` reads as the 20-byte wallet, or empty when unset.
    function getMetadata(uint256 agentId, string calldata metadataKey) external view returns (bytes memory) {
        if (keccak256(bytes(metadataKey)) == AGENT_WALLET_KEY_HASH) {
            address wallet = _agentWallets[agentId];
            return wallet == address(0) ? bytes("") : abi.encodePacked(wallet);
        }
        return _metadata[agentId][metadataKey];
    }

    /// @notice Sets a metadata value; only the owner or an approved operator may.
    function setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) external {
        _requireAuthorized(agentId);
        _setMetadata(agentId, metadataKey, metadataValue);
    }

    // ---------------------------------------------------------------- payment wallet

    /// @notice Where the agent receives payments; the zero address when unset (payers then use the owner).
    function getAgentWallet(uint256 agentId) external view returns (address) {
        _requireOwned(agentId);
        return _agentWallets[agentId];
    }

    /// @notice Moves the agent's payments to `newWallet`, which consents by signing
    ///         `AgentWalletSet(agentId, newWallet, owner, deadline)` under this registry's EIP-712 domain.
    /// @dev    The signature names the current owner, so it dies with a transfer; the deadline is at most
    ///         five minutes ahead, so a leaked signature is short-lived. OpenZeppelin's SignatureChecker
    ///         refuses malleable (high-s) ECDSA signatures and falls back to ERC-1271 for contract wallets.
    function setAgentWallet(uint256 agentId, address newWallet, uint256 deadline, bytes calldata signature) external {
        address owner = _requireAuthorized(agentId);
        if (newWallet == address(0)) revert ZeroWallet();
        if (deadline < block.timestamp) revert WalletSignatureExpired(deadline, block.timestamp);
        uint256 maxDeadline = block.timestamp + MAX_WALLET_SIGNATURE_WINDOW;
        if (deadline > maxDeadline) revert WalletDeadlineTooFar(deadline, maxDeadline);

        bytes32 digest =
            _hashTypedDataV4(keccak256(abi.encode(AGENT_WALLET_SET_TYPEHASH, agentId, newWallet, owner, deadline)));
        if (!SignatureChecker.isValidSignatureNow(newWallet, digest, signature)) {
            revert InvalidWalletSignature(newWallet);
        }
        _setAgentWallet(agentId, newWallet);
    }

    /// @notice Clears the agent's payment wallet; payers then fall back to the owner.
    function unsetAgentWallet(uint256 agentId) external {
        _requireAuthorized(agentId);
        _setAgentWallet(agentId, address(0));
    }

    // ---------------------------------------------------------------- authorization

    /// @notice Whether `spender` is the agent's owner, its approved address, or an operator of the owner.
    /// @dev    Reverts with `ERC721NonexistentToken` for an unknown agent, like `ownerOf`.
    function isAuthorizedOrOwner(address spender, uint256 agentId) external view returns (bool) {
        return _isAuthorized(_requireOwned(agentId), spender, agentId);
    }

    /// @notice Version of this implementation.
    function getVersion() external pure returns (string memory) {
        return "1.0.0";
    }

    /// @inheritdoc IERC165
    function supportsInterface(bytes4 interfaceId) public view override(ERC721, IERC165) returns (bool) {
        return interfaceId == bytes4(0x49064906) || super.supportsInterface(interfaceId);
    }

    // ---------------------------------------------------------------- internals

    function _register(string memory agentURI) private returns (uint256 agentId) {
        agentId = ++_lastAgentId;
        _agentURIs[agentId] = agentURI;
        // _safeMint: a contract registrant must be able to hold the token, or it could never transfer it.
        _safeMint(msg.sender, agentId);
        emit Registered(agentId, agentURI, msg.sender);
    }

    /// @dev Every mint, transfer and burn passes here: the wallet starts as the registrant and is cleared
    ///      on a change of hands, so a buyer of the token must prove its own wallet again.
    function _update(address to, uint256 agentId, address auth) internal override returns (address from) {
        from = super._update(to, agentId, auth);
        if (from == address(0)) {
            _setAgentWallet(agentId, to);
        } else if (from != to && _agentWallets[agentId] != address(0)) {
            _setAgentWallet(agentId, address(0));
        }
    }

    function _setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) private {
        if (keccak256(bytes(metadataKey)) == AGENT_WALLET_KEY_HASH) revert ReservedMetadataKey(metadataKey);
        _metadata[agentId][metadataKey] = metadataValue;
        emit MetadataSet(agentId, metadataKey, metadataKey, metadataValue);
    }

    function _setAgentWallet(uint256 agentId, address wallet) private {
        _agentWallets[agentId] = wallet;
        bytes memory value = wallet == address(0) ? bytes("") : abi.encodePacked(wallet);
        emit MetadataSet(agentId, AGENT_WALLET_KEY, AGENT_WALLET_KEY, value);
    }

    function _requireAuthorized(uint256 agentId) private view returns (address owner) {
        owner = _requireOwned(agentId);
        if (!_isAuthorized(owner, msg.sender, agentId)) revert NotAuthorized(msg.sender, agentId);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";
import {IERC8004Reputation} from "./interfaces/IERC8004Reputation.sol";

/// @title ReputationRegistry
/// @notice ERC-8004 (January 2026 revision) reputation registry: any client may leave signed-decimal
///         feedback on an agent (never the agent's own owner or operators), revoke it, and anyone may
///         append responses. Implements the ABI of the official deployed registries (the compiler holds
///         it to IERC8004Reputation), without their proxy and ownership machinery.
/// @dev    Works with any ERC-721 identity registry: self-feedback is detected through `ownerOf`,
///         `getApproved` and `isApprovedForAll`, so it also runs against the official IdentityRegistry.
///         Feedback indexes are 1-based per (agent, client) pair; 0 means "none yet".
contract ReputationRegistry is IERC8004Reputation {
    struct Feedback {
        int128 value;
        uint8 valueDecimals;
        bool isRevoked;
        string tag1;
        string tag2;
    }

    /// @notice Feedback values carry at most this many decimals; summaries are computed at this precision.
    uint8 public constant MAX_VALUE_DECIMALS = 18;

    IERC721 private immutable _identityRegistry;

    mapping(uint256 agentId => mapping(address client => mapping(uint64 feedbackIndex => Feedback))) private _feedback;
    mapping(uint256 agentId => mapping(address client => uint64)) private _lastIndex;
    mapping(uint256 agentId => address[]) private _clients;
    mapping(uint256 agentId => mapping(address client => bool)) private _isClient;
    mapping(uint256 agentId => mapping(address client => mapping(uint64 feedbackIndex => address[]))) private
        _responders;
    mapping(
        uint256 agentId
            => mapping(address client => mapping(uint64 feedbackIndex => mapping(address responder => uint64)))
    ) private _responseCount;

    /// @notice The identity registry address is zero.
    error ZeroIdentityRegistry();

    /// @notice No agent `agentId` exists in the identity registry.
    error AgentNotFound(uint256 agentId);

    /// @notice `caller` owns or operates agent `agentId` and may not rate it.
    error SelfFeedback(address caller, uint256 agentId);

    /// @notice `valueDecimals` exceeds `MAX_VALUE_DECIMALS`.
    error ValueDecimalsTooLarge(uint8 valueDecimals);

    /// @notice `clientAddress` has no feedback number `feedbackIndex` on `agentId`.
    error FeedbackNotFound(uint256 agentId, address clientAddress, uint64 feedbackIndex);

    /// @notice The feedback is already revoked.
    error FeedbackAlreadyRevoked(uint256 agentId, address clientAddress, uint64 feedbackIndex);

    /// @notice A response needs a URI.
    error EmptyResponseURI();

    /// @notice Summaries need an explicit list of clients: trusting every address that ever wrote is a Sybil hole.
    error EmptyClientList();

    constructor(address identityRegistry_) {
        if (identityRegistry_ == address(0)) revert ZeroIdentityRegistry();
        _identityRegistry = IERC721(identityRegistry_);
    }

    /// @notice The identity registry whose agents this registry rates.
    function getIdentityRegistry() external view returns (address) {
        return address(_identityRegistry);
    }

    /// @notice Leaves feedback `value / 10**valueDecimals` on `agentId`. Tags, endpoint, URI and hash are optional.
    function giveFeedback(
        uint256 agentId,
        int128 value,
        uint8 valueDecimals,
        string calldata tag1,
        string calldata tag2,
        string calldata endpoint,
        string calldata feedbackURI,
        bytes32 feedbackHash
    ) external {
        if (valueDecimals > MAX_VALUE_DECIMALS) {
            revert ValueDecimalsTooLarge(valueDecimals);
        }
        _requireNotSelf(agentId);

        uint64 feedbackIndex = ++_lastIndex[agentId][msg.sender];
        _feedback[agentId][msg.sender][feedbackIndex] =
            Feedback({value: value, valueDecimals: valueDecimals, isRevoked: false, tag1: tag1, tag2: tag2});
        if (!_isClient[agentId][msg.sender]) {
            _isClient[agentId][msg.sender] = true;
            _clients[agentId].push(msg.sender);
        }
        emit NewFeedback(
            agentId,
            msg.sender,
            feedbackIndex,
            value,
            valueDecimals,
            tag1,
            tag1,
            tag2,
            endpoint,
            feedbackURI,
            feedbackHash
        );
    }

    /// @notice Withdraws the caller's own feedback; it stays readable, marked revoked.
    function revokeFeedback(uint256 agentId, uint64 feedbackIndex) external {
        Feedback storage feedback = _existingFeedback(agentId, msg.sender, feedbackIndex);
        if (feedback.isRevoked) revert FeedbackAlreadyRevoked(agentId, msg.sender, feedbackIndex);
        feedback.isRevoked = true;
        emit FeedbackRevoked(agentId, msg.sender, feedbackIndex);
    }

    /// @notice Appends a response (a rebuttal, a refund proof, an annotation) to existing feedback. Anyone may respond.
    function appendResponse(
        uint256 agentId,
        address clientAddress,
        uint64 feedbackIndex,
        string calldata responseURI,
        bytes32 responseHash
    ) external {
        if (bytes(responseURI).length == 0) revert EmptyResponseURI();
        _existingFeedback(agentId, clientAddress, feedbackIndex);
        if (_responseCount[agentId][clientAddress][feedbackIndex][msg.sender]++ == 0) {
            _responders[agentId][clientAddress][feedbackIndex].push(msg.sender);
        }
        emit ResponseAppended(agentId, clientAddress, feedbackIndex, msg.sender, responseURI, responseHash);
    }

    /// @notice The newest feedback index `clientAddress` used on `agentId` (0 when none).
    function getLastIndex(uint256 agentId, address clientAddress) external view returns (uint64) {
        return _lastIndex[agentId][clientAddress];
    }

    /// @notice Every address that ever left feedback on `agentId`, in order of first feedback.
    function getClients(uint256 agentId) external view returns (address[] memory) {
        return _clients[agentId];
    }

    /// @notice One feedback entry.
    function readFeedback(uint256 agentId, address clientAddress, uint64 feedbackIndex)
        external
        view
        returns (int128 value, uint8 valueDecimals, string memory tag1, string memory tag2, bool isRevoked)
    {
        Feedback storage feedback = _existingFeedback(agentId, clientAddress, feedbackIndex);
        return (feedback.value, feedback.valueDecimals, feedback.tag1, feedback.tag2, feedback.isRevoked);
    }

    /// @notice Count and average of the non-revoked feedback from `clientAddresses` matching the tags
    ///         (an empty tag matches all).
    /// @dev    Values are averaged at 18 decimals and reported at the largest `valueDecimals` among the
    ///         entries counted, truncated toward zero; (0, 0, 0) when nothing matches.
    function getSummary(uint256 agentId, address[] calldata clientAddresses, string calldata tag1, string calldata tag2)
        external
        view
        returns (uint64 count, int128 summaryValue, uint8 summaryValueDecimals)
    {
        if (clientAddresses.length == 0) revert EmptyClientList();
        int256 total;
        for (uint256 i; i < clientAddresses.length; ++i) {
            address client = clientAddresses[i];
            uint64 last = _lastIndex[agentId][client];
            for (uint64 j = 1; j <= last; ++j) {
                Feedback storage feedback = _feedback[agentId][client][j];
                if (feedback.isRevoked || !_matches(feedback, tag1, tag2)) continue;
                total += int256(feedback.value) * int256(10 ** (MAX_VALUE_DECIMALS - feedback.valueDecimals));
                if (feedback.valueDecimals > summaryValueDecimals) summaryValueDecimals = feedback.valueDecimals;
                ++count;
            }
        }
        if (count == 0) return (0, 0, 0);
        // Mixed precisions can push the mean, at the finest precision used, past int128 (a huge value at
        // 0 decimals beside any at 18): it saturates at the int128 bounds rather than wrapping silently.
        int256 mean = total / int256(uint256(count)) / int256(10 ** (MAX_VALUE_DECIMALS - summaryValueDecimals));
        if (mean > type(int128).max) return (count, type(int128).max, summaryValueDecimals);
        if (mean < type(int128).min) return (count, type(int128).min, summaryValueDecimals);
        summaryValue = int128(mean);
    }

    /// @notice Every feedback entry from `clientAddresses` (all clients when empty) matching the tags.
    function readAllFeedback(
        uint256 agentId,
        address[] calldata clientAddresses,
        string calldata tag1,
        string calldata tag2,
        bool includeRevoked
    )
        external
        view
        returns (
            address[] memory clients,
            uint64[] memory feedbackIndexes,
            int128[] memory values,
            uint8[] memory valueDecimals,
            string[] memory tag1s,
            string[] memory tag2s,
            bool[] memory revokedStatuses
        )
    {
        address[] memory clientList = clientAddresses;
        if (clientList.length == 0) clientList = _clients[agentId];
        uint256 total;
        for (uint256 i; i < clientList.length; ++i) {
            total += _lastIndex[agentId][clientList[i]];
        }
        clients = new address[](total);
        feedbackIndexes = new uint64[](total);
        values = new int128[](total);
        valueDecimals = new uint8[](total);
        tag1s = new string[](total);
        tag2s = new string[](total);
        revokedStatuses = new bool[](total);

        uint256 n;
        for (uint256 i; i < clientList.length; ++i) {
            uint64 last = _lastIndex[agentId][clientList[i]];
            for (uint64 j = 1; j <= last; ++j) {
                Feedback storage feedback = _feedback[agentId][clientList[i]][j];
                if ((feedback.isRevoked && !includeRevoked) || !_matches(feedback, tag1, tag2)) continue;
                clients[n] = clientList[i];
                feedbackIndexes[n] = j;
                values[n] = feedback.value;
                valueDecimals[n] = feedback.valueDecimals;
                tag1s[n] = feedback.tag1;
                tag2s[n] = feedback.tag2;
                revokedStatuses[n] = feedback.isRevoked;
                ++n;
            }
        }
        // Shrink the arrays to the entries that matched.
        assembly ("memory-safe") {
            mstore(clients, n)
            mstore(feedbackIndexes, n)
            mstore(values, n)
            mstore(valueDecimals, n)
            mstore(tag1s, n)
            mstore(tag2s, n)
            mstore(revokedStatuses, n)
        }
    }

    /// @notice Number of responses. A zero `clientAddress` counts over all clients of the agent; a zero
    ///         `feedbackIndex` over all of the client's feedback; an empty `responders` over all responders.
    function getResponseCount(
        uint256 agentId,
        address clientAddress,
        uint64 feedbackIndex,
        address[] calldata responders
    ) external view returns (uint64 count) {
        if (clientAddress == address(0)) {
            address[] storage clients = _clients[agentId];
            for (uint256 i; i < clients.length; ++i) {
                count += _responsesToClient(agentId, clients[i], responders);
            }
        } else if (feedbackIndex == 0) {
            count = _responsesToClient(agentId, clientAddress, responders);
        } else {
            count = _responsesTo(agentId, clientAddress, feedbackIndex, responders);
        }
    }

    /// @notice Version of this implementation.
    function getVersion() external pure returns (string memory) {
        return "1.0.0";
    }

    // ---------------------------------------------------------------- internals

    function _requireNotSelf(uint256 agentId) private view {
        address owner;
        try _identityRegistry.ownerOf(agentId) returns (address agentOwner) {
            owner = agentOwner;
        } catch {
            revert AgentNotFound(agentId);
        }
        if (
            msg.sender == owner || _identityRegistry.getApproved(agentId) == msg.sender
                || _identityRegistry.isApprovedForAll(owner, msg.sender)
        ) revert SelfFeedback(msg.sender, agentId);
    }

    function _existingFeedback(uint256 agentId, address clientAddress, uint64 feedbackIndex)
        private
        view
        returns (Feedback storage)
    {
        if (feedbackIndex == 0 || feedbackIndex > _lastIndex[agentId][clientAddress]) {
            revert FeedbackNotFound(agentId, clientAddress, feedbackIndex);
        }
        return _feedback[agentId][clientAddress][feedbackIndex];
    }

    function _matches(Feedback storage feedback, string calldata tag1, string calldata tag2)
        private
        view
        returns (bool)
    {
        return (bytes(tag1).length == 0 || keccak256(bytes(tag1)) == keccak256(bytes(feedback.tag1)))
            && (bytes(tag2).length == 0 || keccak256(bytes(tag2)) == keccak256(bytes(feedback.tag2)));
    }

    function _responsesToClient(uint256 agentId, address clientAddress, address[] calldata responders)
        private
        view
        returns (uint64 count)
    {
        uint64 last = _lastIndex[agentId][clientAddress];
        for (uint64 j = 1; j <= last; ++j) {
            count += _responsesTo(agentId, clientAddress, j, responders);
        }
    }

    function _responsesTo(uint256 agentId, address clientAddress, uint64 feedbackIndex, address[] calldata responders)
        private
        view
        returns (uint64 count)
    {
        mapping(address => uint64) storage counts = _responseCount[agentId][clientAddress][feedbackIndex];
        if (responders.length == 0) {
            address[] storage all = _responders[agentId][clientAddress][feedbackIndex];
            for (uint256 k; k < all.length; ++k) {
                count += counts[all[k]];
            }
        } else {
            for (uint256 k; k < responders.length; ++k) {
                count += counts[responders[k]];
            }
        }
    }
}

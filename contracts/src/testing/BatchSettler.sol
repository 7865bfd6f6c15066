// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC3009} from "../interfaces/IERC3009.sol";

/// @title BatchSettler
/// @notice Submits several EIP-3009 authorizations in one transaction, as a batching facilitator (or a
///         front-runner bundling a victim's authorization with its own) does. For tests only: the server
///         must give each payment a deposit of its own when one transaction settles several.
contract BatchSettler {
    /// @notice One signed authorization to submit.
    struct SignedAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        bytes signature;
    }

    /// @notice Submits every authorization of `token`, in order; reverts if any does.
    function settleAll(IERC3009 token, SignedAuthorization[] calldata authorizations) external {
        for (uint256 i; i < authorizations.length; ++i) {
            SignedAuthorization calldata a = authorizations[i];
            token.transferWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, a.signature);
        }
    }
}

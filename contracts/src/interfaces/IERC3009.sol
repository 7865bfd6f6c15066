// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title IERC3009
/// @notice What the marketplace needs of a USDC-like token: ERC-20, EIP-3009 transfers with authorization
///         (in both the v,r,s and the bytes-signature forms of Circle's FiatToken v2.2) and the EIP-712
///         domain separator the authorizations are signed under. The server binds real USDC to this
///         interface; TestUSDC implements it for local chains.
interface IERC3009 is IERC20 {
    /// @notice `nonce` of `authorizer` was spent on a transfer.
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);

    /// @notice `nonce` of `authorizer` was cancelled unused.
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);

    /// @notice The token's EIP-712 domain separator.
    function DOMAIN_SEPARATOR() external view returns (bytes32);

    /// @notice Whether `nonce` of `authorizer` is used or cancelled.
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);

    /// @notice Executes a transfer signed by `from`, with a packed ECDSA or an ERC-1271 signature.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;

    /// @notice Executes a transfer signed by `from`, with an ECDSA signature split into v, r, s.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Like `transferWithAuthorization`, but only the payee `to` may submit it.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;

    /// @notice `receiveWithAuthorization` with an ECDSA signature split into v, r, s.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Burns an unused nonce of `authorizer`, with a packed ECDSA or an ERC-1271 signature.
    function cancelAuthorization(address authorizer, bytes32 nonce, bytes calldata signature) external;

    /// @notice Burns an unused nonce of `authorizer`, with an ECDSA signature split into v, r, s.
    function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
}

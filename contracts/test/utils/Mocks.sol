// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @dev A smart-contract wallet that accepts what its EOA signer signs (ERC-1271).
contract ERC1271Wallet is IERC1271 {
    address public immutable signer;

    constructor(address signer_) {
        signer = signer_;
    }

    function isValidSignature(bytes32 digest, bytes calldata signature) external view returns (bytes4) {
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecover(digest, signature);
        return
            error == ECDSA.RecoverError.NoError && recovered == signer ? IERC1271.isValidSignature.selector : bytes4(0);
    }
}

/// @dev A token that calls back into a target on every transfer, to attempt reentrancy.
contract HostileToken is ERC20 {
    address public target;
    bytes public payload;
    bool public lastReentrySucceeded;
    bytes public lastReentryError;
    /// @dev When set, a re-entry that fails makes the transfer itself revert (as a strict token would).
    bool public revertOnFailedReentry;

    constructor() ERC20("Hostile", "HOST") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
    }

    function setRevertOnFailedReentry(bool value) external {
        revertOnFailedReentry = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (target != address(0) && from == target) {
            (lastReentrySucceeded, lastReentryError) = target.call(payload);
            if (!lastReentrySucceeded && revertOnFailedReentry) revert("re-entry refused");
        }
    }
}

/// @dev A token that, like USDC, refuses transfers touching a blocklisted account and every transfer while
///      paused: what a payee (or an issuer) can do to a push payout.
contract RefusingToken is ERC20 {
    mapping(address account => bool) public blocked;
    bool public paused;

    error Blocked(address account);
    error Paused();

    constructor() ERC20("Refusing", "REF") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setBlocked(address account, bool value) external {
        blocked[account] = value;
    }

    function setPaused(bool value) external {
        paused = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (paused) revert Paused();
        if (blocked[from]) revert Blocked(from);
        if (blocked[to]) revert Blocked(to);
        super._update(from, to, value);
    }
}

/// @dev A token whose transfers cost over a million gas: a payout sent with a little less gas runs out inside the
///      transfer while the caller still has plenty left.
contract GasHungryToken is ERC20 {
    bytes32 public sink;

    constructor() ERC20("Hungry", "HUNG") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        bytes32 state = sink;
        for (uint256 i; i < 5_000; ++i) {
            state = keccak256(abi.encode(state, i));
        }
        sink = state;
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @dev The bytes-signature form of EIP-3009 that FiatToken v2.2 offers.
interface IReceiveWithAuthorization {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;
}

/// @title CommercePaymentsReplica
/// @notice The anchor of our gas comparison: Coinbase's commerce-payments (base/commerce-payments:
///         AuthCaptureEscrow with its ERC3009PaymentCollector and per-operator TokenStore clone), rewritten
///         here so that both escrows are measured in the same forge run, on the same token, by the same
///         method. It makes the same calls, storage writes and event emissions on the x402 path
///         (authorize, then capture or void): the 12-field PaymentInfo in calldata and its EIP-712 style
///         hash, one packed state slot, a transient reentrancy guard, the collector pulling the buyer's
///         EIP-3009 authorization (nonce = the payer-agnostic hash, fetched back from the escrow) and
///         forwarding it to the operator's TokenStore, the balance check around the collection, and the
///         payout sent by the TokenStore clone.
///         Left out, which can only make the replica cheaper than the original: charge, refund, reclaim,
///         fee payouts (measured with fee 0), ERC-6492 wallet deployment (only its suffix check stays),
///         and the collector-type check. Not for use outside the gas tests.
contract CommercePaymentsReplica is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    struct PaymentInfo {
        address operator;
        address payer;
        address receiver;
        address token;
        uint120 maxAmount;
        uint48 preApprovalExpiry;
        uint48 authorizationExpiry;
        uint48 refundExpiry;
        uint16 minFeeBps;
        uint16 maxFeeBps;
        address feeReceiver;
        uint256 salt;
    }

    struct PaymentState {
        bool hasCollectedPayment;
        uint120 capturableAmount;
        uint120 refundableAmount;
    }

    bytes32 public constant PAYMENT_INFO_TYPEHASH = keccak256(
        "PaymentInfo(address operator,address payer,address receiver,address token,uint120 maxAmount,uint48 preApprovalExpiry,uint48 authorizationExpiry,uint48 refundExpiry,uint16 minFeeBps,uint16 maxFeeBps,address feeReceiver,uint256 salt)"
    );

    address public immutable tokenStoreImplementation;
    mapping(bytes32 paymentInfoHash => PaymentState) public paymentState;

    event PaymentAuthorized(
        bytes32 indexed paymentInfoHash, PaymentInfo paymentInfo, uint256 amount, address tokenCollector
    );
    event PaymentCaptured(bytes32 indexed paymentInfoHash, uint256 amount, uint16 feeBps, address feeReceiver);
    event PaymentVoided(bytes32 indexed paymentInfoHash, uint256 amount);
    event TokenStoreCreated(address indexed operator, address tokenStore);

    error Refused(string why);

    constructor() {
        tokenStoreImplementation = address(new ReplicaTokenStore(address(this)));
    }

    function authorize(
        PaymentInfo calldata paymentInfo,
        uint256 amount,
        address tokenCollector,
        bytes calldata collectorData
    ) external nonReentrant {
        _requireSender(paymentInfo.operator);
        _validAmount(amount);
        _validatePayment(paymentInfo, amount);
        bytes32 paymentInfoHash = getHash(paymentInfo);
        if (paymentState[paymentInfoHash].hasCollectedPayment) revert Refused("already collected");
        paymentState[paymentInfoHash] =
            PaymentState({hasCollectedPayment: true, capturableAmount: uint120(amount), refundableAmount: 0});
        emit PaymentAuthorized(paymentInfoHash, paymentInfo, amount, tokenCollector);

        address tokenStore = getTokenStore(paymentInfo.operator);
        uint256 before = IERC20(paymentInfo.token).balanceOf(tokenStore);
        ReplicaERC3009Collector(tokenCollector).collectTokens(paymentInfo, tokenStore, amount, collectorData);
        if (IERC20(paymentInfo.token).balanceOf(tokenStore) != before + amount) revert Refused("collection");
    }

    function capture(PaymentInfo calldata paymentInfo, uint256 amount, uint16 feeBps, address feeReceiver)
        external
        nonReentrant
    {
        _requireSender(paymentInfo.operator);
        _validAmount(amount);
        _validateFee(paymentInfo, feeBps, feeReceiver);
        if (block.timestamp >= paymentInfo.authorizationExpiry) revert Refused("authorization expired");
        bytes32 paymentInfoHash = getHash(paymentInfo);
        PaymentState memory state = paymentState[paymentInfoHash];
        if (state.capturableAmount < amount) revert Refused("insufficient authorization");
        state.capturableAmount -= uint120(amount);
        state.refundableAmount += uint120(amount);
        paymentState[paymentInfoHash] = state;
        emit PaymentCaptured(paymentInfoHash, amount, feeBps, feeReceiver);
        uint256 fee = amount * feeBps / 10_000;
        if (fee > 0) _sendTokens(msg.sender, paymentInfo.token, feeReceiver, fee);
        if (amount > fee) _sendTokens(msg.sender, paymentInfo.token, paymentInfo.receiver, amount - fee);
    }

    function void(PaymentInfo calldata paymentInfo) external nonReentrant {
        _requireSender(paymentInfo.operator);
        bytes32 paymentInfoHash = getHash(paymentInfo);
        uint256 authorized = paymentState[paymentInfoHash].capturableAmount;
        if (authorized == 0) revert Refused("nothing authorized");
        paymentState[paymentInfoHash].capturableAmount = 0;
        emit PaymentVoided(paymentInfoHash, authorized);
        _sendTokens(paymentInfo.operator, paymentInfo.token, paymentInfo.payer, authorized);
    }

    function getHash(PaymentInfo calldata paymentInfo) public view returns (bytes32) {
        bytes32 paymentInfoHash = keccak256(abi.encode(PAYMENT_INFO_TYPEHASH, paymentInfo));
        return keccak256(abi.encode(block.chainid, address(this), paymentInfoHash));
    }

    function getTokenStore(address operator) public view returns (address) {
        return Clones.predictDeterministicAddress(tokenStoreImplementation, bytes32(bytes20(operator)));
    }

    function _sendTokens(address operator, address token, address recipient, uint256 amount) private {
        address tokenStore = getTokenStore(operator);
        (bool ok, bytes memory returned) =
            tokenStore.call(abi.encodeCall(ReplicaTokenStore.sendTokens, (token, recipient, amount)));
        if (ok && returned.length == 32 && abi.decode(returned, (bool))) return;
        if (tokenStore.code.length != 0) revert Refused("send");
        tokenStore = Clones.cloneDeterministic(tokenStoreImplementation, bytes32(bytes20(operator)));
        emit TokenStoreCreated(operator, tokenStore);
        ReplicaTokenStore(tokenStore).sendTokens(token, recipient, amount);
    }

    function _requireSender(address sender) private view {
        if (msg.sender != sender) revert Refused("sender");
    }

    function _validAmount(uint256 amount) private pure {
        if (amount == 0 || amount > type(uint120).max) revert Refused("amount");
    }

    function _validatePayment(PaymentInfo calldata paymentInfo, uint256 amount) private view {
        if (amount > paymentInfo.maxAmount) revert Refused("max amount");
        if (block.timestamp >= paymentInfo.preApprovalExpiry) revert Refused("pre-approval expired");
        if (
            paymentInfo.preApprovalExpiry > paymentInfo.authorizationExpiry
                || paymentInfo.authorizationExpiry > paymentInfo.refundExpiry
        ) revert Refused("expiries");
        if (paymentInfo.maxFeeBps > 10_000 || paymentInfo.minFeeBps > paymentInfo.maxFeeBps) revert Refused("fees");
    }

    function _validateFee(PaymentInfo calldata paymentInfo, uint16 feeBps, address feeReceiver) private pure {
        if (feeBps < paymentInfo.minFeeBps || feeBps > paymentInfo.maxFeeBps) revert Refused("fee range");
        if (feeReceiver == address(0) && feeBps > 0) revert Refused("fee receiver");
        if (paymentInfo.feeReceiver != address(0) && paymentInfo.feeReceiver != feeReceiver) {
            revert Refused("fee receiver");
        }
    }
}

/// @dev The collector of commerce-payments' ERC-3009 path: pulls the payer's authorization to itself
///      (receiveWithAuthorization, so no one else can submit it) and forwards the amount to the TokenStore.
contract ReplicaERC3009Collector {
    using SafeERC20 for IERC20;

    bytes32 private constant ERC6492_MAGIC = 0x6492649264926492649264926492649264926492649264926492649264926492;
    CommercePaymentsReplica public immutable escrow;

    constructor(CommercePaymentsReplica escrow_) {
        escrow = escrow_;
    }

    function collectTokens(
        CommercePaymentsReplica.PaymentInfo calldata paymentInfo,
        address tokenStore,
        uint256 amount,
        bytes calldata signature
    ) external {
        require(msg.sender == address(escrow), "only the escrow");
        // The original unwraps an ERC-6492 signature here; an EOA's signature only pays for the check.
        if (signature.length >= 32 && bytes32(signature[signature.length - 32:]) == ERC6492_MAGIC) {
            revert("ERC-6492 is not replicated");
        }
        CommercePaymentsReplica.PaymentInfo memory payerAgnostic = paymentInfo;
        payerAgnostic.payer = address(0);
        IReceiveWithAuthorization(paymentInfo.token)
            .receiveWithAuthorization(
                paymentInfo.payer,
                address(this),
                paymentInfo.maxAmount,
                0,
                paymentInfo.preApprovalExpiry,
                escrow.getHash(payerAgnostic),
                signature
            );
        if (paymentInfo.maxAmount > amount) {
            IERC20(paymentInfo.token).safeTransfer(paymentInfo.payer, paymentInfo.maxAmount - amount);
        }
        IERC20(paymentInfo.token).safeTransfer(tokenStore, amount);
    }
}

/// @dev Holds an operator's escrowed tokens; deployed as a minimal-proxy clone per operator.
contract ReplicaTokenStore {
    using SafeERC20 for IERC20;

    address public immutable escrow;

    constructor(address escrow_) {
        escrow = escrow_;
    }

    function sendTokens(address token, address recipient, uint256 amount) external returns (bool) {
        require(msg.sender == escrow, "only the escrow");
        IERC20(token).safeTransfer(recipient, amount);
        return true;
    }
}

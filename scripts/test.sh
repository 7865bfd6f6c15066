#!/usr/bin/env bash
# Every test in the repository, from a fresh clone:
#   1. formatting and lints: forge fmt, cargo fmt, clippy (warnings are errors)
#   2. forge: unit, fuzz and invariant tests of the contracts; the gas snapshots (snapshots/*.json from the
#      gas test's cheatcodes, and .gas-snapshot) must match what is committed
#   3. the ERC-8004 ABI conformance check
#   4. cargo: the Rust unit and integration tests (these start their own anvil)
#   5. the demo, end to end on a fresh anvil
# Ends with one plain "N passed, N failed" line per runner. Set UPDATE_GAS_SNAPSHOTS=1 to rewrite the
# snapshots after an intended gas change (then commit them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
ensure_toolchain
cd "$ROOT"

summary=()
status=0

# Runs a named check; records "name: 1 passed, 0 failed" or the failure.
check() {
  local name="$1"; shift
  echo "== $name"
  if "$@"; then summary+=("$name: 1 passed, 0 failed"); else summary+=("$name: 0 passed, 1 failed"); status=1; fi
}

check lint bash -c 'forge fmt --check && cargo fmt --all -- --check && cargo clippy --workspace --all-targets --all-features --locked -- -D warnings'

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

check abi node scripts/check-abi.js

echo "== cargo test"
# Each storage test creates its own PostgreSQL database (agentripe_*); drop those of earlier runs.
if command -v psql >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'agentripe\_%'" 2>/dev/null \
    | while read -r db; do psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done
fi
cargo_log="$(mktemp)"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$cargo_log" || status=1
read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$cargo_log")
if ! grep -q '^test result:' "$cargo_log"; then failed=1; status=1; fi
summary+=("cargo: $passed passed, $failed failed")

check demo scripts/demo.sh

echo
printf '%s\n' "${summary[@]}"
exit "$status"

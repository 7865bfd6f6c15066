#!/usr/bin/env bash
# Benchmarks (never timed tests): the x402 verification microbenchmark (criterion) and the purchase
# load run on anvil over loopback, on SQLite and on PostgreSQL. Gas figures live in snapshots/.
#   scripts/bench.sh [PURCHASES] [CLIENTS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
ensure_toolchain
cd "$ROOT"
purchases="${1:-400}"
clients="${2:-32}"

echo "== x402 verification (criterion)"
cargo bench -p agentripe-x402 --bench verify -- --warm-up-time 1 --measurement-time 5 2>&1 | grep -E "verify|time:"

echo "== vendor task list under load (64 clients)"
cargo run --quiet --release -p agentripe-server --features testing --example vendor_load -- 20000 64

for engine in sqlite postgres; do
  echo "== purchase load ($engine), next to the settlement step alone"
  cargo run --quiet --release -p agentripe-server --features testing --example purchase_load -- "$purchases" "$clients" "$engine"
  echo "== database growth ($engine): 1,000 purchases on a fresh database, then on one holding 10,000"
  cargo run --quiet --release -p agentripe-server --features testing --example purchase_load -- growth 10000 "$engine"
done

#!/usr/bin/env bash
# The crash campaign (issue 10): the server as its own process, SIGKILLed at random moments under
# purchases and vendor work, restarted, reconciled, then the chain audited against the database.
# Long, so not part of scripts/test.sh; its last figures are in the README.
#   scripts/crash-campaign.sh [SECONDS] [sqlite|postgres]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
ensure_toolchain
cd "$ROOT"
cargo build --quiet --release -p agentripe-server --features testing --bin agentripe-server --example crash_campaign
"${CARGO_TARGET_DIR:-target}/release/examples/crash_campaign" "${1:-60}" "${2:-sqlite}"

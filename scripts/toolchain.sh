# Sourced by the other scripts: installs the project-local Solidity toolchain from the npm registry
# (pinned by package-lock.json) when it is missing or stale, and puts it on PATH.
#   forge, anvil, cast 1.7.x  npm @foundry-rs/*-linux-amd64 (the real binaries)
#   solc 0.8.30               npm solc (solc-js) behind scripts/solc, which forge accepts as a native solc
#   forge-std, OpenZeppelin   npm, remapped in foundry.toml
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

ensure_toolchain() {
  local stamp="$ROOT/node_modules/.package-lock.json"
  if [ ! -x "$ROOT/node_modules/.bin/forge" ] || [ ! -f "$stamp" ] || [ "$ROOT/package-lock.json" -nt "$stamp" ]; then
    command -v npm >/dev/null || { echo "error: npm is required to install the Solidity toolchain (apt-get install nodejs npm)" >&2; return 1; }
    echo "installing the Solidity toolchain from package-lock.json ..." >&2
    (cd "$ROOT" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) || return 1
  fi
  export PATH="$ROOT/node_modules/.bin:$PATH"
  export FOUNDRY_SOLC="$ROOT/scripts/solc"
  export FOUNDRY_OFFLINE=true
}

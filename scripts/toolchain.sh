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

# Starts anvil on a free loopback port (never assume 8545 is free) and waits until it listens.
# Sets ANVIL_PID and RPC_URL; stop it with stop_anvil. Extra arguments go to anvil.
start_anvil() {
  local log
  log="$(mktemp -t anvil.XXXXXX.log)"
  anvil --host 127.0.0.1 --port 0 "$@" >"$log" 2>&1 &
  ANVIL_PID=$!
  local port=""
  for _ in $(seq 1 100); do
    port="$(grep -o 'Listening on 127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f2 || true)"
    [ -n "$port" ] && break
    kill -0 "$ANVIL_PID" 2>/dev/null || { cat "$log" >&2; echo "error: anvil exited" >&2; return 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$log" >&2; echo "error: anvil did not start listening within 10 s" >&2; return 1; }
  RPC_URL="http://127.0.0.1:$port"
  export ANVIL_PID RPC_URL
}

stop_anvil() {
  if [ -n "${ANVIL_PID:-}" ] && kill -0 "$ANVIL_PID" 2>/dev/null; then
    kill "$ANVIL_PID" 2>/dev/null
    wait "$ANVIL_PID" 2>/dev/null || true
  fi
  ANVIL_PID=""
}

# Deploys the four contracts with forge script; writes the addresses to $1 (JSON). Extra env is passed through.
deploy_contracts() {
  local out="$1" key="$2"
  DEPLOYMENTS_FILE="$out" forge script "$ROOT/contracts/script/Deploy.s.sol:Deploy" \
    --root "$ROOT" --rpc-url "$RPC_URL" --private-key "$key" --broadcast >"$out.log" 2>&1 \
    || { cat "$out.log" >&2; echo "error: deployment failed" >&2; return 1; }
}

# Reads a top-level field of a JSON file.
json_field() {
  node -e 'process.stdout.write(String(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[process.argv[2]]))' "$1" "$2"
}

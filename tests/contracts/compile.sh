#!/usr/bin/env bash
# Recompiles tests/contracts/X402Permit2Proxies.sol with npm solc 0.8.30 (installed by
# scripts/deps/25-permit2.sh) into OUT (default: the committed X402Permit2Proxies.json).
# tests/anvil_permit2.rs runs it into a temporary file and compares with the committed JSON.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
solc="${PAY402_SOLC_JS:-$root/.test-deps/solc/node_modules/solc}"
out="${1:-$here/X402Permit2Proxies.json}"
node "$root/scripts/solc-compile.js" "$solc" \
    '{"optimizer":{"enabled":true,"runs":200},"evmVersion":"cancun","metadata":{"bytecodeHash":"none"}}' \
    "$out" "$here" X402Permit2Proxies.sol -- \
    X402Permit2Proxies.sol:X402ExactPermit2Proxy X402Permit2Proxies.sol:X402UptoPermit2Proxy

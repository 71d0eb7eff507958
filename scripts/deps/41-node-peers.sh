# The official Node x402 client (npm `@x402/fetch`, `@x402/evm`, `@x402/core` 2.27.0 and viem),
# locked by tests/interop/node/package-lock.json, into $PAY402_DEPS_DIR/node-peers/node_modules.
# `--legacy-peer-deps`: viem declares an optional peer (mppx) newer than the registry has, and
# plain npm refuses the install over it. tests/interop_node.rs runs tests/interop/node/*.cjs
# with NODE_PATH pointing at that node_modules.
# Idempotent: an install whose stamp matches the lockfile's hash is reused as is.

deps_node_peers() {
    local dir="$PAY402_DEPS_DIR/node-peers"
    local src="tests/interop/node"
    local stamp="$dir/.pay402-lock.sha256"
    local want
    want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)" || return 1
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -f "$dir/node_modules/@x402/fetch/package.json" ]; then
        echo "install-test-deps: Node peers already installed in $dir"
        return 0
    fi
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm || return 1
    echo "install-test-deps: installing the Node peers (npm) into $dir"
    mkdir -p "$dir" || return 1
    cp "$src/package.json" "$src/package-lock.json" "$dir/" || return 1
    (cd "$dir" && npm ci --legacy-peer-deps --no-audit --no-fund --ignore-scripts) || return 1
    [ -f "$dir/node_modules/@x402/fetch/package.json" ] || {
        echo "@x402/fetch missing after install in $dir" >&2
        return 1
    }
    echo "$want" >"$stamp"
}
deps_node_peers

# Permit2 and a Solidity compiler for the Permit2 tests, both pinned, into $PAY402_DEPS_DIR:
# * permit2/Permit2.runtime.hex: Uniswap's ORIGINAL Permit2 runtime bytecode (the code deployed
#   at 0x000000000022D473030F116dDEE9F6B43aC78BA3), as shipped precompiled by npm
#   `@uniswap/v4-periphery` in lib/permit2/test/utils/DeployPermit2.sol (Uniswap's own helper
#   that etches it at the canonical address). tests/support/permit2.rs `anvil_setCode`s it there;
#   its cached EIP-712 domain is mainnet's, so on chain 196 Permit2 rebuilds its domain
#   separator for (196, canonical address), which the tests check.
# * solc/node_modules/solc: npm `solc` (solc-js) 0.8.30, which compiles pay402's own test x402
#   Permit2 proxies (tests/contracts/); tests/anvil_permit2.rs recompiles them with it and
#   checks the committed JSON is reproduced.
# Exported: PAY402_PERMIT2_RUNTIME (the hex file) and PAY402_SOLC_JS (the solc package dir).
PAY402_V4_PERIPHERY_NPM="@uniswap/v4-periphery@1.0.3"
PAY402_SOLC_NPM="solc@0.8.30"

deps_permit2() {
    local dir="$PAY402_DEPS_DIR/permit2"
    local source="$dir/node_modules/@uniswap/v4-periphery/lib/permit2/test/utils/DeployPermit2.sol"
    local hex="$dir/Permit2.runtime.hex"
    local solc_dir="$PAY402_DEPS_DIR/solc/node_modules/solc"
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm || return 1
    if [ ! -f "$source" ]; then
        echo "install-test-deps: installing $PAY402_V4_PERIPHERY_NPM (npm; Permit2's original bytecode)"
        mkdir -p "$dir" || return 1
        npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts "$PAY402_V4_PERIPHERY_NPM" || return 1
    fi
    [ -f "$source" ] || { echo "Permit2 bytecode source missing after install: $source" >&2; return 1; }
    # The one hex literal of DeployPermit2.sol is the runtime code.
    grep -o 'hex"[0-9a-fA-F]*"' "$source" | head -n 1 | sed -e 's/^hex"//' -e 's/"$//' >"$hex" || return 1
    # Permit2's runtime code is 9152 bytes (18304 hex digits) and starts with its free memory
    # pointer setup; anything else means the package changed under the pin.
    local digits
    digits="$(tr -d '\n' <"$hex" | wc -c)"
    if [ "$digits" != 18304 ] || ! grep -q '^60406080' "$hex"; then
        echo "Permit2 runtime bytecode extracted from $source is not the expected 9152 bytes" >&2
        return 1
    fi
    if [ ! -f "$solc_dir/package.json" ]; then
        echo "install-test-deps: installing $PAY402_SOLC_NPM (npm; compiles tests/contracts)"
        mkdir -p "$PAY402_DEPS_DIR/solc" || return 1
        npm install --prefix "$PAY402_DEPS_DIR/solc" --no-audit --no-fund --ignore-scripts "$PAY402_SOLC_NPM" || return 1
    fi
    grep -q '"version": "0.8.30"' "$solc_dir/package.json" || {
        echo "solc 0.8.30 missing after install: $solc_dir" >&2
        return 1
    }
    PAY402_PERMIT2_RUNTIME="$hex"
    PAY402_SOLC_JS="$solc_dir"
    export PAY402_PERMIT2_RUNTIME PAY402_SOLC_JS
    echo "install-test-deps: Permit2 runtime bytecode at $hex, solc-js at $solc_dir"
}
deps_permit2

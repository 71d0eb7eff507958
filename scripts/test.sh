#!/usr/bin/env bash
# pay402's one test command: installs what the tests need on a fresh Debian machine, then runs
# the format check, clippy (-D warnings), rustdoc (-D warnings), per-feature checks, and every
# test (unit, integration, golden vectors, trybuild). CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n==> %s (+%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

need() { command -v "$1" >/dev/null 2>&1; }

step "toolchain"
need cargo || { echo "cargo is required (rustup toolchain)" >&2; exit 1; }
cargo --version
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# Test components (installed when missing; a missing component fails the run, never skips tests).
source scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "features are additive: each feature alone (the seller never needs the buyer side)"
cargo check -p pay402-runtime --no-default-features --features axum
cargo check -p pay402-runtime --no-default-features --features actix
cargo check -p pay402-runtime --no-default-features
cargo check -p pay402-runtime --no-default-features --features chain
cargo check -p pay402-runtime --no-default-features --features secp256k1
cargo check -p pay402-runtime --no-default-features --features redis
cargo check -p pay402-runtime --no-default-features --features client

step "cargo doc -D warnings"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features

step "cargo package --workspace (each crate builds from exactly the files it would publish)"
# Verification builds each crate against the packages of its sibling crates, which cargo unpacks
# into $CARGO_HOME/registry/src/<local overlay>/pay402-*-<version>/ and reuses when the directory
# exists: an unpack left by an earlier run (same version, older sources) would be verified instead
# of this checkout's files. Remove those before packaging.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/pay402-core-[0-9]* \
    "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/pay402-macros-[0-9]* \
    "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/pay402-runtime-[0-9]*
cargo package --workspace --allow-dirty
if cargo package --workspace --list --allow-dirty 2>/dev/null | grep -E '^(\.test-deps|target|tests|benches|fuzz|scripts)/'; then
    echo "the packages would ship the files above (test components, build output, tests): fix the include lists" >&2
    exit 1
fi

step "cargo test"
cargo test --workspace --all-features

step "benchmarks, smoke mode (keeps the suite alive; no speed assertions)"
scripts/bench.sh --smoke

step "fuzz smoke: every cargo-fuzz target for 10 s (the long campaign: bash scripts/fuzz.sh 600)"
bash scripts/fuzz.sh 10

step "done in $(( $(date +%s) - start ))s"

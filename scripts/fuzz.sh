#!/usr/bin/env bash
# Fuzz every attacker-facing parser of pay402 with cargo-fuzz (libFuzzer).
#
#   bash scripts/fuzz.sh [seconds-per-target] [target ...]
#
# Default: 10 seconds per target (the CI smoke run); `bash scripts/fuzz.sh 600` is the
# ten-minute campaign recorded in SECURITY.md. With no target names, every target in
# fuzz/Cargo.toml runs, one after the other. Each target starts from its seed corpus
# (fuzz/seeds/<target>, taken from the golden vectors) plus whatever fuzz/corpus/<target>
# already holds; a crash fails the script and leaves its input in fuzz/artifacts/<target>/.
#
# Works on the stable toolchain: cargo-fuzz is installed from crates.io when missing, and
# RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes (sanitizer
# coverage). Set FUZZ_SANITIZER=address for AddressSanitizer (slower; the code is
# `unsafe`-free, so the default is none).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

(cd fuzz && cargo fuzz build -O --sanitizer "$sanitizer")
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "==> fuzz $t for ${seconds}s"
    (cd fuzz && cargo fuzz run -O --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"

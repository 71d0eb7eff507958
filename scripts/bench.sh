#!/usr/bin/env bash
# pay402's benchmark suite: the one command behind every figure in BENCHMARKS.md.
#
#   scripts/bench.sh            full run (about 10 minutes on 2 cores once built); report in target/bench/
#   scripts/bench.sh --smoke    tiny durations, one run: CI runs this so the suite cannot rot.
#                               Smoke figures mean nothing and nothing asserts on speed.
#
# Runs (release profile, all features):
#   1. benches/http_load.rs   wrk against axum and actix-web: unpaid 402 of #[x402], route-table,
#                             #[pay] and dual routes, and the paid x402 path against an instant
#                             facilitator stand-in, each as a ratio to a bare handler of the same
#                             server in the same run (median of runs), server CPU µs/request; and
#                             idle/loaded RSS of the axum_x402 example server.
#   2. benches/voucher.rs     criterion: voucher signature verification per backend, and the whole
#                             session voucher request with the in-memory, file and Redis stores.
#   3. benches/store_contention.rs  deductions/s on one contended channel per store, checking
#                             zero lost or double deductions.
#   4. benches/stream.rs      metered SSE streams: events/s on one core over one channel with the
#                             in-memory and Redis stores, beside axum's Sse and an unmetered
#                             EventStream of the same events (the per-event metering overhead).
# Needs wrk, taskset and redis-server (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=""
# Full runs measure optimised code (the `bench` profile inherits `release`); the smoke run reuses
# the test build (dev profile, same features), so CI compiles only the bench targets.
profile=(--profile bench)
example_dir=target/release/examples
http_args=(--runs 3 --secs 4)
contention_args=(--secs 4 --workers 16)
stream_args=(--runs 5 --events 20000)
if [ "${1:-}" = "--smoke" ]; then
    smoke=1
    http_args=(--smoke)
    contention_args=(--smoke)
    stream_args=(--smoke)
    profile=(--profile dev)
    example_dir=target/debug/examples
    export PAY402_BENCH_SMOKE=1
fi

for tool in wrk taskset redis-server; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done

out=target/bench
mkdir -p "$out"
features=(--workspace --all-features)

echo "==> building (${profile[*]})"
cargo build "${profile[@]}" "${features[@]}" --example axum_x402
cargo bench "${profile[@]}" "${features[@]}" --no-run

echo "==> machine"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version)"
    echo "wrk: $(wrk --version 2>&1 | head -n1)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"

echo "==> HTTP load (wrk)"
cargo bench "${profile[@]}" "${features[@]}" --bench http_load -- "${http_args[@]}" \
    --example-bin "$example_dir/axum_x402" --out "$out/http_load.md"

echo "==> voucher verification and session path (criterion)"
cargo bench "${profile[@]}" "${features[@]}" --bench voucher 2>&1 | tee "$out/voucher.txt"

echo "==> one contended channel per store"
cargo bench "${profile[@]}" "${features[@]}" --bench store_contention -- "${contention_args[@]}" --out "$out/store_contention.md"

echo "==> metered SSE streams: events per second on one core, per store, beside unmetered streams"
cargo bench "${profile[@]}" "${features[@]}" --bench stream -- "${stream_args[@]}" --out "$out/stream.md"

echo "==> done: reports in $out/${smoke:+ (smoke mode: figures are meaningless)}"

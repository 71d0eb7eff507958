# wrk (Debian `wrk`): the HTTP load generator of benches/http_load.rs (scripts/bench.sh; the CI
# runs it in smoke mode). taskset (util-linux) pins the servers and the load to separate cores.
deps_wrk() {
    if ! command -v wrk >/dev/null 2>&1; then
        echo "install-test-deps: installing wrk (Debian)"
        apt_install wrk || return 1
        command -v wrk >/dev/null 2>&1 || { echo "wrk still not on PATH" >&2; return 1; }
    fi
    if ! command -v taskset >/dev/null 2>&1; then
        apt_install util-linux || return 1
    fi
    wrk --version 2>&1 | head -n 1 || true
}
deps_wrk

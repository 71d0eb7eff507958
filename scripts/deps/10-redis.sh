# redis-server (Debian `redis-server`): tests start one per test on a free port
# (`--bind 127.0.0.1 --save '' --appendonly no`); no service is started here.
deps_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "install-test-deps: installing redis-server (Debian)"
        apt_install redis-server || return 1
        command -v redis-server >/dev/null 2>&1 || { echo "redis-server still not on PATH" >&2; return 1; }
    fi
    redis-server --version
}
deps_redis

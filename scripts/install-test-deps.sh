# Sourced by scripts/test.sh (or run directly): installs the external components the tests start.
# Everything comes from Debian, npm or PyPI. A failed install exits non-zero: CI must fail, never
# skip the tests that need the component.
#
# * redis-server (Debian `redis-server`): tests/channel_stores.rs starts one per test on a free
#   port (`--bind 127.0.0.1 --save '' --appendonly no`); no service is started here.

install_test_deps() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "install-test-deps: not root and no sudo: cannot install missing packages" >&2
            return 1
        fi
    fi

    if ! command -v redis-server >/dev/null 2>&1; then
        echo "install-test-deps: installing redis-server (Debian)"
        if ! { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server; }; then
            echo "install-test-deps: FAILED to install redis-server (apt-get)" >&2
            return 1
        fi
        # The Debian package may start a system service on machines with an init system; the
        # tests start their own servers, so leave any such service alone.
        if ! command -v redis-server >/dev/null 2>&1; then
            echo "install-test-deps: redis-server still not on PATH after installing it" >&2
            return 1
        fi
    fi
    redis-server --version
}

if ! install_test_deps; then
    echo "install-test-deps: a test component could not be installed; the test run fails" >&2
    # `return` when sourced, `exit` when run directly.
    return 1 2>/dev/null || exit 1
fi

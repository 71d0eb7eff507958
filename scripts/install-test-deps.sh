# Sourced by scripts/test.sh (or run directly): installs the external components the tests start.
# Everything comes from Debian, npm or PyPI. A failed install exits non-zero: CI must fail, never
# skip the tests that need the component.
#
# One file per component under scripts/deps/ (sourced in name order); each installs what is
# missing and returns non-zero on failure. Tools installed from npm/PyPI live under
# `.test-deps/` (git-ignored) and their bin directories are put on PATH for the tests.

PAY402_DEPS_DIR="${PAY402_DEPS_DIR:-$(pwd)/.test-deps}"
export PAY402_DEPS_DIR
mkdir -p "$PAY402_DEPS_DIR"

# apt_install and pinned_venv (shared with tests/package_manager.rs).
# shellcheck source=scripts/deps-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deps-lib.sh"

install_test_deps() {
    local f
    for f in scripts/deps/*.sh; do
        # shellcheck source=/dev/null
        if ! source "$f"; then
            echo "install-test-deps: FAILED: $f" >&2
            return 1
        fi
    done
}

if ! install_test_deps; then
    echo "install-test-deps: a test component could not be installed; the test run fails" >&2
    # `return` when sourced, `exit` when run directly.
    return 1 2>/dev/null || exit 1
fi

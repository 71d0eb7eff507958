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

# apt_install PKG...: install Debian packages (root, or through sudo).
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "install-test-deps: not root and no sudo: cannot install $*" >&2
            return 1
        fi
    fi
    if [ -z "${PAY402_APT_UPDATED:-}" ]; then
        $sudo apt-get update || return 1
        PAY402_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$@"
}

# pinned_venv VENV REQUIREMENTS IMPORT_CHECK NAME: a Python venv at VENV with every package of
# REQUIREMENTS (pinned exactly) installed, checked by running IMPORT_CHECK. Idempotent: a venv
# whose stamp matches the requirements file's hash and whose check passes is reused as is.
pinned_venv() {
    local venv="$1" req="$2" check="$3" name="$4"
    local stamp="$venv/.pay402-requirements.sha256"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)" || return 1
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$venv/bin/python" -c "$check" 2>/dev/null; then
        echo "install-test-deps: $name already installed in $venv"
        return 0
    fi
    local py
    py="$(command -v python3)" || { apt_install python3 python3-venv python3-pip || return 1; py="$(command -v python3)"; }
    echo "install-test-deps: installing $name (PyPI) into $venv"
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        # Debian's python3 needs python3-venv for ensurepip.
        rm -rf "$venv"
        apt_install python3-venv || return 1
        "$py" -m venv "$venv" || return 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" || return 1
    "$venv/bin/python" -c "$check" || {
        echo "$name does not import after install" >&2
        return 1
    }
    echo "$want" >"$stamp"
}

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

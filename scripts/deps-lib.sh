# Shell functions the test-dependency installers share (sourced by scripts/install-test-deps.sh
# and by tests/package_manager.rs; defines functions only, runs nothing).

# apt_retry CMD...: runs an apt-get command; while another package manager holds an apt or
# dpkg lock (a fresh machine still running its own updates), waits and retries, up to
# PAY402_APT_LOCK_TIMEOUT seconds (default 600), instead of failing at once. `apt-get install`
# also gets `-o DPkg::Lock::Timeout`, but `apt-get update` ignores that option for its lists
# lock, hence the retry.
apt_retry() {
    local deadline log rc
    deadline=$(( $(date +%s) + ${PAY402_APT_LOCK_TIMEOUT:-600} ))
    log="$(mktemp)"
    while :; do
        "$@" 2>"$log"
        rc=$?
        cat "$log" >&2
        if [ "$rc" -eq 0 ]; then
            rm -f "$log"
            return 0
        fi
        if grep -qE "Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock" "$log" &&
            [ "$(date +%s)" -lt "$deadline" ]; then
            echo "install-test-deps: another package manager holds the apt/dpkg lock; waiting for it" >&2
            sleep 2
            continue
        fi
        rm -f "$log"
        return "$rc"
    done
}

# apt_install PKG...: install Debian packages (root, or through sudo), waiting for the package
# manager's locks (apt_retry).
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
        apt_retry $sudo apt-get -o DPkg::Lock::Timeout="${PAY402_APT_LOCK_TIMEOUT:-600}" update || return 1
        PAY402_APT_UPDATED=1
    fi
    apt_retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="${PAY402_APT_LOCK_TIMEOUT:-600}" \
        install -y --no-install-recommends "$@"
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


# OKX's own Python SDK packages from PyPI (okxweb3-app-x402 with its evm/httpx/fastapi extras,
# okxweb3-app-mpp, okxweb3-app-paymentrouter, pympp 0.15.1, uvicorn), every package pinned
# exactly in tests/interop/python/requirements.txt, into the venv $PAY402_DEPS_DIR/venv.
# tests/interop_python.rs runs the peer scripts of tests/interop/python/ with its interpreter.
# Idempotent: a venv whose stamp matches the requirements file's hash is reused as is.

deps_python_peers() {
    local venv="$PAY402_DEPS_DIR/venv"
    local req="tests/interop/python/requirements.txt"
    local stamp="$venv/.pay402-requirements.sha256"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)" || return 1
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$venv/bin/python" -c 'import x402, mpp_evm, paymentrouter, uvicorn' 2>/dev/null; then
        echo "install-test-deps: Python peers already installed in $venv"
        return 0
    fi
    local py
    py="$(command -v python3)" || { apt_install python3 python3-venv python3-pip || return 1; py="$(command -v python3)"; }
    echo "install-test-deps: installing the Python peers (PyPI) into $venv"
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        # Debian's python3 needs python3-venv for ensurepip.
        rm -rf "$venv"
        apt_install python3-venv || return 1
        "$py" -m venv "$venv" || return 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" || return 1
    "$venv/bin/python" -c 'import x402, mpp_evm, paymentrouter, uvicorn' || {
        echo "the Python peers do not import after install" >&2
        return 1
    }
    echo "$want" >"$stamp"
}
deps_python_peers

# The official x402 Python SDK (PyPI `x402[evm,httpx,extensions]==2.25.0`), every package pinned exactly in
# tests/interop/x402-official/requirements.txt, into its own venv $PAY402_DEPS_DIR/venv-x402
# (OKX's SDK in venv/ uses the same import name `x402`, so the two never share a venv).
# tests/payment_identifier.rs runs tests/interop/x402-official/*.py with its interpreter.
# Idempotent: a venv whose stamp matches the requirements file's hash is reused as is.

deps_x402_official() {
    local venv="$PAY402_DEPS_DIR/venv-x402"
    local req="tests/interop/x402-official/requirements.txt"
    local stamp="$venv/.pay402-requirements.sha256"
    local check='import x402.extensions.payment_identifier, x402.http.clients.httpx, x402.mechanisms.evm.exact'
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)" || return 1
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$venv/bin/python" -c "$check" 2>/dev/null; then
        echo "install-test-deps: the official x402 Python SDK is already installed in $venv"
        return 0
    fi
    local py
    py="$(command -v python3)" || { apt_install python3 python3-venv python3-pip || return 1; py="$(command -v python3)"; }
    echo "install-test-deps: installing the official x402 Python SDK (PyPI) into $venv"
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        apt_install python3-venv || return 1
        "$py" -m venv "$venv" || return 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" || return 1
    "$venv/bin/python" -c "$check" || {
        echo "the official x402 Python SDK does not import after install" >&2
        return 1
    }
    echo "$want" >"$stamp"
}
deps_x402_official

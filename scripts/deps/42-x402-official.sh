# The official x402 Python SDK (PyPI `x402[evm,httpx,extensions]==2.25.0`), every package pinned
# exactly in tests/interop/x402-official/requirements.txt, into its own venv
# $PAY402_DEPS_DIR/venv-x402 (OKX's SDK in venv/ uses the same import name `x402`, so the two
# never share a venv). tests/payment_identifier.rs runs tests/interop/x402-official/*.py with its
# interpreter. Idempotent (see `pinned_venv` in scripts/install-test-deps.sh).

pinned_venv "$PAY402_DEPS_DIR/venv-x402" tests/interop/x402-official/requirements.txt \
    'import x402.extensions.payment_identifier, x402.http.clients.httpx, x402.mechanisms.evm.exact, x402.mechanisms.evm.upto, x402.http.middleware.fastapi, uvicorn, web3' \
    "the official x402 Python SDK"

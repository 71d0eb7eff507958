# OKX's own Python SDK packages from PyPI (okxweb3-app-x402 with its evm/httpx/fastapi extras,
# okxweb3-app-mpp, okxweb3-app-paymentrouter, pympp 0.15.1, uvicorn), every package pinned
# exactly in tests/interop/python/requirements.txt, into the venv $PAY402_DEPS_DIR/venv.
# tests/interop_python.rs runs the peer scripts of tests/interop/python/ with its interpreter.
# Idempotent (see `pinned_venv` in scripts/install-test-deps.sh).

pinned_venv "$PAY402_DEPS_DIR/venv" tests/interop/python/requirements.txt \
    'import x402, mpp_evm, paymentrouter, uvicorn' "the Python peers"

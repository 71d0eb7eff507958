# Sourced by scripts/test.sh: installs the external components the tests start (none beyond the
# Rust toolchain yet; redis-server, anvil and the Python/Node peers join as their suites land).
# Everything comes from Debian, npm or PyPI. Exits non-zero when an install fails.
true

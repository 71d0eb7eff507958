# Headless Chromium (Debian `chromium`) for tests/paywall_browser.rs: the test renders the
# x402 paywall served by an example server, dumps the DOM and takes a screenshot.
deps_chromium() {
    if ! command -v chromium >/dev/null 2>&1; then
        echo "install-test-deps: installing chromium (Debian)"
        apt_install chromium || return 1
        command -v chromium >/dev/null 2>&1 || { echo "chromium still not on PATH" >&2; return 1; }
    fi
    chromium --version 2>/dev/null || { echo "chromium does not start" >&2; return 1; }
}
deps_chromium

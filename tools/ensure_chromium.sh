#!/usr/bin/env bash
# Chromium for the browser test of the MLflow UI (tests/tracking/test_ui_browser.py); run by `make test` (and so by
# .ci/run) before pytest. When `chromium` is not on PATH and this runs as root with apt-get, it installs Debian's
# chromium (~20 s). Otherwise it says why the browser test will not run. It never fails the build itself: the test
# reports a missing browser, as a skip with the reason in pytest's summary, or as a failure when
# MORE_REQUIRE_BROWSER=1 (CI sets it, so there the browser test always runs).
set -u
if [ "${MORE_SKIP_BROWSER:-}" = "1" ]; then
    echo "MORE_SKIP_BROWSER=1: the browser test of the MLflow UI will be skipped"
    exit 0
fi
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium for the browser test of the MLflow UI: apt-get install -y chromium (~20 s; set" \
         "MORE_SKIP_BROWSER=1 to skip that test instead)"
    log=$(mktemp)
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$log" 2>&1 \
            && command -v chromium >/dev/null 2>&1; then
        rm -f "$log"
        exit 0
    fi
    echo "warning: installing chromium failed, so the browser test of the MLflow UI cannot run; the end of apt's" \
         "output:" >&2
    tail -n 5 "$log" >&2
    rm -f "$log"
    exit 0
fi
echo "note: Chromium is not installed, and installing it needs root and apt-get: the browser test of the MLflow UI" \
     "will be skipped (install it with \`sudo apt-get install -y chromium\`, then run \`make test\` again)"
exit 0

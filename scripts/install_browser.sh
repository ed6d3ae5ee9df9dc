#!/usr/bin/env bash
# `make browser` (run by `make test`): headless Chromium and its driver from Debian's packages, for the
# real-browser test of the visualizer (tests/viz/test_browser.py; selenium itself is in requirements.txt).
# Nothing is downloaded by selenium: the test drives /usr/bin/chromium through /usr/bin/chromedriver.
# Where they cannot be installed (not root, no apt-get, apt fails) this says why in one line and exits 0:
# that test then skips, and the rest of `make test` runs as usual.
set -uo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    exit 0
fi
if [ "$EUID" -ne 0 ]; then
    echo "install_browser.sh: not root, so Chromium ($CHROMIUM, $CHROMEDRIVER) is not installed; the browser test will skip (as root: apt-get install chromium chromium-driver)."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get here, so Chromium ($CHROMIUM, $CHROMEDRIVER) is not installed; the browser test will skip (install Chromium and its chromedriver there)."
    exit 0
fi
echo "install_browser.sh: installing chromium and chromium-driver (Debian packages) for the browser test..."
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then
    exit 0
fi
echo "install_browser.sh: apt-get could not install chromium and chromium-driver; the browser test will skip."
exit 0

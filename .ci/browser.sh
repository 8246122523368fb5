#!/usr/bin/env bash
# Installs what the status page browser test (gateway/browser_test.go, run
# with UNSGATE_INTEROP=1) needs: Debian's Chromium, driven headless from Go
# over the DevTools protocol (chromedp). CI runs as root.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
	echo "--- installing chromium (Debian)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq chromium >/dev/null
fi
chromium --version

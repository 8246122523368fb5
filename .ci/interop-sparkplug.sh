#!/usr/bin/env bash
# Installs what the Sparkplug interop test (publish/sparkplug/interop_test.go,
# run with UNSGATE_INTEROP=1) needs: node and npm (Debian packages when node
# is missing; CI runs as root) and the exact Eclipse Tahu decoder
# (sparkplug-payload) pinned in testdata/interop/sparkplug/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "--- installing nodejs and npm (Debian)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq nodejs npm >/dev/null
fi
echo "node $(node --version), npm $(npm --version)"

echo "--- sparkplug-payload (Eclipse Tahu) for the Sparkplug interop test"
cd testdata/interop/sparkplug
# npm ci installs exactly the lock file's versions, or fails.
npm ci --no-audit --no-fund --loglevel=error
node -e 'const v = require("sparkplug-payload/package.json").version; const p = require("protobufjs/package.json").version; console.log("sparkplug-payload " + v + " (protobufjs " + p + ")")'

#!/usr/bin/env bash
# Installs what the OPC UA interop tests (connectors/opcua/interop_test.go,
# run with UNSGATE_INTEROP=1) need: node and npm (Debian packages when node
# is missing; CI runs as root) and the exact node-opcua pinned in
# testdata/interop/opcua/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "--- installing nodejs and npm (Debian)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq nodejs npm >/dev/null
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
echo "node $(node --version), npm $(npm --version)"
if [ "$node_major" -lt 18 ]; then
	echo "node-opcua needs node 18 or newer; this is $(node --version)" >&2
	exit 1
fi

echo "--- node-opcua for the OPC UA interop tests"
cd testdata/interop/opcua
# npm ci installs exactly the lock file's versions, or fails.
npm ci --no-audit --no-fund --loglevel=error
node -e 'const v = require("node-opcua/package.json").version; console.log("node-opcua " + v)'

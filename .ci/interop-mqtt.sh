#!/usr/bin/env bash
# Installs what the MQTT interop tests (run with UNSGATE_INTEROP=1) need:
# Debian's mosquitto broker, an independent MQTT implementation used as the
# external broker in the outage test. CI runs as root.
set -euo pipefail

if ! command -v mosquitto >/dev/null 2>&1; then
	echo "--- installing mosquitto (Debian)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
# mosquitto -h prints its version and exits non-zero.
mosquitto -h 2>&1 | head -n 1 || true

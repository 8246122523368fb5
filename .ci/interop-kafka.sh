#!/usr/bin/env bash
# Installs what the Kafka interop test (publish/kafka/interop_test.go, run
# with UNSGATE_INTEROP=1) needs: Debian's kcat, an independent Kafka client
# (librdkafka) that reads the sink's records from kfake.
set -euo pipefail

if ! command -v kcat >/dev/null 2>&1; then
	echo "--- installing kcat (Debian)"
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		sudo="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq kcat >/dev/null
fi
kcat -V 2>&1 | head -n 1

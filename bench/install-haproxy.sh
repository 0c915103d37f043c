#!/usr/bin/env bash
# Installs HAProxy from Debian's package when it is missing, for the
# sidecar rows of the bench. Prints the binary's path.
set -euo pipefail
if ! command -v haproxy >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-haproxy: not root: run as root, or install Debian's haproxy package" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
command -v haproxy

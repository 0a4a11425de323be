#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's packages (needs root).
# Runs apt-get only when one of the two commands is missing. The tests start
# their own prometheus process on a private port and data directory, so this
# script never starts or stops the packaged service.
set -euo pipefail
. "$(dirname "$0")/common.sh"

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    log "already installed: $(command -v prometheus)"
else
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        SUDO="sudo"
    fi
    start=$SECONDS
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
    log "installed in $((SECONDS - start)) s"
fi

prometheus --version 2>&1 | head -n 1 >&2
promtool --version 2>&1 | head -n 1 >&2

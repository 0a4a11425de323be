#!/usr/bin/env bash
# Install or build every real server that the integration tests start:
# Prometheus (Debian package), Kafka jars (Maven Central), kube-apiserver and
# etcd (Go module proxy). Each step skips its work when its cache is present,
# so a warm run only checks the caches.
#
# Environment: AUTOSCALER_CACHE sets the cache directory
# (default ~/.cache/agent-autoscaler). Maven and Go keep their own caches in
# ~/.m2 and the default GOMODCACHE and GOCACHE.
set -euo pipefail
cd "$(dirname "$0")"

run_step() {
    local started=$SECONDS
    echo "== $1"
    "./$1" 2>&1
    echo "== $1 finished in $((SECONDS - started)) s"
}

total_started=$SECONDS
run_step install_prometheus.sh
run_step fetch_kafka.sh
run_step build_kube.sh
echo "== all realstack components ready in $((SECONDS - total_started)) s"

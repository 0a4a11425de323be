#!/usr/bin/env bash
# Build kube-apiserver and etcd from the Go module proxy into
# $AUTOSCALER_CACHE/kube-<KUBE_VERSION>/bin. Does nothing when both binaries exist.
#
# k8s.io/kubernetes cannot be fetched with a plain `go install` because its
# go.mod maps every staging module (k8s.io/api, k8s.io/apiserver, ...) to a
# local ./staging directory at version v0.0.0. The module in kube/apiserver
# replaces each of them with the published v0.<minor>.<patch> release that
# matches v1.<minor>.<patch>. The list of staging modules is read from the
# go.mod of the pinned release, so a version bump in versions.env regenerates it.
#
# etcd's server module has replace directives too, so kube/etcd is a small
# wrapper module that requires it as a tool and builds its main package.
#
# Usage: build_kube.sh [--force]   (--force rebuilds even when binaries exist)
set -euo pipefail
. "$(dirname "$0")/common.sh"

FORCE=0
if [[ "${1:-}" == "--force" ]]; then
    FORCE=1
fi

BIN_DIR="$AUTOSCALER_CACHE/kube-$KUBE_VERSION/bin"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
APISERVER_MODULE_DIR="$REALSTACK_DIR/kube/apiserver"
ETCD_MODULE_DIR="$REALSTACK_DIR/kube/etcd"
export CGO_ENABLED=0

if [[ $FORCE -eq 0 && -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/etcd" ]]; then
    log "cache hit: $BIN_DIR contains kube-apiserver $KUBE_VERSION and etcd $ETCD_VERSION"
    exit 0
fi
mkdir -p "$BIN_DIR"

# Write go.mod and go.sum for kube-apiserver, unless they already pin KUBE_VERSION.
prepare_apiserver_module() {
    cd "$APISERVER_MODULE_DIR"
    if [[ -f go.mod ]] && grep -qE "^\s*k8s\.io/kubernetes $KUBE_VERSION\b" go.mod; then
        return
    fi
    log "generating go.mod for k8s.io/kubernetes $KUBE_VERSION (staging modules at $STAGING_VERSION)"
    rm -f go.mod go.sum
    go mod init autoscaler.local/realstack/kube-apiserver
    local upstream_gomod
    upstream_gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')"
    local staging_modules
    staging_modules="$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_gomod" | awk '{print $1}')"
    if [[ -z "$staging_modules" ]]; then
        log "error: no staging replace directives found in $upstream_gomod"
        exit 1
    fi
    local module
    for module in $staging_modules; do
        go mod edit -replace "$module=$module@$STAGING_VERSION"
    done
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION"
}

# Write go.mod and go.sum for etcd, unless they already pin ETCD_VERSION.
prepare_etcd_module() {
    cd "$ETCD_MODULE_DIR"
    if [[ -f go.mod ]] && grep -qE "^\s*go\.etcd\.io/etcd/server/v3 $ETCD_VERSION\b" go.mod; then
        return
    fi
    log "generating go.mod for go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    rm -f go.mod go.sum
    go mod init autoscaler.local/realstack/etcd
    go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
}

build_etcd() {
    prepare_etcd_module
    cd "$ETCD_MODULE_DIR"
    log "building etcd $ETCD_VERSION"
    go build -buildvcs=false -trimpath -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

build_apiserver() {
    prepare_apiserver_module
    cd "$APISERVER_MODULE_DIR"
    # Same version stamps as upstream hack/lib/version.sh, so GET /version
    # reports the pinned release instead of v0.0.0-master.
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    local ldflags=""
    local package
    for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $package.gitVersion=$KUBE_VERSION -X $package.gitMajor=1 -X $package.gitMinor=$minor"
        ldflags+=" -X $package.gitTreeState=clean"
    done
    log "building kube-apiserver $KUBE_VERSION"
    go build -buildvcs=false -trimpath -ldflags "-s -w$ldflags" \
        -o "$BIN_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
}

start=$SECONDS
if [[ $FORCE -eq 1 || ! -x "$BIN_DIR/etcd" ]]; then
    build_etcd
fi
if [[ $FORCE -eq 1 || ! -x "$BIN_DIR/kube-apiserver" ]]; then
    build_apiserver
fi
"$BIN_DIR/etcd" --version | head -n 1 >&2
"$BIN_DIR/kube-apiserver" --version >&2
log "built into $BIN_DIR in $((SECONDS - start)) s"

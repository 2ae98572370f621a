#!/usr/bin/env bash
# deploy/helm/helm-tools.sh - print the path of a pinned Helm, building it if missing.
#
#   HELM=$(bash deploy/helm/helm-tools.sh)
#
# stdout is exactly the path; progress goes to stderr. Helm is built from source with
# `go install` from the Go module proxy (checksummed against the Go checksum database
# by go itself) into ${METERLINE_TOOLS_HOME:-<repo>/.cache/tools}/helm-<version>/, so
# a fresh clone gets it and a rerun is a no-op. The first build took 4 min here
# (2 shared cores, empty Go caches: ~400 MB of modules, ~700 MB of build cache);
# with warm Go caches it is a link step of seconds.
set -euo pipefail

HELM_VERSION=v3.22.0
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
TOOLS_HOME=${METERLINE_TOOLS_HOME:-$REPO_ROOT/.cache/tools}
DEST="$TOOLS_HOME/helm-$HELM_VERSION"

if [[ ! -x "$DEST/helm" ]]; then
  command -v go >/dev/null || { echo "helm-tools.sh: error: Go is needed to build Helm $HELM_VERSION (https://go.dev/dl)" >&2; exit 1; }
  echo "helm-tools.sh: building Helm $HELM_VERSION into $DEST (minutes the first time)" >&2
  mkdir -p "$DEST"
  # Into a temporary folder first: an interrupted build never leaves a half binary.
  tmp=$(mktemp -d "$TOOLS_HOME/helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$tmp/helm" "$DEST/helm"
fi
printf '%s\n' "$DEST/helm"

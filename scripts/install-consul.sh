#!/usr/bin/env bash
# install-consul.sh: make a Consul agent available for the tests and print
# its path on the last line of stdout.
#
# Order: $INMESH_CONSUL if set and executable; `consul` on PATH; a binary
# cached by an earlier run; else build Consul v1.14.11 (MPL-2.0, the last
# line whose modules the Go module proxy serves whole) from a throwaway
# module, about 5 minutes on 2 cores, and cache it.
set -euo pipefail

VERSION="1.14.11"
CACHE_DIR="${INMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inmesh}"
BIN="$CACHE_DIR/consul-$VERSION/consul"

log() { echo "install-consul: $*" >&2; }

if [[ -n "${INMESH_CONSUL:-}" && -x "${INMESH_CONSUL}" ]]; then
  log "using \$INMESH_CONSUL=$INMESH_CONSUL"
  echo "$INMESH_CONSUL"
  exit 0
fi
if command -v consul >/dev/null 2>&1; then
  log "using $(command -v consul) from PATH"
  command -v consul
  exit 0
fi
if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  log "using the cached $BIN"
  echo "$BIN"
  exit 0
fi

log "building Consul v$VERSION from the Go module proxy (a few minutes)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<MOD
module inmesh.local/consulbuild

go 1.22

require github.com/hashicorp/consul v$VERSION

// v1.1.5 and v1.1.6 of go-msgpack changed the wire format Consul 1.14 expects.
exclude github.com/hashicorp/go-msgpack v1.1.5
exclude github.com/hashicorp/go-msgpack v1.1.6
MOD
cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/hashicorp/consul"
GO
mkdir -p "$(dirname "$BIN")"
(
  cd "$work"
  GOFLAGS=-mod=mod go mod tidy
  GOFLAGS=-mod=mod go build -trimpath -o "$BIN.tmp" github.com/hashicorp/consul
)
mv "$BIN.tmp" "$BIN"
"$BIN" version >&2
echo "$BIN"

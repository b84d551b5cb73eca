#!/usr/bin/env bash
# Trust the extra CA certificates (*.crt) found in the given directories.
#
# Usage: trust-certs.sh DIR...
# Networks that intercept TLS need their CA in the system store, which apt,
# curl, git and python use. Node reads the same bundle because the image sets
# NODE_EXTRA_CA_CERTS. Runs at build time with the
# certificates of the build context and at container start with the ones the
# launcher mounts.
set -euo pipefail

target=/usr/local/share/ca-certificates/llm-docker
found=0
for dir in "$@"; do
  [ -d "$dir" ] || continue
  for cert in "$dir"/*.crt; do
    [ -f "$cert" ] || continue
    mkdir -p "$target"
    cp "$cert" "$target/"
    found=$((found + 1))
  done
done

if [ "$found" -eq 0 ]; then
  exit 0
fi
if ! command -v update-ca-certificates >/dev/null; then
  echo "trust-certs.sh: error: update-ca-certificates is missing; install the ca-certificates package first" >&2
  exit 1
fi
update-ca-certificates >/dev/null 2>&1
echo "trust-certs.sh: trusted $found extra CA certificate(s)" >&2

#!/usr/bin/env bash
# Build the real llm-docker image from docker/ for the real-image test tier.
#
# Usage: build-real-image.sh [TOOL...]      (default: both)
#   TOOL both     -> llm-docker:latest
#   TOOL claude   -> llm-docker-claude:latest
#   TOOL opencode -> llm-docker-opencode:latest
#
# The base is the local debootstrap image (.ci/build-base-image.sh builds it
# when missing), because Docker Hub may be unreachable. The host's extra CA
# certificates (/usr/local/share/ca-certificates/*.crt, for networks that
# intercept TLS) go into a temporary copy of the build context, never into
# git. The CLI versions are resolved with `npm view` and passed as build
# arguments, so the layer cache is reused until a new release appears.
#
# Environment:
#   BASE_IMAGE        default llm-docker-base:bookworm
#   EXTRA_CA_DIR      default /usr/local/share/ca-certificates
#   CLAUDE_VERSION, OPENCODE_VERSION   skip `npm view` for that CLI
#   BUILD_ARGS        extra `docker build` arguments, split on spaces
#
# CI builds without the heavy packs: INSTALL_BROWSING=false (Debian's
# chromium adds several hundred MB and minutes of build time) and
# FETCH_EXTRAS=false (no traffic to hosts other than the package registries).
# The other packs keep their defaults. Timings go to stderr as
# "build-real-image: built TAG in Ns".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
base_image=${BASE_IMAGE:-llm-docker-base:bookworm}
extra_ca_dir=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}

log() { printf 'build-real-image: %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

tools=("$@")
((${#tools[@]})) || tools=(both)
for tool in "${tools[@]}"; do
  case $tool in
    both | claude | opencode) ;;
    *) fail "invalid TOOL '$tool': use both, claude or opencode" ;;
  esac
done

image_tag() {
  case $1 in
    both) echo llm-docker:latest ;;
    *) echo "llm-docker-$1:latest" ;;
  esac
}

# Print the newest version of an npm package, or fail with the reason.
# Without npm on the host the build requests "latest", and the layer cache
# keeps the CLI it has until the cache is dropped (BUILD_ARGS=--no-cache).
npm_version() {
  local version
  if ! command -v npm >/dev/null; then
    log "notice: npm is not installed, so $1 is built as 'latest' (apt-get install npm keys the cache on versions)"
    echo latest
    return 0
  fi
  version=$(npm view "$1" version 2>/dev/null) || fail "npm view $1 failed; set ${2} to skip the lookup"
  [ -n "$version" ] || fail "npm view $1 printed no version; set ${2} to skip the lookup"
  printf '%s\n' "$version"
}

if [ "$base_image" = llm-docker-base:bookworm ]; then
  "$here/build-base-image.sh" "$base_image"
fi
docker image inspect "$base_image" >/dev/null 2>&1 || fail "base image $base_image not found"

claude_version=${CLAUDE_VERSION:-$(npm_version @anthropic-ai/claude-code CLAUDE_VERSION)}
opencode_version=${OPENCODE_VERSION:-$(npm_version opencode-ai OPENCODE_VERSION)}
log "Claude Code $claude_version, OpenCode $opencode_version"

context=$(mktemp -d "${TMPDIR:-/tmp}/llm-docker-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp -a "$repo/docker/." "$context/"
rm -f "$context/certs/"*.crt
shopt -s nullglob
for cert in "$extra_ca_dir"/*.crt; do
  cp "$cert" "$context/certs/"
done
shopt -u nullglob

read -r -a extra_args <<<"${BUILD_ARGS:-}"
for tool in "${tools[@]}"; do
  tag=$(image_tag "$tool")
  start=$(date +%s)
  docker build --tag "$tag" \
    --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "TOOL=$tool" \
    --build-arg "CLAUDE_VERSION=$claude_version" \
    --build-arg "OPENCODE_VERSION=$opencode_version" \
    --build-arg FETCH_EXTRAS=false \
    --build-arg INSTALL_BROWSING=false \
    "${extra_args[@]}" "$context"
  log "built $tag in $(($(date +%s) - start))s ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
done

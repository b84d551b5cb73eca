# shellcheck shell=bash
# Helpers shared by the image install scripts (source it; bash only).
#
# Every script runs as root, at build time from the Dockerfile and again from
# `install-packs.sh` inside an existing image, so each step must be idempotent.

# Log with the calling script's name, so the build output shows which step logged.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
fail() { log "error: $*"; exit 1; }

# Maximum seconds one fetch from a host outside the package registries may
# take before it is skipped. Such hosts are often unreachable from networks
# that allow only the package registries.
FETCH_TIMEOUT_S=${FETCH_TIMEOUT_S:-30}

# Return 0 when $1 is "true", 1 when "false"; fail on any other value.
is_true() {
  case $1 in
    true) return 0 ;;
    false) return 1 ;;
    *) fail "invalid boolean '$1' for $2: use true or false" ;;
  esac
}

# Return 0 when every named Debian package is installed.
packages_installed() {
  local package status
  for package in "$@"; do
    status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null) || return 1
    [ "$status" = installed ] || return 1
  done
}

# Install Debian packages without recommends; skip apt entirely when all of
# them are already installed, so a re-run costs no package index download.
# The package index is downloaded once per script and removed when it exits.
apt_install() {
  if packages_installed "$@"; then
    return 0
  fi
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ "${_apt_index_fresh:-false}" != true ]; then
    apt-get update -q
    _apt_index_fresh=true
    trap apt_cleanup EXIT
  fi
  apt-get install -y -q --no-install-recommends "$@"
}

# Remove the package index and downloaded packages, which the image does not need.
apt_cleanup() {
  apt-get clean
  rm -rf /var/lib/apt/lists/*
}

# Run an optional download from a host outside the package registries.
# Usage: fetch_optional NAME COMMAND...
# Skipped with a one-line notice when FETCH_EXTRAS=false, and when the
# command fails or takes longer than FETCH_TIMEOUT_S; never fails the build.
fetch_optional() {
  local name=$1
  shift
  if [ "${FETCH_EXTRAS:-true}" != true ]; then
    log "notice: skipped $name (FETCH_EXTRAS=false)"
    return 0
  fi
  if timeout "$FETCH_TIMEOUT_S" "$@" >/dev/null 2>&1; then
    log "installed $name"
  else
    log "notice: skipped $name (its host did not answer within ${FETCH_TIMEOUT_S}s)"
  fi
  return 0
}

# Shallow-clone a git repository into DIR unless DIR already exists.
# Usage: git_clone_optional NAME URL DIR
git_clone_optional() {
  local name=$1 url=$2 dir=$3
  if [ -d "$dir" ]; then
    log "$name already present in $dir"
    return 0
  fi
  fetch_optional "$name" git clone --quiet --depth 1 "$url" "$dir"
  # A clone cut off by the timeout can leave a partial directory behind.
  if [ -d "$dir" ] && ! git -C "$dir" rev-parse --verify --quiet HEAD >/dev/null; then
    rm -rf "$dir"
  fi
}

# Install one executable from the newest GitHub release of a project.
# Usage: github_release_optional NAME OWNER/REPO ASSET_REGEX EXECUTABLE
# ASSET_REGEX is matched against the release asset names with `@ARCH@`
# replaced by Debian's architecture name (amd64, arm64). Archives (.zip,
# .tar.gz) are unpacked and EXECUTABLE is taken from them; anything else is
# taken as the executable itself. Installs into /usr/local/bin.
github_release_optional() {
  local name=$1 repo=$2 asset_regex=$3 executable=$4
  if command -v "$executable" >/dev/null; then
    log "$name already installed"
    return 0
  fi
  fetch_optional "$name" _github_release_install "$repo" "$asset_regex" "$executable"
}

_github_release_install() {
  local repo=$1 asset_regex=$2 executable=$3 arch url work found
  arch=$(dpkg --print-architecture)
  asset_regex=${asset_regex//@ARCH@/$arch}
  url=$(curl -fsSL "https://api.github.com/repos/$repo/releases/latest" |
    jq -r --arg re "$asset_regex" '.assets[] | select(.name | test($re)) | .browser_download_url' |
    head -n 1)
  [ -n "$url" ] || return 1
  work=$(mktemp -d)
  curl -fsSL -o "$work/asset" "$url" || { rm -rf "$work"; return 1; }
  case $url in
    *.zip) unzip -q "$work/asset" -d "$work/unpacked" ;;
    *.tar.gz | *.tgz) mkdir "$work/unpacked" && tar -xzf "$work/asset" -C "$work/unpacked" ;;
    *) mkdir "$work/unpacked" && mv "$work/asset" "$work/unpacked/$executable" ;;
  esac
  found=$(find "$work/unpacked" -type f -name "$executable" | head -n 1)
  if [ -z "$found" ]; then
    rm -rf "$work"
    return 1
  fi
  install -m 0755 "$found" "/usr/local/bin/$executable"
  rm -rf "$work"
}

#!/usr/bin/env bash
# Build the local Debian base image for the real-image test tier.
#
# Usage: build-base-image.sh [TAG]      (default TAG: llm-docker-base:bookworm)
#
# Docker Hub may be unreachable, so the base comes from debootstrap
# (variant minbase) and `docker import`. The Debian mirror is read from this
# machine's apt sources. The finished root file system is kept as a tarball
# in $LLM_DOCKER_BASE_CACHE (default $CACHE_ROOT/base, and CACHE_ROOT defaults to
# /var/cache/llm-docker-ci as in .ci/run); a later
# run imports that tarball instead of running debootstrap again. When the
# cache directory is missing or not writable, the build runs cold and keeps
# nothing.
#
# Environment:
#   LLM_DOCKER_BASE_CACHE  cache directory for the tarball and the .deb files
#   DEBIAN_SUITE           Debian suite (default bookworm)
#   DEBIAN_MIRROR          overrides the mirror found in the apt sources
#   FORCE=1                rebuild even when the image already exists
set -euo pipefail

tag=${1:-llm-docker-base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}
cache_dir=${LLM_DOCKER_BASE_CACHE:-${CACHE_ROOT:-/var/cache/llm-docker-ci}/base}
import_changes=(-c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8')

log() { printf 'build-base-image: %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

# Print the first non-security "URIs:" (deb822) or "deb" (one-line) mirror
# of this machine's apt sources, or the security one when $1 is "security".
apt_mirror() {
  local want=$1 files=()
  shopt -s nullglob
  files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  shopt -u nullglob
  ((${#files[@]})) || return 0
  awk -v want="$want" '
    /^URIs:/ { uri = $2 }
    /^deb[ \t]/ { uri = ($2 ~ /^\[/) ? $3 : $2 }
    uri != "" {
      is_security = (uri ~ /security/)
      if ((want == "security") == is_security) { print uri; exit }
      uri = ""
    }' "${files[@]}"
}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag already exists (FORCE=1 rebuilds it)"
  exit 0
fi

tarball=""
if mkdir -p "$cache_dir" 2>/dev/null && [ -w "$cache_dir" ]; then
  tarball="$cache_dir/rootfs-$suite-minbase.tar"
else
  log "cache directory $cache_dir is not writable; building cold without a cache"
fi

start=$(date +%s)
if [ -n "$tarball" ] && [ -s "$tarball" ]; then
  log "importing cached root file system $tarball"
  docker import "${import_changes[@]}" - "$tag" <"$tarball" >/dev/null
  log "imported $tag in $(($(date +%s) - start))s (warm)"
  exit 0
fi

command -v debootstrap >/dev/null || fail "debootstrap is not installed; run: apt-get install debootstrap"
mirror=${DEBIAN_MIRROR:-$(apt_mirror main)}
[ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources*; set DEBIAN_MIRROR"
security_mirror=$(apt_mirror security)
[ -n "$security_mirror" ] || security_mirror="${mirror%/debian}/debian-security"

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/llm-docker-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT

debootstrap_args=(--variant=minbase)
if [ -n "$tarball" ]; then
  mkdir -p "$cache_dir/debs"
  debootstrap_args+=("--cache-dir=$cache_dir/debs")
fi
log "debootstrap $suite from $mirror"
if ! debootstrap "${debootstrap_args[@]}" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  tail -n 20 "$rootfs.log" >&2
  fail "debootstrap failed; full log in $rootfs.log"
fi
rm -f "$rootfs.log"

# Make the root file system a container base: deb822 sources with updates and
# security, no service starts during package installs, no docs or man pages.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-container-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/01-container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
EOF
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
  "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
: >"$rootfs/etc/machine-id"

if [ -n "$tarball" ]; then
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  docker import "${import_changes[@]}" - "$tag" <"$tarball" >/dev/null
else
  tar --numeric-owner -C "$rootfs" -c . | docker import "${import_changes[@]}" - "$tag" >/dev/null
fi
log "built $tag in $(($(date +%s) - start))s (cold)"

#!/usr/bin/env bash
# Make sure Node.js NODE_MIN_MAJOR or newer and npm are installed.
#
# node:24 already has them and this script does nothing there. On a bare
# Debian base, Debian's own nodejs and npm (too old for the agent CLIs)
# install the npm registry's `node` and `npm` packages into /usr/local and
# are then removed again, so only the registry's Node.js stays.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

NODE_MIN_MAJOR=20 # oldest major that both agent CLIs' npm packages accept
node_package=${NODE_PACKAGE:-node@22}
npm_package=${NPM_PACKAGE:-npm@10}

node_major() {
  local version
  version=$(node --version 2>/dev/null) || return 1
  version=${version#v}
  printf '%s\n' "${version%%.*}"
}

if major=$(node_major) && [ "$major" -ge "$NODE_MIN_MAJOR" ] && command -v npm >/dev/null; then
  log "Node.js $(node --version) and npm $(npm --version) already installed"
  exit 0
fi

bootstrap=()
for package in nodejs npm; do
  packages_installed "$package" || bootstrap+=("$package")
done
apt_install nodejs npm

log "installing $node_package and $npm_package from the npm registry"
npm install --global --prefix /usr/local "$node_package" "$npm_package"
rm -rf /root/.npm

if ((${#bootstrap[@]})); then
  apt-get purge -y -q --auto-remove "${bootstrap[@]}"
fi
hash -r
major=$(node_major) || fail "node does not run after installing $node_package"
[ "$major" -ge "$NODE_MIN_MAJOR" ] || fail "node $major is older than $NODE_MIN_MAJOR after installing $node_package"
log "Node.js $(node --version), npm $(npm --version)"

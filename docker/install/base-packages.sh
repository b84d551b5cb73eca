#!/usr/bin/env bash
# Install the developer toolbox and what the entrypoint needs from Debian.
#
# Usage: base-packages.sh CERT_DIR
# The extra CA certificates in CERT_DIR are trusted before the package
# download when the base already has ca-certificates (node:24 does), and in
# any case once ca-certificates is installed.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

cert_dir=${1:?usage: base-packages.sh CERT_DIR}
trust_certs="$(dirname "$0")/trust-certs.sh"

if command -v update-ca-certificates >/dev/null; then
  "$trust_certs" "$cert_dir"
fi

# Debian keeps the fzf key bindings (Ctrl-T, Ctrl-R, Alt-C) under
# /usr/share/doc; base images that drop documentation would lose them.
echo 'path-include /usr/share/doc/fzf/*' >/etc/dpkg/dpkg.cfg.d/50-llm-docker-fzf

toolbox=(
  # entrypoint: user creation, privilege drop, firewall, sshd, JSON seeding
  ca-certificates passwd util-linux iptables iproute2 openssh-server jq
  # developer toolbox
  bat curl fzf git less micro ncdu openssh-client procps python3 python3-pip
  python3-venv ripgrep sqlite3 tree unzip wget xz-utils
  zsh zsh-autosuggestions zsh-syntax-highlighting
)
apt_install "${toolbox[@]}"
"$trust_certs" "$cert_dir"

# Debian names the bat binary batcat because of an older package name clash.
if [ -x /usr/bin/batcat ] && [ ! -e /usr/local/bin/bat ]; then
  ln -s /usr/bin/batcat /usr/local/bin/bat
fi

# The entrypoint starts sshd only when the launcher turns SSH on. Host keys
# live in a mounted directory, so none are baked into the image.
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub

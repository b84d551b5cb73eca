#!/usr/bin/env bash
# Set up zsh for the agent user: the image's zshrc, and oh-my-zsh and
# Powerlevel10k when GitHub is reachable (they are not Debian packages).
#
# Usage: shell.sh ZSHRC
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

zshrc=${1:?usage: shell.sh ZSHRC}
install -D -m 0644 "$zshrc" /etc/skel/.zshrc

git_clone_optional oh-my-zsh https://github.com/ohmyzsh/ohmyzsh.git /opt/oh-my-zsh
git_clone_optional powerlevel10k https://github.com/romkatv/powerlevel10k.git /opt/powerlevel10k

for dir in /opt/oh-my-zsh /opt/powerlevel10k; do
  [ -d "$dir" ] && chmod -R a+rX "$dir"
done
exit 0

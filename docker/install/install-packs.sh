#!/usr/bin/env bash
# Install the optional tool packs chosen by the INSTALL_* variables.
#
# Runs as root, in the image build and again by the launcher's `--build`
# inside an existing image, so every pack is idempotent: Debian packages that
# are present cost no download, and clones and downloads are skipped when
# their target exists. Variables that are unset take the defaults below.
# Items that only exist on hosts other than the package registries are
# skipped with a one-line notice when unreachable (or FETCH_EXTRAS=false).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

# Pack name and its default, in the order they are installed.
PACK_DEFAULTS=(
  SECURITY=false RUBY=false CPP=false LLVM_CLANG=false NS=false MEDIA=false
  QUAKE=false BROWSING=true TMUX_VANILLA=true TMUX_TEAM=true TMUX_RECON=false
  TMUX_CODEMAN=false TMUX_CLAUDE=false
)
SKILLS_DIR=/opt/llm-docker/skills # copied into the Claude config on new sessions

install_security() {
  apt_install nmap sqlmap hydra ffuf gobuster whois dnsutils netcat-openbsd perl libnet-ssleay-perl
  git_clone_optional nikto https://github.com/sullo/nikto.git /opt/nikto
  if [ -x /opt/nikto/program/nikto.pl ] && [ ! -e /usr/local/bin/nikto ]; then
    ln -s /opt/nikto/program/nikto.pl /usr/local/bin/nikto
  fi
  github_release_optional nuclei projectdiscovery/nuclei '_linux_@ARCH@\.zip$' nuclei
  github_release_optional amass owasp-amass/amass '_linux_@ARCH@\.zip$' amass
}

install_ruby() {
  apt_install ruby ruby-dev rbenv ruby-build build-essential
  if command -v pod >/dev/null; then
    log "cocoapods already installed"
  else
    fetch_optional cocoapods gem install --no-document cocoapods
  fi
}

install_cpp() {
  apt_install build-essential make cmake gcc g++ gdb
}

install_llvm_clang() {
  install_cpp
  apt_install clang lld lldb llvm clang-format clang-tidy
}

install_ns() {
  local missing=()
  command -v ns >/dev/null || missing+=(nativescript)
  command -v n >/dev/null || missing+=(n)
  if ((${#missing[@]})); then
    npm install --global "${missing[@]}"
    rm -rf /root/.npm
  fi
}

install_media() {
  apt_install ffmpeg sox yt-dlp pipx
}

install_quake() {
  apt_install clang make libsdl2-dev
}

install_browsing() {
  apt_install chromium chromium-headless-shell fonts-liberation
  git_clone_optional "hyperframes skill" https://github.com/heygen-com/hyperframes.git "$SKILLS_DIR/hyperframes"
}

install_tmux_vanilla() {
  apt_install tmux
}

install_tmux_team() {
  # NOTE: the team layouts are driven by the launcher's tmux commands; this
  # pack only makes sure tmux itself is present.
  install_tmux_vanilla
}

install_tmux_recon() {
  install_tmux_vanilla
  github_release_optional recon gavraz/recon 'linux.*(x86_64|@ARCH@).*\.tar\.gz$' recon
}

install_tmux_codeman() {
  install_tmux_vanilla
  git_clone_optional codeman https://github.com/Ark0N/Codeman.git /opt/codeman
  if [ -f /opt/codeman/package.json ] && [ ! -d /opt/codeman/node_modules ]; then
    (cd /opt/codeman && npm install --omit=dev --no-audit --no-fund && rm -rf /root/.npm) ||
      log "notice: codeman dependencies failed to install; codeman is unusable"
  fi
}

install_tmux_claude() {
  install_tmux_vanilla
  github_release_optional claude-tmux nielsgroen/claude-tmux 'linux.*(x86_64|@ARCH@).*(\.tar\.gz)?$' claude-tmux
}

# Reject INSTALL_* names this script does not know, so a typo in the
# settings is reported instead of silently installing nothing.
check_known_packs() {
  local name known entry
  for name in $(compgen -e); do
    [[ $name == INSTALL_* ]] || continue
    known=false
    for entry in "${PACK_DEFAULTS[@]}"; do
      [ "$name" = "INSTALL_${entry%%=*}" ] && known=true
    done
    $known || fail "unknown pack variable $name; known: ${PACK_DEFAULTS[*]%%=*}"
  done
}

main() {
  local entry pack variable value installed=()
  check_known_packs
  for entry in "${PACK_DEFAULTS[@]}"; do
    pack=${entry%%=*}
    variable="INSTALL_$pack"
    value=${!variable:-${entry#*=}}
    if is_true "$value" "$variable"; then
      log "installing pack $pack"
      "install_${pack,,}"
      installed+=("$pack")
    fi
  done
  mkdir -p /opt/llm-docker
  printf '%s\n' "${installed[@]}" >/opt/llm-docker/packs.txt
  log "packs installed: ${installed[*]:-none}"
}

main "$@"

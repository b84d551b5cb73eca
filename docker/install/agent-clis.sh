#!/usr/bin/env bash
# Install the agent CLIs from npm according to TOOL (claude, opencode, both).
#
# Environment: TOOL, CLAUDE_VERSION and OPENCODE_VERSION (npm version or
# dist-tag, default latest). The build passes resolved versions, so the layer
# cache is invalidated exactly when a new release is wanted.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

tool=${TOOL:-both}
packages=()
commands=()
case $tool in
  claude | both)
    packages+=("@anthropic-ai/claude-code@${CLAUDE_VERSION:-latest}")
    commands+=(claude)
    ;;&
  opencode | both)
    packages+=("opencode-ai@${OPENCODE_VERSION:-latest}")
    commands+=(opencode)
    ;;
  claude) ;;
  *) fail "invalid TOOL '$tool': use claude, opencode or both" ;;
esac

log "npm install --global ${packages[*]}"
npm install --global "${packages[@]}"
rm -rf /root/.npm

# Both packages ship a standalone native executable and, as optional
# dependencies, every platform variant of it (glibc and musl, with and
# without AVX2). When the entry point is an ELF file, the variants under the
# package's node_modules are unused copies and are removed.
npm_root=$(npm root --global)
for entry in "@anthropic-ai/claude-code:bin/claude.exe" "opencode-ai:bin/opencode.exe"; do
  package_dir="$npm_root/${entry%%:*}"
  executable="$package_dir/${entry#*:}"
  [ -f "$executable" ] || continue
  if [ "$(head -c 4 "$executable" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    rm -rf "$package_dir/node_modules"
  fi
done

for command in "${commands[@]}"; do
  version=$("$command" --version 2>&1) || fail "$command --version failed after install: $version"
  log "$command $version"
done

#!/usr/bin/env bash
# Entrypoint of the llm-docker image (see docker/CONTRACT.md).
#
# Runs as root with the few capabilities the launcher grants for the setup:
# user creation, extra CA certificates, the outbound firewall, sshd, and the
# seeding of the tool configuration. It then runs the container command as
# the `agent` user in the project directory with no capabilities at all (empty
# bounding set, no inheritable or ambient capabilities) and no-new-privileges.
set -euo pipefail

AGENT_USER=agent
AGENT_HOME=/home/agent
TEMPLATES=/opt/llm-docker/templates
SKILLS_DIR=/opt/llm-docker/skills
RUNTIME_CERTS=/usr/local/share/llm-docker/certs
SSH_STATE=/etc/ssh/llm-docker
SSH_AUTHORIZED_KEYS_DIR=/etc/ssh/llm-docker-authorized-keys
FIREWALL_CHAIN=LLM_DOCKER_EGRESS
# Directories that the launcher mounts from the host for the tools' state.
PERSISTENCE_DIRS=(
  "$AGENT_HOME/.claude"
  "$AGENT_HOME/.config/opencode"
  "$AGENT_HOME/.local/share/opencode"
  "$AGENT_HOME/.cache/opencode"
)
# Private address ranges that stay reachable when INTERNET_ACCESS=false.
PRIVATE_IPV4=(10.0.0.0/8 172.16.0.0/12 192.168.0.0/16)
PRIVATE_IPV6=(fc00::/7 fe80::/10)

verbose=false
[ "${NODE_ENV:-production}" = development ] && verbose=true

log() { printf 'llm-docker: %s\n' "$*" >&2; }
debug() { if $verbose; then log "$*"; fi; }
fail() {
  log "error: $*"
  exit 1
}

# Print "true" or "false" for a boolean variable; fail on anything else.
boolean() {
  local name=$1 default=$2 value
  value=${!name:-$default}
  case $value in
    true | false) printf '%s\n' "$value" ;;
    *) fail "invalid value '$value' for $name: use true or false" ;;
  esac
}

# Fail unless $1 (named $2) is a decimal id from 1 to 2^31-1.
check_id() {
  local value=$1 name=$2
  [[ $value =~ ^[0-9]{1,10}$ ]] || fail "invalid $name '$value': expected a numeric id"
  ((10#$value <= 2147483647)) || fail "invalid $name '$value': out of range"
  ((10#$value != 0)) || fail "$name is 0, but the agent must not run as root; set AGENT_UID/AGENT_GID to a non-root id"
}

# ---------------------------------------------------------------- agent user

create_agent_user() {
  local uid=$1 gid=$2 group
  group=$(getent group "$gid" | cut -d: -f1 || true)
  if [ -z "$group" ]; then
    groupadd --gid "$gid" "$AGENT_USER" 2>/dev/null || groupadd --non-unique --gid "$gid" "$AGENT_USER"
    group=$AGENT_USER
  fi

  if id -u "$AGENT_USER" >/dev/null 2>&1; then
    usermod --non-unique --uid "$uid" --gid "$gid" "$AGENT_USER"
  else
    # --non-unique: a base image may already use this uid for another user
    # (node:24 has `node` with uid 1000); the agent takes it over.
    useradd --non-unique --uid "$uid" --gid "$gid" --no-create-home \
      --home-dir "$AGENT_HOME" --shell /bin/zsh "$AGENT_USER"
  fi
  # "*" instead of useradd's "!": no password login, but sshd does not treat
  # the account as locked, so a key login works when SSH is on.
  usermod --password '*' "$AGENT_USER"
  debug "agent user $AGENT_USER uid=$uid gid=$gid (group $group)"
}

# Give the agent its home and the directories that Docker created as root for
# the mounts below it. Mount points are left alone, except the tool state.
prepare_home() {
  local uid=$1 gid=$2 dir
  mkdir -p "$AGENT_HOME"
  for dir in "$AGENT_HOME" "$AGENT_HOME/.config" "$AGENT_HOME/.local" \
    "$AGENT_HOME/.local/share" "$AGENT_HOME/.cache"; do
    mkdir -p "$dir"
    if ! mountpoint -q "$dir"; then
      chown "$uid:$gid" "$dir"
    fi
  done
  if [ ! -e "$AGENT_HOME/.zshrc" ] && [ -r /etc/skel/.zshrc ]; then
    install -m 0644 -o "$uid" -g "$gid" /etc/skel/.zshrc "$AGENT_HOME/.zshrc"
  fi

  # The agent must be able to write its tool state. A host directory owned
  # by another uid (for example created by root) is handed to the agent.
  for dir in "${PERSISTENCE_DIRS[@]}"; do
    [ -d "$dir" ] || continue
    if [ "$(stat -c %u "$dir")" != "$uid" ]; then
      log "notice: $dir is owned by uid $(stat -c %u "$dir"); giving it to uid $uid"
      chown -R "$uid:$gid" "$dir"
    fi
  done
}

# ------------------------------------------------------------ CA certificates

trust_runtime_certs() {
  [ -d "$RUNTIME_CERTS" ] || return 0
  /opt/llm-docker/install/trust-certs.sh "$RUNTIME_CERTS" ||
    fail "could not trust the CA certificates in $RUNTIME_CERTS; check that they are PEM files"
}

# ------------------------------------------------------------------ firewall

# Print the nameservers of /etc/resolv.conf.
nameservers() {
  awk '$1 == "nameserver" { print $2 }' /etc/resolv.conf 2>/dev/null || true
}

# Return 0 when the IPv4 address $1 is in 10/8, 172.16/12 or 192.168/16.
is_private_ipv4() {
  local a b rest
  IFS=. read -r a b rest <<<"$1"
  [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || return 1
  ((a == 10)) || ((a == 172 && b >= 16 && b <= 31)) || ((a == 192 && b == 168))
}

# Return 0 when the IPv6 address $1 is in fc00::/7 or fe80::/10.
is_private_ipv6() {
  local address=${1,,}
  [[ $address =~ ^f[cd] || $address =~ ^fe[89ab] ]]
}

# Return 0 when resolver $2 is a private address of the family of command $1.
is_private_resolver() {
  local ipt=$1 resolver=$2
  if [[ $resolver == *:* ]]; then
    [ "$ipt" = ip6tables ] && is_private_ipv6 "$resolver"
  else
    [ "$ipt" = iptables ] && is_private_ipv4 "$resolver"
  fi
}

# Print the IPv4 default gateway, read from /proc/net/route, where it is
# hexadecimal in little-endian byte order.
ipv4_gateway() {
  local _interface destination gateway _rest
  while read -r _interface destination gateway _rest; do
    if [ "$destination" = 00000000 ] && [ "$gateway" != 00000000 ] && [[ $gateway =~ ^[0-9A-Fa-f]{8}$ ]]; then
      printf '%d.%d.%d.%d\n' "0x${gateway:6:2}" "0x${gateway:4:2}" "0x${gateway:2:2}" "0x${gateway:0:2}"
      return 0
    fi
  done </proc/net/route
}

# Run one iptables or ip6tables command; stop the container start when it fails.
firewall() {
  "$@" || fail "firewall command failed: $*; the launcher must add NET_ADMIN when INTERNET_ACCESS=false"
}

# Apply the egress rules for one address family.
# Usage: apply_firewall iptables|ip6tables
apply_firewall() {
  local ipt=$1 range resolver gateway
  local -a private
  if [ "$ipt" = iptables ]; then private=("${PRIVATE_IPV4[@]}"); else private=("${PRIVATE_IPV6[@]}"); fi

  # Fail closed: nothing leaves until the rules are complete.
  firewall "$ipt" -w -P OUTPUT DROP
  "$ipt" -w -N "$FIREWALL_CHAIN" 2>/dev/null || firewall "$ipt" -w -F "$FIREWALL_CHAIN"
  firewall "$ipt" -w -A "$FIREWALL_CHAIN" -o lo -j ACCEPT
  firewall "$ipt" -w -A "$FIREWALL_CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  if [ "$ipt" = ip6tables ]; then
    # Neighbour discovery goes to multicast addresses; without it no IPv6
    # neighbour on the LAN can be reached.
    local icmp_type
    for icmp_type in router-solicitation neighbour-solicitation neighbour-advertisement; do
      firewall "$ipt" -w -A "$FIREWALL_CHAIN" -p ipv6-icmp --icmpv6-type "$icmp_type" -j ACCEPT
    done
  fi

  # DNS only to the configured resolvers that are on private ranges.
  for resolver in $(nameservers); do
    if is_private_resolver "$ipt" "$resolver"; then
      firewall "$ipt" -w -A "$FIREWALL_CHAIN" -d "$resolver" -p udp --dport 53 -j ACCEPT
      firewall "$ipt" -w -A "$FIREWALL_CHAIN" -d "$resolver" -p tcp --dport 53 -j ACCEPT
    fi
  done
  firewall "$ipt" -w -A "$FIREWALL_CHAIN" -p udp --dport 53 -j REJECT
  firewall "$ipt" -w -A "$FIREWALL_CHAIN" -p tcp --dport 53 -j REJECT

  # The host gateway (builder API, mock servers) and the private ranges.
  if [ "$ipt" = iptables ]; then
    gateway=$(ipv4_gateway)
    [ -n "$gateway" ] && firewall "$ipt" -w -A "$FIREWALL_CHAIN" -d "$gateway" -j ACCEPT
  fi
  for range in "${private[@]}"; do
    firewall "$ipt" -w -A "$FIREWALL_CHAIN" -d "$range" -j ACCEPT
  done

  # REJECT rather than a silent drop, so a blocked client fails at once.
  firewall "$ipt" -w -A "$FIREWALL_CHAIN" -j REJECT
  "$ipt" -w -C OUTPUT -j "$FIREWALL_CHAIN" 2>/dev/null || firewall "$ipt" -w -A OUTPUT -j "$FIREWALL_CHAIN"
}

block_internet() {
  apply_firewall iptables
  if [ -e /proc/net/if_inet6 ]; then
    apply_firewall ip6tables
  else
    log "notice: this kernel has no IPv6; only the IPv4 firewall applies"
  fi
  debug "outbound traffic blocked except loopback, the host gateway and private ranges"
}

# ----------------------------------------------------------------------- ssh

start_sshd() {
  local port=${LLM_DOCKER_SSH_PORT:-22}
  if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
    fail "invalid LLM_DOCKER_SSH_PORT '$port': expected a port from 1 to 65535"
  fi
  [ -n "${LLM_DOCKER_SSH_AUTHORIZED_KEYS:-}" ] ||
    fail "SSH is on but LLM_DOCKER_SSH_AUTHORIZED_KEYS is empty; add a public key or turn SSH off"

  mkdir -p "$SSH_STATE" /run/sshd "$SSH_AUTHORIZED_KEYS_DIR"
  chmod 0755 /run/sshd
  if [ ! -s "$SSH_STATE/ssh_host_ed25519_key" ]; then
    ssh-keygen -q -t ed25519 -N '' -f "$SSH_STATE/ssh_host_ed25519_key"
  fi
  # The launcher passes several keys as one line with literal "\n" between them.
  printf '%b\n' "${LLM_DOCKER_SSH_AUTHORIZED_KEYS}" >"$SSH_AUTHORIZED_KEYS_DIR/$AGENT_USER"
  chmod 0644 "$SSH_AUTHORIZED_KEYS_DIR/$AGENT_USER"

  /usr/sbin/sshd -f /etc/ssh/llm-docker-sshd_config -p "$port" -E /var/log/sshd.log ||
    fail "sshd did not start; see /var/log/sshd.log in the container"
  debug "sshd listening on port $port"
}

# ---------------------------------------------------------- template seeding

# Write JSON produced by a jq filter over FILE back to FILE atomically.
# Usage: update_json FILE UID GID JQ_ARGS...
update_json() {
  local file=$1 uid=$2 gid=$3 temporary
  shift 3
  [ -s "$file" ] || echo '{}' >"$file"
  temporary=$(mktemp "$file.XXXXXX")
  if ! jq "$@" "$file" >"$temporary"; then
    rm -f "$temporary"
    log "notice: $file is not valid JSON; left unchanged"
    return 0
  fi
  chown "$uid:$gid" "$temporary"
  chmod 0600 "$temporary"
  mv "$temporary" "$file"
}

seed_claude() {
  local uid=$1 gid=$2 bypass=$3 config_dir=${CLAUDE_CONFIG_DIR:-$AGENT_HOME/.claude} skill
  mkdir -p "$config_dir"
  chown "$uid:$gid" "$config_dir"
  # The prompt that confirms bypass mode is skipped only when the user opted
  # into bypass; otherwise a setting left from an earlier session is removed.
  if [ "$bypass" = true ]; then
    update_json "$config_dir/settings.json" "$uid" "$gid" '.skipDangerousModePermissionPrompt = true'
  elif [ -e "$config_dir/settings.json" ]; then
    update_json "$config_dir/settings.json" "$uid" "$gid" 'del(.skipDangerousModePermissionPrompt)'
  fi
  for skill in "$SKILLS_DIR"/*/; do
    [ -d "$skill" ] || continue
    skill=$(basename "$skill")
    if [ ! -e "$config_dir/skills/$skill" ]; then
      mkdir -p "$config_dir/skills"
      cp -r "$SKILLS_DIR/$skill" "$config_dir/skills/$skill"
      chown -R "$uid:$gid" "$config_dir/skills"
    fi
  done
  debug "seeded Claude Code settings in $config_dir (bypass=$bypass)"
}

seed_opencode() {
  local uid=$1 gid=$2 config_dir=$AGENT_HOME/.config/opencode
  mkdir -p "$config_dir"
  if [ ! -e "$config_dir/opencode.jsonc" ] && [ ! -e "$config_dir/opencode.json" ]; then
    install -m 0644 -o "$uid" -g "$gid" "$TEMPLATES/opencode.jsonc" "$config_dir/opencode.jsonc"
    debug "seeded $config_dir/opencode.jsonc"
  fi
}

# -------------------------------------------------------------------- banner

print_banner() {
  local sandbox=$1 internet=$2 ssh=$3
  local ssh_state=off
  [ "$ssh" = true ] && ssh_state="on (port ${LLM_DOCKER_SSH_PORT:-22})"
  {
    printf 'llm-docker %s | %s | project %s\n' "${LLM_DOCKER_VERSION:-unknown}" \
      "${LLM_DOCKER_TOOL:-shell}" "${LLM_DOCKER_PROJECT:-$(basename "$workdir")}"
    printf '  sandbox %s | internet %s | ssh %s\n' "$([ "$sandbox" = true ] && echo on || echo OFF)" \
      "$([ "$internet" = true ] && echo on || echo 'blocked (LAN and host gateway only)')" "$ssh_state"
  } >&2
}

# --------------------------------------------------------------------- main

# Print the setpriv argv that runs a command as the agent without privileges.
agent_exec_prefix() {
  local uid=$1 gid=$2 sandbox=$3
  local capabilities=(--inh-caps=-all --bounding-set=-all)
  if [ "$sandbox" = false ]; then
    # SANDBOX_ENABLED=false: the agent keeps SYS_PTRACE for gdb and strace.
    capabilities=("--inh-caps=-all,+sys_ptrace" "--ambient-caps=+sys_ptrace" "--bounding-set=-all,+sys_ptrace")
  fi
  printf '%s\n' setpriv "--reuid=$uid" "--regid=$gid" --init-groups "${capabilities[@]}" \
    --no-new-privs -- env HOME="$AGENT_HOME" USER="$AGENT_USER" LOGNAME="$AGENT_USER" SHELL=/bin/zsh
}

# Run the prefix on a probe and fail unless the agent really ends up with the
# requested uid, no capabilities beyond ALLOWED_MASK and no-new-privileges.
# setpriv cannot empty the bounding set without CAP_SETPCAP, and then exits 0
# anyway, so the result is checked instead of trusted.
# Usage: verify_privilege_drop UID ALLOWED_MASK PREFIX...
verify_privilege_drop() {
  local uid=$1 allowed=$2 field value real_uid no_new_privs=""
  shift 2
  local status
  status=$("$@" cat /proc/self/status) || fail "could not start a process as the agent with: $*"
  while IFS=$':\t ' read -r field value _; do
    case $field in
      Uid) real_uid=$value ;;
      NoNewPrivs) no_new_privs=$value ;;
      CapInh | CapPrm | CapEff | CapBnd | CapAmb)
        if (((16#$value & ~allowed) != 0)); then
          fail "the agent would keep capabilities ($field=$value); the container needs SETPCAP to drop them (see CONTRACT.md)"
        fi
        ;;
    esac
  done <<<"$status"
  [ "${real_uid:-}" = "$uid" ] || fail "the agent would run as uid ${real_uid:-unknown}, expected $uid"
  [ "$no_new_privs" = 1 ] || fail "no-new-privileges is not set for the agent"
}

main() {
  if [ "$(id -u)" != 0 ]; then
    log "notice: started as uid $(id -u), not root: no setup, running the command as is"
    exec "$@"
  fi

  local uid=${LLM_DOCKER_UID:-1000} gid=${LLM_DOCKER_GID:-1000}
  check_id "$uid" LLM_DOCKER_UID
  check_id "$gid" LLM_DOCKER_GID
  local sandbox internet ssh bypass exit_to_docker
  sandbox=$(boolean LLM_DOCKER_SANDBOX true)
  internet=$(boolean INTERNET_ACCESS true)
  ssh=$(boolean LLM_DOCKER_SSH_ENABLED false)
  bypass=$(boolean LLM_DOCKER_BYPASS false)
  exit_to_docker=$(boolean EXIT_TO_DOCKER false)
  workdir=${LLM_DOCKER_WORKDIR:-$PWD}
  [ -d "$workdir" ] || fail "LLM_DOCKER_WORKDIR '$workdir' does not exist in the container"
  $verbose && set -x

  create_agent_user "$uid" "$gid"
  prepare_home "$uid" "$gid"
  trust_runtime_certs
  [ "$internet" = false ] && block_internet
  [ "$ssh" = true ] && start_sshd

  case ${LLM_DOCKER_SESSION:-new} in
    new)
      if command -v claude >/dev/null; then seed_claude "$uid" "$gid" "$bypass"; fi
      if command -v opencode >/dev/null; then seed_opencode "$uid" "$gid"; fi
      ;;
    continue | resume) debug "keeping the existing tool configuration (${LLM_DOCKER_SESSION})" ;;
    *) fail "invalid LLM_DOCKER_SESSION '${LLM_DOCKER_SESSION}': use new, continue or resume" ;;
  esac

  # LLM_DOCKER_QUIET=true comes from the launcher's -q: only errors on stderr.
  if [ "${LLM_DOCKER_QUIET:-false}" != true ]; then print_banner "$sandbox" "$internet" "$ssh"; fi
  if [ $# -eq 0 ]; then
    set -- "${LLM_DOCKER_TOOL:-zsh}"
  fi

  local prefix=()
  mapfile -t prefix < <(agent_exec_prefix "$uid" "$gid" "$sandbox")
  local allowed_capabilities=0
  # CAP_SYS_PTRACE is capability 19.
  [ "$sandbox" = false ] && allowed_capabilities=$((1 << 19))
  verify_privilege_drop "$uid" "$allowed_capabilities" "${prefix[@]}"
  cd "$workdir"
  set +x
  if [ "$exit_to_docker" = false ]; then
    exec "${prefix[@]}" "$@"
  fi
  run_then_shell "${#prefix[@]}" "${prefix[@]}" "$@"
}

# EXIT_TO_DOCKER=true: run the tool as a child, forwarding the stop signals
# to it, then open an agent shell; exit with the tool's exit code.
# Usage: run_then_shell PREFIX_LENGTH PREFIX... COMMAND...
run_then_shell() {
  local prefix=("${@:2:$1}") child status
  shift $(($1 + 1))
  # A background job of a non-interactive shell reads /dev/null unless its
  # input is redirected explicitly.
  "${prefix[@]}" "$@" <&0 &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' TERM
  trap 'kill -INT "$child" 2>/dev/null' INT
  trap 'kill -HUP "$child" 2>/dev/null' HUP
  status=0
  wait "$child" || status=$?
  # wait returns early when a trapped signal arrives; wait for the real end.
  while kill -0 "$child" 2>/dev/null; do
    wait "$child" || status=$?
  done
  trap - TERM INT HUP
  log "the tool exited with status $status; EXIT_TO_DOCKER=true opens a shell (exit it to stop the container)"
  "${prefix[@]}" /bin/zsh -l || true
  exit "$status"
}

main "$@"

#!/bin/sh
# Fake claude/opencode for launcher tests: prints what reached the container,
# one fact a line, so tests can assert on it. Paths in MOUNT, WRITABLE and
# READONLY lines are as /proc/mounts spells them (a space is \040).
echo "TOOL=$(basename "$0")"
i=0
for arg in "$@"; do
  echo "ARG[$i]=$arg"
  i=$((i + 1))
done
echo "UID=$(id -u) GID=$(id -g)"
echo "CWD=$(pwd)"
echo "HOSTNAME=$(hostname)"
env | sort | sed 's/^/ENV:/'
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | sed 's/^/STATUS:/'
awk '$2 !~ "^/(proc|sys|dev)(/|$)" { split($4, opts, ","); print "MOUNT:" $2 " " $3 " " opts[1] }' /proc/mounts
awk '$2 !~ "^/(proc|sys|dev)(/|$)" && $2 != "/" { print $2 }' /proc/mounts | while read -r escaped; do
  path=$(printf '%b' "$(echo "$escaped" | sed 's/\\\([0-7][0-7][0-7]\)/\\0\1/g')")
  [ -d "$path" ] || continue
  probe="$path/.llm-docker-probe-$$"
  if touch "$probe" 2>/dev/null; then
    rm -f "$probe"
    echo "WRITABLE:$escaped"
  else
    echo "READONLY:$escaped"
  fi
done
[ -S /var/run/docker.sock ] && echo "DOCKER_SOCKET:present"
exit "${STUB_EXIT:-0}"
